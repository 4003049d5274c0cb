/// A move-only list of owned file descriptors: the fds one message carries.
///
/// Every descriptor still in the list when the list goes away is closed, so a
/// received fd that nobody claimed cannot leak. Taking one out with
/// ``take(at:)`` transfers ownership and empties its slot.
public struct OwnedFileDescriptors: ~Copyable, Sendable {
    // Slot 0 is kept inline: almost every message carries one fd or none, and an
    // array would cost an allocation (and a metadata lookup) per message.
    // Raw numbers; -1 marks a slot already taken.
    private var firstSlot: Int32 = -1
    /// Slots 1 and up.
    private var moreSlots: [Int32] = []
    private var slotCount = 0
    /// How many slots hold -1.
    private var takenCount = 0

    /// An empty list.
    public init() {}

    /// A list holding one descriptor.
    public init(_ descriptor: consuming OwnedFileDescriptor) {
        firstSlot = descriptor.releaseUnsafeRawValue()
        slotCount = 1
    }

    /// Takes ownership of raw descriptors (for example, ones a C library returned).
    public init(adoptingRawValues rawValues: [Int32]) {
        precondition(rawValues.allSatisfy { $0 >= 0 }, "only valid descriptors can be adopted")
        for fd in rawValues { adopt(fd) }
    }

    deinit {
        if firstSlot >= 0 { _ = system_close(firstSlot) }
        for fd in moreSlots where fd >= 0 { _ = system_close(fd) }
    }

    /// How many slots the list has (taken ones included).
    public var count: Int { slotCount }

    /// Whether the list has no slots.
    public var isEmpty: Bool { slotCount == 0 }

    /// Appends a descriptor; the list now owns it.
    public mutating func append(_ descriptor: consuming OwnedFileDescriptor) {
        adopt(descriptor.releaseUnsafeRawValue())
    }

    /// Appends a raw descriptor the kernel just installed in this process.
    mutating func adopt(_ fd: Int32) {
        if slotCount == 0 { firstSlot = fd } else { moreSlots.append(fd) }
        slotCount += 1
    }

    /// Removes the descriptor at `index` from the list and returns it, or nil if
    /// that slot was already taken.
    public mutating func take(at index: Int) -> OwnedFileDescriptor? {
        precondition((0..<slotCount).contains(index), "fd index \(index) out of range 0..<\(slotCount)")
        let fd = index == 0 ? firstSlot : moreSlots[index - 1]
        guard fd >= 0 else { return nil }
        if index == 0 { firstSlot = -1 } else { moreSlots[index - 1] = -1 }
        takenCount += 1
        return OwnedFileDescriptor(adoptingRawValue: fd)
    }

    /// Closes every descriptor still owned and empties the list.
    public mutating func closeAll() {
        if firstSlot >= 0 { _ = system_close(firstSlot) }
        for fd in moreSlots where fd >= 0 { _ = system_close(fd) }
        firstSlot = -1
        moreSlots.removeAll()
        slotCount = 0
        takenCount = 0
    }

    /// The raw numbers of the descriptors still owned, for a call this library
    /// does not wrap. They stay owned by the list.
    public var unsafeRawValues: [Int32] {
        guard slotCount > 0 else { return [] }
        return ([firstSlot] + moreSlots).filter { $0 >= 0 }
    }

    /// Calls `body` with the raw numbers of the descriptors still owned, without
    /// building an array for the usual one fd or none. They stay owned by the list.
    public func withUnsafeRawValues<R, E: Error>(_ body: (UnsafeBufferPointer<Int32>) throws(E) -> R) throws(E) -> R {
        if slotCount > 1 || takenCount > 0 {
            let values = unsafeRawValues
            return try values.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
        }
        guard slotCount == 1 else { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
        var only = firstSlot
        return try withUnsafePointer(to: &only) { (pointer) throws(E) -> R in try body(UnsafeBufferPointer(start: pointer, count: 1)) }
    }

    /// How many descriptors the list still owns.
    public var ownedCount: Int { slotCount - takenCount }
}
