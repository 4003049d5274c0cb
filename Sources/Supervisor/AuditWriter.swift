import Logging
import PrivsepIPC
import Synchronization
import SystemPackage

/// Writes audit records or log lines on a thread of its own, so that no serving thread
/// waits on a terminal, a pipe or a disk. A worker can make those block: one that shares the
/// supervisor's terminal (its stderr, by default) and may use terminal ioctls stops the
/// terminal's output (TCXONC), and one that fills a pipe the supervisor also logs to stalls
/// every write to it. A serving thread blocked in such a write served no other worker.
///
/// Bounded: past ``capacity`` entries waiting, entries are dropped and counted, and the count
/// is reported once there is room again; essential entries (lifecycle records, the
/// supervisor's own lines) have ``reserve`` more. The thread ends when the writer is released
/// (with its Auditor) and everything given to it is written.
final class AuditWriter: Sendable {
    enum Entry: Sendable {
        case record(AuditRecord)
        case line(Logger.Level, Logger.Message, Logger.Metadata?)
    }

    /// Entries waiting, at most: about 4 MB of typical records.
    static let capacity = 16_384
    /// Room past ``capacity`` for essential entries only.
    static let reserve = 4_096

    private let core: Core

    /// Starts the writing thread; nil if it cannot be started.
    init?(name: String, write: @escaping @Sendable ([Entry]) -> Void,
          reportDropped: @escaping @Sendable (_ records: Int, _ lines: Int) -> Void) {
        guard case .success(let wakeup) = system_eventfd_blocking() else { return nil }
        core = Core(wakeup: wakeup)
        let core = self.core
        guard startDetachedThread(named: name, on: nil, { core.run(write: write, reportDropped: reportDropped) }) else {
            core.closeWakeup()
            return nil
        }
    }

    deinit { core.finish() }

    /// Queues `entry`; counts it as dropped when the queue is full (for an essential entry,
    /// when the reserve is full too).
    func enqueue(_ entry: Entry, essential: Bool = false) {
        if core.enqueue(entry, limit: AuditWriter.capacity + (essential ? AuditWriter.reserve : 0)) { core.wake() }
    }

    /// Returns once everything queued before the call is written, or after `seconds`
    /// (a writer blocked on a stopped terminal must not hold up a shutdown for ever), with
    /// the records still waiting then (0 when everything was written).
    func drained(within seconds: Double) async -> Int {
        let id = core.nextWaiterID()
        let timedOut: Bool = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            guard core.addWaiter(id, continuation) else { return continuation.resume(returning: false) }
            // The core only: holding the writer would keep its thread for the whole wait.
            let core = self.core
            Task.detached {
                try? await Task.sleep(for: .milliseconds(Int(max(seconds, 0) * 1000)))
                core.removeWaiter(id)?.resume(returning: true)
            }
        }
        return timedOut ? core.recordsWaiting() : 0
    }

    final class Core: Sendable {
        private struct State {
            var queue: [Entry] = []
            var droppedRecords = 0
            var droppedLines = 0
            /// The thread found nothing to write and waits (or is about to) on the eventfd.
            var idle = true
            var finishing = false
            var nextWaiterID = 0
            var waiters: [(id: Int, continuation: CheckedContinuation<Bool, Never>)] = []
        }

        private let state = Mutex(State())
        private let wakeup: Int32

        init(wakeup: Int32) { self.wakeup = wakeup }

        /// How long the thread waits, once woken, for more to write.
        static let batchingDelayNanoseconds = 1_000_000

        /// Whether the thread must be woken.
        func enqueue(_ entry: Entry, limit: Int) -> Bool {
            state.withLock { state in
                guard state.queue.count < limit else {
                    if case .record = entry { state.droppedRecords += 1 } else { state.droppedLines += 1 }
                    return false
                }
                state.queue.append(entry)
                defer { state.idle = false }
                return state.idle
            }
        }

        func wake() {
            var one: UInt64 = 1
            _ = withUnsafeBytes(of: &one) { system_write(wakeup, $0) }
        }

        func finish() {
            let wake = state.withLock { state in
                state.finishing = true
                defer { state.idle = false }
                return state.idle
            }
            if wake { self.wake() }
        }

        func closeWakeup() { _ = system_close(wakeup) }

        func nextWaiterID() -> Int { state.withLock { state in defer { state.nextWaiterID += 1 }; return state.nextWaiterID } }

        /// False when nothing is waiting to be written (the caller need not wait).
        func addWaiter(_ id: Int, _ continuation: CheckedContinuation<Bool, Never>) -> Bool {
            state.withLock { state in
                if state.idle && state.queue.isEmpty { return false }
                state.waiters.append((id, continuation))
                return true
            }
        }

        /// Records queued and not yet taken by the thread.
        func recordsWaiting() -> Int {
            state.withLock { state in state.queue.reduce(0) { count, entry in if case .record = entry { count + 1 } else { count } } }
        }

        func removeWaiter(_ id: Int) -> CheckedContinuation<Bool, Never>? {
            state.withLock { state in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
        }

        func run(write: ([Entry]) -> Void, reportDropped: (Int, Int) -> Void) {
            while true {
                var batch: [Entry] = []
                var dropped = (records: 0, lines: 0)
                var waiters: [CheckedContinuation<Bool, Never>] = []
                var finished = false
                state.withLock { state in
                    swap(&batch, &state.queue)
                    dropped = (state.droppedRecords, state.droppedLines)
                    (state.droppedRecords, state.droppedLines) = (0, 0)
                    if batch.isEmpty && dropped == (0, 0) {
                        state.idle = true
                        waiters = state.waiters.map(\.continuation)
                        state.waiters = []
                        finished = state.finishing
                    }
                }
                if dropped != (0, 0) { reportDropped(dropped.records, dropped.lines) }
                if !batch.isEmpty || dropped != (0, 0) {
                    if !batch.isEmpty { write(batch) }
                    continue
                }
                for waiter in waiters { waiter.resume(returning: false) }
                if finished { break }
                var count: UInt64 = 0
                _ = withUnsafeMutableBytes(of: &count) { system_read(wakeup, $0) }
                // Woken by the first entry after a quiet spell: what follows it within the
                // next millisecond is taken in the same batch. Woken for each, the thread cost
                // a flood two context switches a record on a shared CPU (BENCHMARKS.md).
                system_sleep_nanoseconds(Self.batchingDelayNanoseconds)
            }
            closeWakeup()
        }
    }
}
