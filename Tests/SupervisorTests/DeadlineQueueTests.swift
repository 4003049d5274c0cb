@testable import Supervisor
import Testing

/// The event loop finds due workers through this queue alone: an element it loses, or
/// hands back late, is a worker whose timeout never fires.
@Suite struct DeadlineQueueTests {
    final class Item: DeadlineQueued {
        let name: Int
        var queuedDeadline: UInt64 = .max
        var deadlineQueueIndex = -1
        init(_ name: Int) { self.name = name }
    }

    @Test func dueElementsComeOutEarliestFirstAndOnlyOnce() {
        var queue = DeadlineQueue<Item>()
        let items = (0..<5).map(Item.init)
        #expect(queue.earliest == .max)
        for (item, deadline) in zip(items, [50, 10, 40, 10, 30] as [UInt64]) { queue.schedule(item, at: deadline) }
        #expect(queue.earliest == 10)
        #expect(queue.takeDue(now: 9).isEmpty)
        let due = queue.takeDue(now: 40)
        #expect(due.map(\.name).sorted() == [1, 2, 3, 4])
        #expect(due.map(\.queuedDeadline).allSatisfy { $0 == .max }, "taken out means not queued")
        #expect(queue.count == 1 && queue.earliest == 50)
        #expect(queue.takeDue(now: 40).isEmpty, "nothing comes out twice")
    }

    @Test func aLaterDeadlineNeverPostponesAnEarlierOne() {
        var queue = DeadlineQueue<Item>()
        let item = Item(1)
        queue.schedule(item, at: 100)
        queue.schedule(item, at: 500)
        #expect(queue.count == 1 && queue.earliest == 100)
        queue.schedule(item, at: 20)
        #expect(queue.count == 1 && queue.earliest == 20, "moved earlier, not queued twice")
        #expect(queue.takeDue(now: 20).map(\.name) == [1])
    }

    @Test func aRemovedElementIsGoneAndTheRestKeepTheirOrder() {
        var queue = DeadlineQueue<Item>()
        let items = (0..<8).map(Item.init)
        for item in items { queue.schedule(item, at: UInt64(100 - item.name * 10)) }
        queue.remove(items[7]) // the earliest, at the root
        queue.remove(items[3]) // one in the middle
        queue.remove(items[3]) // twice: nothing
        queue.remove(Item(99)) // never queued: nothing
        #expect(queue.count == 6)
        #expect(items[3].deadlineQueueIndex == -1 && items[3].queuedDeadline == .max)
        #expect(queue.takeDue(now: .max).map(\.name) == [6, 5, 4, 2, 1, 0])
    }

    /// Random schedules, removals and takes against a plain dictionary of deadlines.
    @Test func agreesWithAPlainModelUnderRandomUse() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            var queue = DeadlineQueue<Item>()
            let items = (0..<64).map(Item.init)
            var model: [Int: UInt64] = [:]
            var now: UInt64 = 0
            for _ in 0..<3_000 {
                let item = items[Int.random(in: 0..<items.count, using: &generator)]
                switch Int.random(in: 0..<10, using: &generator) {
                case 0..<6:
                    let deadline = now + UInt64.random(in: 0..<1_000, using: &generator)
                    queue.schedule(item, at: deadline)
                    model[item.name] = min(model[item.name] ?? .max, deadline)
                case 6..<8:
                    queue.remove(item)
                    model[item.name] = nil
                default:
                    now += UInt64.random(in: 0..<200, using: &generator)
                    let due = queue.takeDue(now: now)
                    let expected = model.filter { $0.value <= now }
                    #expect(Set(due.map(\.name)) == Set(expected.keys))
                    #expect(due.count == expected.count, "each due element once")
                    let order = due.map { expected[$0.name]! }
                    #expect(order == order.sorted(), "earliest first")
                    for name in expected.keys { model[name] = nil }
                }
                #expect(queue.count == model.count)
                #expect(queue.earliest == (model.values.min() ?? .max))
            }
        }
    }
}
