/// A move-only list of owned file descriptors: the fds one message carries.
///
/// Every descriptor still in the list when the list goes away is closed, so a
/// received fd that nobody claimed cannot leak. Taking one out with
/// ``take(at:)`` transfers ownership and empties its slot.
public struct OwnedFileDescriptors: ~Copyable, Sendable {
    /// Raw numbers; -1 marks a slot already taken.
    private var slots: [Int32]
    /// How many slots hold -1, so the common case (none) needs no filtering.
    private var takenCount = 0

    /// An empty list.
    public init() { slots = [] }

    /// A list holding one descriptor.
    public init(_ descriptor: consuming OwnedFileDescriptor) {
        slots = [descriptor.releaseUnsafeRawValue()]
    }

    /// Takes ownership of raw descriptors (for example, ones a C library returned).
    public init(adoptingRawValues rawValues: [Int32]) {
        precondition(rawValues.allSatisfy { $0 >= 0 }, "only valid descriptors can be adopted")
        slots = rawValues
    }

    deinit {
        for fd in slots where fd >= 0 { _ = system_close(fd) }
    }

    /// How many slots the list has (taken ones included).
    public var count: Int { slots.count }

    /// Whether the list has no slots.
    public var isEmpty: Bool { slots.isEmpty }

    /// Appends a descriptor; the list now owns it.
    public mutating func append(_ descriptor: consuming OwnedFileDescriptor) {
        slots.append(descriptor.releaseUnsafeRawValue())
    }

    /// Removes the descriptor at `index` from the list and returns it, or nil if
    /// that slot was already taken.
    public mutating func take(at index: Int) -> OwnedFileDescriptor? {
        precondition(slots.indices.contains(index), "fd index \(index) out of range 0..<\(slots.count)")
        let fd = slots[index]
        guard fd >= 0 else { return nil }
        slots[index] = -1
        takenCount += 1
        return OwnedFileDescriptor(adoptingRawValue: fd)
    }

    /// Closes every descriptor still owned and empties the list.
    public mutating func closeAll() {
        for fd in slots where fd >= 0 { _ = system_close(fd) }
        slots.removeAll()
        takenCount = 0
    }

    /// The raw numbers of the descriptors still owned, for a call this library
    /// does not wrap. They stay owned by the list.
    public var unsafeRawValues: [Int32] { takenCount == 0 ? slots : slots.filter { $0 >= 0 } }

    /// How many descriptors the list still owns.
    public var ownedCount: Int { slots.count - takenCount }
}
