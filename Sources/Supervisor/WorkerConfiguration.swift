public import PrivsepIPC

/// Everything the supervisor needs to start and serve one worker.
public struct WorkerConfiguration: Sendable {
    /// Absolute path of the program to run (a relative one fails the spawn: the worker
    /// changes to ``workingDirectory`` before exec).
    public var executable: String
    /// argv[1...]; argv[0] is ``argv0`` or the executable path.
    public var arguments: [String]
    public var argv0: String?
    /// The worker's whole environment: nothing is inherited unless listed in
    /// ``inheritedEnvironment``. `PRIVSEP_FD=3` is always set, and
    /// `SWIFT_BACKTRACE=enable=no` unless given here.
    public var environment: [String: String]
    /// Names of the supervisor's environment variables to pass through.
    public var inheritedEnvironment: [String]
    /// Working directory of the worker; "/" by default.
    public var workingDirectory: String
    public var standardInput: StandardStream
    public var standardOutput: StandardStream
    public var standardError: StandardStream
    public var resourceLimits: ResourceLimits
    /// What the worker may ask for.
    public var policy: Policy
    /// HELLO must arrive within this many seconds of the spawn.
    public var handshakeTimeout: Double
    /// The worker is killed after this many seconds; nil for no limit.
    public var wallClockTimeout: Double?
    /// Sandbox layers the worker must report active (SANDBOX_STATUS) before its
    /// first request; empty to require none. Those the kernel shows in /proc
    /// (``SandboxLayers/visibleToTheKernel``: no_new_privs, seccomp, user and network
    /// namespaces) are checked there on every thread of the worker at its first report, and a
    /// worker that reported one not in force is killed; Landlock and rlimits are its word.
    public var requiredLayers: SandboxLayers
    public var caps: WorkerCaps
    /// Learning mode: the worker's filter sends every call it does not allow to the
    /// supervisor, which records it (``WorkerHandle/learnedSyscalls``) and lets it run.
    /// For writing a policy on trusted input; never for production.
    public var learning: Bool
    /// Intercept mode: `executable` is the `privsep-intercept` helper, which hands the
    /// supervisor a seccomp listener and then execs an unmodified program whose file and
    /// socket calls the supervisor serves under ``policy``. See
    /// ``WorkerConfiguration/intercepting(program:arguments:argv0:policy:helper:identity:)``.
    public var intercept: Bool
    /// Intercept mode: the identity (uid, gid) the program runs as, if not the supervisor's.
    /// The supervisor makes, connects and binds the program's sockets with these effective
    /// ids. Set by ``WorkerConfiguration/intercepting(program:arguments:argv0:policy:helper:identity:)``.
    public var interceptIdentity: (uid: UInt32, gid: UInt32)?
    /// A name for logs.
    public var name: String

    public init(executable: String, arguments: [String] = [], policy: Policy = Policy(), name: String? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.argv0 = nil
        self.environment = [:]
        self.inheritedEnvironment = []
        self.workingDirectory = "/"
        self.standardInput = .null
        self.standardOutput = .inherit
        self.standardError = .inherit
        self.resourceLimits = ResourceLimits()
        self.policy = policy
        self.handshakeTimeout = 5
        self.wallClockTimeout = nil
        self.requiredLayers = []
        self.caps = WorkerCaps()
        self.learning = false
        self.intercept = false
        self.interceptIdentity = nil
        self.name = name ?? String(executable.split(separator: "/").last ?? "worker")
    }
}

/// Where a worker's standard stream goes.
public enum StandardStream: Sendable {
    /// The supervisor's own stream.
    case inherit
    /// /dev/null.
    case null
    /// A descriptor the caller provides (duplicated into the child).
    case descriptor(SharedFileDescriptor)
}

/// A descriptor shared by reference, for configuration values that are copied
/// around; closed once, when the last reference goes.
public final class SharedFileDescriptor: Sendable {
    private let descriptor: OwnedFileDescriptor
    public init(_ descriptor: consuming OwnedFileDescriptor) { self.descriptor = descriptor }
    /// The raw number, owned by this object.
    public var unsafeRawValue: Int32 { descriptor.unsafeRawValue }
}

/// Resource limits applied to the worker (with prlimit) before it is let go.
/// nil leaves a limit as inherited. The core size is 0 unless set.
public struct ResourceLimits: Sendable, Equatable {
    /// RLIMIT_AS, bytes.
    public var addressSpace: UInt64?
    /// RLIMIT_NOFILE.
    public var openFiles: UInt64?
    /// RLIMIT_CPU, seconds.
    public var cpuSeconds: UInt64?
    /// RLIMIT_FSIZE, bytes.
    public var fileSize: UInt64?
    /// RLIMIT_NPROC. Counted per user: it limits every process of the worker's uid. The
    /// kernel does not enforce it on root or on a process with CAP_SYS_ADMIN or
    /// CAP_SYS_RESOURCE: it binds a worker that has dropped its identity.
    public var processes: UInt64?
    /// RLIMIT_CORE, bytes: 0 by default, so a crashing worker leaves no core with its secrets.
    public var coreSize: UInt64? = 0

    public init(addressSpace: UInt64? = nil, openFiles: UInt64? = nil, cpuSeconds: UInt64? = nil,
                fileSize: UInt64? = nil, processes: UInt64? = nil, coreSize: UInt64? = 0) {
        self.addressSpace = addressSpace
        self.openFiles = openFiles
        self.cpuSeconds = cpuSeconds
        self.fileSize = fileSize
        self.processes = processes
        self.coreSize = coreSize
    }
}

extension WorkerConfiguration {
    /// Why the environment cannot be given to a worker as written, or nil: a name with '='
    /// would be split there by the worker's libc ("A=B" set to "x" is A set to "B=x").
    var environmentProblem: String? {
        guard let bad = environment.keys.first(where: { !isEnvironmentName($0) })
            ?? inheritedEnvironment.first(where: { !isEnvironmentName($0) }) else { return nil }
        return "environment variable name \"\(printable(bad))\" is empty or contains '=' or NUL"
    }
}

/// Per-worker caps that keep a hostile worker from exhausting the supervisor.
public struct WorkerCaps: Sendable, Equatable {
    /// Requests being served at once (a CONNECT in progress counts until it completes).
    /// At the cap the supervisor stops reading the worker's requests until one finishes.
    public var requestsInFlight = 64
    /// fds handed out over the worker's lifetime; past it requests fail with EMFILE.
    public var fileDescriptorsHandedOut = 1_000_000
    /// Sustained messages per second, and the burst allowed above it. Above the
    /// rate the supervisor stops reading (back-pressure); a worker held back for
    /// ``floodKillSeconds`` in a row is killed.
    public var messagesPerSecond = 50_000
    public var messageBurst = 5_000
    public var floodKillSeconds = 5.0
    /// A worker that leaves a reply unread this long (its queue full) is killed.
    public var replyStallSeconds = 10.0
    /// A CONNECT still in progress after this long fails with ETIMEDOUT.
    public var connectTimeoutSeconds = 30.0
    /// Audit records of the worker's decisions (granted and denied, brokered or intercepted)
    /// and of its LOG lines, per second, and the burst allowed above it. Past them records
    /// are counted, not written, and an "AUDIT" record says how many were left out (at
    /// most one a second), so that a worker looping on refused calls cannot fill the log's
    /// disk. The requests themselves are decided as ever. 0 writes every record; a
    /// learning worker's records are never left out (what it learns is read from them).
    /// The budget is each worker's: a pool's fresh workers each start with a full burst.
    public var auditRecordsPerSecond = 1_000
    public var auditRecordBurst = 10_000
    /// At most this many messages are read from the worker each time its serving thread
    /// turns to it (one when other workers' channels are ready too, unless it is a pool
    /// worker), so that one busy worker cannot starve the others. Internal: tests lower it
    /// to end a turn at a chosen message.
    var messagesPerTurn = 32

    public init() {}
}
