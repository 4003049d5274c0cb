/// Values by token, in a slab: the event loop's epoll registrations, which an event finds by
/// index, with no hashing (a dictionary's two lookups per event grew costly as the tables
/// and records went cold at 64 workers: BENCHMARKS.md, seventh round).
///
/// A token is the slot's index in its low 32 bits and the slot's generation in its high 32.
/// Removing a value moves its slot to the next generation, so a token already handed out
/// for it (an event queued for a registration removed earlier in the same batch) finds
/// nothing, even once the slot holds another value.
package struct TokenTable<Value> {
    private var slots: [(generation: UInt32, value: Value?)] = []
    private var free: [Int] = []

    package init() {}

    /// Stores `value` and returns its token; the first token of a new table is 0.
    package mutating func insert(_ value: Value) -> UInt64 {
        let index: Int
        if let reused = free.popLast() {
            index = reused
            slots[index].value = value
        } else {
            index = slots.count
            precondition(index <= Int(UInt32.max), "token table full")
            slots.append((generation: 0, value: value))
        }
        return UInt64(slots[index].generation) << 32 | UInt64(index)
    }

    /// The value of `token`; nil once it is removed, or for a token never handed out.
    package subscript(token: UInt64) -> Value? {
        let index = Int(token & 0xFFFF_FFFF)
        guard index < slots.count, slots[index].generation == UInt32(token >> 32) else { return nil }
        return slots[index].value
    }

    /// Removes `token`'s value; nothing if it is already gone (its slot may hold another).
    package mutating func remove(_ token: UInt64) {
        let index = Int(token & 0xFFFF_FFFF)
        guard index < slots.count, slots[index].generation == UInt32(token >> 32), slots[index].value != nil else { return }
        slots[index].value = nil
        slots[index].generation &+= 1
        free.append(index)
    }
}
