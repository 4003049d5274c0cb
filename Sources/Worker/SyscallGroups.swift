/// A named set of system calls, in the spirit of OpenBSD's pledge promises.
///
/// A lockdown allows the ``baseline`` plus the groups it names; every other
/// system call gets the lockdown's default action. Calls that open a way out of
/// any sandbox (openat2, execveat, io_uring, ptrace, process_vm_*, bpf,
/// userfaultfd, keyctl, mount, unshare, setns, seccomp, perf_event_open...) are
/// in no group at all: no profile built from groups can allow them.
public struct SyscallGroup: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    /// The syscalls it allows unconditionally, by their x86_64 names.
    let syscalls: [String]
    /// Syscalls it allows only with certain arguments.
    let conditional: [ConditionalRule]

    public var description: String { name }

    public static func == (a: SyscallGroup, b: SyscallGroup) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    /// What every Swift program on this toolchain needs after start-up: memory,
    /// signals, time, futexes, reading and writing fds it already holds, and
    /// the channel (send or sendmsg, recvmsg). No call here names a path.
    ///
    /// `newfstatat` is allowed because glibc implements `fstat` with it; with a
    /// non-empty path it would also stat a path, so a worker can learn whether a
    /// path exists (never its contents). See SECURITY.md.
    public static let baseline = SyscallGroup(name: "baseline", syscalls: [
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
        "close", "close_range", "fstat", "newfstatat", "statx", "lseek", "dup", "dup2", "dup3",
        "mmap", "munmap", "mprotect", "mremap", "brk", "msync",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait", "rt_sigsuspend", "sigaltstack",
        "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "futex", "set_robust_list", "rseq", "set_tid_address", "sched_yield", "sched_getaffinity",
        "exit", "exit_group", "restart_syscall",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
        "getrandom", "uname", "arch_prctl", "getrlimit", "getrusage", "sysinfo", "membarrier",
        "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "eventfd2", "pipe2", "fsync", "fdatasync",
        "recvmsg", "recvfrom", "recvmmsg", "shutdown", "getsockopt", "getsockname", "getpeername",
    ], conditional: [
        // pwritev2 never with RWF_NOAPPEND (Linux 6.9+), which would write anywhere in an O_APPEND file.
        ConditionalRule(syscall: "pwritev2", argument: 5, mask: 0x20, value: 0),
        // madvise with the advice a process gives about its own memory (0-31, MADV_COLLAPSE is
        // 25; MADV_GUARD_INSTALL and _REMOVE, 102 and 103), never MADV_HWPOISON or
        // MADV_SOFT_OFFLINE (100, 101): with CAP_SYS_ADMIN, which a worker left root keeps,
        // they take the host's physical pages out of service.
        ConditionalRule(syscall: "madvise", argument: 2, mask: ~0x1f, value: 0),
        ConditionalRule(syscall: "madvise", argument: 2, mask: ~0x1, value: 102),
        // prlimit64 may read this process's limits (pid 0, new_limit NULL), never change them or read another's.
        ConditionalRule(syscall: "prlimit64", [Comparison(argument: 0, value: 0), Comparison(argument: 2, value: 0)]),
        // The ioctls isatty() and non-blocking mode need, nothing else.
        ConditionalRule(syscall: "ioctl", argument: 1, value: 0x5401), // TCGETS
        ConditionalRule(syscall: "ioctl", argument: 1, value: 0x802C_542A), // TCGETS2 (glibc 2.42's isatty and tcgetattr)
        ConditionalRule(syscall: "ioctl", argument: 1, value: 0x5421), // FIONBIO
        ConditionalRule(syscall: "ioctl", argument: 1, value: 0x5451), // FIOCLEX
        // prctl: naming threads, nothing that changes privileges or the filter.
        ConditionalRule(syscall: "prctl", argument: 0, value: 15), // PR_SET_NAME
        ConditionalRule(syscall: "prctl", argument: 0, value: 16), // PR_GET_NAME
        ConditionalRule(syscall: "prctl", argument: 0, value: 3),  // PR_GET_DUMPABLE
        ConditionalRule(syscall: "prctl", argument: 0, value: 2),  // PR_GET_PDEATHSIG
        // fcntl: descriptor flags, status reads, locks, duplication. Not F_SETOWN/F_SETSIG
        // (they make the kernel signal other processes), not F_SETLEASE/F_NOTIFY, and
        // F_SETFL only with O_APPEND kept set, so an append-only grant stays append-only,
        // and O_ASYNC clear: on a terminal the kernel makes its foreground process group the
        // owner, so SIGIO (which terminates) would reach the supervisor sharing it.
        // Non-blocking mode is ioctl(FIONBIO).
        ConditionalRule(syscall: "fcntl", argument: 1, value: 0),    // F_DUPFD
        ConditionalRule(syscall: "fcntl", argument: 1, value: 1),    // F_GETFD
        ConditionalRule(syscall: "fcntl", argument: 1, value: 2),    // F_SETFD
        ConditionalRule(syscall: "fcntl", argument: 1, value: 3),    // F_GETFL
        ConditionalRule(syscall: "fcntl", argument: 1, value: 5),    // F_GETLK
        ConditionalRule(syscall: "fcntl", argument: 1, value: 6),    // F_SETLK
        ConditionalRule(syscall: "fcntl", argument: 1, value: 7),    // F_SETLKW
        ConditionalRule(syscall: "fcntl", argument: 1, value: 36),   // F_OFD_GETLK
        ConditionalRule(syscall: "fcntl", argument: 1, value: 37),   // F_OFD_SETLK
        ConditionalRule(syscall: "fcntl", argument: 1, value: 38),   // F_OFD_SETLKW
        ConditionalRule(syscall: "fcntl", argument: 1, value: 1030), // F_DUPFD_CLOEXEC
        ConditionalRule(syscall: "fcntl", argument: 1, value: 1032), // F_GETPIPE_SZ
        ConditionalRule(syscall: "fcntl", argument: 1, value: 1034), // F_GET_SEALS
        ConditionalRule(syscall: "fcntl", [Comparison(argument: 1, value: 4), Comparison(argument: 2, mask: 0o2000 | 0o20000, value: 0o2000)]),
        // Sending never carries MSG_FASTOPEN (it would connect an unconnected TCP socket
        // anywhere); sendto only on connected sockets (no destination address).
        ConditionalRule(syscall: "sendmsg", argument: 2, mask: msgFastOpen, value: 0),
        ConditionalRule(syscall: "sendmmsg", argument: 3, mask: msgFastOpen, value: 0),
        ConditionalRule(syscall: "sendto", [Comparison(argument: 3, mask: msgFastOpen, value: 0), Comparison(argument: 4, value: 0)]),
    ])

    /// Opening, reading and inspecting paths directly (not through the broker): open and
    /// openat read-only, without O_CREAT, O_TRUNC or O_TMPFILE.
    public static let rpath = SyscallGroup(name: "rpath", syscalls: [
        "stat", "lstat", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
        "getdents64", "getcwd", "chdir", "fchdir", "statfs", "fstatfs",
    ], conditional: opens(refusing: openAccessMode | openCreate | openTruncate | openTemporary))
    /// Writing files directly: open and openat of files that exist (no O_CREAT or O_TMPFILE).
    public static let wpath = SyscallGroup(name: "wpath", syscalls: [
        "truncate", "ftruncate", "fallocate", "utimensat",
    ], conditional: opens(refusing: openCreate | openTemporary))
    /// Creating and removing paths directly.
    public static let cpath = SyscallGroup(name: "cpath", syscalls: [
        "open", "openat", "creat", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
        "link", "linkat", "symlink", "symlinkat",
    ], conditional: [])
    /// Changing file attributes.
    public static let fattr = SyscallGroup(name: "fattr", syscalls: [
        "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown", "utimensat",
    ], conditional: [])
    /// Creating and using Internet sockets directly.
    public static let inet = SyscallGroup(name: "inet", syscalls: [
        "connect", "bind", "listen", "accept", "accept4", "setsockopt", "sendto", "sendmsg", "sendmmsg",
    ], conditional: [
        ConditionalRule(syscall: "socket", argument: 0, value: 2),  // AF_INET
        ConditionalRule(syscall: "socket", argument: 0, value: 10), // AF_INET6
    ])
    /// Creating and using unix sockets directly.
    public static let unix = SyscallGroup(name: "unix", syscalls: [
        "connect", "bind", "listen", "accept", "accept4", "setsockopt", "socketpair", "sendto", "sendmsg", "sendmmsg",
    ], conditional: [
        ConditionalRule(syscall: "socket", argument: 0, value: 1), // AF_UNIX
    ])
    /// Using sockets the broker handed over: listen on a bound one, accept on a listening one.
    public static let serve = SyscallGroup(name: "serve", syscalls: ["listen", "accept", "accept4", "setsockopt"], conditional: [])
    /// Starting threads: clone with CLONE_THREAD and no namespace flags
    /// (clone3 is always answered ENOSYS, so glibc falls back to clone).
    public static let thread = SyscallGroup(name: "thread", syscalls: [], conditional: [
        ConditionalRule(syscall: "clone", argument: 0, mask: cloneThreadMask, value: cloneThreadFlags),
    ])
    /// Timers and alarms.
    public static let time = SyscallGroup(name: "time", syscalls: [
        "timer_create", "timer_settime", "timer_gettime", "timer_delete", "timer_getoverrun",
        "timerfd_create", "timerfd_settime", "timerfd_gettime", "alarm", "setitimer", "getitimer",
    ], conditional: [])
    /// Creating and managing child processes: no new namespaces, and no way out of the
    /// worker's process group, which the supervisor kills with the worker (no setsid or
    /// setpgid; no CLONE_PARENT, which would make the child the supervisor's own).
    /// Priority and CPU affinity only of the calling process itself (`setpriority(PRIO_PROCESS,
    /// 0, n)`, `sched_setaffinity(0, ...)`): Landlock's scoping stops signals, not these, and
    /// with another pid (or PRIO_USER) a worker could renice the supervisor or pin it to one
    /// CPU beside its own busy children.
    public static let proc = SyscallGroup(name: "proc", syscalls: [
        "fork", "vfork", "wait4", "waitid", "kill", "tgkill", "tkill", "getpgid", "getpgrp", "getsid", "getpriority",
    ], conditional: [
        ConditionalRule(syscall: "clone", argument: 0, mask: namespaceFlags | cloneParent, value: 0),
        ConditionalRule(syscall: "setpriority", [Comparison(argument: 0, value: 0), Comparison(argument: 1, value: 0)]),
        ConditionalRule(syscall: "sched_setaffinity", argument: 0, value: 0),
    ])
    /// Running programs (execve only; execveat, which runs fileless memfds, never).
    public static let exec = SyscallGroup(name: "exec", syscalls: ["execve"], conditional: [])
    /// Terminal ioctls: reading and setting termios, reading the window size, flushing and
    /// draining, bytes queued. Not TIOCSTI (typing into the terminal), TIOCLINUX, TIOCSCTTY,
    /// TIOCSETD, TIOCCONS, TIOCSPGRP, TIOCSWINSZ (it sends SIGWINCH to the terminal's
    /// foreground group), nor FIOSETOWN/FIOASYNC, which make the kernel signal another process.
    public static let tty = SyscallGroup(name: "tty", syscalls: [], conditional: [
        0x5401, 0x5402, 0x5403, 0x5404,             // TCGETS, TCSETS, TCSETSW, TCSETSF
        0x802C_542A, 0x402C_542B, 0x402C_542C, 0x402C_542D, // TCGETS2, TCSETS2, TCSETSW2, TCSETSF2 (glibc 2.42+)
        0x5409, 0x540A, 0x540B,                     // TCSBRK (tcdrain), TCXONC, TCFLSH
        0x540F, 0x5411, 0x5413,                     // TIOCGPGRP, TIOCOUTQ, TIOCGWINSZ
        0x541B, 0x5429, 0x5450,                     // FIONREAD, TIOCGSID, FIONCLEX
    ].map { ConditionalRule(syscall: "ioctl", argument: 1, value: $0) })
    /// Every fcntl command, F_SETFL without O_APPEND and F_SETOWN/F_SETSIG included:
    /// an append-only grant can then be rewritten, and the kernel can be made to
    /// signal processes of the worker's user.
    public static let fcntl = SyscallGroup(name: "fcntl", syscalls: ["fcntl"], conditional: [])
    /// Locking memory (mlock): unbounded for a worker with CAP_IPC_LOCK, so never in the baseline.
    public static let memlock = SyscallGroup(name: "memlock", syscalls: ["mlock", "mlock2", "munlock", "mlockall", "munlockall"], conditional: [])
    /// What libdispatch and Swift concurrency need after lockdown: reading /proc
    /// (openat, read-only) and thread creation. Grants direct opens: pair it with Landlock.
    public static let dispatch = SyscallGroup(name: "dispatch", syscalls: ["sched_getaffinity", "getcpu"], conditional: [
        ConditionalRule(syscall: "clone", argument: 0, mask: cloneThreadMask, value: cloneThreadFlags),
        ConditionalRule(syscall: "openat", argument: 2, mask: openAccessMode | openCreate | openTruncate | openTemporary, value: 0),
    ])

    /// The groups that reach past the sandbox where only Landlock's scoping stops them: they
    /// signal (proc's kill, fcntl's F_SETOWN) or connect to abstract unix sockets (unix, and
    /// inet, whose connect and sendto work on any socket, a brokered unix one included).
    /// With any of them, a lockdown needs scoping unless it turns scoping off.
    public static let needingScopes: Set<SyscallGroup> = [proc, fcntl, unix, inet]

    /// Every group, by name (for policy files and the learning mode).
    public static let all: [SyscallGroup] = [rpath, wpath, cpath, fattr, inet, unix, serve, thread, time, proc, exec, tty, fcntl, memlock, dispatch]

    /// Every group, those that reach least beyond the worker first: its own time, terminal,
    /// threads and brokered sockets; then files (Landlock's rules bound them), reading before
    /// writing before creating; then what reaches other processes or the network. When
    /// several groups allow a call, the learning mode recommends the first of them here: a
    /// `listen` on a brokered socket needs `serve`, not `inet` (which also makes sockets
    /// and connects or sends anywhere).
    public static let leastReachFirst: [SyscallGroup] = [
        time, tty, thread, serve, memlock, rpath, dispatch, wpath, fattr, cpath, fcntl, exec, proc, unix, inet,
    ]

    /// The group named `name`, if there is one.
    public static func named(_ name: String) -> SyscallGroup? { all.first { $0.name == name } }

    /// The groups that allow `syscall` (by name), for telling a user what to grant: with
    /// `arguments` (the call's six), those that allow it so called, in the order of ``all``
    /// (rpath before wpath before cpath); without, those that allow it called somehow, the
    /// ones that allow it whatever its arguments first.
    public static func groups(allowing syscall: String, arguments: [UInt64]? = nil) -> [SyscallGroup] {
        let allowing = all.filter { $0.allows(syscall, arguments: arguments) }
        guard arguments == nil else { return allowing }
        return allowing.filter { $0.allowsAlways(syscall) } + allowing.filter { !$0.allowsAlways(syscall) }
    }

    /// Whether this group allows `syscall` whatever its arguments.
    public func allowsAlways(_ syscall: String) -> Bool { syscalls.contains(syscall) }

    /// Whether this group allows `syscall` called with `arguments` (nil: with some arguments).
    func allows(_ syscall: String, arguments: [UInt64]?) -> Bool {
        if syscalls.contains(syscall) { return true }
        return conditional.contains { rule in
            guard rule.syscall == syscall else { return false }
            guard let arguments else { return true }
            return rule.comparisons.allSatisfy { comparison in
                Int(comparison.argument) < arguments.count && arguments[Int(comparison.argument)] & comparison.mask == comparison.value
            }
        }
    }
}

/// One comparison of a syscall argument: `(argument & mask) == value`.
struct Comparison: Hashable, Sendable {
    var argument: UInt32
    var mask: UInt64 = .max
    var value: UInt64
}

/// A syscall allowed only when its arguments pass every comparison (at most two).
struct ConditionalRule: Hashable, Sendable {
    var syscall: String
    var comparisons: [Comparison]

    init(syscall: String, _ comparisons: [Comparison]) {
        precondition((1...2).contains(comparisons.count), "a rule compares one or two arguments")
        self.syscall = syscall
        self.comparisons = comparisons
    }

    init(syscall: String, argument: UInt32, mask: UInt64 = .max, value: UInt64) {
        self.init(syscall: syscall, [Comparison(argument: argument, mask: mask, value: value)])
    }
}

let msgFastOpen: UInt64 = 0x2000_0000

let openAccessMode: UInt64 = 0o3        // O_WRONLY, O_RDWR
let openCreate: UInt64 = 0o100          // O_CREAT
let openTruncate: UInt64 = 0o1000       // O_TRUNC (which truncates under O_RDONLY too)
let openTemporary: UInt64 = 0o20000000  // __O_TMPFILE

/// open and openat allowed when their flags have none of `refused`.
func opens(refusing refused: UInt64) -> [ConditionalRule] {
    [ConditionalRule(syscall: "open", argument: 1, mask: refused, value: 0),
     ConditionalRule(syscall: "openat", argument: 2, mask: refused, value: 0)]
}

let cloneNewNamespaceFlags: [UInt64] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
    0x0000_0080, // CLONE_NEWTIME
]
let namespaceFlags: UInt64 = cloneNewNamespaceFlags.reduce(0, |)
let cloneParent: UInt64 = 0x0000_8000
let cloneThread: UInt64 = 0x0001_0000
let cloneVM: UInt64 = 0x0000_0100
let cloneSighand: UInt64 = 0x0000_0800
/// A thread: CLONE_THREAD, CLONE_VM and CLONE_SIGHAND set, no namespace flag.
let cloneThreadMask: UInt64 = cloneThread | cloneVM | cloneSighand | namespaceFlags
let cloneThreadFlags: UInt64 = cloneThread | cloneVM | cloneSighand
