import Dispatch
import Glibc
public import PrivsepIPC
import Synchronization
import Worker

/// A running (or finished) worker, as the embedder sees it.
///
/// The serving thread that spawned the worker owns it; this handle asks that
/// thread to act and learns how the worker ended.
public final class WorkerHandle: Sendable, CustomStringConvertible {
    /// The supervisor's name for this worker (also sent in WELCOME).
    public let id: UInt64
    /// The pid at spawn. The supervisor itself tracks the worker by pidfd, so a
    /// reused pid never makes it signal the wrong process.
    public let pid: Int32
    public let name: String
    private let state = Mutex(State())
    /// The policy in force, kept here too so narrowing is checked even after the worker is gone.
    private let policy: Mutex<Policy>
    private weak let loop: EventLoop?

    private struct State: ~Copyable {
        var reason: ExitReason?
        var waiters: [CheckedContinuation<ExitReason, Never>] = []
        var semaphores: [DispatchSemaphore] = []
        var sandbox: SandboxStatus?
        var learned: [SyscallViolation] = []
        /// Each learned call's number, architecture and the groups that allow it.
        var learnedKeys: Set<String> = []
        /// Whether a thread serves its learning-mode listener.
        var learningServed = false
        /// Whether the supervisor was asked to stop it (``stop(grace:)``, a shutdown).
        var stopRequested = false
    }

    init(id: UInt64, pid: Int32, name: String, policy: Policy, loop: EventLoop) {
        self.policy = Mutex(policy)
        self.id = id
        self.pid = pid
        self.name = name
        self.loop = loop
    }

    public var description: String { "\(name)[\(pid)]" }

    /// How the worker ended, or nil while it runs.
    public var exitReason: ExitReason? { state.withLock { $0.reason } }

    /// The sandbox layers the worker last reported, if it has.
    public var sandboxStatus: SandboxStatus? { state.withLock { $0.sandbox } }

    /// Waits for the worker to end, without blocking a thread.
    public func exit() async -> ExitReason {
        await withCheckedContinuation { continuation in
            let reason: ExitReason? = state.withLock { state in
                if let reason = state.reason { return reason }
                state.waiters.append(continuation)
                return nil
            }
            if let reason { continuation.resume(returning: reason) }
        }
    }

    /// Blocks the calling thread until the worker ends. Never call this from a
    /// task on the cooperative pool (it has two threads here): use ``exit()``.
    public func waitForExit() -> ExitReason {
        let semaphore = DispatchSemaphore(value: 0)
        if let reason = (state.withLock { state -> ExitReason? in
            if let reason = state.reason { return reason }
            state.semaphores.append(semaphore)
            return nil
        }) {
            return reason
        }
        semaphore.wait()
        return state.withLock { $0.reason! }
    }

    /// Stops the worker: SIGTERM, then SIGKILL after `grace` seconds (or at an earlier stop's
    /// deadline, which a later one never puts off). A stopped worker is not restarted by
    /// ``Supervisor/run(_:restart:onStart:)``, even if it exits before the stop reaches it.
    public func stop(grace: Double = 2) {
        // Here, not only when the loop reads the command: the worker may be reaped first.
        noteStopRequested()
        loop?.submit(.stop(id: id, grace: grace))
    }

    /// Whether the worker was asked to stop: then ``Supervisor/run(_:restart:onStart:)``
    /// does not start it again, whatever its exit reason says (a worker that misbehaves in
    /// its grace period is killed for that, and must not earn a restart by it).
    var wasStopped: Bool { state.withLock { $0.stopRequested } }

    func noteStopRequested() { state.withLock { $0.stopRequested = true } }

    /// Replaces the worker's policy with `narrower`, which must grant nothing the
    /// current policy does not (a policy can be narrowed, never widened). In intercept
    /// mode its execute rules must be the ones the program started with (see
    /// ``Policy/executeRulesProblem(startedWith:)``).
    public func narrowPolicy(to narrower: Policy) throws(PolicyError) {
        try narrower.validate()
        guard policy.withLock({ $0.contains(narrower) }) else { throw .wouldWiden }
        if let loop {
            let active = try ActivePolicy(narrower)
            // nil twice over when the loop has ended: the worker is gone, nothing to narrow there.
            let result: PolicyError?? = loop.call { loop in loop.narrow(workerID: self.id, to: active) }
            if case .some(.some(let error)) = result { throw error }
        }
        policy.withLock { $0 = narrower }
    }

    func finish(_ reason: ExitReason) {
        let (waiters, semaphores) = state.withLock { state in
            state.reason = reason
            defer { state.waiters = []; state.semaphores = [] }
            return (state.waiters, state.semaphores)
        }
        for waiter in waiters { waiter.resume(returning: reason) }
        for semaphore in semaphores { semaphore.signal() }
    }

    /// In learning mode: each system call the worker's filter did not allow, in order, once
    /// for each set of groups that would allow it (openat read-only and openat creating are
    /// two: `rpath` allows the first, only `cpath` the second).
    public var learnedSyscalls: [SyscallViolation] { state.withLock { $0.learned } }

    /// Whether a thread still serves the worker's learning-mode listener (for the tests).
    var isLearningListenerServed: Bool {
        get { state.withLock { $0.learningServed } }
        set { state.withLock { $0.learningServed = newValue } }
    }

    /// The most distinct calls learned from one worker: a hostile one could make a
    /// notification of every 32-bit syscall number.
    public static let maximumLearnedSyscalls = 4096

    enum Learned { case recorded, known, full }

    /// Records `call` unless one alike is recorded or the record is full.
    func recordLearned(_ call: SyscallViolation) -> Learned {
        let key = "\(call.number) \(call.architecture) " + call.allowingGroups.map(\.name).joined(separator: ",")
        return state.withLock { state in
            guard !state.learnedKeys.contains(key) else { return .known }
            guard state.learned.count < Self.maximumLearnedSyscalls else { return .full }
            state.learnedKeys.insert(key)
            state.learned.append(call)
            return .recorded
        }
    }

    func recordSandbox(_ status: SandboxStatus) {
        state.withLock { $0.sandbox = status }
    }
}
