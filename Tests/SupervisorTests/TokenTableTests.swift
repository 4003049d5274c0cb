@testable import Supervisor
import Testing

/// The event loop's registrations by token: a stale token (its registration removed, its
/// slot perhaps reused) must never reach another registration.
@Suite struct TokenTableTests {
    @Test func tokensFindTheirValueAndNothingOnceRemoved() {
        var table = TokenTable<String>()
        let first = table.insert("wake-up")
        #expect(first == 0, "the loop's wake-up fd relies on token 0")
        let channel = table.insert("channel")
        #expect(table[first] == "wake-up")
        #expect(table[channel] == "channel")
        table.remove(channel)
        #expect(table[channel] == nil)
        #expect(table[12345] == nil, "a token never handed out")
        #expect(table[UInt64.max] == nil)
    }

    @Test func aReusedSlotIsNotReachedByItsOldToken() {
        var table = TokenTable<String>()
        _ = table.insert("wake-up")
        let old = table.insert("worker 1")
        table.remove(old)
        let new = table.insert("worker 2")
        #expect(new & 0xFFFF_FFFF == old & 0xFFFF_FFFF, "the slot is reused")
        #expect(new != old)
        #expect(table[old] == nil, "an event queued for worker 1 must not reach worker 2")
        #expect(table[new] == "worker 2")
        // Removing the old token again (a second unregister) leaves the new one alone.
        table.remove(old)
        #expect(table[new] == "worker 2")
    }

    @Test func manyRegistrationsComeAndGo() {
        var table = TokenTable<Int>()
        var live: [UInt64: Int] = [:]
        var removed: [UInt64] = []
        for round in 0..<2_000 {
            let token = table.insert(round)
            #expect(live[token] == nil && !removed.contains(token), "a token is never handed out twice")
            live[token] = round
            if round % 3 == 0, let victim = live.keys.min() {
                table.remove(victim)
                live[victim] = nil
                removed.append(victim)
            }
        }
        for (token, value) in live { #expect(table[token] == value) }
        for token in removed { #expect(table[token] == nil) }
    }
}
