// Every raw system call PrivsepIPC makes goes through this file. Each wrapper
// returns `Result<_, Errno>` and retries EINTR where retrying is correct, so
// the EINTR policy lives in one place.

import CPrivsepShims
import Glibc
package import SystemPackage

@inline(never)
package func currentErrno() -> Errno {
    Errno(rawValue: privsep_errno())
}

/// Runs `body` until it returns something other than -1/EINTR.
@inline(__always)
package func retryingOnInterrupt<T: FixedWidthInteger>(_ body: () -> T) -> Result<T, Errno> {
    while true {
        let result = body()
        if result != -1 { return .success(result) }
        let error = currentErrno()
        if error != .interrupted { return .failure(error) }
    }
}

/// close(2). Never retried: on Linux the fd is released even when close reports EINTR,
/// and retrying could close a descriptor another thread has just been given.
package func system_close(_ fd: Int32) -> Result<Void, Errno> {
    Glibc.close(fd) == 0 ? .success(()) : .failure(currentErrno())
}

internal func system_socketpair(_ domain: Int32, _ type: Int32, _ proto: Int32) -> Result<(Int32, Int32), Errno> {
    var fds: (Int32, Int32) = (-1, -1)
    let rc = withUnsafeMutablePointer(to: &fds) {
        $0.withMemoryRebound(to: Int32.self, capacity: 2) { Glibc.socketpair(domain, type, proto, $0) }
    }
    return rc == 0 ? .success(fds) : .failure(currentErrno())
}

internal func system_send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ flags: Int32) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.send(fd, bytes.baseAddress, bytes.count, flags) }
}

internal func system_sendmsg(_ fd: Int32, _ message: UnsafePointer<msghdr>, _ flags: Int32) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.sendmsg(fd, message, flags) }
}

internal func system_recv(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ flags: Int32) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.recv(fd, buffer.baseAddress, buffer.count, flags) }
}

internal func system_recvmsg(_ fd: Int32, _ message: UnsafeMutablePointer<msghdr>, _ flags: Int32) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.recvmsg(fd, message, flags) }
}

internal func system_fcntl(_ fd: Int32, _ command: Int32) -> Result<Int32, Errno> {
    retryingOnInterrupt { Glibc.fcntl(fd, command) }
}

internal func system_fcntl(_ fd: Int32, _ command: Int32, _ argument: Int32) -> Result<Int32, Errno> {
    retryingOnInterrupt { Glibc.fcntl(fd, command, argument) }
}

internal func system_shutdown(_ fd: Int32, _ how: Int32) -> Result<Void, Errno> {
    Glibc.shutdown(fd, how) == 0 ? .success(()) : .failure(currentErrno())
}

internal func system_getsockopt<Value>(
    _ fd: Int32, _ level: Int32, _ option: Int32, _ value: inout Value
) -> Result<Int, Errno> {
    var length = socklen_t(MemoryLayout<Value>.size)
    let rc = withUnsafeMutableBytes(of: &value) { Glibc.getsockopt(fd, level, option, $0.baseAddress, &length) }
    return rc == 0 ? .success(Int(length)) : .failure(currentErrno())
}

/// fstat(2) into the caller's `info`: a `stat` is 144 bytes, and returned in a Result it
/// was copied three times on every brokered OPEN. The system call itself, as the
/// supervisor's is (`privsep_fstat`: glibc's fstat is newfstatat with an empty path).
internal func system_fstat(_ fd: Int32, into info: inout stat) -> Errno? {
    privsep_fstat(fd, &info) == 0 ? nil : currentErrno()
}

internal func system_setsockopt<Value>(
    _ fd: Int32, _ level: Int32, _ option: Int32, _ value: inout Value
) -> Result<Void, Errno> {
    let rc = withUnsafeBytes(of: &value) { Glibc.setsockopt(fd, level, option, $0.baseAddress, socklen_t($0.count)) }
    return rc == 0 ? .success(()) : .failure(currentErrno())
}

/// If `fd` is a socket, sets SO_LINGER to {on, 0 s}: its last close then resets a TCP
/// connection at once instead of waiting, for as long as the linger a peer chose, for unsent
/// data a receiver may never take. For fds a peer sent, closed by a thread that must not block.
internal func system_reset_linger_if_socket(_ fd: Int32) {
    var info = stat()
    guard system_fstat(fd, into: &info) == nil, info.st_mode & S_IFMT == S_IFSOCK else { return }
    var immediately = linger(l_onoff: 1, l_linger: 0)
    _ = system_setsockopt(fd, SOL_SOCKET, SO_LINGER, &immediately)
}
