/// Something a ``DeadlineQueue`` holds: it keeps its own deadline and place in the queue,
/// so the queue can move or remove it without searching.
package protocol DeadlineQueued: AnyObject {
    /// The earliest moment the element must be looked at; `.max` while it is not queued.
    var queuedDeadline: UInt64 { get set }
    /// Its index in the queue's heap; the queue's own bookkeeping.
    var deadlineQueueIndex: Int { get set }
}

/// The event loop's workers by their earliest deadline (a binary min-heap, one entry per
/// worker). The loop used to scan every worker whenever any deadline came due, and a
/// throttled worker sets one every millisecond or so: with a thousand idle workers beside
/// it, that was a million record visits a second (BENCHMARKS.md, thirteenth round). Now a
/// due check costs a heap operation for each worker whose deadline came, and nothing for
/// the others.
///
/// A worker's entry may be earlier than its real next deadline (one was set and then
/// cleared: a parked reply flushed, a connect answered) but never later, so a deadline
/// is never missed; looking at a worker early finds nothing due and queues its real one.
package struct DeadlineQueue<Element: DeadlineQueued> {
    private var heap: [Element] = []

    package init() {}

    /// The earliest deadline queued; `.max` when nothing is.
    package var earliest: UInt64 { heap.first?.queuedDeadline ?? .max }

    package var count: Int { heap.count }

    /// Queues `element` for `deadline`, or moves it earlier. A deadline later than the one
    /// it has changes nothing: the element is looked at then, and queued again for what
    /// is left.
    package mutating func schedule(_ element: Element, at deadline: UInt64) {
        guard deadline < element.queuedDeadline else { return }
        element.queuedDeadline = deadline
        if isQueued(element) {
            siftUp(element.deadlineQueueIndex)
        } else {
            element.deadlineQueueIndex = heap.count
            heap.append(element)
            siftUp(heap.count - 1)
        }
    }

    /// Takes `element` out of the queue, if it is in it (a worker reaped).
    package mutating func remove(_ element: Element) {
        guard isQueued(element) else { return }
        let index = element.deadlineQueueIndex
        let last = heap.removeLast()
        if index < heap.count {
            heap[index] = last
            last.deadlineQueueIndex = index
            // The moved element may belong above or below the place it takes.
            siftDown(siftUp(index))
        }
        element.queuedDeadline = .max
        element.deadlineQueueIndex = -1
    }

    /// Takes out and returns every element whose deadline is at or before `now`, earliest
    /// first. Each leaves unqueued: the caller looks at it and queues what it has left.
    package mutating func takeDue(now: UInt64) -> [Element] {
        var due: [Element] = []
        while let first = heap.first, first.queuedDeadline <= now {
            remove(first)
            due.append(first)
        }
        return due
    }

    private func isQueued(_ element: Element) -> Bool {
        let index = element.deadlineQueueIndex
        return index >= 0 && index < heap.count && heap[index] === element
    }

    @discardableResult
    private mutating func siftUp(_ start: Int) -> Int {
        var index = start
        while index > 0 {
            let parent = (index - 1) / 2
            guard heap[index].queuedDeadline < heap[parent].queuedDeadline else { break }
            swapAt(index, parent)
            index = parent
        }
        return index
    }

    private mutating func siftDown(_ start: Int) {
        var index = start
        while true {
            let left = 2 * index + 1, right = left + 1
            var smallest = index
            if left < heap.count && heap[left].queuedDeadline < heap[smallest].queuedDeadline { smallest = left }
            if right < heap.count && heap[right].queuedDeadline < heap[smallest].queuedDeadline { smallest = right }
            guard smallest != index else { return }
            swapAt(index, smallest)
            index = smallest
        }
    }

    private mutating func swapAt(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        heap[a].deadlineQueueIndex = a
        heap[b].deadlineQueueIndex = b
    }
}
