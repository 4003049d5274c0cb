import Glibc
import PrivsepIPC
import Synchronization

/// A ``WorkerPool``'s state. Everything but ``metrics`` belongs to the loop
/// thread the pool lives on: the pool is driven by the loop's events (a worker
/// ready, a RESULT, a worker gone, a deadline) and by commands it runs there.
final class PoolCore: @unchecked Sendable {
    let configuration: WorkerPoolConfiguration
    let policy: ActivePolicy
    let metrics = Mutex(PoolMetrics())
    let latencies = Mutex(LatencyWindow())

    // Loop-thread state.
    private weak var loop: EventLoop?
    private var slots: [UInt64: PoolSlot] = [:]
    private var queue = FIFO<PendingJob>()
    /// Jobs waiting for room in the queue (back-pressure on `run`).
    private var overflow = FIFO<PendingJob>()
    private var nextJobID: UInt64 = 1
    /// Callers of `shutdown` waiting for the last worker to exit.
    private var closing: [() -> Void] = []
    private var isClosing = false
    private var closed = false
    private var starting: ((Result<Void, JobFailure>) -> Void)?
    private var consecutiveStartupFailures = 0
    private var lastStartupFailure = ""
    private var respawnAt: UInt64?
    /// When a shutdown stops waiting for running jobs and kills their workers.
    private var shutdownDeadline: UInt64?
    private var nextLimitCheck: UInt64?
    private var jobsRunning = 0

    init(configuration: WorkerPoolConfiguration, policy: ActivePolicy) {
        self.configuration = configuration
        self.policy = policy
    }

    private var limitCheckInterval: Double { max(configuration.limitCheckInterval, 0.001) }

    // MARK: Commands (loop thread)

    func start(on loop: EventLoop, completion: @escaping (Result<Void, JobFailure>) -> Void) {
        self.loop = loop
        loop.adoptPool(self)
        starting = completion
        replenish()
        finishStartingIfReady()
    }

    func submit(_ job: PendingJob) {
        guard job.continuation != nil else { return }
        if job.isCancelled { return finish(job, .failure(.cancelled)) }
        if closed || isClosing { return finish(job, .failure(.poolClosed)) }
        if consecutiveStartupFailures >= configuration.startupFailureLimit && !slots.values.contains(where: { $0.state == .idle }) {
            return finish(job, .failure(.workerUnavailable("\(consecutiveStartupFailures) workers in a row could not start; the last: \(lastStartupFailure)")))
        }
        if queue.count >= configuration.queueCapacity {
            if configuration.rejectWhenFull { return finish(job, .failure(.queueFull)) }
            overflow.append(job)
        } else {
            queue.append(job)
        }
        publishQueueDepth()
        dispatch()
    }

    func cancel(_ job: PendingJob) {
        job.isCancelled = true
        if let slot = job.slot {
            if slot.failure == nil { slot.failure = .cancelled }
            loop?.killForPool(slot.workerID, .stoppedBySupervisor)
        } else if queue.remove(job) || overflow.remove(job) {
            refillQueue()
            publishQueueDepth()
            finish(job, .failure(.cancelled))
            dispatch()
        }
        // Otherwise it is not submitted yet (submit sees the flag) or already finished.
    }

    /// `gracePeriod`: how long running jobs may go on before their workers are killed
    /// (nil: as long as they take). Of several shutdowns, the earliest deadline holds.
    func shutdown(gracePeriod: Double?, completion: @escaping () -> Void) {
        closing.append(completion)
        if let gracePeriod {
            let deadline = system_clock_monotonic() + nanoseconds(gracePeriod)
            shutdownDeadline = min(shutdownDeadline ?? .max, deadline)
            loop?.notePoolDeadline(deadline)
        }
        close()
    }

    /// The supervisor is shutting down (it stops every worker): fail what waits and end.
    func supervisorShuttingDown() {
        close()
    }

    private func close() {
        isClosing = true
        if let starting {
            self.starting = nil
            starting(.failure(.poolClosed))
        }
        for job in queue.drain() + overflow.drain() { finish(job, .failure(.poolClosed)) }
        publishQueueDepth()
        for slot in slots.values where slot.job == nil { retire(slot, counted: false) }
        finishClosingIfDone()
    }

    // MARK: Events from the loop

    /// The worker said HELLO (and reported its sandbox, when layers are required).
    func workerReady(_ workerID: UInt64) {
        guard let slot = slots[workerID], slot.state == .starting else { return }
        slot.state = .idle
        slot.readyDeadline = nil
        finishStartingIfReady()
        if isClosing { retire(slot, counted: false) } else { dispatch() }
    }

    /// One RESULT chunk from a worker. Returns the reason to kill it, if any.
    func received(_ chunk: ResultChunk, requestID: UInt64, from workerID: UInt64) -> ExitReason? {
        guard let slot = slots[workerID] else { return .protocolViolation("RESULT from a worker this pool does not know") }
        guard let job = slot.job, job.id == requestID else {
            if slot.failure == nil { slot.failure = .protocolViolation("RESULT for job \(requestID), which it is not running") }
            return .protocolViolation("RESULT for job \(requestID), which it is not running")
        }
        guard slot.output.count + chunk.output.count <= configuration.maximumOutputBytes else {
            if slot.failure == nil { slot.failure = .outputTooLarge(limit: configuration.maximumOutputBytes) }
            return .resourceCapExceeded("job output over \(configuration.maximumOutputBytes) bytes")
        }
        slot.output += chunk.output
        guard chunk.isLast else { return nil }
        let output = slot.output
        slot.output = []
        slot.job = nil
        job.slot = nil
        slot.jobsRun += 1
        // A worker that answered its first job has started: a run of failed starts before it
        // is over, and must no longer fail jobs that find every worker busy (see submit).
        // Only its first: while one worker serves on, replacements that keep failing still
        // back off further each time.
        if slot.jobsRun == 1 { consecutiveStartupFailures = 0 }
        jobStopped()
        // The worker's fate first, so metrics read by the caller on hearing of the job include it.
        if chunk.status != 0 && configuration.recycleAfterRejection {
            metrics.withLock { $0.workerRestarts += 1 }
            retire(slot, counted: false)
        } else if slot.jobsRun >= configuration.jobsPerWorker || isClosing {
            retire(slot, counted: !isClosing)
        } else {
            slot.state = .idle
            slot.drained = false
        }
        if chunk.status == 0 {
            finish(job, .success(JobOutput(bytes: output, workerID: workerID, latency: seconds(since: job.submitted))))
        } else {
            finish(job, .failure(.rejected(code: chunk.status, message: output)))
        }
        replenish()
        dispatch()
        finishClosingIfDone()
        return nil
    }

    /// The loop has read all the worker sent so far.
    func channelDrained(_ workerID: UInt64) {
        guard let slot = slots[workerID], !slot.drained else { return }
        slot.drained = true
        dispatch()
    }

    /// The worker closed its channel (or sent an empty datagram) and may still be running:
    /// it can take no more jobs, and the loop kills it if it does not exit. A worker that
    /// has served stops counting now, so its replacement starts now, as for a worker on its
    /// last job; its job, if it had one, fails when it exits. One that never served is left
    /// to its exit, which counts as a failed start and delays the next: a worker that closes
    /// its channel as soon as it starts must not make the pool spawn without pause.
    func channelLost(_ workerID: UInt64) {
        guard let slot = slots[workerID], slot.jobsRun > 0 || slot.job != nil else { return }
        switch slot.state {
        case .idle:
            slot.state = .retiring
            // Counted here: as retiring, its exit is not (a worker that crashed while idle
            // is seen first as its channel's hang-up).
            if !isClosing { metrics.withLock { $0.workerRestarts += 1 } }
        case .busy: slot.state = .lastJob
        case .starting, .lastJob, .retiring: return
        }
        replenish()
        dispatch()
    }

    /// The worker is gone (reaped). Its job, if it had one, fails.
    /// `peakResidentBytes`: the worker's peak resident bytes when the kernel's figure is
    /// known to be its own (nil otherwise; see `WorkerRecord.inheritedPeakBound`).
    func workerExited(_ workerID: UInt64, reason: ExitReason, peakResidentBytes: Int?) {
        guard let slot = slots.removeValue(forKey: workerID) else { return }
        if let job = slot.job {
            slot.job = nil
            job.slot = nil
            jobStopped()
            // Counted before the caller hears of the failure, so its metrics include it.
            if slot.failure != .cancelled && !isClosing { metrics.withLock { $0.workerRestarts += 1 } }
            finish(job, .failure(slot.failure ?? failure(from: reason, slot: slot, peakResidentBytes: peakResidentBytes)))
        } else if slot.state != .retiring && slot.jobsRun == 0 {
            // Died before it was ready, or ready but before its first job: a worker that
            // cannot start. Counted, and the next start is delayed, so it does not spin.
            startupFailed("worker \(workerID) \(reason)")
        } else if slot.state != .retiring && !isClosing {
            metrics.withLock { $0.workerRestarts += 1 }
        }
        if consecutiveStartupFailures > 0 && slot.jobsRun == 0 && slot.state != .retiring {
            let delay = min(0.01 * Double(1 << min(consecutiveStartupFailures, 7)), 1.0)
            respawnAt = system_clock_monotonic() + nanoseconds(delay)
            loop?.notePoolDeadline(respawnAt!)
        } else {
            if slot.jobsRun > 0 { consecutiveStartupFailures = 0 }
            replenish()
        }
        dispatch()
        finishClosingIfDone()
    }

    /// Acts on job deadlines, readiness deadlines, limit checks and a pending respawn;
    /// returns when to look again.
    func checkDeadlines(now: UInt64) -> UInt64 {
        var next = UInt64.max
        if let at = respawnAt {
            if now >= at {
                respawnAt = nil
                replenish()
                dispatch()
            } else {
                next = min(next, at)
            }
        }
        if let at = shutdownDeadline {
            if now >= at {
                shutdownDeadline = nil
                for slot in slots.values where slot.job != nil && slot.failure == nil {
                    slot.failure = .poolClosed
                    loop?.killForPool(slot.workerID, .stoppedBySupervisor)
                }
            } else {
                next = min(next, at)
            }
        }
        let limits = configuration.memoryLimit != nil || configuration.cpuTimeLimit != nil
        let limitCheckDue = limits && now >= (nextLimitCheck ?? 0)
        if limitCheckDue { nextLimitCheck = nil }
        for slot in slots.values where slot.failure == nil {
            if let deadline = slot.readyDeadline {
                if now >= deadline {
                    slot.readyDeadline = nil
                    let why = "not ready (HELLO and SANDBOX_STATUS) within \(configuration.worker.handshakeTimeout) s"
                    slot.failure = .killed(why)
                    loop?.killForPool(slot.workerID, .handshakeFailed(why))
                    continue
                }
                next = min(next, deadline)
            }
            guard let job = slot.job else { continue }
            if let deadline = job.deadline {
                if now >= deadline {
                    slot.failure = .timedOut(seconds: configuration.jobTimeout ?? 0)
                    loop?.killForPool(slot.workerID, .timedOut(seconds: configuration.jobTimeout ?? 0))
                    continue
                }
                next = min(next, deadline)
            }
            if limitCheckDue { checkLimits(slot) }
        }
        if limits && jobsRunning > 0 {
            if nextLimitCheck == nil { nextLimitCheck = now + nanoseconds(limitCheckInterval) }
            next = min(next, nextLimitCheck!)
        }
        return next
    }

    // MARK: Internals

    private func checkLimits(_ slot: PoolSlot) {
        if let limit = configuration.memoryLimit {
            guard let resident = slot.residentBytes() else {
                // Fail closed: a limit that cannot be checked ends the job.
                return killForLimit(slot, .killed("cannot read the worker's memory use"), "memory use unreadable")
            }
            if resident > limit {
                return killForLimit(slot, .outOfMemory(residentBytes: resident, limit: limit),
                                    "job over its memory limit: \(resident) bytes resident, limit \(limit)")
            }
        }
        if let limit = configuration.cpuTimeLimit {
            guard case .success(let now) = system_process_cpu_nanoseconds(slot.pid) else {
                return killForLimit(slot, .killed("cannot read the worker's CPU time"), "CPU time unreadable")
            }
            if now >= slot.cpuAtJobStart, Double(now - slot.cpuAtJobStart) / 1e9 > limit {
                killForLimit(slot, .cpuTimeExceeded(seconds: limit), "job over its CPU limit of \(limit) s")
            }
        }
    }

    private func killForLimit(_ slot: PoolSlot, _ failure: JobFailure, _ why: String) {
        slot.failure = failure
        loop?.killForPool(slot.workerID, .resourceCapExceeded(why))
    }

    /// Moves jobs waiting for room into the queue.
    private func refillQueue() {
        while queue.count < configuration.queueCapacity && !overflow.isEmpty { queue.append(overflow.removeFirst()) }
    }

    /// Hands queued jobs to idle workers, never more than `size` at once.
    private func dispatch() {
        guard let loop else { return }
        refillQueue()
        while !queue.isEmpty && jobsRunning < configuration.size {
            guard let slot = slots.values.first(where: { $0.state == .idle && $0.drained }) else { break }
            guard loop.canSendForPool(slot.workerID) else {
                // Killed or its channel closed, not reaped yet: it takes no job. Its state
                // is left for `channelLost` or `workerExited` to decide (a worker that never
                // served must still count as a failed start); a closed channel is never
                // drained again, so this keeps it out of the choice.
                slot.drained = false
                continue
            }
            let job = queue.removeFirst()
            refillQueue()
            publishQueueDepth()
            if job.isCancelled {
                finish(job, .failure(.cancelled))
                continue
            }
            let id = nextJobID
            nextJobID += 1
            job.id = id
            job.slot = slot
            slot.job = job
            slot.state = .busy
            slot.output = []
            jobsRunning += 1
            metrics.withLock { $0.jobsRunning = jobsRunning }
            let now = system_clock_monotonic()
            if let timeout = configuration.jobTimeout {
                job.deadline = now + nanoseconds(timeout)
                loop.notePoolDeadline(job.deadline!)
            }
            if configuration.memoryLimit != nil {
                slot.peakAtJobStart = slot.peakResidentBytes() ?? 0
            }
            if configuration.cpuTimeLimit != nil {
                switch system_process_cpu_nanoseconds(slot.pid) {
                case .success(let cpu): slot.cpuAtJobStart = cpu
                case .failure: killForLimit(slot, .killed("cannot read the worker's CPU time"), "CPU time unreadable")
                }
            }
            if configuration.memoryLimit != nil || configuration.cpuTimeLimit != nil {
                let check = now + nanoseconds(limitCheckInterval)
                if nextLimitCheck == nil || check < nextLimitCheck! { nextLimitCheck = check }
                loop.notePoolDeadline(nextLimitCheck!)
            }
            let message = Envelope(requestID: id, .job(JobMessage(input: job.input, fileDescriptorCount: job.fileDescriptorCount)))
            loop.sendForPool(slot.workerID, message, fds: job.takeDescriptors())
            if slot.jobsRun + 1 >= configuration.jobsPerWorker {
                // Its last job: start the replacement now, while this job runs.
                slot.state = .lastJob
                replenish()
            }
        }
    }

    /// Spawns workers until `size` are serving or starting. A worker on its last job,
    /// or retiring, does not count: its replacement starts now. But never more than
    /// `2 × size` processes, whatever their state: a retired worker that does not exit
    /// lingers until it is killed (2 s), and hostile inputs that each left one behind
    /// would otherwise pile up processes as fast as jobs came. A worker's exit makes room.
    private func replenish() {
        guard let loop, !closed, !isClosing, respawnAt == nil else { return }
        var serving = slots.values.filter { $0.state == .starting || $0.state == .idle || $0.state == .busy }.count
        while serving < configuration.size && slots.count < 2 * configuration.size {
            switch loop.spawnForPool(configuration.worker, policy, pool: self) {
            case .success(let (workerID, pid)):
                let slot = PoolSlot(workerID: workerID, pid: pid, watchMemory: configuration.memoryLimit != nil)
                slot.readyDeadline = system_clock_monotonic() + nanoseconds(configuration.worker.handshakeTimeout)
                loop.notePoolDeadline(slot.readyDeadline!)
                slots[workerID] = slot
                metrics.withLock { $0.workersSpawned += 1 }
                serving += 1
                if configuration.memoryLimit != nil && !slot.isWatchingMemory {
                    // Fail closed: without /proc/PID/statm the memory limit could not be enforced.
                    slot.failure = .killed("cannot watch the worker's memory use")
                    loop.killForPool(workerID, .spawnFailed("cannot open /proc/\(pid)/statm to enforce the memory limit"))
                }
            case .failure(.shuttingDown):
                close()
                return
            case .failure(let error):
                startupFailed("\(error)")
                let delay = min(0.01 * Double(1 << min(consecutiveStartupFailures, 7)), 1.0)
                respawnAt = system_clock_monotonic() + nanoseconds(delay)
                loop.notePoolDeadline(respawnAt!)
                return
            }
        }
    }

    /// A worker could not be started, or died before its first job.
    private func startupFailed(_ why: String) {
        consecutiveStartupFailures += 1
        lastStartupFailure = why
        if let starting {
            self.starting = nil
            closed = true
            for other in slots.values { loop?.killForPool(other.workerID, .stoppedBySupervisor) }
            loop?.abandonPool(self)
            starting(.failure(.workerUnavailable(why)))
            return
        }
        if consecutiveStartupFailures >= configuration.startupFailureLimit {
            let message = "\(consecutiveStartupFailures) workers in a row could not start; the last: \(why)"
            for job in queue.drain() + overflow.drain() { finish(job, .failure(.workerUnavailable(message))) }
            publishQueueDepth()
        }
    }

    /// Lets the worker go; `counted`: it ran its ``WorkerPoolConfiguration/jobsPerWorker`` jobs.
    private func retire(_ slot: PoolSlot, counted: Bool) {
        guard slot.state != .retiring else { return }
        slot.state = .retiring
        if counted { metrics.withLock { $0.workersRecycled += 1 } }
        loop?.retireForPool(slot.workerID)
    }

    private func finishStartingIfReady() {
        guard let starting, slots.values.filter({ $0.state == .idle }).count >= configuration.size else { return }
        self.starting = nil
        starting(.success(()))
    }

    private func finishClosingIfDone() {
        guard isClosing, slots.isEmpty else { return }
        closed = true
        loop?.abandonPool(self)
        let waiting = closing
        closing = []
        for completion in waiting { completion() }
    }

    private func finish(_ job: PendingJob, _ result: Result<JobOutput, JobFailure>) {
        guard let continuation = job.continuation else { return }
        job.continuation = nil
        job.dropDescriptors()
        let latency = seconds(since: job.submitted)
        metrics.withLock { metrics in
            switch result {
            case .success: metrics.jobsSucceeded += 1
            case .failure(let failure): metrics.jobsFailed[failure.kind, default: 0] += 1
            }
        }
        latencies.withLock { $0.add(latency) }
        continuation.resume(returning: result)
    }

    private func failure(from reason: ExitReason, slot: PoolSlot, peakResidentBytes: Int?) -> JobFailure {
        if let limit = configuration.memoryLimit, let peakResidentBytes, peakResidentBytes > limit, peakResidentBytes > slot.peakAtJobStart {
            // The peak rose during this job, past the limit, between two checks: that is what ended it.
            return .outOfMemory(residentBytes: peakResidentBytes, limit: limit)
        }
        switch reason {
        case .exited(let code): return .exited(code: code)
        case .signaled(SIGXCPU, _) where configuration.cpuTimeLimit != nil:
            return .cpuTimeExceeded(seconds: configuration.cpuTimeLimit!)
        case .signaled(let signal, _): return .crashed(signal: signal)
        case .seccompViolation(let call): return .seccompViolation(call)
        case .protocolViolation(let why): return .protocolViolation(why)
        case .timedOut(let seconds): return .timedOut(seconds: seconds)
        case .stoppedBySupervisor: return .poolClosed
        case .handshakeFailed(let why), .resourceCapExceeded(let why), .sandboxIncomplete(let why), .spawnFailed(let why):
            return .killed(why)
        }
    }

    private func jobStopped() {
        jobsRunning -= 1
        metrics.withLock { $0.jobsRunning = jobsRunning }
    }

    private func publishQueueDepth() {
        let depth = queue.count + overflow.count
        metrics.withLock { $0.queueDepth = depth }
    }

    private func seconds(since start: UInt64) -> Double {
        Double(system_clock_monotonic() &- start) / 1e9
    }
}

/// One pool worker, as the pool sees it. Loop-thread only.
final class PoolSlot {
    enum State { case starting, idle, busy, lastJob, retiring }
    let workerID: UInt64
    let pid: pid_t
    var state = State.starting
    var job: PendingJob?
    var jobsRun = 0
    var output: [UInt8] = []
    /// Why the pool killed it, which is what its job fails with.
    var failure: JobFailure?
    var readyDeadline: UInt64?
    /// False from a job's last RESULT until the loop has read everything the worker
    /// sent with it: a worker that misbehaves right after answering is caught before
    /// it is given another job.
    var drained = true
    var cpuAtJobStart: UInt64 = 0
    /// The peak resident bytes when its current job began.
    var peakAtJobStart = 0
    /// /proc/PID/statm and /proc/PID/status, kept open to be re-read (-1 when not
    /// watching memory). The pid is an unreaped child of ours, so it cannot name
    /// another process.
    private let statm: Int32
    private let status: Int32

    init(workerID: UInt64, pid: pid_t, watchMemory: Bool) {
        self.workerID = workerID
        self.pid = pid
        statm = watchMemory ? ((try? system_open("/proc/\(pid)/statm", O_RDONLY | O_CLOEXEC).get()) ?? -1) : -1
        status = watchMemory ? ((try? system_open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC).get()) ?? -1) : -1
    }

    deinit {
        if statm >= 0 { _ = system_close(statm) }
        if status >= 0 { _ = system_close(status) }
    }

    var isWatchingMemory: Bool { statm >= 0 && status >= 0 }

    /// Resident bytes now, from /proc/PID/statm ("size resident shared ...", in pages).
    func residentBytes() -> Int? {
        guard let text = Self.read(statm, capacity: 128) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The peak resident bytes so far, from the VmHWM line of /proc/PID/status.
    func peakResidentBytes() -> Int? {
        guard let text = Self.read(status, capacity: 4096),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap({ Int($0) }) else { return nil }
        return kib * 1024
    }

    private static func read(_ fd: Int32, capacity: Int) -> String? {
        guard fd >= 0 else { return nil }
        return withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 1) { bytes in
            guard case .success(let count) = system_pread(fd, bytes, offset: 0), count > 0 else { return nil }
            return String(decoding: bytes[..<count], as: UTF8.self)
        }
    }
}

/// A job from `run` until its continuation is resumed. Loop-thread only after submission.
final class PendingJob: @unchecked Sendable {
    var id: UInt64 = 0
    let input: [UInt8]
    let submitted: UInt64
    var continuation: CheckedContinuation<Result<JobOutput, JobFailure>, Never>?
    var isCancelled = false
    var deadline: UInt64?
    weak var slot: PoolSlot?
    private var fds: OwnedFileDescriptors

    init(input: [UInt8], fds: consuming OwnedFileDescriptors, submitted: UInt64) {
        self.input = input
        self.fds = fds
        self.submitted = submitted
    }

    /// The fds that travel with the job: those its list still owns (a slot the caller
    /// took out is sent as nothing, so the JOB must not count it).
    var fileDescriptorCount: Int { fds.ownedCount }

    func takeDescriptors() -> OwnedFileDescriptors {
        var taken = OwnedFileDescriptors()
        swap(&taken, &fds)
        return taken
    }

    /// Closes the job's fds now rather than when the caller lets go of the job.
    func dropDescriptors() { _ = takeDescriptors() }
}

/// A queue that removes from the front in O(1) (amortised).
struct FIFO<Element: AnyObject> {
    private var items: [Element] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func removeFirst() -> Element {
        let item = items[head]
        head += 1
        if head >= 64 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    /// Removes `item` wherever it is; false if absent.
    mutating func remove(_ item: Element) -> Bool {
        guard let index = items[head...].firstIndex(where: { $0 === item }) else { return false }
        items.remove(at: index)
        return true
    }

    mutating func drain() -> [Element] {
        defer { items = []; head = 0 }
        return Array(items[head...])
    }
}

/// The latencies of the most recent jobs.
struct LatencyWindow {
    private var samples: [Double] = []
    private var next = 0
    private let capacity = 4096

    mutating func add(_ latency: Double) {
        if samples.count < capacity { samples.append(latency) } else { samples[next] = latency }
        next = (next + 1) % capacity
    }

    func summary() -> LatencySummary {
        guard !samples.isEmpty else { return LatencySummary() }
        let sorted = samples.sorted()
        return LatencySummary(count: sorted.count, median: sorted[sorted.count / 2],
                              p99: sorted[min(sorted.count - 1, sorted.count * 99 / 100)], maximum: sorted.last!)
    }
}
