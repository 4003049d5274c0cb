public import Logging
import PrivsepIPC

/// The privileged half: spawns sandboxed workers and serves their requests
/// under each worker's policy.
///
/// One supervisor serves many workers from one thread of its own (an epoll
/// loop), so it never occupies the cooperative thread pool and one slow request
/// never stalls the others.
///
/// ```swift
/// let supervisor = try Supervisor()
/// var policy = Policy()
/// policy.allow(path: "/srv/input", .directory, [.read])
/// let worker = try await supervisor.spawn(WorkerConfiguration(executable: "/usr/local/bin/parser", policy: policy))
/// let reason = await worker.exit()
/// ```
public final class Supervisor: Sendable {
    let loop: EventLoop

    /// Starts the supervisor's loop thread.
    /// - Parameters:
    ///   - logger: receives every decision (grants at debug, denials at notice) and lifecycle events.
    ///   - auditLog: also receives every decision, as JSON lines or in memory.
    ///   - placement: where the serving thread and the workers run (see ``Placement``).
    ///     One that cannot be had here (a dedicated CPU on a one-CPU machine) is an error.
    public init(logger: Logger = Logger(label: "privsep.supervisor"), auditLog: AuditLog? = nil,
                placement: Placement = .unmanaged) throws(SupervisorError) {
        reserveStandardStreams()
        // The loop thread starts with this thread's CPUs and scheduling policy: they are the ones to divide.
        let plan: PlacementPlan
        if placement == .unmanaged {
            plan = .unmanaged
        } else {
            switch (system_sched_getaffinity(), system_sched_getscheduler()) {
            case (.success(let allowed), .success(let scheduler)):
                plan = try PlacementPlan(placement, allowed: allowed, policy: scheduler.policy)
            case (.failure(let errno), _), (_, .failure(let errno)):
                throw .systemError("cannot read this thread's CPUs and scheduling policy for placement \(placement): \(errno)")
            }
        }
        do {
            loop = try EventLoop(auditor: Auditor(logger: logger, log: auditLog), placement: plan)
        } catch {
            throw .systemError("cannot create the event loop: \(error)")
        }
        loop.start()
        if plan.servingCPU != nil {
            // On the loop thread, before anything is spawned; on failure the loop ends here.
            switch loop.call({ $0.moveOntoServingCPU() }) {
            case .success?:
                break
            case .failure(let errno)?:
                loop.submit(.shutdown(grace: 0, {}))
                throw .systemError("cannot give the serving thread its own CPU: \(errno)")
            case nil:
                throw .shuttingDown
            }
        }
    }

    deinit {
        loop.submit(.shutdown(grace: 0, {}))
    }

    /// Spawns a worker and returns once it runs (its handshake still to come).
    /// Fails if the policy cannot be activated or the program cannot be started.
    public func spawn(_ configuration: WorkerConfiguration) async throws(SupervisorError) -> WorkerHandle {
        let policy = try activate(configuration)
        let result: Result<WorkerHandle, SupervisorError> = await withCheckedContinuation { continuation in
            if !loop.submit(.spawn(configuration, policy, { continuation.resume(returning: $0) })) {
                continuation.resume(returning: .failure(.shuttingDown))
            }
        }
        return try result.get()
    }

    /// The blocking form of ``spawn(_:)-swift.method``, for code that is not async.
    public func spawnBlocking(_ configuration: WorkerConfiguration) throws(SupervisorError) -> WorkerHandle {
        let policy = try activate(configuration)
        let result: Result<WorkerHandle, SupervisorError>? = loop.call { $0.spawn(configuration, policy) }
        return try (result ?? .failure(.shuttingDown)).get()
    }

    /// The live workers.
    public func workers() -> [WorkerInfo] {
        loop.call { $0.workerSnapshots() } ?? []
    }

    /// Stops every worker (SIGTERM, then SIGKILL after `grace` seconds), waits for
    /// them all to exit, and ends the loop thread. Spawning afterwards fails.
    public func shutdown(grace: Double = 2) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if !loop.submit(.shutdown(grace: grace, { continuation.resume() })) { continuation.resume() }
        }
    }

    private func activate(_ configuration: WorkerConfiguration) throws(SupervisorError) -> ActivePolicy {
        // Intercept mode refuses, before anything runs, policies its lockdown cannot enforce as written.
        if configuration.intercept, let problem = configuration.policy.interceptProblem() { throw .invalidPolicy(problem) }
        do { return try ActivePolicy(configuration.policy) } catch { throw .invalidPolicy(error) }
    }
}

/// Why the supervisor could not do what was asked.
public enum SupervisorError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidPolicy(PolicyError)
    case spawnFailed(String)
    case shuttingDown
    case systemError(String)

    public var description: String {
        switch self {
        case .invalidPolicy(let error): "invalid policy: \(error)"
        case .spawnFailed(let why): "spawn failed: \(why)"
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
