import CPrivsepShims
import Glibc
import PrivsepIPC
import SystemPackage

/// A just-spawned worker: tracked by its pidfd, talking on `channel`.
struct SpawnedProcess: ~Copyable {
    var pid: pid_t
    var pidfd: OwnedFileDescriptor
    var channel: SeqpacketSocket
    /// Why the worker was spawned without its placement, if it was.
    var placementProblem: String?
}

/// Why a spawn failed.
struct SpawnError: Error, CustomStringConvertible {
    var step: String
    var errno: Errno
    var description: String { "\(step): \(errno)" }
}

/// Spawns a worker with posix_spawn: its end of a fresh SOCK_SEQPACKET pair at
/// fd 3 (not close-on-exec), every other fd above 2 closed, stdio as configured,
/// the explicit environment, its own session, an empty signal mask and default
/// dispositions; then opens a pidfd for it and applies its resource limits.
///
/// `placement` decides where the worker is born: it inherits the scheduling policy
/// and CPUs of this thread, which is switched to the worker's for the spawn and
/// then back to its own, so the worker runs nowhere else from its first instruction.
///
/// Must run on a thread that outlives the worker: a worker's PR_SET_PDEATHSIG
/// fires when the thread that spawned it exits, not the process.
func spawnWorker(_ configuration: WorkerConfiguration, placement: PlacementPlan = .unmanaged) throws(SpawnError) -> SpawnedProcess {
    // The child changes to its working directory before exec, so a relative path would be
    // looked up there, not where the embedder meant.
    guard configuration.executable.utf8.first == UInt8(ascii: "/") else {
        throw SpawnError(step: "executable \"\(configuration.executable)\" must be an absolute path", errno: .invalidArgument)
    }
    let pair: SeqpacketSocketPair
    do { pair = try SeqpacketSocket.pair() } catch { throw SpawnError(step: "socketpair", errno: error) }
    var supervisorEnd = pair.first
    // Sender credentials identify the HELLO's sender: SO_PEERCRED on a pair names
    // the supervisor itself on both ends.
    do { try supervisorEnd.enableSenderCredentials() } catch { throw SpawnError(step: "SO_PASSCRED", errno: error) }
    // Replies a worker leaves unread stay charged to this end, and so do their fds, to this
    // process's user (past its RLIMIT_NOFILE no send can carry an fd). With the default
    // 208 KiB a worker that never reads holds ~280 fds in flight for as long as it lives;
    // with this, ~80, after which replies are parked and the worker is killed once it has
    // left them unread for replyStallSeconds. It holds several largest messages.
    do { try supervisorEnd.setSendBufferSize(32 << 10) } catch { throw SpawnError(step: "SO_SNDBUF", errno: error) }
    // A serving thread must never make the last close of a socket the worker set to linger
    // (it would wait as long as the worker chose, serving no one): fds a worker sends are
    // installed and made to close at once, never dropped by the kernel on that thread.
    supervisorEnd.closePeerFileDescriptorsAtOnce()
    // Only a learning or intercept worker hands the supervisor an fd (its LISTENER): every
    // other worker's fds are refused by the kernel, from before the worker runs. Without
    // SO_PASSRIGHTS (before Linux 6.16) the serving loop's receive installs them all, to close
    // them at once with the refused message (see closePeerFileDescriptorsAtOnce).
    if !configuration.learning && !configuration.intercept {
        switch Result(catching: { () throws(Errno) in try supervisorEnd.refuseFileDescriptors() }) {
        case .success, .failure(.protocolNotAvailable): break
        case .failure(let errno): throw SpawnError(step: "SO_PASSRIGHTS", errno: errno)
        }
    }
    // Every source fd the child's dup2 actions read is moved to 10 or above first, so
    // no action's target (0...3) can clobber another action's source, whatever
    // numbers the supervisor's fds happen to have (the case where the child's
    // end already is fd 3 included).
    let childEnd = OwnedFileDescriptor(adoptingRawValue: try step("dup channel",
        system_fcntl(pair.second.unsafeRawValue, F_DUPFD_CLOEXEC, 10)))
    var stdio: [Int32?] = []
    var stdioOwned = OwnedFileDescriptors()
    for stream in [configuration.standardInput, configuration.standardOutput, configuration.standardError] {
        switch stream {
        case .inherit:
            stdio.append(nil)
        case .null:
            let null = OwnedFileDescriptor(adoptingRawValue: try step("open /dev/null", system_open("/dev/null", O_RDWR | O_CLOEXEC)))
            let high = try step("dup /dev/null", system_fcntl(null.unsafeRawValue, F_DUPFD_CLOEXEC, 10))
            stdioOwned.append(OwnedFileDescriptor(adoptingRawValue: high))
            stdio.append(high)
        case .descriptor(let shared):
            let high = try step("dup stdio fd", system_fcntl(shared.unsafeRawValue, F_DUPFD_CLOEXEC, 10))
            stdioOwned.append(OwnedFileDescriptor(adoptingRawValue: high))
            stdio.append(high)
        }
    }

    var actions = posix_spawn_file_actions_t()
    var attributes = posix_spawnattr_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawnattr_init(&attributes)
    defer {
        posix_spawn_file_actions_destroy(&actions)
        posix_spawnattr_destroy(&attributes)
    }
    for (target, source) in stdio.enumerated() {
        if let source { _ = try step("file actions", errnoResult(posix_spawn_file_actions_adddup2(&actions, source, Int32(target)))) }
    }
    let channelRaw = childEnd.unsafeRawValue
    // dup2 to a different number clears FD_CLOEXEC on fd 3: the one fd the worker inherits.
    _ = try step("file actions", errnoResult(posix_spawn_file_actions_adddup2(&actions, channelRaw, WireFormat.channelFileDescriptor)))
    _ = try step("file actions", errnoResult(privsep_spawn_addclosefrom(&actions, WireFormat.channelFileDescriptor + 1)))
    _ = try step("file actions", errnoResult(privsep_spawn_addchdir(&actions, configuration.workingDirectory)))

    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    _ = try step("spawn attributes", errnoResult(posix_spawnattr_setsigmask(&attributes, &emptyMask)))
    _ = try step("spawn attributes", errnoResult(posix_spawnattr_setsigdefault(&attributes, &allSignals)))
    let flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) | privsep_POSIX_SPAWN_SETSID
    _ = try step("spawn attributes", errnoResult(posix_spawnattr_setflags(&attributes, flags)))

    let argv = [configuration.argv0 ?? configuration.executable] + configuration.arguments
    let (pid, placementProblem) = try withSpawningThread(placedFor: placement) { () throws(SpawnError) -> pid_t in
        try step("posix_spawn \(configuration.executable)",
                 system_posix_spawn(configuration.executable, &actions, &attributes, argv, environment(for: configuration)))
    }
    _ = consume childEnd
    _ = consume stdioOwned

    // The child is ours and unreaped, so its pid cannot be reused before pidfd_open.
    let pidfd: OwnedFileDescriptor
    switch system_pidfd_open(pid) {
    case .success(let fd):
        pidfd = OwnedFileDescriptor(adoptingRawValue: fd)
    case .failure(let errno):
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        throw SpawnError(step: "pidfd_open", errno: errno)
    }
    do {
        try applyResourceLimits(configuration.resourceLimits, to: pid)
    } catch {
        _ = system_pidfd_send_signal(pidfd.unsafeRawValue, SIGKILL)
        _ = system_waitid_pidfd(pidfd.unsafeRawValue, nonBlocking: false)
        throw error
    }
    return SpawnedProcess(pid: pid, pidfd: pidfd, channel: supervisorEnd, placementProblem: placementProblem)
}

/// The value of one step of spawning, or the error naming that step.
private func step<T>(_ name: String, _ result: Result<T, Errno>) throws(SpawnError) -> T {
    switch result {
    case .success(let value): return value
    case .failure(let errno): throw SpawnError(step: name, errno: errno)
    }
}

/// Runs `spawn` with this thread switched to what `placement` gives workers (a
/// child starts with the scheduling policy and CPUs of the thread that spawns it;
/// glibc's posix_spawnattr refuses SCHED_BATCH and has no affinity attribute),
/// then switches it back to the serving thread's own, as the plan records them
/// (not as they were a moment ago, so a failed switch back is retried next time).
///
/// Placement is a scheduling choice, never worth a worker: when this thread cannot
/// be switched (a cpuset that shrank since the supervisor started), the worker is
/// spawned as it is and the problem is returned, as is a failure to switch back.
private func withSpawningThread<T>(placedFor placement: PlacementPlan,
                                   _ spawn: () throws(SpawnError) -> T) throws(SpawnError) -> (T, problem: String?) {
    var problems: [String] = []
    var switchedPolicy = false, movedCPUs = false
    if let servingPolicy = placement.servingPolicy {
        // SCHED_RESET_ON_FORK is kept (clearing it needs CAP_SYS_NICE); SCHED_BATCH survives it.
        let policy = privsep_SCHED_BATCH | (servingPolicy & privsep_SCHED_RESET_ON_FORK)
        switch system_sched_setscheduler(policy, sched_param(sched_priority: 0)) {
        case .success: switchedPolicy = true
        case .failure(let errno): problems.append("sched_setscheduler(SCHED_BATCH): \(errno)")
        }
    }
    // Colocated workers are born on the serving thread's own CPU: nothing to move.
    if let workerCPUs = placement.workerCPUs, placement.servingCPU.map({ CPUSet([$0]) }) != workerCPUs {
        switch system_sched_setaffinity(workerCPUs) {
        case .success: movedCPUs = true
        case .failure(let errno): problems.append("sched_setaffinity(worker CPUs): \(errno)")
        }
    }
    let spawned: Result<T, SpawnError>
    do { spawned = .success(try spawn()) } catch { spawned = .failure(error) }
    if movedCPUs, let cpu = placement.servingCPU, case .failure(let errno) = system_sched_setaffinity(CPUSet([cpu])) {
        problems.append("moving the serving thread back to its CPU: \(errno)")
    }
    // Priority 0: the only one SCHED_OTHER and SCHED_BATCH have.
    if switchedPolicy, let servingPolicy = placement.servingPolicy,
       case .failure(let errno) = system_sched_setscheduler(servingPolicy, sched_param(sched_priority: 0)) {
        problems.append("switching the serving thread back to its scheduling policy: \(errno)")
    }
    return (try spawned.get(), problems.isEmpty ? nil : problems.joined(separator: "; "))
}

/// The worker's whole environment.
func environment(for configuration: WorkerConfiguration) -> [String] {
    var variables: [String: String] = ["SWIFT_BACKTRACE": "enable=no"]
    for name in configuration.inheritedEnvironment {
        if let value = getenv(name) { variables[name] = String(cString: value) }
    }
    for (name, value) in configuration.environment { variables[name] = value }
    variables[WireFormat.channelEnvironmentVariable] = "\(WireFormat.channelFileDescriptor)"
    if configuration.learning { variables[WireFormat.learningEnvironmentVariable] = "1" } else { variables[WireFormat.learningEnvironmentVariable] = nil }
    return variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
}

/// Applies every configured limit; any failure is an error (fail closed).
func applyResourceLimits(_ limits: ResourceLimits, to pid: pid_t) throws(SpawnError) {
    let table: [(String, Int32, UInt64?)] = [
        ("RLIMIT_AS", Int32(RLIMIT_AS.rawValue), limits.addressSpace),
        ("RLIMIT_NOFILE", Int32(RLIMIT_NOFILE.rawValue), limits.openFiles),
        ("RLIMIT_CPU", Int32(RLIMIT_CPU.rawValue), limits.cpuSeconds),
        ("RLIMIT_FSIZE", Int32(RLIMIT_FSIZE.rawValue), limits.fileSize),
        ("RLIMIT_NPROC", Int32(__RLIMIT_NPROC.rawValue), limits.processes),
        ("RLIMIT_CORE", Int32(RLIMIT_CORE.rawValue), limits.coreSize),
    ]
    for (name, resource, value) in table {
        guard let value else { continue }
        if case .failure(let errno) = system_prlimit(pid, resource, value, value) {
            throw SpawnError(step: "prlimit \(name)", errno: errno)
        }
    }
}

private func errnoResult(_ rc: Int32) -> Result<Void, Errno> {
    rc == 0 ? .success(()) : .failure(Errno(rawValue: rc))
}
