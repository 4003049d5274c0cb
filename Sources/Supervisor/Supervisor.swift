import CPrivsepShims
public import Logging
import PrivsepIPC
import Synchronization

/// The privileged half: spawns sandboxed workers and serves their requests
/// under each worker's policy.
///
/// A supervisor serves its workers from threads of its own (epoll loops; one
/// unless `servingThreads` says more), so it never occupies the cooperative thread
/// pool and one slow request never stalls the others. Each worker is served by one
/// serving thread for its whole life: the least loaded when it is spawned.
///
/// ```swift
/// let supervisor = try Supervisor()
/// var policy = Policy()
/// policy.allow(path: "/srv/input", .directory, [.read])
/// let worker = try await supervisor.spawn(WorkerConfiguration(executable: "/usr/local/bin/parser", policy: policy))
/// let reason = await worker.exit()
/// ```
public final class Supervisor: Sendable {
    let loops: [EventLoop]
    private let auditor: Auditor
    /// Where the search for the least loaded loop starts, so ties go to each loop in turn.
    private let nextLoop = Atomic<Int>(0)

    /// Starts the supervisor's serving threads.
    ///
    /// The process must leave its children to be reaped by their parent: with SIGCHLD
    /// ignored (SIG_IGN or SA_NOCLDWAIT) this throws, and nothing else in the process may
    /// reap the supervisor's workers (`waitpid(-1)`), or their exit status is lost.
    /// - Parameters:
    ///   - logger: receives decisions (grants at debug, denials at notice) and lifecycle events;
    ///     past a worker's audit budget (``WorkerCaps/auditRecordsPerSecond``) its decisions and
    ///     LOG lines are counted in an "AUDIT" warning instead. Its level is read here, once:
    ///     set it before, not after.
    ///   - auditLog: also receives them, as JSON lines or in memory.
    ///   - placement: where the serving threads and the workers run (see ``Placement``).
    ///     One that cannot be had here (a dedicated CPU on a one-CPU machine) is an error.
    ///   - servingThreads: how many threads serve workers (1...256). One is enough for
    ///     workers that seldom ask; with many busy workers, one per CPU lets requests be
    ///     served on every CPU at once (BENCHMARKS.md measures both).
    public init(logger: Logger = Logger(label: "privsep.supervisor"), auditLog: AuditLog? = nil,
                placement: Placement = .unmanaged, servingThreads: Int = 1) throws(SupervisorError) {
        guard (1...256).contains(servingThreads) else {
            throw .systemError("servingThreads must be 1...256, not \(servingThreads)")
        }
        reserveStandardStreams()
        // A worker's pid is safe to use (prlimit, a pidfd, its process group) only while it
        // is an unreaped child; and an exit the kernel reaped leaves waitid nothing to say.
        guard privsep_children_reaped_by_kernel() == 0 else {
            throw .systemError("SIGCHLD is ignored in this process (SIG_IGN or SA_NOCLDWAIT), so the kernel reaps "
                               + "workers as they exit: their exit status would be lost and their pids reusable; "
                               + "restore its default disposition (SIG_DFL) before creating a Supervisor")
        }
        // The loop threads start with this thread's CPUs and scheduling policy: they are the ones to divide.
        let plans: [PlacementPlan]
        if placement == .unmanaged {
            plans = Array(repeating: .unmanaged, count: servingThreads)
        } else {
            switch (system_sched_getaffinity(), system_sched_getscheduler()) {
            case (.success(let allowed), .success(let scheduler)):
                plans = try PlacementPlan.plans(placement, servingThreads: servingThreads, allowed: allowed, policy: scheduler.policy)
            case (.failure(let errno), _), (_, .failure(let errno)):
                throw .systemError("cannot read this thread's CPUs and scheduling policy for placement \(placement): \(errno)")
            }
        }
        guard let auditor = Auditor(logger: logger, log: auditLog) else {
            throw .systemError("cannot start the threads that write the audit log and the logger")
        }
        let workerIDs = WorkerIDSource()
        var loops: [EventLoop] = []
        for (index, plan) in plans.enumerated() {
            do {
                loops.append(try EventLoop(auditor: auditor, placement: plan, workerIDs: workerIDs, index: index))
            } catch {
                throw .systemError("cannot create an event loop: \(error)")
            }
        }
        // Every loop exists before any starts: a failure above leaves no thread behind.
        for (index, loop) in loops.enumerated() {
            do {
                try loop.start()
            } catch {
                Self.end(loops[..<index])
                throw .systemError("cannot start serving thread \(index + 1) of \(loops.count): \(error)")
            }
        }
        self.loops = loops
        self.auditor = auditor
        for loop in loops where loop.hasServingCPU {
            // On the loop thread, before anything is spawned; on failure every loop ends here.
            // A loop just started waits on nothing, so a supervisor made by a task on another
            // supervisor's serving thread may wait for it too.
            switch loop.call(fromAnyThread: true, { $0.moveOntoServingCPU() }) {
            case .success?:
                continue
            case .failure(let errno)?:
                Self.end(loops)
                throw .systemError("cannot give a serving thread its CPU: \(errno)")
            case nil:
                Self.end(loops)
                throw .shuttingDown
            }
        }
    }

    deinit {
        Self.end(loops)
    }

    /// Ends `loops` without waiting: their workers are killed at once.
    private static func end(_ loops: some Sequence<EventLoop>) {
        for loop in loops { loop.submit(.shutdown(grace: 0, {})) }
    }

    /// The loop with the fewest workers (ties: each in turn), with `places` reserved in
    /// its ``EventLoop/load`` for the workers about to go there, so that a caller choosing
    /// at the same moment sees them.
    func leastLoadedLoop(reserving places: Int) -> EventLoop {
        let start = nextLoop.wrappingAdd(1, ordering: .relaxed).oldValue
        var chosen = loops[start % loops.count]
        for offset in 1..<max(loops.count, 1) {
            let candidate = loops[(start + offset) % loops.count]
            if candidate.load.load(ordering: .relaxed) < chosen.load.load(ordering: .relaxed) { chosen = candidate }
        }
        chosen.load.add(places, ordering: .relaxed)
        return chosen
    }

    /// Spawns a worker and returns once it runs (its handshake still to come).
    /// Fails if the policy cannot be activated or the program cannot be started.
    public func spawn(_ configuration: WorkerConfiguration) async throws(SupervisorError) -> WorkerHandle {
        let policy = try activate(configuration)
        let loop = leastLoadedLoop(reserving: 1)
        let result: Result<WorkerHandle, SupervisorError> = await withCheckedContinuation { continuation in
            if !loop.submit(.spawn(configuration, policy, { continuation.resume(returning: $0) })) {
                loop.load.subtract(1, ordering: .relaxed)
                continuation.resume(returning: .failure(.shuttingDown))
            }
        }
        return try result.get()
    }

    /// The blocking form of ``spawn(_:)-swift.method``, for code that is not async.
    public func spawnBlocking(_ configuration: WorkerConfiguration) throws(SupervisorError) -> WorkerHandle {
        let policy = try activate(configuration)
        let loop = leastLoadedLoop(reserving: 1)
        guard let result = loop.call({ $0.spawn(configuration, policy) }) else {
            loop.load.subtract(1, ordering: .relaxed)
            throw .shuttingDown
        }
        return try result.get()
    }

    /// The live workers, by id. Each serving thread answers for its own workers in
    /// turn, so with several the list is not one instant's.
    public func workers() -> [WorkerInfo] {
        loops.flatMap { $0.call { $0.workerSnapshots() } ?? [] }.sorted { $0.id < $1.id }
    }

    /// How long ``shutdown(grace:)`` waits for the audit log and the logger to take what is
    /// left to write.
    public static let auditDrainSeconds = 5.0

    /// Stops every worker (SIGTERM, then SIGKILL after `grace` seconds), waits for
    /// them all to exit, and ends the serving threads. Spawning afterwards fails.
    /// Returns once the audit records and log lines made so far are written, or after
    /// ``auditDrainSeconds`` more if they cannot be (a stopped terminal).
    public func shutdown(grace: Double = 2) async {
        // Every loop is told at once, so their workers' grace periods run together.
        await withTaskGroup(of: Void.self) { group in
            for loop in loops {
                group.addTask {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        if !loop.submit(.shutdown(grace: grace, { continuation.resume() })) { continuation.resume() }
                    }
                }
            }
        }
        await auditor.drained(within: Self.auditDrainSeconds)
    }

    private func activate(_ configuration: WorkerConfiguration) throws(SupervisorError) -> ActivePolicy {
        if let problem = configuration.environmentProblem { throw .invalidConfiguration(problem) }
        // Intercept mode refuses, before anything runs, policies its lockdown cannot enforce as written.
        if configuration.intercept, let problem = configuration.policy.interceptProblem() { throw .invalidPolicy(problem) }
        do { return try ActivePolicy(configuration.policy) } catch { throw .invalidPolicy(error) }
    }
}

/// Why the supervisor could not do what was asked.
public enum SupervisorError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidPolicy(PolicyError)
    case spawnFailed(String)
    /// The worker's configuration cannot be spawned as written (an environment variable's name, say).
    case invalidConfiguration(String)
    case shuttingDown
    case systemError(String)

    public var description: String {
        switch self {
        case .invalidPolicy(let error): "invalid policy: \(error)"
        case .spawnFailed(let why): "spawn failed: \(why)"
        case .invalidConfiguration(let why): "invalid configuration: \(why)"
        case .shuttingDown: "the supervisor is shutting down"
        case .systemError(let why): why
        }
    }
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if they were closed), so none
/// of the supervisor's own descriptors (an epoll fd, a worker's channel) can take
/// one of those numbers and be handed to a worker as its stdin, stdout or stderr.
private func reserveStandardStreams() {
    for fd: Int32 in 0...2 where !isOpen(fd) {
        // open() returns the lowest free number, which is `fd` itself here.
        _ = openDevNull()
    }
}
