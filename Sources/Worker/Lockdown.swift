import CPrivsepShims
import CPrivsepTrap
import CSeccomp
import Glibc
public import PrivsepIPC
public import SystemPackage

/// Locks the calling process down, in one call that fails closed.
///
/// ```swift
/// let supervisor = try SupervisorConnection.connect()
/// try Lockdown.brokered().apply(reportingTo: supervisor)
/// // From here on: no open, no socket, no exec. Files come from the supervisor.
/// let input = try supervisor.open("/srv/input.csv", .readOnly)
/// ```
///
/// The order is fixed: identity (if set), namespaces (if asked), resource limits,
/// no_new_privs, Landlock, then the seccomp filter, loaded with TSYNC so it binds every
/// thread. Each layer that was asked for and cannot be applied throws; nothing
/// is skipped with a warning. Finally the worker reports to the supervisor
/// which layers are in force (SANDBOX_STATUS).
public struct Lockdown: Sendable {
    /// What happens to a system call no group allows.
    public enum Violation: Sendable, Equatable {
        /// SIGSYS: the worker reports the call to the supervisor (VIOLATION) and exits.
        /// The supervisor names the call in the exit reason. The default.
        ///
        /// The report and the exit are the worker's own code (a signal handler): a worker
        /// whose code has been taken over can replace or rewrite the handler, and then go on
        /// after a refused call (which stays refused). Where the first refused call must end
        /// the worker whatever it runs, use ``killProcess``.
        case reportAndExit
        /// The kernel kills the process at once (SECCOMP_RET_KILL_PROCESS); the
        /// supervisor learns only that seccomp killed it.
        case killProcess
        /// The call fails with this errno (1 to 4095; others fail the lockdown) and the
        /// worker carries on.
        case fail(Errno)
        /// The call is allowed and logged by the kernel (SECCOMP_RET_LOG): for learning, never for production.
        case allowAndLog
        /// The call is sent to the supervisor (seccomp user notification), which
        /// records it and lets it run: learning mode, never for production. Chosen
        /// automatically when the supervisor set `PRIVSEP_LEARN=1` (`privsep learn`).
        case learn
    }

    /// Filesystem access under Landlock.
    public enum FilesystemAccess: Sendable, Equatable {
        /// No path can be opened at all (fds already held, and those the broker sends, still work).
        case none
        /// Only these paths (and what lies beneath them) can be read.
        case readOnly([String])
    }

    /// Syscall groups allowed on top of ``SyscallGroup/baseline``.
    public var groups: Set<SyscallGroup>
    public var onViolation: Violation
    /// Landlock, if wanted; nil to not apply it.
    public var landlock: FilesystemAccess?
    /// Whether Landlock scopes signals and abstract unix sockets to the sandbox (ABI 6+), with
    /// or without ``landlock``'s filesystem rules.
    public enum Scoping: Sendable, Equatable {
        case off
        /// When the kernel's ABI has it (SANDBOX_STATUS reports it as a layer of its own),
        /// and required when a granted group needs it (``SyscallGroup/needingScopes``).
        case ifAvailable
        /// An error on a kernel without it.
        case required
    }

    /// Landlock scoping of signals and abstract unix sockets.
    public var landlockScopes: Scoping
    /// Enter a new user and network namespace first (no network interface but a down loopback).
    public var newNamespaces: Bool
    /// Resource limits to set (soft = hard) before the filter, e.g. RLIMIT_NPROC = 0.
    public var resourceLimits: [(resource: Int32, limit: UInt64)]
    /// Become this user and group (supplementary groups dropped) before the filter.
    /// A worker spawned by a root supervisor is root until it does: set this so a
    /// compromised worker holds no capability and cannot act on other users' processes.
    public var identity: (uid: UInt32, gid: UInt32)?

    public init(groups: Set<SyscallGroup> = [], onViolation: Violation = .reportAndExit, landlock: FilesystemAccess? = nil,
                landlockScopes: Scoping = .ifAvailable, newNamespaces: Bool = false, resourceLimits: [(resource: Int32, limit: UInt64)] = []) {
        self.groups = groups
        self.onViolation = onViolation
        self.landlock = landlock
        self.landlockScopes = landlockScopes
        self.newNamespaces = newNamespaces
        self.resourceLimits = resourceLimits
        self.identity = nil
    }

    /// The profile for a brokered worker: the baseline and nothing else. No
    /// open, openat, socket, connect or execve: everything comes through the supervisor.
    /// Landlock denies every path as a second wall. A worker running as root (spawned by a
    /// root supervisor) becomes `nobody` first (``nobodyIfRoot``): it needs no privilege of
    /// its own, and seccomp and Landlock should not be all that stands between a hijacked
    /// worker and root. Set ``identity`` to nil to keep root, or to another user.
    public static func brokered(onViolation: Violation = .reportAndExit) -> Lockdown {
        var lockdown = Lockdown(groups: [], onViolation: onViolation, landlock: Lockdown.FilesystemAccess.none)
        lockdown.identity = nobodyIfRoot
        return lockdown
    }

    /// `nobody` (65534:65534) if this process runs as root, else nil: an ``identity`` that gives
    /// up root in a worker a root supervisor spawned, and keeps a non-root worker's user.
    public static var nobodyIfRoot: (uid: UInt32, gid: UInt32)? {
        system_getuid() == 0 ? (65534, 65534) : nil
    }

    /// Applies every layer, then reports them to `supervisor` (if given).
    /// Returns what is in force. Call it before starting threads: Landlock binds only
    /// the calling thread, so a multi-threaded caller that asks for Landlock rules or needs
    /// scoping (``Scoping/required``, or a group of ``SyscallGroup/needingScopes``) is
    /// refused, and one that wants scoping only where available gets none (the status
    /// returned and reported leaves `landlockScopes` out).
    @discardableResult
    public func apply(reportingTo supervisor: SupervisorConnection? = nil) throws(WorkerError) -> SandboxStatus {
        // Checked before any layer is applied, so a caller that goes on after the error is
        // not left half locked down. The filter's errno is 16 bits and 0 means success:
        // .fail(0), or a number past 4095 that its low bits would make 0 or a value the
        // kernel reads as a pointer, would let every refused call "succeed". Fail closed.
        if case .fail(let errno) = onViolation, !(1...4095).contains(errno.rawValue) {
            throw .lockdownFailed("Violation.fail(\(errno.rawValue)): the errno must be 1 to 4095")
        }
        var requested: SandboxLayers = [.noNewPrivileges, .seccomp]
        var active: SandboxLayers = []
        if newNamespaces { requested.formUnion([.userNamespace, .networkNamespace]) }
        if !resourceLimits.isEmpty { requested.insert(.resourceLimits) }
        if landlock != nil { requested.insert(.landlock) }

        if let identity {
            guard threadCount() == 1 else { throw .lockdownFailed("changing identity needs a single-threaded process") }
            try dropIdentity(to: identity, supervisorProcessID: supervisor?.supervisorProcessID)
        }

        if newNamespaces {
            // CLONE_NEWUSER | CLONE_NEWNET
            guard privsep_unshare(0x1000_0000 | 0x4000_0000) == 0 else {
                throw .lockdownFailed("unshare(CLONE_NEWUSER | CLONE_NEWNET): \(currentErrno())")
            }
            active.formUnion([.userNamespace, .networkNamespace])
        }
        for (resource, limit) in resourceLimits {
            guard privsep_setrlimit(resource, limit, limit) == 0 else {
                throw .lockdownFailed("setrlimit(\(resource), \(limit)): \(currentErrno())")
            }
        }
        if !resourceLimits.isEmpty { active.insert(.resourceLimits) }

        guard case .success = system_prctl(privsep_PR_SET_NO_NEW_PRIVS, 1),
              case .success(1) = system_prctl(privsep_PR_GET_NO_NEW_PRIVS, 0) else {
            throw .lockdownFailed("no_new_privs could not be set")
        }
        active.insert(.noNewPrivileges)

        // kill and F_SETOWN can signal any process of the worker's user, the supervisor (whose
        // pid getppid gives away) included, and a unix socket can reach any abstract one: only
        // Landlock's scoping stops those, so a group that grants one of them needs it.
        let scopesRequired = landlockScopes == .required
            || (landlockScopes == .ifAvailable && !groups.isDisjoint(with: SyscallGroup.needingScopes))
        if scopesRequired { requested.insert(.landlockScopes) }
        var landlockABI: UInt32 = 0
        // A ruleset binds only the calling thread, so a process with threads cannot have one:
        // scoping that is only wanted where available is then left out.
        let singleThreaded = threadCount() == 1
        if landlock != nil || scopesRequired || (landlockScopes != .off && singleThreaded) {
            guard singleThreaded else {
                throw .lockdownFailed("Landlock binds only the calling thread; apply the lockdown before starting threads")
            }
            let applied = try applyLandlock(landlock, scopes: landlockScopes != .off, scopesRequired: scopesRequired)
            landlockABI = applied.abi
            if landlock != nil { active.insert(.landlock) }
            if applied.scoped { active.insert(.landlockScopes) }
        }

        let onViolation = WorkerEnvironment.learningRequested ? Violation.learn : self.onViolation
        if onViolation == .learn && supervisor == nil {
            throw .lockdownFailed("learning mode needs the supervisor connection to send it the seccomp listener")
        }
        if onViolation == .reportAndExit, let supervisor {
            guard privsep_install_violation_reporter(supervisor.unsafeChannelFileDescriptor) == 0 else {
                throw .lockdownFailed("SIGSYS handler: \(currentErrno())")
            }
        }
        let listener = try loadSeccompFilter(onViolation)
        active.insert(.seccomp)
        if let listener, let supervisor {
            try supervisor.sendListener(listener)
        }

        let status = SandboxStatus(requested: requested, active: active, landlockABI: landlockABI)
        try supervisor?.reportSandbox(status)
        return status
    }

    // MARK: seccomp

    /// Loads the filter; in learning mode returns its user-notification listener.
    private func loadSeccompFilter(_ onViolation: Violation) throws(WorkerError) -> OwnedFileDescriptor? {
        let defaultAction: UInt32 = switch onViolation {
        case .reportAndExit: privsep_SCMP_ACT_TRAP
        case .killProcess: privsep_SCMP_ACT_KILL_PROCESS
        case .fail(let errno): privsep_scmp_act_errno(UInt16(truncatingIfNeeded: errno.rawValue))
        case .allowAndLog: privsep_SCMP_ACT_LOG
        case .learn: privsep_SCMP_ACT_NOTIFY
        }
        guard let filter = seccomp_init(defaultAction) else { throw .lockdownFailed("seccomp_init failed") }
        defer { seccomp_release(filter) }
        // Other architectures (i386 via int 0x80, x32 via the syscall bit) are killed outright.
        try check(seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, privsep_SCMP_ACT_KILL_PROCESS), "bad-arch action")
        try check(seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1), "TSYNC")
        try check(seccomp_attr_set(filter, SCMP_FLTATR_CTL_NNP, 1), "no_new_privs")
        // A binary tree of syscall numbers rather than a linear chain: every syscall the
        // worker makes runs this filter.
        try check(seccomp_attr_set(filter, SCMP_FLTATR_CTL_OPTIMIZE, 2), "binary-tree optimization")

        let allGroups = [SyscallGroup.baseline] + groups.sorted { $0.name < $1.name }
        var unconditional: Set<String> = []
        for group in allGroups { unconditional.formUnion(group.syscalls) }
        for name in unconditional.sorted() {
            let number = seccomp_syscall_resolve_name(name)
            guard number != __NR_SCMP_ERROR else { continue } // not a syscall on this architecture
            try check(privsep_seccomp_rule_add_always(filter, privsep_SCMP_ACT_ALLOW, number), "allow \(name)")
        }
        var conditional: Set<ConditionalRule> = []
        for group in allGroups { conditional.formUnion(group.conditional.filter { !unconditional.contains($0.syscall) }) }
        // A stable order (libseccomp builds the same filter every time), by a cheap key.
        let ordered = conditional.sorted { a, b in
            if a.syscall != b.syscall { return a.syscall < b.syscall }
            let x = a.comparisons.map { [UInt64($0.argument), $0.mask, $0.value] }.joined()
            let y = b.comparisons.map { [UInt64($0.argument), $0.mask, $0.value] }.joined()
            return x.lexicographicallyPrecedes(y)
        }
        for rule in ordered {
            let number = seccomp_syscall_resolve_name(rule.syscall)
            guard number != __NR_SCMP_ERROR else { continue }
            let first = rule.comparisons[0]
            let rc = if rule.comparisons.count == 2 {
                privsep_seccomp_rule_add_masked_eq2(filter, privsep_SCMP_ACT_ALLOW, number, first.argument, first.mask, first.value,
                                                    rule.comparisons[1].argument, rule.comparisons[1].mask, rule.comparisons[1].value)
            } else {
                privsep_seccomp_rule_add_masked_eq(filter, privsep_SCMP_ACT_ALLOW, number, first.argument, first.mask, first.value)
            }
            try check(rc, "allow \(rule.syscall) when \(rule.comparisons)")
        }
        // clone3 passes its flags in memory, where a filter cannot look: ENOSYS makes
        // glibc fall back to clone, whose flags the rules above do check.
        let clone3 = seccomp_syscall_resolve_name("clone3")
        // (libseccomp refuses a rule whose action is the default's: .fail(ENOSYS) has it already.)
        if clone3 != __NR_SCMP_ERROR && defaultAction != privsep_scmp_act_errno(UInt16(ENOSYS)) {
            try check(privsep_seccomp_rule_add_always(filter, privsep_scmp_act_errno(UInt16(ENOSYS)), clone3), "clone3 ENOSYS")
        }
        try check(seccomp_load(filter), "seccomp_load")
        guard onViolation == .learn else { return nil }
        let listener = seccomp_notify_fd(filter)
        guard listener >= 0 else { throw .lockdownFailed("seccomp_notify_fd: \(Errno(rawValue: -listener))") }
        return OwnedFileDescriptor(adoptingRawValue: listener)
    }

    // MARK: Landlock

    /// Applies a ruleset for `access` (none: scoping alone), scoping signals and abstract
    /// unix sockets when `scopes` and the ABI allow. Returns the ABI in force (0 if no ruleset
    /// was applied: scoping alone was wanted, not required, and the kernel lacks it).
    private func applyLandlock(_ access: FilesystemAccess?, scopes: Bool,
                               scopesRequired: Bool) throws(WorkerError) -> (abi: UInt32, scoped: Bool) {
        let abi = privsep_landlock_create_ruleset(nil, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */)
        if scopesRequired && abi < 6 {
            throw .lockdownFailed(abi < 1 ? "Landlock is not available (\(currentErrno())) to scope signals and abstract unix sockets"
                                  : "Landlock ABI \(abi) cannot scope signals and abstract unix sockets (needs ABI 6)")
        }
        if access == nil && abi < 6 { return (0, false) }
        guard abi >= 1 else { throw .lockdownFailed("Landlock is not available: \(currentErrno())") }
        var attributes = privsep_landlock_ruleset_attr(handled_access_fs: 0, handled_access_net: 0, scoped: 0)
        if access != nil {
            // Every filesystem right the running kernel's ABI knows is handled, so none is left open by omission.
            var handledFS: UInt64 = (1 << 13) - 1                    // ABI 1: execute ... make_sym
            if abi >= 2 { handledFS |= 1 << 13 }                      // REFER
            if abi >= 3 { handledFS |= 1 << 14 }                      // TRUNCATE
            if abi >= 5 { handledFS |= 1 << 15 }                      // IOCTL_DEV
            attributes.handled_access_fs = handledFS
            if abi >= 4 { attributes.handled_access_net = 0b11 }      // BIND_TCP | CONNECT_TCP: direct TCP needs the broker
        }
        if scopes && abi >= 6 { attributes.scoped = 0b11 }            // ABSTRACT_UNIX_SOCKET | SIGNAL
        let size = abi >= 6 ? 24 : (abi >= 4 ? 16 : 8)
        let ruleset = privsep_landlock_create_ruleset(&attributes, size, 0)
        guard ruleset >= 0 else { throw .lockdownFailed("landlock_create_ruleset: \(currentErrno())") }
        let owned = OwnedFileDescriptor(adoptingRawValue: ruleset)
        if case .readOnly(let paths) = access {
            let readRights: UInt64 = (1 << 2) | (1 << 3) // READ_FILE | READ_DIR
            for path in paths {
                let fd = open(path, privsep_O_PATH | O_CLOEXEC)
                guard fd >= 0 else { throw .lockdownFailed("Landlock rule for \(path): \(currentErrno())") }
                defer { close(fd) }
                var isDirectory = stat()
                fstat(fd, &isDirectory)
                let rights = (isDirectory.st_mode & S_IFMT) == S_IFDIR ? readRights : (1 << 2)
                var beneath = privsep_landlock_path_beneath_attr(allowed_access: rights, parent_fd: fd)
                guard privsep_landlock_add_path_rule(owned.unsafeRawValue, &beneath) == 0 else {
                    throw .lockdownFailed("landlock_add_rule \(path): \(currentErrno())")
                }
            }
        }
        guard privsep_landlock_restrict_self(owned.unsafeRawValue) == 0 else {
            throw .lockdownFailed("landlock_restrict_self: \(currentErrno())")
        }
        return (UInt32(abi), attributes.scoped != 0)
    }

    private func threadCount() -> Int {
        guard let directory = opendir("/proc/self/task") else { return -1 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            if entry.pointee.d_name.0 != UInt8(ascii: ".") { count += 1 }
        }
        return count
    }
}

enum WorkerEnvironment {
    /// Whether the supervisor asked for learning mode (PRIVSEP_LEARN=1).
    static var learningRequested: Bool {
        guard let value = getenv(WireFormat.learningEnvironmentVariable) else { return false }
        return String(cString: value) == "1"
    }
}

/// Drops the calling process to `identity` for good: supplementary groups, then gid,
/// then uid (which drops every capability), verified, and uid 0 checked unrecoverable.
/// Changing credentials clears PR_SET_PDEATHSIG, so it is set again, and the supervisor
/// (if given) checked still to be the parent: had it died in between, we would have
/// been reparented.
func dropIdentity(to identity: (uid: UInt32, gid: UInt32), supervisorProcessID: Int32?) throws(WorkerError) {
    guard privsep_setgroups_empty() == 0 else { throw .lockdownFailed("setgroups: \(currentErrno())") }
    guard privsep_setresgid(identity.gid) == 0 else { throw .lockdownFailed("setresgid(\(identity.gid)): \(currentErrno())") }
    guard privsep_setresuid(identity.uid) == 0 else { throw .lockdownFailed("setresuid(\(identity.uid)): \(currentErrno())") }
    guard getuid() == identity.uid, geteuid() == identity.uid, getgid() == identity.gid, getegid() == identity.gid else {
        throw .lockdownFailed("identity did not change to \(identity.uid):\(identity.gid)")
    }
    if identity.uid != 0 && privsep_setresuid(0) == 0 {
        throw .lockdownFailed("uid 0 could be regained after dropping to \(identity.uid)")
    }
    guard case .success = system_prctl(privsep_PR_SET_PDEATHSIG, UInt(SIGKILL)) else {
        throw .lockdownFailed("prctl(PR_SET_PDEATHSIG) after the identity change")
    }
    if let supervisorProcessID, system_getppid() != supervisorProcessID { throw .supervisorGone }
}

/// Throws a lockdown failure when a libseccomp call returned `rc` != 0 (a negative errno).
/// The description is built only on failure: describing every rule eagerly (reflection over
/// the comparisons) used to cost milliseconds of every worker's start-up.
func check(_ rc: Int32, _ what: @autoclosure () -> String) throws(WorkerError) {
    if rc != 0 { throw .lockdownFailed("\(what()): \(Errno(rawValue: -rc))") }
}
