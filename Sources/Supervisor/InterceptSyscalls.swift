// The raw system calls of intercept mode (seccomp user notification, the target's
// memory and descriptors), each a `system_<name>` wrapper returning `Result<_, Errno>`
// like the rest of Sources/Supervisor/Syscalls.swift. Kept in a file of their own.

import CPrivsepShims
import Glibc
import PrivsepIPC
import SystemPackage

/// One notification, as the kernel gave it.
typealias Notification = privsep_notification

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

/// Writes `bytes` at `address` in the memory of the task that made notification `id`.
/// The task's /proc/TID/mem is opened first and the notification checked valid after: the
/// open file is bound to that task's address space, so even if the task dies and its id is
/// reused right after the check, the write cannot land in another process.
func system_write_target_memory(listener: Int32, id: UInt64, tid: pid_t, address: UInt64, _ bytes: [UInt8]) -> Result<Void, Errno> {
    guard address != 0 else { return .failure(.badAddress) }
    let fd = Glibc.open("/proc/\(tid)/mem", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(.noSuchProcess) }
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

/// kill(-group, signal): every process of a process group.
func system_kill_process_group(_ group: pid_t, _ signal: Int32) -> Result<Void, Errno> {
    guard group > 1 else { return .failure(.invalidArgument) }
    return Glibc.kill(-group, signal) == 0 ? .success(()) : .failure(currentErrno())
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
