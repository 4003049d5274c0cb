import CPrivsepShims
import CSeccomp
import Glibc
public import PrivsepIPC
import SystemPackage

/// The lockdown of intercept mode, applied by the `privsep-intercept` helper to
/// itself just before it execs an unmodified program.
///
/// Unlike ``Lockdown``, the program that runs afterwards does not know about the
/// supervisor, so the filter cannot be an allow-list of what Swift needs: it lets
/// through what ordinary programs do, and
///
/// - sends every call that names a path or makes a socket to the supervisor
///   (seccomp user notification): `open`, `openat`, `openat2`, `creat`, the stat
///   family, `access`/`faccessat`/`faccessat2`, `readlink`/`readlinkat`, `socket`,
///   `connect`, `bind`, `listen` and `execve`. The supervisor serves them under the policy;
/// - refuses calls that would leave the sandbox or change the system (ptrace,
///   process_vm_*, bpf, io_uring, open_by_handle_at, mount and the new mount API,
///   namespaces, modules, kexec, keyrings, loading another seccomp filter, chmod and
///   chown and xattr changes, timestamps, device nodes, TIOCSTI, the inode-flag ioctls
///   (chattr), SysV/POSIX IPC, setsid/setpgid, CLONE_PARENT, datagram (SOCK_DGRAM or
///   SOCK_RAW) socketpairs, memfd_create, prlimit64 on another process, MSG_FASTOPEN...);
/// - kills i386 and x32 entries;
/// - and Landlock handles every filesystem right, granting only READ_FILE|EXECUTE
///   beneath the paths the policy lets the program execute (so a path swapped after
///   the supervisor checked an execve still cannot reach another file), denies
///   direct TCP bind/connect, and scopes signals and abstract unix sockets (ABI 6 is
///   required: ``apply(handingListenerTo:)`` throws on an older kernel).
///
/// The filter is loaded with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: once the
/// supervisor has received a notification, only a fatal signal interrupts the
/// call, so a served open is never undone and redone by a signal.
public struct InterceptLockdown: Sendable {
    /// Paths (files, or directories and what lies beneath) the program may execute.
    public var executablePaths: [String]

    /// Become this user and group (supplementary groups dropped) first. nil keeps the
    /// supervisor's user and groups, but not its capabilities: a program started by a root
    /// supervisor holds none either way, and gains none when it execs.
    public var identity: (uid: UInt32, gid: UInt32)?

    public init(executablePaths: [String], identity: (uid: UInt32, gid: UInt32)? = nil) {
        self.executablePaths = executablePaths
        self.identity = identity
    }

    /// System calls the supervisor serves (x86_64 names).
    static let notified = [
        "open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "statx",
        "access", "faccessat", "faccessat2", "readlink", "readlinkat", "socket", "connect", "bind", "listen", "execve",
    ]

    /// Refused with EPERM: ways out of the sandbox, and changes to the system a root
    /// process could otherwise make (the helper keeps the supervisor's identity).
    static let refused = [
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "open_by_handle_at", "name_to_handle_at", "fanotify_init", "fanotify_mark",
        "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr", "fsopen", "fsconfig",
        "fsmount", "fspick", "mount_setattr", "statmount", "listmount", "unshare", "setns",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff",
        "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "vhangup", "uselib", "syslog", "iopl", "ioperm",
        "keyctl", "add_key", "request_key", "seccomp",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
        "mknod", "mknodat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat", "lchown",
        "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
        "file_setattr", "utime", "utimes", "utimensat", "futimesat", "migrate_pages", "move_pages",
        // SysV and POSIX IPC live outside the filesystem (no Landlock, no served path): objects
        // shared with every process of the IPC namespace, including ones outside the sandbox.
        "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
        "semget", "semop", "semtimedop", "semctl",
        "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
        // A new session or process group would leave the group the supervisor kills when the
        // program ends.
        "setsid", "setpgid",
        // A memfd is a file on an internal mount, which Landlock does not restrict: an execve
        // path swapped to /proc/PID/fd/N of a memfd after the supervisor's check would run
        // whatever the program wrote into it.
        "memfd_create", "memfd_secret",
    ]

    /// Refused with EACCES: calls that name a path the supervisor does not serve
    /// (execveat runs a file by descriptor; inotify and xattr reads reveal paths).
    static let refusedAsDenied = [
        "execveat", "inotify_add_watch", "getxattr", "lgetxattr", "listxattr", "llistxattr", "getxattrat", "listxattrat",
        "file_getattr",
    ]

    /// x86_64 numbers of the calls above newer than some libseccomp 2.5 builds know (Debian's
    /// knows Linux 6.7's; fchmodat2 came in 6.6, the others later).
    static let newerSyscallNumbers: [String: Int32] = [
        "fchmodat2": 452, "statmount": 457, "listmount": 458, "setxattrat": 463, "getxattrat": 464,
        "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469,
    ]

    /// Applies no_new_privs, Landlock and the filter, reports SANDBOX_STATUS, hands the
    /// listener to `supervisor` (LISTENER, purpose intercept) and waits for its go-ahead.
    /// The caller then execs the program; nothing may run in between that makes a
    /// notified call before the supervisor serves the listener.
    @discardableResult
    public func apply(handingListenerTo supervisor: SupervisorConnection) throws(WorkerError) -> SandboxStatus {
        // The raw calls change only this thread, which is the only one that survives the exec.
        if let identity { try dropIdentity(to: identity, supervisorProcessID: supervisor.supervisorProcessID) }
        // Kept as root (no identity), the program would still hold root's capabilities, and
        // a deny-list cannot name every ioctl they open (a read-only file's EXT4_IOC_SHUTDOWN
        // took its filesystem down; a socketpair's SIOCSIFFLAGS took an interface down).
        // Every call that needs the supervisor's authority is served by the supervisor, so
        // the program needs none: they go, for good, exec included.
        guard privsep_drop_all_capabilities() == 0 else {
            throw .lockdownFailed("giving up capabilities: \(currentErrno())")
        }
        guard case .success = system_prctl(privsep_PR_SET_NO_NEW_PRIVS, 1),
              case .success(1) = system_prctl(privsep_PR_GET_NO_NEW_PRIVS, 0) else {
            throw .lockdownFailed("no_new_privs could not be set")
        }
        let abi = try applyLandlock()
        let listener = try loadFilter()
        let layers: SandboxLayers = [.noNewPrivileges, .landlock, .landlockScopes, .seccomp]
        let status = SandboxStatus(requested: layers, active: layers, landlockABI: abi)
        try supervisor.reportSandbox(status)
        try supervisor.handOverInterceptListener(listener)
        return status
    }

    // MARK: seccomp

    private func loadFilter() throws(WorkerError) -> OwnedFileDescriptor {
        guard let filter = seccomp_init(privsep_SCMP_ACT_ALLOW) else { throw .lockdownFailed("seccomp_init failed") }
        defer { seccomp_release(filter) }
        try check(seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, privsep_SCMP_ACT_KILL_PROCESS), "bad-arch action")
        // A binary tree of syscall numbers: every call of the program runs this filter, and a
        // linear chain of ~130 rules costs each of them (openat, read, close...) several hundred ns.
        try check(seccomp_attr_set(filter, SCMP_FLTATR_CTL_OPTIMIZE, 2), "binary-tree optimization")
        // This filter allows by default, so a name it cannot place would be a call let through:
        // every name must resolve, by libseccomp or by the table of newer calls.
        func each(_ names: [String], _ body: (Int32) throws(WorkerError) -> Void) throws(WorkerError) {
            for name in names {
                var number = seccomp_syscall_resolve_name(name)
                if number == __NR_SCMP_ERROR, let known = Self.newerSyscallNumbers[name] { number = known }
                guard number != __NR_SCMP_ERROR else {
                    throw .lockdownFailed("libseccomp does not know the system call \(name), which intercept mode must filter")
                }
                try body(number)
            }
        }
        try each(Self.notified) { (number) throws(WorkerError) in
            try check(privsep_seccomp_rule_add_always(filter, privsep_SCMP_ACT_NOTIFY, number), "notify \(number)")
        }
        let eperm = privsep_scmp_act_errno(UInt16(EPERM)), eacces = privsep_scmp_act_errno(UInt16(EACCES))
        try each(Self.refused) { (number) throws(WorkerError) in
            try check(privsep_seccomp_rule_add_always(filter, eperm, number), "refuse \(number)")
        }
        try each(Self.refusedAsDenied) { (number) throws(WorkerError) in
            try check(privsep_seccomp_rule_add_always(filter, eacces, number), "refuse \(number)")
        }
        // clone: never a new namespace, nor CLONE_PARENT, whose child would be the supervisor's
        // own (one rule per flag: "any of these bits" is not one comparison).
        let clone = seccomp_syscall_resolve_name("clone")
        for flag in cloneNewNamespaceFlags + [cloneParent] {
            try check(privsep_seccomp_rule_add_masked_eq(filter, eperm, clone, 0, flag, flag), "clone flag")
        }
        // clone3 passes its flags in memory: ENOSYS makes glibc fall back to clone.
        try check(privsep_seccomp_rule_add_always(filter, privsep_scmp_act_errno(UInt16(ENOSYS)), seccomp_syscall_resolve_name("clone3")), "clone3")
        // ioctl: no TIOCSTI (typing into the terminal) or TIOCLINUX. The kernel reads cmd as 32 bits.
        // Nor the inode-flag changes a root program could make on a descriptor the supervisor
        // opened for it (chattr +i, clearing +a, the inode version, the filesystem label):
        // FS_IOC_SETFLAGS and its 32-bit twin, FS_IOC_FSSETXATTR, FS_IOC_SETVERSION and its
        // 32-bit twin, ext4's EXT4_IOC_SETVERSION, FS_IOC_SETFSLABEL.
        // Nor, on a terminal (the operator's, with `privsep run --terminal`): TIOCSETD (a line
        // discipline leaves the shell deaf once the program is gone, and loads kernel code),
        // TIOCSLCKTRMIOS (settings locked so that the shell cannot change them back), TIOCEXCL
        // (no one else may open it), TIOCSCTTY, TIOCNOTTY, TIOCCONS and TIOCVHANGUP.
        let ioctl = seccomp_syscall_resolve_name("ioctl")
        for command: UInt64 in [0x5412, 0x541C, 0x4008_6602, 0x4004_6602, 0x401c_5820, 0x4008_7602, 0x4004_7602,
                                0x4008_6604, 0x4100_9432, 0x5423, 0x5457, 0x540C, 0x540E, 0x5422, 0x541D, 0x5437] {
            try check(privsep_seccomp_rule_add_masked_eq(filter, eperm, ioctl, 1, 0xffff_ffff, command), "ioctl \(command)")
        }
        // prctl: no PR_SET_SECCOMP (22, a filter of its own could answer our notifications
        // first) and no PR_SET_MM (35).
        let prctl = seccomp_syscall_resolve_name("prctl")
        for option: UInt64 in [22, 35] {
            try check(privsep_seccomp_rule_add_masked_eq(filter, eperm, prctl, 0, 0xffff_ffff, option), "prctl \(option)")
        }
        // setsockopt SO_PASSCRED and SO_PASSPIDFD (16, 76): with either, the kernel gives an
        // unbound unix socket an abstract name at its first connect or send, where anyone
        // outside the sandbox can connect or send to it (fds included). The kernel reads
        // level and name as 32 bits.
        let setsockopt = seccomp_syscall_resolve_name("setsockopt")
        for name: UInt64 in [16, 76] {
            try check(privsep_seccomp_rule_add_masked_eq2(filter, eperm, setsockopt, 1, 0xffff_ffff, 1 /* SOL_SOCKET */, 2, 0xffff_ffff, name),
                      "setsockopt \(name)")
        }
        // madvise MADV_HWPOISON and MADV_SOFT_OFFLINE (100, 101): a root program would take
        // the host's physical pages out of service. The kernel reads the advice as 32 bits.
        let madvise = seccomp_syscall_resolve_name("madvise")
        for advice: UInt64 in [100, 101] {
            try check(privsep_seccomp_rule_add_masked_eq(filter, eperm, madvise, 2, 0xffff_ffff, advice), "madvise \(advice)")
        }
        // prlimit64 on another process (a root program could lower or raise anyone's limits);
        // any bit set in the pid argument counts as another process, so it fails closed.
        try check(privsep_seccomp_rule_add_ne(filter, eperm, seccomp_syscall_resolve_name("prlimit64"), 0, 0), "prlimit64")
        // MSG_FASTOPEN connects a TCP socket from sendto/sendmsg, without the connect the
        // supervisor checks.
        for (name, argument) in [("sendto", UInt32(3)), ("sendmsg", 2), ("sendmmsg", 3)] {
            try check(privsep_seccomp_rule_add_masked_eq(filter, eperm, seccomp_syscall_resolve_name(name), argument, msgFastOpen, msgFastOpen),
                      "\(name) MSG_FASTOPEN")
        }
        // socketpair(SOCK_DGRAM): an unnamed datagram socket could sendto any pathname unix
        // socket without the connect the supervisor checks (stream and seqpacket pairs ignore
        // or refuse a destination address). The type's low 4 bits are the socket type;
        // SOCK_RAW counts too, as AF_UNIX makes it a datagram socket.
        for type: UInt64 in [2 /* SOCK_DGRAM */, 3 /* SOCK_RAW */] {
            try check(privsep_seccomp_rule_add_masked_eq(filter, eperm, seccomp_syscall_resolve_name("socketpair"), 1, 0xf, type),
                      "socketpair type \(type)")
        }
        let program = try exportProgram(filter)
        let flags = privsep_SECCOMP_FILTER_FLAG_NEW_LISTENER | privsep_SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        let listener = program.withUnsafeBytes { bytes in
            privsep_seccomp_load_program(flags, bytes.baseAddress!, UInt16(bytes.count / 8))
        }
        guard listener >= 0 else { throw .lockdownFailed("seccomp(SET_MODE_FILTER, NEW_LISTENER|WAIT_KILLABLE_RECV): \(currentErrno())") }
        return OwnedFileDescriptor(adoptingRawValue: listener)
    }

    /// The filter as classic BPF (libseccomp 2.5 has no WAIT_KILLABLE_RECV attribute,
    /// so the program is exported and loaded with the raw seccomp call).
    private func exportProgram(_ filter: scmp_filter_ctx) throws(WorkerError) -> [UInt8] {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw .lockdownFailed("pipe2: \(currentErrno())") }
        let reader = OwnedFileDescriptor(adoptingRawValue: ends[0])
        // The write end closes as soon as the export is written, so the read below ends.
        let rc: Int32 = {
            let writer = OwnedFileDescriptor(adoptingRawValue: ends[1])
            return seccomp_export_bpf(filter, writer.unsafeRawValue)
        }()
        guard rc == 0 else { throw .lockdownFailed("seccomp_export_bpf: \(Errno(rawValue: -rc))") }
        var program: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(reader.unsafeRawValue, &chunk, chunk.count)
            if count < 0 && currentErrno() == .interrupted { continue }
            guard count >= 0 else { throw .lockdownFailed("reading the exported filter: \(currentErrno())") }
            if count == 0 { break }
            program += chunk[..<count]
        }
        guard !program.isEmpty, program.count % 8 == 0, program.count / 8 <= 4096 else {
            throw .lockdownFailed("exported filter has \(program.count) bytes")
        }
        return program
    }

    // MARK: Landlock

    private func applyLandlock() throws(WorkerError) -> UInt32 {
        let abi = privsep_landlock_create_ruleset(nil, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */)
        guard abi >= 1 else { throw .lockdownFailed("Landlock is not available: \(currentErrno())") }
        // ABI 6 (Linux 6.12) scopes signals and abstract unix sockets to the sandbox: without
        // it a program could signal the supervisor or reach any abstract socket. Fail closed.
        guard abi >= 6 else {
            throw .lockdownFailed("intercept mode needs Landlock ABI 6 or later (Linux 6.12+) for signal and abstract-socket scoping; this kernel has ABI \(abi)")
        }
        var handledFS: UInt64 = (1 << 13) - 1
        if abi >= 2 { handledFS |= 1 << 13 }
        if abi >= 3 { handledFS |= 1 << 14 }
        if abi >= 5 { handledFS |= 1 << 15 }
        var attributes = privsep_landlock_ruleset_attr(handled_access_fs: handledFS, handled_access_net: 0, scoped: 0)
        if abi >= 4 { attributes.handled_access_net = 0b11 }
        if abi >= 6 { attributes.scoped = 0b11 }
        let size = abi >= 6 ? 24 : (abi >= 4 ? 16 : 8)
        let ruleset = privsep_landlock_create_ruleset(&attributes, size, 0)
        guard ruleset >= 0 else { throw .lockdownFailed("landlock_create_ruleset: \(currentErrno())") }
        let owned = OwnedFileDescriptor(adoptingRawValue: ruleset)
        // execve opens the program (and its ELF interpreter) for reading and executing.
        let rights: UInt64 = (1 << 0) | (1 << 2) // EXECUTE | READ_FILE
        for path in executablePaths {
            let fd = open(path, privsep_O_PATH | O_CLOEXEC)
            if fd < 0 && currentErrno() == .noSuchFileOrDirectory { continue } // nothing to execute there (yet): stays denied
            guard fd >= 0 else { throw .lockdownFailed("Landlock rule for \(path): \(currentErrno())") }
            defer { close(fd) }
            var beneath = privsep_landlock_path_beneath_attr(allowed_access: rights, parent_fd: fd)
            guard privsep_landlock_add_path_rule(owned.unsafeRawValue, &beneath) == 0 else {
                throw .lockdownFailed("landlock_add_rule \(path): \(currentErrno())")
            }
        }
        guard privsep_landlock_restrict_self(owned.unsafeRawValue) == 0 else {
            throw .lockdownFailed("landlock_restrict_self: \(currentErrno())")
        }
        return UInt32(abi)
    }
}
