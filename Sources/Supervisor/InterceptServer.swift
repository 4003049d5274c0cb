import CPrivsepShims
import Glibc
import Logging
import PrivsepIPC
import Synchronization
import SystemPackage

/// Serves the seccomp listener of one intercepted worker: every file and socket call of
/// an unmodified program (and of everything it forks and execs) under the worker's policy.
///
/// It runs on a thread of its own, never the event loop's: SECCOMP_IOCTL_NOTIF_RECV can
/// block even after poll said a notification was ready (its caller died meanwhile), and a
/// blocking connect must stall only this program. This thread is the listener's only reader.
///
/// For each notification: the arguments the kernel captured are trusted; whatever they point
/// to in the program's memory is read with process_vm_readv (bounded, NUL required), and
/// used only after SECCOMP_IOCTL_NOTIF_ID_VALID says the caller is still blocked in that call
/// (so the pid read from was the caller's). Then the call is emulated here, never let run:
///
/// - open, openat, openat2, creat: the broker's ``ActivePolicy/open(_:)``; the fd is
///   installed in the caller and the call answered with its number in one step
///   (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND).
/// - stat, lstat, newfstatat, statx: looked up beneath the rule (O_PATH), stat'ed here, and
///   the result written into the caller's buffer. An empty path with AT_EMPTY_PATH (glibc's
///   fstat) stats the caller's own fd, fetched with pidfd_getfd.
/// - access, faccessat, faccessat2: the rule's permissions and the file's mode bits.
/// - readlink, readlinkat: the link read here, its text written into the caller's buffer.
/// - socket: the broker's ``ActivePolicy/socket(_:checkedLater:)``, installed like an open.
/// - connect, bind: the address read from the caller, checked, and the caller's own socket
///   (pidfd_getfd) connected or bound here, so the checked address is the one used.
/// - listen: on the caller's own socket, here, refused while an Internet socket is unbound.
/// - execve: checked (an `execute` permission, a regular file), then let run with
///   SECCOMP_USER_NOTIF_FLAG_CONTINUE: the one call that cannot be emulated. The kernel
///   rereads the path; the program's Landlock ruleset, built from the same execute rules,
///   is what stops a path swapped in between.
///
/// Relative paths are made absolute with the caller's /proc/TID/cwd or /proc/TID/fd/DIRFD
/// (read, then validated like the path), normalized lexically, and checked like any other.
final class InterceptServer: @unchecked Sendable {
    private let listener: OwnedFileDescriptor
    private let policy: Mutex<ActivePolicy>
    private let auditor: Auditor
    private let workerID: UInt64
    private let workerName: String
    /// The helper's pid: the program's first process.
    private let workerPid: Int32
    /// PATH_MAX bytes for reading paths, reused by every notification (this thread only).
    private let pathBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    /// The program's identity (`--user`), if it is not the supervisor's: sockets are made,
    /// connected and bound on this thread with these effective and fs ids.
    private let identity: (uid: UInt32, gid: UInt32)?
    /// The longest a connect of a blocking socket may hold this thread, in seconds.
    private let connectTimeout: Double
    /// A pidfd of the program's first process (the helper's pid), to kill it if this thread
    /// can no longer be trusted to serve (its credentials could not be restored).
    /// -1 if none; owned, closed in deinit.
    private let programPidfd: Int32
    /// Set when this thread must stop serving: its next loop iteration ends it.
    private var stopped = false
    /// What the program's calls may write to the audit log: this thread's, but the loop
    /// reports what is left out when it reaps the program, before its EXIT record.
    private let auditBudget: Mutex<AuditBudget>

    init(listener: consuming OwnedFileDescriptor, policy: ActivePolicy, auditor: Auditor, workerID: UInt64, workerName: String, workerPid: Int32,
         identity: (uid: UInt32, gid: UInt32)? = nil, connectTimeout: Double = 30, auditBudget: AuditBudget,
         programPidfd: consuming OwnedFileDescriptor? = nil) {
        self.listener = listener
        self.policy = Mutex(policy)
        self.auditor = auditor
        self.workerID = workerID
        self.workerName = workerName
        self.workerPid = workerPid
        self.identity = identity
        self.connectTimeout = connectTimeout
        self.auditBudget = Mutex(auditBudget)
        switch consume programPidfd {
        case .some(let fd): self.programPidfd = fd.releaseUnsafeRawValue()
        case .none: self.programPidfd = -1
        }
        // Bytes, for the paths judged where they lie (pathInPlace).
        _ = pathBuffer.bindMemory(to: UInt8.self)
    }

    deinit {
        pathBuffer.deallocate()
        if programPidfd >= 0 { _ = system_close(programPidfd) }
    }

    /// The raw listener, to check what the worker sent.
    var unsafeListenerFileDescriptor: Int32 { listener.unsafeRawValue }

    /// Serves under `narrower` from the next notification on.
    func replacePolicy(_ narrower: ActivePolicy) {
        policy.withLock { $0 = narrower }
    }

    /// Starts the serving thread (detached; it ends when no process uses the filter any
    /// more), on `cpus` when given. Named like the loop threads ("privsep-loop") so
    /// operators (top -H, perf) can tell them apart.
    func start(on cpus: CPUSet? = nil) -> Bool {
        startDetachedThread(named: "privsep-notify", on: cpus) {
            receiveNotifications(self.listener.unsafeRawValue, stopped: { self.stopped }) { self.serve($0) }
            // Calls served after the program was reaped.
            self.reportRecordsLeftOut()
        }
    }

    // MARK: Dispatch

    private func serve(_ n: Notification) {
        guard n.arch == privsep_AUDIT_ARCH_X86_64 else { // the filter kills other architectures; never reached
            answer(n, error: .noFunction)
            return
        }
        let a = n.args
        func int(_ value: UInt64) -> Int32 { Int32(truncatingIfNeeded: value) }
        switch n.nr {
        // The calls' mode argument is not used: a rule that allows creating names the mode.
        case 2: serveOpen(n, call: "open", dirfd: AT_FDCWD, path: a.0, flags: int(a.1))
        case 257: serveOpen(n, call: "openat", dirfd: int(a.0), path: a.1, flags: int(a.2))
        case 85: serveOpen(n, call: "creat", dirfd: AT_FDCWD, path: a.0, flags: O_CREAT | O_WRONLY | O_TRUNC)
        case 437: serveOpenat2(n, dirfd: int(a.0), path: a.1, how: a.2, size: a.3)
        case 4: serveStat(n, call: "stat", dirfd: AT_FDCWD, path: a.0, buffer: a.1, flags: 0, statxMask: nil)
        case 6: serveStat(n, call: "lstat", dirfd: AT_FDCWD, path: a.0, buffer: a.1, flags: privsep_AT_SYMLINK_NOFOLLOW, statxMask: nil)
        case 262: serveStat(n, call: "newfstatat", dirfd: int(a.0), path: a.1, buffer: a.2, flags: int(a.3), statxMask: nil)
        case 332: serveStat(n, call: "statx", dirfd: int(a.0), path: a.1, buffer: a.4, flags: int(a.2), statxMask: UInt32(truncatingIfNeeded: a.3))
        case 21: serveAccess(n, call: "access", dirfd: AT_FDCWD, path: a.0, mode: int(a.1), flags: 0)
        case 269: serveAccess(n, call: "faccessat", dirfd: int(a.0), path: a.1, mode: int(a.2), flags: 0)
        case 439: serveAccess(n, call: "faccessat2", dirfd: int(a.0), path: a.1, mode: int(a.2), flags: int(a.3))
        case 89: serveReadlink(n, call: "readlink", dirfd: AT_FDCWD, path: a.0, buffer: a.1, size: int(a.2))
        case 267: serveReadlink(n, call: "readlinkat", dirfd: int(a.0), path: a.1, buffer: a.2, size: int(a.3))
        case 59: serveExec(n, path: a.0)
        case 41: serveSocket(n, domain: int(a.0), type: int(a.1), protocol: int(a.2))
        case 42: serveAddress(n, binding: false, fd: int(a.0), address: a.1, length: int(a.2))
        case 49: serveAddress(n, binding: true, fd: int(a.0), address: a.1, length: int(a.2))
        case 50: serveListen(n, fd: int(a.0), backlog: int(a.1))
        default: answer(n, error: .noFunction)
        }
    }

    // MARK: Open

    private func serveOpen(_ n: Notification, call: String, dirfd: Int32, path address: UInt64, flags: Int32) {
        let length: Int
        switch readPath(n, address: address) {
        case .success(let count): length = count
        case .failure(let errno): return deny(n, "OPEN", "\(call) (unreadable path)", errno, TargetPath.unreadableReason(errno))
        }
        // Most paths are served where they lie; the rest are made absolute and normal first.
        let inPlace = pathInPlace(length: length)
        var path = ""
        if inPlace == nil {
            switch targetPath(n, length: length, dirfd: dirfd) {
            case .absolute(let absolute): path = absolute
            case .empty: return deny(n, "OPEN", "\(call) \"\"", .noSuchFileOrDirectory, "empty path")
            case .failed(let errno, let why): return deny(n, "OPEN", "\(call) (unreadable path)", errno, why)
            }
        }
        // Built only when a record is written: the string costs more than the rest of the answer.
        func described() -> String {
            inPlace.map { String(decoding: $0, as: UTF8.self) } ?? path
        }
        guard stillWaiting(n) else { return abandoned(n, "OPEN", "\(call) \(described())") }
        let active = policy.withLock { $0 }
        // Only a path under /proc can reach a process's files (a rule inside /proc), and only
        // for one is the caller's process looked up.
        let tid = pid_t(bitPattern: n.pid)
        let underProc = inPlace.map { $0.starts(with: "/proc".utf8) } ?? path.utf8.starts(with: "/proc".utf8)
        let requester = ActivePolicy.Requester(process: underProc ? threadGroup(of: tid) ?? tid : tid, thread: tid)
        let decision = if let inPlace {
            active.open(canonicalPath: inPlace, flags: flags, requester: requester)
        } else {
            active.open(path: path, flags: flags, requester: requester)
        }
        switch consume decision {
        case .granted(let fd, let rule):
            install(n, fd, closeOnExec: flags & O_CLOEXEC != 0, event: "OPEN",
                    detail: "\(call) \(described()) \(describeOpenFlags(flags))", reason: active.grantReason(rule: rule))
        case .denied(let errno, let reason):
            deny(n, "OPEN", "\(call) \(described()) \(describeOpenFlags(flags))", errno, reason)
        }
    }

    private func serveOpenat2(_ n: Notification, dirfd: Int32, path: UInt64, how: UInt64, size: UInt64) {
        guard size >= 24 else { return answer(n, error: .invalidArgument) }
        guard size <= 4096 else { return answer(n, error: .argListTooLong) } // E2BIG
        let bytes: [UInt8]
        switch readTargetBytes(pid_t(bitPattern: n.pid), address: how, count: Int(size)) {
        case .success(let read): bytes = read
        case .failure(let errno): return answer(n, error: errno)
        }
        // A larger struct from a newer libc: what we do not know must be zero.
        guard bytes[24...].allSatisfy({ $0 == 0 }) else { return answer(n, error: .argListTooLong) }
        let flags = bytes.loadLittleEndian(UInt64.self, at: 0)
        let mode = bytes.loadLittleEndian(UInt64.self, at: 8)
        let resolve = bytes.loadLittleEndian(UInt64.self, at: 16)
        guard flags >> 32 == 0, mode >> 32 == 0 else { return answer(n, error: .invalidArgument) }
        guard resolve == 0 else {
            return deny(n, "OPEN", "openat2 with RESOLVE_* 0x\(String(resolve, radix: 16))", .permissionDenied,
                        "intercept mode serves openat2 without RESOLVE_* flags only")
        }
        serveOpen(n, call: "openat2", dirfd: dirfd, path: path, flags: Int32(truncatingIfNeeded: flags))
    }

    // MARK: stat, access, readlink

    private func serveStat(_ n: Notification, call: String, dirfd: Int32, path address: UInt64, buffer: UInt64, flags: Int32, statxMask: UInt32?) {
        let syncFlags: Int32 = 0x6000 // AT_STATX_SYNC_TYPE
        let known = privsep_AT_SYMLINK_NOFOLLOW | privsep_AT_EMPTY_PATH | 0x800 /* AT_NO_AUTOMOUNT */ | (statxMask != nil ? syncFlags : 0)
        guard flags & ~known == 0 else { return answer(n, error: .invalidArgument) }
        if let mask = statxMask, mask & 0x8000_0000 != 0 { return answer(n, error: .invalidArgument) }
        func statBytes(_ fd: Int32) -> Result<[UInt8], Errno> {
            if let mask = statxMask { return system_statx_fd(fd, flags: flags & syncFlags, mask: mask) }
            return system_fstat_bytes(fd)
        }
        var target = targetPath(n, address: address, dirfd: dirfd)
        if case .empty = target {
            guard flags & privsep_AT_EMPTY_PATH != 0 else { return answer(n, error: .noSuchFileOrDirectory) }
            if dirfd != AT_FDCWD {
                // fstat of the caller's own descriptor: no path, no policy decision.
                let fd: OwnedFileDescriptor
                switch targetDescriptorPath(n, dirfd) {
                case .success(let fetched): fd = fetched
                case .failure(let errno): return answer(n, error: errno)
                }
                switch statBytes(fd.unsafeRawValue) {
                case .success(let bytes): answerWritten(n, bytes, to: buffer, value: 0)
                case .failure(let errno): answer(n, error: errno)
                }
                return
            }
            target = targetPath(n, address: 0, dirfd: dirfd, raw: [UInt8(ascii: ".")])
        }
        let path: String
        switch target {
        case .absolute(let absolute): path = absolute
        case .empty: return answer(n, error: .noSuchFileOrDirectory)
        case .failed(let errno, let why): return deny(n, "STAT", "\(call) (unreadable path)", errno, why)
        }
        guard stillWaiting(n) else { return abandoned(n, "STAT", "\(call) \(path)") }
        let active = policy.withLock { $0 }
        switch active.lookUp(path, followTrailingSymlink: flags & privsep_AT_SYMLINK_NOFOLLOW == 0) {
        case .found(let fd, let rule):
            switch statBytes(fd.unsafeRawValue) {
            case .success(let bytes):
                answerWritten(n, bytes, to: buffer, value: 0) {
                    grant(n, "STAT", "\(call) \(path)", reason: "rule \(rule.path)")
                }
            case .failure(let errno):
                deny(n, "STAT", "\(call) \(path)", errno, "stat failed")
            }
        case .denied(let errno, let reason):
            deny(n, "STAT", "\(call) \(path)", errno, reason)
        }
    }

    private func serveAccess(_ n: Notification, call: String, dirfd: Int32, path address: UInt64, mode: Int32, flags: Int32) {
        guard mode & ~7 == 0 else { return answer(n, error: .invalidArgument) }
        guard flags & ~(privsep_AT_EACCESS | privsep_AT_SYMLINK_NOFOLLOW | privsep_AT_EMPTY_PATH) == 0 else {
            return answer(n, error: .invalidArgument)
        }
        let path: String
        switch targetPath(n, address: address, dirfd: dirfd) {
        case .absolute(let absolute): path = absolute
        case .empty:
            // faccessat2(fd, "", mode, AT_EMPTY_PATH): the caller's own descriptor, checked as is.
            guard flags & privsep_AT_EMPTY_PATH != 0, dirfd != AT_FDCWD else { return answer(n, error: .noSuchFileOrDirectory) }
            switch targetDescriptorPath(n, dirfd) {
            case .success(let fd):
                if case .failure(let errno) = system_faccessat2_fd(fd.unsafeRawValue, mode: mode) { return answer(n, error: errno) }
                return answer(n, value: 0)
            case .failure(let errno):
                return answer(n, error: errno)
            }
        case .failed(let errno, let why): return deny(n, "ACCESS", "\(call) (unreadable path)", errno, why)
        }
        guard stillWaiting(n) else { return abandoned(n, "ACCESS", "\(call) \(path)") }
        let detail = "\(call) \(path) mode \(mode)"
        let active = policy.withLock { $0 }
        switch active.lookUp(path, followTrailingSymlink: flags & privsep_AT_SYMLINK_NOFOLLOW == 0) {
        case .found(let fd, let rule):
            let status: FileStatus
            do { status = try fd.status() } catch { return deny(n, "ACCESS", detail, error, "fstat failed") }
            let granted = rule.permissions
            let isDirectory = status.type == .directory
            if mode & R_OK != 0 && !(granted.contains(.read) || (isDirectory && granted.contains(.listDirectory))) {
                return deny(n, "ACCESS", detail, .permissionDenied, "reading is not granted")
            }
            if mode & W_OK != 0 && !(granted.contains(.write) || granted.contains(.append) || (isDirectory && granted.contains(.create))) {
                return deny(n, "ACCESS", detail, .permissionDenied, "writing is not granted")
            }
            if mode & X_OK != 0 && !(isDirectory || (granted.contains(.execute) && status.permissions & 0o111 != 0)) {
                return deny(n, "ACCESS", detail, .permissionDenied, "executing is not granted")
            }
            grant(n, "ACCESS", detail, reason: "rule \(rule.path)")
            answer(n, value: 0)
        case .denied(let errno, let reason):
            deny(n, "ACCESS", detail, errno, reason)
        }
    }

    private func serveReadlink(_ n: Notification, call: String, dirfd: Int32, path address: UInt64, buffer: UInt64, size: Int32) {
        guard size > 0 else { return answer(n, error: .invalidArgument) }
        let path: String
        switch targetPath(n, address: address, dirfd: dirfd) {
        case .absolute(let absolute): path = absolute
        case .empty: return answer(n, error: .noSuchFileOrDirectory)
        case .failed(let errno, let why): return deny(n, "READLINK", "\(call) (unreadable path)", errno, why)
        }
        guard stillWaiting(n) else { return abandoned(n, "READLINK", "\(call) \(path)") }
        let active = policy.withLock { $0 }
        switch active.lookUp(path, followTrailingSymlink: false) {
        case .found(let fd, let rule):
            guard let status = try? fd.status(), status.type == .symbolicLink else {
                return deny(n, "READLINK", "\(call) \(path)", .invalidArgument, "not a symbolic link")
            }
            switch system_readlink_fd(fd.unsafeRawValue) {
            case .success(let text):
                let bytes = Array(text.prefix(Int(size)))
                answerWritten(n, bytes, to: buffer, value: Int64(bytes.count)) {
                    grant(n, "READLINK", "\(call) \(path)", reason: "rule \(rule.path)")
                }
            case .failure(let errno):
                deny(n, "READLINK", "\(call) \(path)", errno, errno == .invalidArgument ? "not a symbolic link" : "readlink failed")
            }
        case .denied(let errno, let reason):
            deny(n, "READLINK", "\(call) \(path)", errno, reason)
        }
    }

    // MARK: execve

    private func serveExec(_ n: Notification, path address: UInt64) {
        let path: String
        switch targetPath(n, address: address, dirfd: AT_FDCWD) {
        case .absolute(let absolute): path = absolute
        case .empty: return answer(n, error: .noSuchFileOrDirectory)
        case .failed(let errno, let why): return deny(n, "EXEC", "execve (unreadable path)", errno, why)
        }
        guard stillWaiting(n) else { return abandoned(n, "EXEC", "execve \(path)") }
        let active = policy.withLock { $0 }
        switch active.lookUp(path, followTrailingSymlink: true) {
        case .found(let fd, let rule):
            guard rule.permissions.contains(.execute) else {
                return deny(n, "EXEC", "execve \(path)", .permissionDenied, "executing is not granted")
            }
            guard let status = try? fd.status(), status.type == .regular else {
                return deny(n, "EXEC", "execve \(path)", .permissionDenied, "not a regular file")
            }
            // The one call let run: see the type's comment (Landlock backs this check).
            grant(n, "EXEC", "execve \(path)", reason: "rule \(rule.path)")
            if case .failure = system_notif_continue(listener.unsafeRawValue, n.id) {
                abandoned(n, "EXEC", "execve \(path)")
            }
        case .denied(let errno, let reason):
            deny(n, "EXEC", "execve \(path)", errno, reason)
        }
    }

    // MARK: Sockets

    private func serveSocket(_ n: Notification, domain: Int32, type: Int32, protocol: Int32) {
        let detail = "socket domain \(domain) type \(type) protocol \(`protocol`)"
        let active = policy.withLock { $0 }
        // Made as the program (--user): the socket's owner and credentials are its own.
        var made: Int32 = -1, refusal: (Errno, String) = (.permissionDenied, "not made"), why = ""
        if let failure = asProgram({
            switch active.socket(SocketRequest(domain: domain, type: type, protocol: `protocol`), checkedLater: true) {
            case .granted(let fd, let reason): made = fd.releaseUnsafeRawValue(); why = reason
            case .denied(let errno, let reason): refusal = (errno, reason)
            }
        }) {
            if made >= 0 { _ = system_close(made) }
            return deny(n, "SOCKET", detail, .permissionDenied, failure)
        }
        guard made >= 0 else { return deny(n, "SOCKET", detail, refusal.0, refusal.1) }
        install(n, OwnedFileDescriptor(adoptingRawValue: made), closeOnExec: type & privsep_SOCK_CLOEXEC != 0,
                event: "SOCKET", detail: detail, reason: why)
    }

    private func serveAddress(_ n: Notification, binding: Bool, fd targetFD: Int32, address: UInt64, length: Int32) {
        let event = binding ? "BIND" : "CONNECT"
        guard length >= 2, length <= 128 else { return answer(n, error: .invalidArgument) }
        let bytes: [UInt8]
        switch readTargetBytes(pid_t(bitPattern: n.pid), address: address, count: Int(length)) {
        case .success(let read): bytes = read
        case .failure(let errno): return answer(n, error: errno)
        }
        let parsed: SocketAddress
        switch parseSocketAddress(bytes) {
        case .success(let value): parsed = value
        case .failure(let failure): return deny(n, event, "\(event.lowercased()) fd \(targetFD)", failure.errno, failure.reason)
        }
        let detail = "\(event.lowercased()) fd \(targetFD) \(parsed)"
        let socket: OwnedFileDescriptor
        switch fetchTargetDescriptor(n, targetFD) { // validates the notification first
        case .success(let fetched): socket = fetched
        case .failure(let errno): return deny(n, event, detail, errno, "the program's descriptor")
        }
        let raw = socket.unsafeRawValue
        guard case .success(let type) = system_getsockopt_value(raw, SO_TYPE),
              case .success(let domain) = system_getsockopt_value(raw, 39 /* SO_DOMAIN */),
              case .success(let proto) = system_getsockopt_value(raw, 38 /* SO_PROTOCOL */) else {
            return deny(n, event, detail, .notSocket, "not a socket")
        }
        let active = policy.withLock { $0 }
        if let refusal = active.allowsAddress(parsed, domain: domain, type: type, protocol: proto, binding: binding) {
            return deny(n, event, detail, .permissionDenied, refusal)
        }
        if binding, case .failure(let errno) = active.keepIPv4Out(raw, binding: parsed, type: type) {
            return deny(n, event, detail, errno, "setsockopt(IPV6_V6ONLY) failed")
        }
        // As the program (--user), so the kernel checks the unix socket's permissions, the
        // privileged ports and SO_PEERCRED against it, not against the supervisor; and never
        // longer than the connect timeout, so a listener that does not accept cannot hold
        // this thread.
        var result: Result<Void, Errno> = .failure(.permissionDenied)
        let timeout = connectTimeout
        if let failure = asProgram({
            result = binding ? active.connectOrBind(raw, to: parsed, binding: true)
                : system_connect_bounded(raw, timeout: timeout) { active.connectOrBind(raw, to: parsed, binding: false) }
        }) {
            return deny(n, event, detail, .permissionDenied, failure)
        }
        // IPV6_V6ONLY stays changeable until the bind: a thread of the program that cleared it
        // in between has made a socket that takes IPv4 traffic no rule granted. Only a
        // hostile program races so, and the socket is bound now: the program is ended.
        if binding, case .success = result, active.keepsIPv4Out(parsed, type: type),
           system_getsockopt_int(raw, 41 /* IPPROTO_IPV6 */, 26 /* IPV6_V6ONLY */) != .success(1) {
            if programPidfd >= 0 { _ = system_pidfd_send_signal(programPidfd, SIGKILL) }
            auditor.log(.critical, "intercept: the program cleared IPV6_V6ONLY while its socket was bound at \(parsed); killing it")
            return deny(n, event, detail, .permissionDenied, "IPV6_V6ONLY was cleared during the bind: the program is killed")
        }
        switch result {
        case .success:
            grant(n, event, detail, reason: binding ? "bound" : "connected")
            answer(n, value: 0)
        case .failure(let errno):
            // EINPROGRESS on a non-blocking socket is the answer the program expects.
            audit(n, event, detail, decision: errno == .nowInProgress ? "granted" : "denied", errno: errno, reason: "\(event.lowercased()) returned \(errno)")
            answer(n, error: errno)
        }
    }

    /// listen(2) on the program's socket, made here on the socket itself (not let through
    /// after a check, when the program could have put another socket at that number). On an
    /// unbound Internet socket listen binds it to every interface at an ephemeral port, which
    /// no BIND rule was asked about: refused. A bound one was bound by ``serveAddress``.
    private func serveListen(_ n: Notification, fd targetFD: Int32, backlog: Int32) {
        let detail = "listen fd \(targetFD)"
        let socket: OwnedFileDescriptor
        switch fetchTargetDescriptor(n, targetFD) { // validates the notification first
        case .success(let fetched): socket = fetched
        case .failure(let errno): return deny(n, "LISTEN", detail, errno, "the program's descriptor")
        }
        switch system_getsockname_kind(socket.unsafeRawValue) {
        case .success(.internet(port: 0)):
            return deny(n, "LISTEN", detail, .permissionDenied, "the socket is not bound: listen would bind it to every interface")
        case .success(.unixAbstractOrUnnamed):
            // Only a served BIND names a unix socket by a path, and abstract binds are refused;
            // an abstract name is the kernel's autobind (a connect with SO_PASSCRED, say),
            // where anyone outside the sandbox could connect.
            return deny(n, "LISTEN", detail, .permissionDenied, "a unix socket listens only at a path a bind rule allowed (this one is abstract or unnamed)")
        case .success:
            break
        case .failure(let errno):
            return deny(n, "LISTEN", detail, errno, "getsockname failed")
        }
        // As the program (--user): a unix socket records its listener's credentials, which
        // its clients read (SO_PEERCRED), and they must not be the supervisor's.
        var result: Result<Void, Errno> = .failure(.permissionDenied)
        let raw = socket.unsafeRawValue
        if let failure = asProgram({ result = system_listen(raw, backlog) }) {
            return deny(n, "LISTEN", detail, .permissionDenied, failure)
        }
        switch result {
        case .success:
            grant(n, "LISTEN", detail, reason: "listening")
            answer(n, value: 0)
        case .failure(let errno):
            answer(n, error: errno)
        }
    }

    // MARK: The caller's memory and descriptors

    private enum TargetPath {
        case absolute(String)
        case empty
        case failed(Errno, String)

        static func unreadable(_ errno: Errno) -> TargetPath { .failed(errno, unreadableReason(errno)) }

        static func unreadableReason(_ errno: Errno) -> String { "cannot read the path in the program's memory (\(errno))" }
    }

    /// The path argument made absolute and normalized. Nothing here is trusted until
    /// ``stillWaiting(_:)`` has said the caller is still in the call.
    private func targetPath(_ n: Notification, address: UInt64, dirfd: Int32, raw given: [UInt8]? = nil) -> TargetPath {
        let length: Int
        if let given {
            precondition(given.count < pathBuffer.count)
            pathBuffer.copyBytes(from: given)
            length = given.count
        } else {
            switch readPath(n, address: address) {
            case .success(let count): length = count
            case .failure(let errno): return .unreadable(errno)
            }
        }
        return targetPath(n, length: length, dirfd: dirfd)
    }

    /// Reads the path argument into `pathBuffer`: its length, a NUL after it.
    private func readPath(_ n: Notification, address: UInt64) -> Result<Int, Errno> {
        readTargetString(pid_t(bitPattern: n.pid), address: address, buffer: pathBuffer)
    }

    /// The `length` bytes at the start of `pathBuffer`, when they can be served where they
    /// lie: absolute, canonical, ASCII and outside /proc (most paths), so that neither a
    /// string nor a normalized copy is made, and `ActivePolicy.open(path:flags:)` takes
    /// them as the serving loop takes a worker's (the NUL after them included).
    private func pathInPlace(length: Int) -> UnsafeBufferPointer<UInt8>? {
        let bytes = UnsafeBufferPointer(start: pathBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self), count: length)
        guard isCanonicalAbsolutePath(bytes: bytes), isASCIIWithoutNUL(bytes) else { return nil }
        if length >= 6 && memcmp(pathBuffer.baseAddress!, "/proc/", 6) == 0 { return nil } // judged by targetPath
        return bytes
    }

    /// ``targetPath(_:address:dirfd:raw:)`` of a path already read into `pathBuffer`.
    private func targetPath(_ n: Notification, length: Int, dirfd: Int32) -> TargetPath {
        let tid = pid_t(bitPattern: n.pid)
        if length == 0 { return .empty }
        let raw = UnsafeRawBufferPointer(rebasing: pathBuffer[..<length])
        let text: String
        if raw[0] == UInt8(ascii: "/") {
            // The common case: one copy, straight from the buffer into the string.
            guard let absolute = String(validating: raw, as: UTF8.self) else {
                return .failed(.permissionDenied, "the path is not UTF-8")
            }
            text = absolute
        } else {
            guard dirfd == AT_FDCWD || dirfd >= 0 else { return .failed(.badFileDescriptor, "bad directory descriptor") }
            let link = dirfd == AT_FDCWD ? "/proc/\(tid)/cwd" : "/proc/\(tid)/fd/\(dirfd)"
            let full: [UInt8]
            switch system_readlink_bytes(link) {
            case .success(let base):
                guard base.first == UInt8(ascii: "/") else {
                    return .failed(dirfd == AT_FDCWD ? .permissionDenied : .notDirectory, "the directory is not a path")
                }
                full = base + [UInt8(ascii: "/")] + Array(raw)
            case .failure(.noSuchFileOrDirectory):
                return .failed(dirfd == AT_FDCWD ? .noSuchFileOrDirectory : .badFileDescriptor, "no such directory descriptor")
            case .failure(let errno):
                return .failed(.permissionDenied, "cannot read \(link): \(errno)")
            }
            guard let joined = String(validating: full, as: UTF8.self) else {
                return .failed(.permissionDenied, "the path is not UTF-8")
            }
            text = joined
        }
        // Most paths are already canonical: normalizing them would only allocate.
        let normalized = isCanonicalAbsolutePath(text) ? text : normalizePath(text)
        if normalized.utf8.starts(with: "/proc/".utf8) {
            for magic in ["/proc/self", "/proc/thread-self"] {
                let bytes = normalized.utf8
                guard bytes.starts(with: magic.utf8) else { continue }
                if bytes.count == magic.utf8.count || bytes.dropFirst(magic.utf8.count).first == UInt8(ascii: "/") {
                    return .failed(.permissionDenied, "\(magic) would name the supervisor: not served in intercept mode")
                }
            }
            // /proc/<pid>: only the caller's own process (its thread group, or its own thread id).
            // Any other number might be the supervisor (the program's parent), another program,
            // or a process outside the sandbox: its environ, memory maps, fds and cwd are not the
            // program's to read, whatever rule grants /proc.
            let first = normalized.utf8.dropFirst(6).prefix { $0 != UInt8(ascii: "/") }
            if !first.isEmpty, first.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) {
                let number = String(decoding: first, as: UTF8.self)
                guard let owner = pid_t(number), owner == tid || owner == threadGroup(of: tid) else {
                    return .failed(.permissionDenied, "/proc/\(number) is not the calling process: not served in intercept mode")
                }
            }
        }
        return .absolute(normalized)
    }

    /// The thread group (process id) of thread `tid`, from /proc/TID/status; nil if unknown.
    /// Trusted only once ``stillWaiting(_:)`` has said the caller is still in the call.
    private func threadGroup(of tid: pid_t) -> pid_t? {
        let fd = Glibc.open("/proc/\(tid)/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = system_close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[..<count], as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Tgid:") }) else { return nil }
        return pid_t(String(line.dropFirst(5).filter { $0 != " " && $0 != "\t" }))
    }

    /// Whether the caller is still blocked in this very call: then every read of its
    /// memory made before came from it, and the answer will reach it.
    private func stillWaiting(_ n: Notification) -> Bool {
        system_notif_id_valid(listener.unsafeRawValue, n.id)
    }

    /// The caller's descriptor `fd`, duplicated here (pidfd_getfd through a pidfd of the
    /// calling thread that the notification, still valid after it was opened, vouches for).
    private func fetchTargetDescriptor(_ n: Notification, _ fd: Int32) -> Result<OwnedFileDescriptor, Errno> {
        guard fd >= 0 else { return .failure(.badFileDescriptor) }
        let pidfd: OwnedFileDescriptor
        switch system_pidfd_open_thread(pid_t(bitPattern: n.pid)) {
        case .success(let opened): pidfd = opened
        case .failure: return .failure(.noSuchProcess)
        }
        guard stillWaiting(n) else { return .failure(.noSuchProcess) }
        return system_pidfd_getfd(pidfd.unsafeRawValue, fd)
    }

    /// An O_PATH descriptor of what the caller's descriptor `fd` names, through its
    /// /proc/TID/fd link: enough to stat it or check access to it, without holding the
    /// caller's open file. A duplicate of that (``fetchTargetDescriptor(_:_:)``) would make
    /// this thread's close the last one if the program dropped its own meanwhile, and the
    /// last close of a socket with SO_LINGER set waits out the linger time, which the
    /// program chooses (the review held a serving thread in `tcp_close` that way).
    private func targetDescriptorPath(_ n: Notification, _ fd: Int32) -> Result<OwnedFileDescriptor, Errno> {
        guard fd >= 0 else { return .failure(.badFileDescriptor) }
        let opened: OwnedFileDescriptor
        switch system_open_descriptor_link(tid: pid_t(bitPattern: n.pid), fd: fd) {
        case .success(let descriptor): opened = descriptor
        case .failure(.permissionDenied):
            // A supervisor without DAC rights over the caller's /proc/TID/fd (not root, or a
            // hidepid /proc) may still hold ptrace access: the duplicate, as before, then.
            return fetchTargetDescriptor(n, fd)
        case .failure(let errno):
            guard stillWaiting(n) else { return .failure(.noSuchProcess) }
            return .failure(errno == .noSuchFileOrDirectory ? .badFileDescriptor : errno)
        }
        // Checked after the open: the link followed was the caller's, not a process's that took its id.
        guard stillWaiting(n) else { return .failure(.noSuchProcess) }
        return .success(opened)
    }

    // MARK: Answers

    private func answer(_ n: Notification, value: Int64 = 0, error: Errno? = nil) {
        _ = system_notif_respond(listener.unsafeRawValue, n.id, value: value, error: error) // ENOENT: the caller is gone
    }

    /// Writes `bytes` into the caller's buffer, then answers `value` (or EFAULT). False if it failed.
    @discardableResult
    private func answerWritten(_ n: Notification, _ bytes: [UInt8], to address: UInt64, value: Int64,
                               beforeAnswering record: () -> Void = {}) -> Bool {
        switch system_write_target_memory(listener: listener.unsafeRawValue, id: n.id, tid: pid_t(bitPattern: n.pid), address: address, bytes) {
        case .success:
            record()
            answer(n, value: value)
            return true
        case .failure(.noSuchProcess) where !stillWaiting(n):
            return false
        case .failure(.noSuchProcess):
            // Still blocked in the call: it must get an answer, never be left waiting.
            answer(n, error: .badAddress)
            return false
        case .failure(let errno):
            answer(n, error: errno)
            return false
        }
    }

    /// Runs `body` with the program's effective and fs ids on this thread (only this thread's
    /// credentials change), or as is without `--user`. Returns why it could not; if this
    /// thread could not get its own credentials back, the program is killed and this thread
    /// stops serving (fail closed: nothing more is done with credentials it cannot vouch for).
    private func asProgram(_ body: () -> Void) -> String? {
        guard let identity else {
            body()
            return nil
        }
        switch withThreadIdentity(uid: identity.uid, gid: identity.gid, body) {
        case nil:
            return nil
        case .cannotSwitch(let why)?:
            return "cannot act as the program's user: \(why)"
        case .cannotRestore(let why)?:
            stopped = true
            if programPidfd >= 0 { _ = system_pidfd_send_signal(programPidfd, SIGKILL) }
            auditor.log(.critical, "intercept: \(why); killing the program and no longer serving it")
            return why
        }
    }

    private func install(_ n: Notification, _ fd: consuming OwnedFileDescriptor, closeOnExec: Bool, event: String,
                         detail: @autoclosure () -> String, reason: @autoclosure () -> String) {
        // Recorded before the program can see the answer, so the log is never behind it.
        grant(n, event, detail(), reason: reason())
        switch system_notif_addfd_send(listener.unsafeRawValue, n.id, fd.unsafeRawValue, closeOnExec: closeOnExec) {
        case .success:
            break
        case .failure(.noSuchFileOrDirectory):
            abandoned(n, event, detail())
        case .failure(let errno):
            // EMFILE and the like: nothing was installed and the call is still waiting.
            deny(n, event, detail(), errno, "the descriptor could not be installed")
        }
    }

    private func deny(_ n: Notification, _ event: String, _ detail: @autoclosure () -> String, _ errno: Errno, _ reason: @autoclosure () -> String) {
        audit(n, event, detail(), decision: "denied", errno: errno, reason: reason())
        answer(n, error: errno)
    }

    private func grant(_ n: Notification, _ event: String, _ detail: @autoclosure () -> String, reason: @autoclosure () -> String) {
        audit(n, event, detail(), decision: "granted", errno: nil, reason: reason())
    }

    private func abandoned(_ n: Notification, _ event: String, _ detail: @autoclosure () -> String) {
        audit(n, event, detail(), decision: "", errno: nil, reason: "abandoned: the caller exited or was killed during the call")
    }

    private func audit(_ n: Notification, _ event: String, _ detail: @autoclosure () -> String, decision: String, errno: Errno?,
                       reason: @autoclosure () -> String) {
        guard auditor.wants(Auditor.level(ofDecision: decision)) else { return }
        let (write, leftOut) = auditBudget.withLock { $0.admit(now: system_clock_monotonic(), isDenial: decision == "denied") }
        if let leftOut { reportLeftOut(leftOut, pid: Int32(bitPattern: n.pid)) }
        guard write else { return }
        // Written before the program sees the answer (see Auditor.recordNow).
        auditor.recordNow(AuditRecord(time: wallClockSeconds(), workerID: workerID, workerName: workerName, pid: Int32(bitPattern: n.pid),
                                      event: event, detail: detail(), decision: decision, errno: errno?.rawValue ?? 0, reason: reason()))
    }

    /// Reports the records left out since the last report, if any: when the program is reaped
    /// (before its EXIT record) and when this thread ends.
    func reportRecordsLeftOut() {
        if let leftOut = auditBudget.withLock({ $0.remainder() }) { reportLeftOut(leftOut, pid: workerPid) }
    }

    private func reportLeftOut(_ leftOut: AuditBudget.LeftOut, pid: Int32) {
        let record = auditBudget.withLock {
            $0.report(leftOut, time: wallClockSeconds(), workerID: workerID, workerName: workerName, pid: pid)
        }
        // Through the writer: this also runs on the serving thread (at the program's reap).
        auditor.record(record, essential: true)
    }
}

// MARK: Helpers

/// Reads the NUL-terminated string at `address` in `tid`'s memory into `buffer` and returns its
/// length (without the NUL): at most PATH_MAX (4096) bytes with the NUL, else ENAMETOOLONG;
/// EFAULT where readable memory ends first.
func readTargetString(_ tid: pid_t, address: UInt64, buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
    precondition(buffer.count >= 4096)
    guard address != 0 else { return .failure(.badAddress) }
    var length = 0
    while length < 4096 {
        let position = address &+ UInt64(length)
        guard position >= address else { return .failure(.badAddress) }
        // Up to the end of this page first: most paths need one read.
        let want = min(4096 - length, Int(4096 - position % 4096))
        let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[length..<(length + want)])
        switch system_process_vm_readv(tid, into: chunk, from: position) {
        case .success(let count) where count > 0:
            if let nul = memchr(chunk.baseAddress!, 0, count) {
                return .success(length + (UnsafeRawPointer(nul) - UnsafeRawPointer(chunk.baseAddress!)))
            }
            length += count
        case .success:
            return .failure(.badAddress)
        case .failure(.noSuchProcess):
            return .failure(.noSuchProcess)
        case .failure:
            return .failure(.badAddress)
        }
    }
    return .failure(.fileNameTooLong)
}

/// Exactly `count` bytes at `address` in `tid`'s memory, or EFAULT.
func readTargetBytes(_ tid: pid_t, address: UInt64, count: Int) -> Result<[UInt8], Errno> {
    guard address != 0 else { return .failure(.badAddress) }
    var buffer = [UInt8](repeating: 0, count: count)
    let result = buffer.withUnsafeMutableBytes { system_process_vm_readv(tid, into: $0, from: address) }
    guard case .success(let read) = result, read == count else { return .failure(.badAddress) }
    return .success(buffer)
}

/// `path` (absolute) with empty and "." components dropped and ".." applied lexically.
/// Resolution beneath the rule's anchor still refuses whatever would leave it; a ".." after
/// a symlink is taken lexically, where the kernel would follow the link first.
func normalizePath(_ path: String) -> String {
    var parts: [Substring] = []
    for component in path.split(separator: "/", omittingEmptySubsequences: true) {
        if component.utf8.elementsEqual(".".utf8) { continue }
        if component.utf8.elementsEqual("..".utf8) {
            if !parts.isEmpty { parts.removeLast() }
            continue
        }
        parts.append(component)
    }
    return "/" + parts.joined(separator: "/")
}

struct AddressRefusal: Error {
    var errno: Errno
    var reason: String
}

/// A sockaddr from the program's memory as a ``SocketAddress``: inet, inet6, or a
/// pathname unix socket (absolute). Abstract and unnamed unix addresses are refused.
func parseSocketAddress(_ bytes: [UInt8]) -> Result<SocketAddress, AddressRefusal> {
    let family = Int32(bytes.loadLittleEndian(UInt16.self, at: 0))
    func bigEndian16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }
    switch family {
    case AF_INET:
        guard bytes.count >= 16 else { return .failure(AddressRefusal(errno: .invalidArgument, reason: "short sockaddr_in")) }
        let ip = bytes[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return .success(.ipv4(IPv4Address(ip), port: bigEndian16(2)))
    case AF_INET6:
        guard bytes.count >= 24 else { return .failure(AddressRefusal(errno: .invalidArgument, reason: "short sockaddr_in6")) }
        let ip = bytes[8..<24].reduce(UInt128(0)) { $0 << 8 | UInt128($1) }
        let scope = bytes.count >= 28 ? bytes.loadLittleEndian(UInt32.self, at: 24) : 0
        return .success(.ipv6(IPv6Address(ip), port: bigEndian16(2), scopeID: scope))
    case AF_UNIX:
        let pathBytes = bytes[2...]
        guard let first = pathBytes.first else {
            return .failure(AddressRefusal(errno: .permissionDenied, reason: "unnamed unix socket address"))
        }
        guard first != 0 else { return .failure(AddressRefusal(errno: .permissionDenied, reason: "abstract unix socket address")) }
        let name = pathBytes.prefix { $0 != 0 }
        guard name.first == UInt8(ascii: "/"), let path = String(validating: name, as: UTF8.self) else {
            return .failure(AddressRefusal(errno: .permissionDenied, reason: "unix socket path is not absolute UTF-8"))
        }
        return .success(.unix(path: path))
    default:
        return .failure(AddressRefusal(errno: .permissionDenied, reason: "address family \(family) is not served"))
    }
}

extension Array where Element == UInt8 {
    /// A little-endian integer at `offset` (bounds checked by the caller).
    func loadLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(truncatingIfNeeded: self[offset + index]) << (8 * index) }
        return value
    }
}
