/// A move-only list of owned file descriptors: the fds one message carries.
///
/// Every descriptor still in the list when the list goes away is closed, so a
/// received fd that nobody claimed cannot leak. Taking one out with
/// ``take(at:)`` transfers ownership and empties its slot.
// @frozen: `discard self` in an inlinable method (takeOnly, close) needs it. This package is
// built from source, never with library evolution, so it fixes no ABI. @unchecked Sendable:
// the list's storage is its alone (it cannot be copied), so sending the list sends it.
@frozen
public struct OwnedFileDescriptors: ~Copyable, @unchecked Sendable {
    // Raw numbers; -1 marks a slot already taken. One slot is kept inline: almost every
    // message carries one fd or none. From two slots on, every slot (the first too) is in
    // `slots`, so the numbers are contiguous and go to sendmsg without being copied.
    // `slots` is memory this list alone owns (it cannot be copied), allocated and freed by
    // hand: an array would be released, a call into the run-time, each time a list goes
    // away, even an empty one, two or three times per request (BENCHMARKS.md, sixth round).
    // Its small operations are inlinable: every request and reply passes one list from a
    // module to another, and a call for each was one more page of code per request to
    // fault in when many workers take turns on a CPU (BENCHMARKS.md, fifth round).
    // (No default values: those are out-of-line initializers even for inlined code.)
    /// The only slot, while there are fewer than two.
    @usableFromInline var onlySlot: Int32
    /// Every slot, once there are two or more (allocated earlier by `reserveCapacity`).
    @usableFromInline var slots: UnsafeMutablePointer<Int32>?
    @usableFromInline var slotCapacity: Int
    @usableFromInline var slotCount: Int
    /// How many slots hold -1.
    @usableFromInline var takenCount: Int

    /// An empty list.
    @inlinable public init() {
        onlySlot = -1
        slots = nil
        slotCapacity = 0
        slotCount = 0
        takenCount = 0
    }

    /// A list holding one descriptor.
    @inlinable
    public init(_ descriptor: consuming OwnedFileDescriptor) {
        onlySlot = descriptor.releaseUnsafeRawValue()
        slots = nil
        slotCapacity = 0
        slotCount = 1
        takenCount = 0
    }

    /// Takes ownership of raw descriptors (for example, ones a C library returned).
    public init(adoptingRawValues rawValues: [Int32]) {
        self.init()
        precondition(rawValues.allSatisfy { $0 >= 0 }, "only valid descriptors can be adopted")
        reserveCapacity(rawValues.count)
        for fd in rawValues { adopt(fd) }
    }

    deinit {
        if onlySlot >= 0 { _ = system_close(onlySlot) }
        if let slots {
            for index in 0..<slotCount where slots[index] >= 0 { _ = system_close(slots[index]) }
            slots.deallocate()
        }
    }

    /// How many slots the list has (taken ones included).
    @inlinable public var count: Int { slotCount }

    /// Whether the list has no slots.
    @inlinable public var isEmpty: Bool { slotCount == 0 }

    /// Appends a descriptor; the list now owns it.
    public mutating func append(_ descriptor: consuming OwnedFileDescriptor) {
        adopt(descriptor.releaseUnsafeRawValue())
    }

    /// Makes room for `count` slots in all, so adopting that many allocates once.
    mutating func reserveCapacity(_ count: Int) {
        if count > 1 { growSlots(toHold: count) }
    }

    /// Makes `slots` hold at least `count`, keeping what it holds once there are two or more.
    private mutating func growSlots(toHold count: Int) {
        guard count > slotCapacity else { return }
        let capacity = max(count, slotCapacity * 2, 4)
        let grown = UnsafeMutablePointer<Int32>.allocate(capacity: capacity)
        if let slots {
            if slotCount > 1 { grown.initialize(from: slots, count: slotCount) }
            slots.deallocate()
        }
        slots = grown
        slotCapacity = capacity
    }

    /// Appends a raw descriptor the kernel just installed in this process.
    mutating func adopt(_ fd: Int32) {
        switch slotCount {
        case 0:
            onlySlot = fd
        case 1:
            growSlots(toHold: 2)
            slots![0] = onlySlot
            slots![1] = fd
            onlySlot = -1
        default:
            growSlots(toHold: slotCount + 1)
            slots![slotCount] = fd
        }
        slotCount += 1
    }

    /// Removes the descriptor at `index` from the list and returns it, or nil if
    /// that slot was already taken.
    @inlinable
    public mutating func take(at index: Int) -> OwnedFileDescriptor? {
        precondition((0..<slotCount).contains(index), "fd index \(index) out of range 0..<\(slotCount)")
        let fd = slotCount == 1 ? onlySlot : slots![index]
        guard fd >= 0 else { return nil }
        if slotCount == 1 { onlySlot = -1 } else { slots![index] = -1 }
        takenCount += 1
        return OwnedFileDescriptor(adoptingRawValue: fd)
    }

    /// The list's one descriptor, if it has exactly one slot and still owns it; otherwise
    /// nil, and the list is gone with whatever it owned closed. For the commonest reply
    /// (one fd): inline, no call to ``take(at:)`` and to the list's deinit, each a page of
    /// code per request to fault in (BENCHMARKS.md, sixth round).
    @inlinable
    public consuming func takeOnly() -> OwnedFileDescriptor? {
        // With one slot, kept inline, and no storage (reserved for more, then unused),
        // there is nothing else to close or free.
        guard slotCount == 1, onlySlot >= 0, slots == nil else {
            var list = consume self
            return list.count == 1 ? list.take(at: 0) : nil
        }
        let fd = onlySlot
        discard self
        return OwnedFileDescriptor(adoptingRawValue: fd)
    }

    /// Closes every descriptor still owned and ends the list. Inline, with no call, when
    /// it owns nothing: a request's empty list ends this way on every send.
    @inlinable
    public consuming func close() {
        if onlySlot >= 0 || slots != nil { closeAll() }
        discard self
    }

    /// Closes every descriptor still owned and empties the list.
    public mutating func closeAll() {
        if onlySlot >= 0 { _ = system_close(onlySlot) }
        if let slots {
            for index in 0..<slotCount where slots[index] >= 0 { _ = system_close(slots[index]) }
            slots.deallocate()
        }
        onlySlot = -1
        slots = nil
        slotCapacity = 0
        slotCount = 0
        takenCount = 0
    }

    /// The raw numbers of the descriptors still owned, for a call this library
    /// does not wrap. They stay owned by the list.
    public var unsafeRawValues: [Int32] {
        switch slotCount {
        case 0: []
        case 1: onlySlot >= 0 ? [onlySlot] : []
        default: UnsafeBufferPointer(start: slots, count: slotCount).filter { $0 >= 0 }
        }
    }

    /// Calls `body` with the raw numbers of the descriptors still owned, without
    /// building an array unless some were taken out. They stay owned by the list.
    @inlinable
    public func withUnsafeRawValues<R, E: Error>(_ body: (UnsafeBufferPointer<Int32>) throws(E) -> R) throws(E) -> R {
        if slotCount > 1 {
            let all = UnsafeBufferPointer(start: slots, count: slotCount)
            if takenCount == 0 { return try body(all) }
            return try all.filter { $0 >= 0 }.withUnsafeBufferPointer { (buffer) throws(E) -> R in try body(buffer) }
        }
        guard onlySlot >= 0 else { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
        var only = onlySlot
        return try withUnsafePointer(to: &only) { (pointer) throws(E) -> R in try body(UnsafeBufferPointer(start: pointer, count: 1)) }
    }

    /// How many descriptors the list still owns.
    @inlinable public var ownedCount: Int { slotCount - takenCount }
}
