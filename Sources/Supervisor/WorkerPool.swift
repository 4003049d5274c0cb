import Glibc
public import PrivsepIPC
import Synchronization

/// A pool of warm, locked-down workers that run untrusted jobs one at a time.
///
/// Parsing thousands of untrusted inputs, each in a sandboxed process, without
/// paying a process start per input:
///
/// ```swift
/// let pool = try await WorkerPool(supervisor: supervisor, configuration: .init(
///     worker: WorkerConfiguration(executable: "/usr/local/libexec/csv-worker", policy: Policy()),
///     size: 4, jobsPerWorker: 1, jobTimeout: 2, memoryLimit: 64 << 20))
/// let fd = try openInput(path)                        // the embedder's own authority
/// let output = try await pool.run(PoolJob(input: Array(path.utf8), fileDescriptors: OwnedFileDescriptors(fd)))
/// ```
///
/// The worker side is ``Worker/SupervisorConnection/serveJobs(_:)``. Each job
/// goes to an idle worker as one JOB message (input bytes and fds); the worker
/// answers with RESULT. A worker that crashes, hits its seccomp filter, breaks
/// the protocol, or goes over the job's time, memory or CPU limit is killed and
/// replaced, and only its job fails, with a typed ``JobFailure``. Workers are
/// recycled after ``WorkerPoolConfiguration/jobsPerWorker`` jobs and after every
/// failure; replacements start while the last job still runs, so a recycle does
/// not stall the queue.
///
/// All pool state lives on one of the supervisor's loop threads: `run` never blocks a
/// thread, and cancelling the task that awaits `run` cancels the job (killing
/// its worker if the job had started).
public final class WorkerPool: Sendable {
    private let core: PoolCore
    private let loop: EventLoop
    /// Kept alive as long as the pool: its loop serves the pool.
    private let supervisor: Supervisor

    /// Starts `configuration.size` workers and returns once every one has said
    /// HELLO (and reported its sandbox, when the worker configuration requires
    /// layers). Fails if a worker cannot be started or dies before it is ready, and
    /// before starting any if the configuration is one no pool can run (see
    /// ``WorkerPoolConfiguration/problem``; intercept mode; an invalid policy).
    public init(supervisor: Supervisor, configuration: WorkerPoolConfiguration) async throws(JobFailure) {
        if let problem = configuration.problem { throw .workerUnavailable(problem) }
        // An intercepted program does not speak the protocol: its helper closes the channel
        // at exec, so such a worker could never take a job, only start, leave and be killed.
        guard !configuration.worker.intercept else {
            throw .workerUnavailable("a pool's workers take their jobs over the channel, which an intercepted program does not have")
        }
        let policy: ActivePolicy
        do { policy = try ActivePolicy(configuration.worker.policy) } catch {
            throw .workerUnavailable("invalid policy: \(error)")
        }
        self.supervisor = supervisor
        // A pool lives on one serving thread, all its workers with it (under
        // Placement.colocated, on that thread's CPU). Its `size` places are reserved there
        // until its workers are spawned and count themselves, so that pools created at the
        // same moment spread out as one after another would.
        let size = configuration.size
        let loop = supervisor.leastLoadedLoop(reserving: size)
        self.loop = loop
        core = PoolCore(configuration: configuration, policy: policy)
        let core = self.core
        let started: Result<Void, JobFailure> = await withCheckedContinuation { continuation in
            let submitted = loop.submit(.run { loop in
                core.start(on: loop) { continuation.resume(returning: $0) }
                loop.load.subtract(size, ordering: .relaxed)
            })
            if !submitted {
                loop.load.subtract(size, ordering: .relaxed)
                continuation.resume(returning: .failure(.poolClosed))
            }
        }
        try started.get()
    }

    /// A pool dropped without ``shutdown(gracePeriod:)`` still retires its workers.
    deinit {
        let core = self.core
        loop.submit(.run { _ in core.shutdown(gracePeriod: nil) {} })
    }

    /// Runs `job` on a free worker and returns its output.
    ///
    /// Waits for room when the queue is full (or fails with
    /// ``JobFailure/queueFull`` if the configuration says so). Fails with the
    /// worker's own ``JobFailure/rejected(code:message:)`` when the worker
    /// refused the input, or with why the worker was lost.
    public func run(_ job: consuming PoolJob) async throws(JobFailure) -> JobOutput {
        guard job.input.count <= WireFormat.maximumJobBytes else {
            throw .inputTooLarge(bytes: job.input.count, limit: WireFormat.maximumJobBytes)
        }
        guard job.fileDescriptors.count <= WireFormat.maximumFileDescriptors else {
            throw .tooManyFileDescriptors(count: job.fileDescriptors.count, limit: WireFormat.maximumFileDescriptors)
        }
        // Swapped out rather than partially consumed: Swift 6.3 miscompiles the latter.
        var fds = OwnedFileDescriptors()
        swap(&fds, &job.fileDescriptors)
        let pending = PendingJob(input: job.input, fds: fds, submitted: system_clock_monotonic())
        let core = self.core, loop = self.loop
        let result: Result<JobOutput, JobFailure> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                pending.continuation = continuation
                // On the pool's own executor this submits now, between the loop's events.
                if !loop.perform({ _ in core.submit(pending) }) {
                    // The supervisor's loop has ended: nothing will ever serve this job.
                    pending.continuation = nil
                    pending.dropDescriptors()
                    continuation.resume(returning: .failure(.poolClosed))
                }
            }
        } onCancel: {
            // As the submission: a task cancelled before it called `run` on the pool's own
            // executor has its cancel seen first, so the job never reaches a worker.
            loop.perform { _ in core.cancel(pending) }
        }
        return try result.get()
    }

    /// Runs a job that is input bytes only.
    public func run(input: [UInt8]) async throws(JobFailure) -> JobOutput {
        try await run(PoolJob(input: input))
    }

    /// The thread that serves this pool, as a task executor.
    ///
    /// A pool's job crosses from the caller's thread to the serving thread and back; when
    /// the two are on different CPUs, each crossing wakes a thread on the other one. A
    /// task that submits jobs under `withTaskExecutorPreference(pool.executor)` runs on
    /// the serving thread (all but code isolated to the main actor or to an actor with an
    /// executor of its own), between the thread's events: `run` hands the job to a worker
    /// at once, and the RESULT resumes the caller without waking another thread, so a job
    /// costs two context switches (the worker's, then the serving thread's), as a brokered
    /// request does, where it costs four from the cooperative pool.
    ///
    /// What runs there delays every worker of the serving thread, and its deadlines and
    /// limit checks, while it runs: keep it to submitting jobs and handling their outputs,
    /// and never block in it (there, `WorkerHandle.waitForExit()` on a worker of the same
    /// thread would wait forever). `Supervisor.workers()`, `spawnBlocking` and
    /// `WorkerHandle.narrowPolicy` answer there at once when they reach only this serving
    /// thread, and trap when they would wait for another (two threads waiting on each other
    /// would never wake). Other threads' tasks may call `run` at the same time.
    public var executor: any TaskExecutor { loop }

    /// Counters for the embedder; cheap to read from any thread.
    public var metrics: PoolMetrics {
        var snapshot = core.metrics.withLock { $0 }
        snapshot.latency = core.latencies.withLock { $0.summary() }
        return snapshot
    }

    /// Fails every queued job with ``JobFailure/poolClosed``, lets running jobs
    /// finish, retires every worker and returns once all have exited. Later
    /// `run` calls fail with ``JobFailure/poolClosed``.
    ///
    /// - Parameter gracePeriod: seconds running jobs may go on; then their workers are
    ///   killed and the jobs fail with ``JobFailure/poolClosed``. Zero (or less) kills them
    ///   at once. Nil waits for them: a job whose worker never answers then holds this
    ///   until its ``WorkerPoolConfiguration/jobTimeout``, and forever without one. When
    ///   shutdowns overlap, the earliest deadline of them all holds.
    public func shutdown(gracePeriod: Double? = nil) async {
        let core = self.core
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if !loop.submit(.run { _ in core.shutdown(gracePeriod: gracePeriod) { continuation.resume() } }) { continuation.resume() }
        }
    }
}

/// How a ``WorkerPool`` runs its workers and jobs.
public struct WorkerPoolConfiguration: Sendable {
    /// The program every worker runs, its policy and its sandbox requirements.
    /// Its `wallClockTimeout` should be nil: a pool worker lives for many jobs;
    /// ``jobTimeout`` limits each job instead. Not in intercept mode: an intercepted program
    /// has no channel to take jobs over, and the pool refuses it.
    public var worker: WorkerConfiguration
    /// Workers kept serving, and the most jobs that run at once. Replacements for
    /// workers on their last job start early, so up to `2 × size` processes live. A
    /// retired worker that does not exit when its channel closes is killed 2 s later;
    /// until then it counts, and a replacement may wait for it.
    public var size: Int
    /// Jobs a worker runs before it is replaced. 1: no state carries from one
    /// untrusted input to the next.
    public var jobsPerWorker: Int
    /// Wall-clock seconds a job may run; the worker is killed after. nil: no limit.
    public var jobTimeout: Double?
    /// Resident memory a worker may reach while running a job, in bytes; checked
    /// every ``limitCheckInterval`` and against the peak the kernel reports when
    /// a worker dies. That peak starts at the supervisor's own (the kernel carries a
    /// parent's peak into its child, through exec), so it tells only for a worker that
    /// grew past the supervisor's peak; one that died between checks below it fails
    /// with its exit reason. Set ``WorkerConfiguration/resourceLimits`` `addressSpace` too for
    /// a hard ceiling the kernel enforces between checks.
    public var memoryLimit: Int?
    /// CPU seconds a job may use (user + system, all threads).
    public var cpuTimeLimit: Double?
    /// How often busy workers are checked against the memory and CPU limits (at least 1 ms).
    public var limitCheckInterval: Double = 0.01
    /// Jobs waiting for a worker; past it `run` waits, or fails (``rejectWhenFull``).
    public var queueCapacity: Int
    /// Fail with ``JobFailure/queueFull`` instead of waiting for room.
    public var rejectWhenFull = false
    /// Output bytes one job may return; a worker that sends more is killed.
    public var maximumOutputBytes = 1 << 20
    /// Replace the worker after a job it rejected (a ``JobRejection``) too, not
    /// only after crashes: bad input may have left it in a bad state.
    public var recycleAfterRejection = true
    /// Workers that die before their first job (or are not ready, HELLO and
    /// SANDBOX_STATUS, within the worker's `handshakeTimeout`), in a row, before
    /// the queued jobs fail with ``JobFailure/workerUnavailable(_:)`` instead of
    /// waiting. Each such death delays the next start (10 ms, doubling, at most 1 s).
    public var startupFailureLimit = 5

    public init(worker: WorkerConfiguration, size: Int, jobsPerWorker: Int = 1, jobTimeout: Double? = nil,
                memoryLimit: Int? = nil, cpuTimeLimit: Double? = nil, queueCapacity: Int? = nil) {
        self.worker = worker
        self.size = size
        self.jobsPerWorker = jobsPerWorker
        self.jobTimeout = jobTimeout
        self.memoryLimit = memoryLimit
        self.cpuTimeLimit = cpuTimeLimit
        let (fourTimes, overflow) = size.multipliedReportingOverflow(by: 4)
        self.queueCapacity = queueCapacity ?? max(16, overflow ? .max : fourTimes)
    }

    /// The most workers a pool keeps (each holds a process, two descriptors here, and
    /// a second process while its replacement starts).
    public static let maximumSize = 1 << 16

    /// Why no pool can run this configuration, or nil. Every number is checked, so a
    /// setting no one meant (a NaN interval, a negative timeout) fails at start rather
    /// than spinning the serving thread or failing jobs later.
    public var problem: String? {
        func positiveSeconds(_ value: Double?) -> Bool { value.map { $0 > 0 && $0.isFinite } ?? true }
        guard (1...Self.maximumSize).contains(size) else { return "size must be 1 to \(Self.maximumSize), not \(size)" }
        guard jobsPerWorker >= 1 else { return "jobsPerWorker must be at least 1, not \(jobsPerWorker)" }
        guard queueCapacity >= 1 else { return "queueCapacity must be at least 1, not \(queueCapacity)" }
        guard startupFailureLimit >= 1 else { return "startupFailureLimit must be at least 1, not \(startupFailureLimit)" }
        guard maximumOutputBytes >= 0 else { return "maximumOutputBytes must not be negative" }
        guard positiveSeconds(jobTimeout) else { return "jobTimeout must be a positive, finite number of seconds" }
        guard positiveSeconds(cpuTimeLimit) else { return "cpuTimeLimit must be a positive, finite number of seconds" }
        guard positiveSeconds(limitCheckInterval) else { return "limitCheckInterval must be a positive, finite number of seconds" }
        guard memoryLimit.map({ $0 > 0 }) ?? true else { return "memoryLimit must be a positive number of bytes" }
        return worker.environmentProblem
    }
}

/// One job: input bytes and the fds that go with them (files the embedder
/// opened for the worker, say). Inputs larger than one message travel as fds.
public struct PoolJob: ~Copyable {
    /// At most ``WireFormat/maximumJobBytes``.
    public var input: [UInt8]
    public var fileDescriptors: OwnedFileDescriptors

    public init(input: [UInt8] = [], fileDescriptors: consuming OwnedFileDescriptors = OwnedFileDescriptors()) {
        self.input = input
        self.fileDescriptors = fileDescriptors
    }
}

/// What a job returned.
public struct JobOutput: Sendable, Equatable {
    public var bytes: [UInt8]
    /// The worker that ran it.
    public var workerID: UInt64
    /// Seconds from `run` to the result, queueing included.
    public var latency: Double
}

/// Why a job failed. Every failure but ``rejected(code:message:)``,
/// ``queueFull``, ``inputTooLarge(bytes:limit:)``, ``tooManyFileDescriptors(count:limit:)``
/// and ``poolClosed`` cost the worker its life.
public enum JobFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The worker refused the input with its own code and explanation.
    case rejected(code: Int32, message: [UInt8])
    /// Over ``WorkerPoolConfiguration/jobTimeout``.
    case timedOut(seconds: Double)
    /// Over ``WorkerPoolConfiguration/memoryLimit``: the resident bytes seen.
    case outOfMemory(residentBytes: Int, limit: Int)
    /// Over ``WorkerPoolConfiguration/cpuTimeLimit``.
    case cpuTimeExceeded(seconds: Double)
    /// The worker died of a signal mid-job.
    case crashed(signal: Int32)
    /// The worker exited mid-job without a result.
    case exited(code: Int32)
    /// Its seccomp filter stopped a system call.
    case seccompViolation(SyscallViolation)
    /// It broke the protocol (a result for another job, say).
    case protocolViolation(String)
    /// It sent more than ``WorkerPoolConfiguration/maximumOutputBytes``.
    case outputTooLarge(limit: Int)
    /// The supervisor killed it for another reason (flooding, an incomplete sandbox...).
    case killed(String)
    /// The task awaiting the job was cancelled.
    case cancelled
    /// The queue was full and the pool is configured to reject.
    case queueFull
    /// More input bytes than one JOB message carries.
    case inputTooLarge(bytes: Int, limit: Int)
    /// More fds than one JOB message carries (counted with ``Kind/inputTooLarge``).
    case tooManyFileDescriptors(count: Int, limit: Int)
    /// Workers cannot be started, or keep dying before they are ready.
    case workerUnavailable(String)
    /// The pool or its supervisor is shutting down.
    case poolClosed

    /// The reason without its details, for counting.
    public var kind: Kind {
        switch self {
        case .rejected: .rejected
        case .timedOut: .timedOut
        case .outOfMemory: .outOfMemory
        case .cpuTimeExceeded: .cpuTimeExceeded
        case .crashed: .crashed
        case .exited: .exited
        case .seccompViolation: .seccompViolation
        case .protocolViolation: .protocolViolation
        case .outputTooLarge: .outputTooLarge
        case .killed: .killed
        case .cancelled: .cancelled
        case .queueFull: .queueFull
        case .inputTooLarge, .tooManyFileDescriptors: .inputTooLarge
        case .workerUnavailable: .workerUnavailable
        case .poolClosed: .poolClosed
        }
    }

    public enum Kind: String, Sendable, Hashable, CaseIterable, Comparable {
        case rejected, timedOut, outOfMemory, cpuTimeExceeded, crashed, exited, seccompViolation, protocolViolation
        case outputTooLarge, killed, cancelled, queueFull, inputTooLarge, workerUnavailable, poolClosed
        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
    }

    public var description: String {
        switch self {
        case .rejected(let code, let message): "rejected by the worker (code \(code)): \(printable(String(decoding: message, as: UTF8.self)))"
        case .timedOut(let seconds): "timed out after \(seconds) s"
        case .outOfMemory(let resident, let limit): "out of memory: \(resident) bytes resident, limit \(limit)"
        case .cpuTimeExceeded(let seconds): "used more than \(seconds) s of CPU"
        case .crashed(let signal): "crashed with \(signalName(signal))"
        case .exited(let code): "worker exited with status \(code) before answering"
        case .seccompViolation(let call): "seccomp violation: \(call)"
        case .protocolViolation(let why): "protocol violation: \(why)"
        case .outputTooLarge(let limit): "output over \(limit) bytes"
        case .killed(let why): "worker killed: \(why)"
        case .cancelled: "cancelled"
        case .queueFull: "queue full"
        case .inputTooLarge(let bytes, let limit): "input too large for one job message (\(bytes) > \(limit)); pass it as an fd"
        case .tooManyFileDescriptors(let count, let limit): "too many fds for one job message (\(count) > \(limit))"
        case .workerUnavailable(let why): "no worker available: \(why)"
        case .poolClosed: "the pool is closed"
        }
    }
}

/// A pool's counters.
public struct PoolMetrics: Sendable, Equatable {
    public var jobsSucceeded = 0
    public var jobsFailed: [JobFailure.Kind: Int] = [:]
    /// Jobs waiting for a worker (queued, or waiting for room in the queue).
    public var queueDepth = 0
    public var jobsRunning = 0
    public var workersSpawned = 0
    /// Workers retired after ``WorkerPoolConfiguration/jobsPerWorker`` jobs.
    public var workersRecycled = 0
    /// Workers replaced after a failure (a crash, a kill, a rejected job).
    public var workerRestarts = 0
    /// Latency (run → result, queueing included) of the most recent jobs, succeeded or failed.
    public var latency = LatencySummary()

    public var jobsFailedTotal: Int { jobsFailed.values.reduce(0, +) }
}

/// Latency percentiles over the most recent (at most 4096) jobs, in seconds.
public struct LatencySummary: Sendable, Equatable {
    public var count = 0
    public var median = 0.0
    public var p99 = 0.0
    public var maximum = 0.0
}
