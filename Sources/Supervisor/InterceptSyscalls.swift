// The raw system calls of intercept mode (seccomp user notification, the target's
// memory and descriptors), each a `system_<name>` wrapper returning `Result<_, Errno>`
// like the rest of Sources/Supervisor/Syscalls.swift. Kept in a file of their own.

import CPrivsepShims
import Glibc
import PrivsepIPC
package import Synchronization
import SystemPackage

/// One notification, as the kernel gave it.
typealias Notification = privsep_notification

/// Whether a receive that blocks returns once no process uses the filter (Linux 6.11,
/// "seccomp: interrupt SECCOMP_IOCTL_NOTIF_RECV when all users have exited"). Read from
/// the kernel's release: the behaviour has no flag to ask for, and a distribution kernel
/// numbered 6.11 or later carries the upstream change. Unknown counts as no.
package let receiveReturnsWhenFilterUnused: Bool = {
    guard let (major, minor) = kernelRelease() else { return false }
    return (major, minor) >= (6, 11)
}()

/// Whether intercept serving threads receive without polling first: whether
/// ``receiveReturnsWhenFilterUnused``, unless a test stores false to run the older
/// kernels' loop (poll, then receive) on this one. Read as each serving thread starts.
package let interceptReceiveWaits = Atomic<Bool>(receiveReturnsWhenFilterUnused)

/// The running kernel's major and minor version, from uname's release ("6.18.44-...").
func kernelRelease() -> (major: Int, minor: Int)? {
    var names = utsname()
    guard uname(&names) == 0 else { return nil }
    let release = withUnsafeBytes(of: &names.release) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
    let parts = release.split(separator: ".", maxSplits: 2)
    guard parts.count >= 2, let major = Int(parts[0]),
          let minor = Int(parts[1].prefix { $0.isASCII && $0.isNumber }) else { return nil }
    return (major, minor)
}

/// Receives one notification. Blocks if none is pending: call it from the listener's own thread.
func system_notif_receive_full(_ listener: Int32) -> Result<Notification, Errno> {
    var notification = privsep_notification()
    switch retryingOnInterrupt({ privsep_notif_receive_full(listener, &notification) }) {
    case .success: return .success(notification)
    case .failure(let errno): return .failure(errno)
    }
}

/// Whether the task that made notification `id` is still blocked in that call (and so its pid
/// still names it). Every read of the target's memory is trusted only after this says yes.
func system_notif_id_valid(_ listener: Int32, _ id: UInt64) -> Bool {
    privsep_notif_id_valid(listener, id) == 0
}

/// Answers a notification: the call returns `value`, or fails with `error`.
/// ENOENT: the task is gone or was interrupted (a fatal signal) meanwhile.
func system_notif_respond(_ listener: Int32, _ id: UInt64, value: Int64, error: Errno?) -> Result<Void, Errno> {
    privsep_notif_respond(listener, id, value, error?.rawValue ?? 0) == 0 ? .success(()) : .failure(currentErrno())
}

/// Installs `fd` in the target and answers the notification with its number, atomically.
func system_notif_addfd_send(_ listener: Int32, _ id: UInt64, _ fd: Int32, closeOnExec: Bool) -> Result<Int32, Errno> {
    let rc = privsep_notif_addfd_send(listener, id, fd, closeOnExec ? UInt32(O_CLOEXEC) : 0)
    return rc >= 0 ? .success(rc) : .failure(currentErrno())
}

/// Reads up to `buffer.count` (at most 4096) bytes at `address` in process `pid`, one iovec
/// per page, so a fault in the second page still returns what the first one held.
func system_process_vm_readv(_ pid: pid_t, into buffer: UnsafeMutableRawBufferPointer, from address: UInt64) -> Result<Int, Errno> {
    guard buffer.count > 0 else { return .success(0) }
    let page = UInt64(4096)
    let firstChunk = min(buffer.count, Int(page - address % page))
    var local = (iovec(iov_base: buffer.baseAddress!, iov_len: firstChunk),
                 iovec(iov_base: buffer.baseAddress! + firstChunk, iov_len: buffer.count - firstChunk))
    var remote = (iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: firstChunk),
                  iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address &+ UInt64(firstChunk))), iov_len: buffer.count - firstChunk))
    guard buffer.count <= Int(page) else { return .failure(.invalidArgument) } // two iovecs cover at most two pages
    let count = UInt(firstChunk == buffer.count ? 1 : 2)
    let read = withUnsafePointer(to: &local) { localPointer in
        withUnsafePointer(to: &remote) { remotePointer in
            privsep_process_vm_readv(pid, UnsafeRawPointer(localPointer).assumingMemoryBound(to: iovec.self), count,
                                     UnsafeRawPointer(remotePointer).assumingMemoryBound(to: iovec.self), count)
        }
    }
    return read >= 0 ? .success(Int(read)) : .failure(currentErrno())
}

/// Opens a thread's own pidfd (PIDFD_THREAD, Linux 6.9+), so a pid that is a thread id works.
func system_pidfd_open_thread(_ tid: pid_t) -> Result<OwnedFileDescriptor, Errno> {
    let fd = privsep_pidfd_open(tid, UInt32(O_EXCL) /* PIDFD_THREAD */)
    return fd >= 0 ? .success(OwnedFileDescriptor(adoptingRawValue: fd)) : .failure(currentErrno())
}

/// A duplicate of the target's fd `targetFD` (close-on-exec), via its pidfd.
func system_pidfd_getfd(_ pidfd: Int32, _ targetFD: Int32) -> Result<OwnedFileDescriptor, Errno> {
    let fd = privsep_pidfd_getfd(pidfd, targetFD)
    return fd >= 0 ? .success(OwnedFileDescriptor(adoptingRawValue: fd)) : .failure(currentErrno())
}

/// readlink(2) of `path` (a /proc link), as bytes.
func system_readlink_bytes(_ path: String) -> Result<[UInt8], Errno> {
    var buffer = [UInt8](repeating: 0, count: 4097)
    let count = buffer.withUnsafeMutableBytes { bytes in
        path.withCString { readlink($0, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), 4097) }
    }
    guard count >= 0 else { return .failure(currentErrno()) }
    guard count <= 4096 else { return .failure(.fileNameTooLong) }
    return .success(Array(buffer[..<count]))
}

/// readlinkat(fd, "") of an O_PATH|O_NOFOLLOW descriptor of a symlink.
func system_readlink_fd(_ fd: Int32) -> Result<[UInt8], Errno> {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = buffer.withUnsafeMutableBytes { bytes in
        readlinkat(fd, "", bytes.baseAddress!.assumingMemoryBound(to: CChar.self), 4096)
    }
    return count >= 0 ? .success(Array(buffer[..<count])) : .failure(currentErrno())
}

/// statx(fd, "", AT_EMPTY_PATH | flags, mask): the 256-byte struct statx.
func system_statx_fd(_ fd: Int32, flags: Int32, mask: UInt32) -> Result<[UInt8], Errno> {
    var buffer = [UInt8](repeating: 0, count: 256)
    let rc = buffer.withUnsafeMutableBytes { privsep_statx(fd, "", privsep_AT_EMPTY_PATH | flags, mask, $0.baseAddress!) }
    return rc == 0 ? .success(buffer) : .failure(currentErrno())
}

/// fstat(fd): the 144-byte x86_64 struct stat.
func system_fstat_bytes(_ fd: Int32) -> Result<[UInt8], Errno> {
    switch system_fstat(fd) {
    case .success(var info): return .success(withUnsafeBytes(of: &info) { Array($0) })
    case .failure(let errno): return .failure(errno)
    }
}

func system_faccessat2_fd(_ fd: Int32, mode: Int32) -> Result<Void, Errno> {
    privsep_faccessat2(fd, "", mode, privsep_AT_EMPTY_PATH) == 0 ? .success(()) : .failure(currentErrno())
}

/// An O_PATH descriptor of what task `tid`'s descriptor `fd` names (its /proc/TID/fd link
/// followed): a new open file, not a reference to the task's.
func system_open_descriptor_link(tid: pid_t, fd: Int32) -> Result<OwnedFileDescriptor, Errno> {
    let raw = Glibc.open("/proc/\(tid)/fd/\(fd)", privsep_O_PATH | O_CLOEXEC)
    return raw >= 0 ? .success(OwnedFileDescriptor(adoptingRawValue: raw)) : .failure(currentErrno())
}

/// Writes `bytes` at `address` in the memory of the task that made notification `id`.
/// The task's /proc/TID/mem is opened first and the notification checked valid after: the
/// open file is bound to that task's address space, so even if the task dies and its id is
/// reused right after the check, the write cannot land in another process.
func system_write_target_memory(listener: Int32, id: UInt64, tid: pid_t, address: UInt64, _ bytes: [UInt8]) -> Result<Void, Errno> {
    guard address != 0 else { return .failure(.badAddress) }
    let fd = Glibc.open("/proc/\(tid)/mem", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else {
        // ESRCH only if the caller is really gone; otherwise (EACCES of a non-dumpable
        // caller, EMFILE...) it is still blocked and must get an answer: EFAULT.
        return .failure(system_notif_id_valid(listener, id) ? .badAddress : .noSuchProcess)
    }
    defer { _ = system_close(fd) }
    guard system_notif_id_valid(listener, id) else { return .failure(.noSuchProcess) }
    let written = bytes.withUnsafeBytes { buffer in
        retryingOnInterrupt { pwrite(fd, buffer.baseAddress, buffer.count, off_t(Int64(bitPattern: address))) }
    }
    switch written {
    case .success(let count) where count == bytes.count: return .success(())
    case .success: return .failure(.badAddress)
    case .failure: return .failure(.badAddress)
    }
}

func system_getsockopt_value(_ fd: Int32, _ option: Int32) -> Result<Int32, Errno> {
    system_getsockopt_int(fd, SOL_SOCKET, option)
}

// Non-generic forms of PrivsepIPC's `retryingOnInterrupt`, preferred by overload resolution
// for every call in this module: the generic one is not specialized across the module
// boundary, and its runtime metadata lookups cost each served request (one per system call)
// more than the call itself on a cold cache. Same EINTR policy.

/// Runs `body` until it returns something other than -1/EINTR.
@inline(__always)
func retryingOnInterrupt(_ body: () -> Int32) -> Result<Int32, Errno> {
    while true {
        let result = body()
        if result != -1 { return .success(result) }
        let error = Errno(rawValue: privsep_errno())
        if error != .interrupted { return .failure(error) }
    }
}

/// Runs `body` until it returns something other than -1/EINTR.
@inline(__always)
func retryingOnInterrupt(_ body: () -> Int) -> Result<Int, Errno> {
    while true {
        let result = body()
        if result != -1 { return .success(result) }
        let error = Errno(rawValue: privsep_errno())
        if error != .interrupted { return .failure(error) }
    }
}

// MARK: The serving thread's identity

/// The credentials of the calling thread: real/effective/saved uid and gid, fs ids and
/// supplementary groups.
struct ThreadCredentials: Equatable {
    var uids: [UInt32]
    var gids: [UInt32]
    var fsuid: UInt32
    var fsgid: UInt32
    var groups: [UInt32]
}

/// The calling thread's own credentials (raw calls: glibc may answer from another thread's).
func system_thread_credentials() -> Result<ThreadCredentials, Errno> {
    var ruid: uid_t = 0, euid: uid_t = 0, suid: uid_t = 0, rgid: gid_t = 0, egid: gid_t = 0, sgid: gid_t = 0
    guard privsep_thread_getresuid(&ruid, &euid, &suid) == 0, privsep_thread_getresgid(&rgid, &egid, &sgid) == 0 else {
        return .failure(currentErrno())
    }
    let count = privsep_thread_getgroups(0, nil)
    guard count >= 0 else { return .failure(currentErrno()) }
    var groups = [gid_t](repeating: 0, count: Int(count))
    if count > 0 {
        let got = groups.withUnsafeMutableBufferPointer { privsep_thread_getgroups(count, $0.baseAddress) }
        guard got == count else { return .failure(got < 0 ? currentErrno() : .resourceTemporarilyUnavailable) }
    }
    return .success(ThreadCredentials(uids: [ruid, euid, suid], gids: [rgid, egid, sgid],
                                      fsuid: privsep_thread_fsuid(), fsgid: privsep_thread_fsgid(), groups: groups))
}

/// Why ``withThreadIdentity(uid:gid:_:)`` did not run its body as asked (or could not switch back after).
enum ThreadIdentityError: Error {
    /// The switch failed and the thread is back at its own credentials (verified).
    case cannotSwitch(String)
    /// The thread could not be put back: it must serve nothing more.
    case cannotRestore(String)
}

/// Runs `body` on this thread with effective and fs ids `uid`/`gid` and no supplementary
/// groups, keeping real and saved ids (0 for a root supervisor) so the thread can switch back;
/// then switches back and verifies every id and group is what it was. nil when all went well. Only the calling
/// thread changes (raw setresuid/setresgid/setgroups, not glibc's broadcasting wrappers).
/// The kernel checks what `body` does (path permissions, SO_PEERCRED, privileged ports)
/// against these credentials; with a non-zero effective uid the thread holds no
/// effective capability until it switches back.
func withThreadIdentity(uid: UInt32, gid: UInt32, _ body: () -> Void) -> ThreadIdentityError? {
    let saved: ThreadCredentials
    switch system_thread_credentials() {
    case .success(let credentials): saved = credentials
    case .failure(let errno): return .cannotSwitch("reading the thread's credentials: \(errno)")
    }
    func restore() -> ThreadIdentityError? {
        // uid first: setresgid and setgroups need the capabilities that euid 0 brings back.
        _ = privsep_thread_setresuid(-1, Int64(saved.uids[1]), -1)
        _ = privsep_thread_setresgid(-1, Int64(saved.gids[1]), -1)
        _ = saved.groups.withUnsafeBufferPointer { privsep_thread_setgroups($0.count, $0.baseAddress) }
        guard case .success(let now) = system_thread_credentials(), now == saved else {
            return .cannotRestore("the serving thread's credentials could not be restored")
        }
        return nil
    }
    let switched = privsep_thread_setgroups(0, nil) == 0
        && privsep_thread_setresgid(-1, Int64(gid), -1) == 0
        && privsep_thread_setresuid(-1, Int64(uid), -1) == 0
    let errno = currentErrno()
    guard switched, case .success(let now) = system_thread_credentials(),
          now.uids[1] == uid, now.gids[1] == gid, now.fsuid == uid, now.fsgid == gid, now.groups.isEmpty,
          now.uids[0] == saved.uids[0], now.uids[2] == saved.uids[2] else {
        return restore() ?? .cannotSwitch("switching to \(uid):\(gid): \(switched ? "ids not as asked" : "\(errno)")")
    }
    body()
    return restore()
}

// MARK: Bounded connect

/// A timer that sends a signal, with a handler that does nothing, to the thread that made
/// it, so that a blocking call it lands in returns EINTR. Once due, it fires again every
/// 2 ms until disarmed: a signal that came before the call began to wait was spent, and the
/// next one still ends the wait. The handler is installed once per process, for
/// ``privsep_interrupt_signal()``.
final class ThreadInterrupter {
    /// The kernel's timer id as glibc's `timer_t`: nil for the process's first timer.
    private let timer: timer_t?
    private static let handlerInstalled: Bool = privsep_install_interrupt_handler(privsep_interrupt_signal()) == 0

    /// nil if the handler, the signal mask or the timer cannot be set up.
    init?() {
        guard Self.handlerInstalled, privsep_unblock_signal(privsep_interrupt_signal()) == 0 else { return nil }
        var timer: timer_t? = nil
        guard privsep_thread_timer_create(privsep_interrupt_signal(), &timer) == 0 else { return nil }
        self.timer = timer
    }

    deinit { _ = privsep_thread_timer_delete(timer) }

    /// Interrupts this thread `nanoseconds` from now, and every 2 ms after that.
    func arm(nanoseconds: UInt64) -> Bool {
        privsep_thread_timer_arm(timer, Int64(min(nanoseconds, UInt64(Int64.max))), 2_000_000) == 0
    }

    func disarm() { _ = privsep_thread_timer_arm(timer, 0, 0) }
}

/// connect(2) of `fd` (a duplicate of the program's socket, so it shares the program's file
/// status flags) done by `connect`, but never blocking past `timeout` seconds: a blocking
/// socket is made non-blocking for the call and put back after. A TCP connect still in
/// progress is waited for with poll; a unix connect to a full backlog (EAGAIN) is retried.
/// ETIMEDOUT when the deadline passes. A socket the program made non-blocking gets the
/// kernel's own answer (EINPROGRESS, EAGAIN).
func system_connect_bounded(_ fd: Int32, timeout: Double, _ connect: () -> Result<Void, Errno>) -> Result<Void, Errno> {
    let flags: Int32
    switch system_fcntl(fd, F_GETFL, 0) {
    case .success(let value): flags = value
    case .failure(let errno): return .failure(errno)
    }
    if flags & O_NONBLOCK != 0 { return connect() }
    // O_NONBLOCK lives on the open file description, which the program shares: another of
    // its threads can clear it between this call and a connect, which then blocks as long
    // as the kernel lets it (a full unix backlog: for ever). So each connect also runs
    // under a timer that interrupts this thread at the deadline, which the program cannot
    // touch. Without one the connect is not made: the deadline would not hold.
    guard let interrupter = ThreadInterrupter() else { return .failure(.resourceTemporarilyUnavailable) }
    if case .failure(let errno) = system_fcntl(fd, F_SETFL, flags | O_NONBLOCK) { return .failure(errno) }
    defer { _ = system_fcntl(fd, F_SETFL, flags) }
    let start = system_clock_monotonic()
    let limit = nanoseconds(timeout)
    func remainingNanoseconds() -> UInt64 {
        let now = system_clock_monotonic()
        let elapsed = now >= start ? now - start : limit
        return elapsed >= limit ? 0 : limit - elapsed
    }
    func remainingMilliseconds() -> Int32 {
        Int32(min(UInt64(Int32.max), (remainingNanoseconds() + 999_999) / 1_000_000))
    }
    var interrupted = false
    while true {
        let left = remainingNanoseconds()
        guard left > 0, interrupter.arm(nanoseconds: left) else { return .failure(.timedOut) }
        let result = connect()
        interrupter.disarm()
        switch result {
        case .success:
            return .success(())
        case .failure(.interrupted):
            // The deadline's signal (or another): the loop's check decides. An interrupted
            // TCP connect goes on in the kernel; the next call finds it (EALREADY, or
            // EISCONN once it is done).
            interrupted = true
            continue
        case .failure(.socketIsConnected) where interrupted:
            return .success(())
        case .failure(.resourceTemporarilyUnavailable):
            // A unix listener's backlog is full: try again shortly, until the deadline.
            let left = remainingMilliseconds()
            guard left > 0 else { return .failure(.timedOut) }
            var none = pollfd(fd: -1, events: 0, revents: 0)
            _ = poll(&none, 1, min(left, 10))
        case .failure(let errno) where errno == .nowInProgress || errno.rawValue == EALREADY:
            while true {
                let left = remainingMilliseconds()
                guard left > 0 else { return .failure(.timedOut) }
                var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&entry, 1, left)
                if ready < 0 && currentErrno() == .interrupted { continue }
                guard ready >= 0 else { return .failure(currentErrno()) }
                if ready == 0 { continue }
                switch system_getsockopt_int(fd, SOL_SOCKET, SO_ERROR) {
                case .success(0): return .success(())
                case .success(let error): return .failure(Errno(rawValue: error))
                case .failure(let errno): return .failure(errno)
                }
            }
        case .failure(let errno):
            return .failure(errno)
        }
    }
}

/// The local port of an Internet socket (0 while unbound); nil for another family.
/// What a socket is bound to, as far as a listen cares.
enum SocketName: Equatable {
    /// An Internet socket's port (0: not bound).
    case internet(port: UInt16)
    /// A unix socket bound to a path.
    case unixPath
    /// A unix socket with an abstract name (autobound by a connect or a send, say) or none.
    case unixAbstractOrUnnamed
    case other
}

func system_getsockname_kind(_ fd: Int32) -> Result<SocketName, Errno> {
    var address = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let rc = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.getsockname(fd, $0, &length) }
    }
    guard rc == 0 else { return .failure(currentErrno()) }
    switch Int32(address.ss_family) {
    case AF_INET, AF_INET6:
        // sin_port and sin6_port both lie at offset 2.
        return .success(.internet(port: withUnsafeBytes(of: &address) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }))
    case AF_UNIX:
        // A path's first byte is not NUL; an abstract name's is, and an unnamed socket's
        // address is the family alone.
        let pathname = Int(length) > 2 && withUnsafeBytes(of: &address) { $0[2] } != 0
        return .success(pathname ? .unixPath : .unixAbstractOrUnnamed)
    default:
        return .success(.other)
    }
}

func system_listen(_ fd: Int32, _ backlog: Int32) -> Result<Void, Errno> {
    Glibc.listen(fd, backlog) == 0 ? .success(()) : .failure(currentErrno())
}
