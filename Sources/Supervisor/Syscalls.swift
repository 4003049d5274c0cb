// Every raw system call the Supervisor makes goes through this file: one
// `system_<name>` wrapper per call, returning `Result<_, Errno>`, with the
// EINTR policy of PrivsepIPC's `retryingOnInterrupt`.

import CPrivsepShims
import Glibc
import PrivsepIPC
import SystemPackage

func system_pidfd_open(_ pid: pid_t) -> Result<Int32, Errno> {
    let fd = privsep_pidfd_open(pid, 0)
    return fd >= 0 ? .success(fd) : .failure(currentErrno())
}

func system_pidfd_send_signal(_ pidfd: Int32, _ signal: Int32) -> Result<Void, Errno> {
    privsep_pidfd_send_signal(pidfd, signal, 0) == 0 ? .success(()) : .failure(currentErrno())
}

/// kill(-group, signal): every process of a process group.
func system_kill_process_group(_ group: pid_t, _ signal: Int32) -> Result<Void, Errno> {
    guard group > 1 else { return .failure(.invalidArgument) }
    return Glibc.kill(-group, signal) == 0 ? .success(()) : .failure(currentErrno())
}

/// Reaps the exited process behind `pidfd` (non-blocking with WNOHANG).
/// Returns nil if it has not exited yet.
func system_waitid_pidfd(_ pidfd: Int32, nonBlocking: Bool) -> Result<(code: Int32, status: Int32, peakResidentBytes: Int)?, Errno> {
    var code: Int32 = 0, status: Int32 = 0, maxRSS = 0
    let options = WEXITED | (nonBlocking ? WNOHANG : 0)
    switch retryingOnInterrupt({ privsep_waitid_pidfd(pidfd, options, &code, &status, &maxRSS) }) {
    case .success: return .success(code == 0 ? nil : (code, status, maxRSS * 1024))
    case .failure(let errno): return .failure(errno)
    }
}

func system_prlimit(_ pid: pid_t, _ resource: Int32, _ soft: UInt64, _ hard: UInt64) -> Result<Void, Errno> {
    var limit = rlimit(rlim_cur: rlim_t(soft), rlim_max: rlim_t(hard))
    return privsep_prlimit(pid, resource, &limit, nil) == 0 ? .success(()) : .failure(currentErrno())
}

func system_openat2(_ directory: Int32, _ path: String, flags: Int32, mode: UInt32, resolve: UInt64) -> Result<Int32, Errno> {
    path.withCString { system_openat2(directory, $0, flags: flags, mode: mode, resolve: resolve) }
}

func system_openat2(_ directory: Int32, _ path: UnsafePointer<CChar>, flags: Int32, mode: UInt32, resolve: UInt64) -> Result<Int32, Errno> {
    var how = open_how(flags: UInt64(UInt32(bitPattern: flags)), mode: UInt64(mode), resolve: resolve)
    return retryingOnInterrupt { privsep_openat2(directory, path, &how, MemoryLayout<open_how>.size) }
}

/// The CPUs the calling thread may run on.
func system_sched_getaffinity() -> Result<CPUSet, Errno> {
    var set = CPUSet()
    let rc = set.withUnsafeMutableWords { privsep_sched_getaffinity($0.baseAddress!, $0.count * 8) }
    return rc > 0 ? .success(set) : .failure(currentErrno())
}

/// Restricts the calling thread (and the threads and processes it starts afterwards) to `set`.
func system_sched_setaffinity(_ set: CPUSet) -> Result<Void, Errno> {
    set.withUnsafeWords { privsep_sched_setaffinity($0.baseAddress!, $0.count * 8) } == 0 ? .success(()) : .failure(currentErrno())
}

/// The calling thread's scheduling policy and parameters.
func system_sched_getscheduler() -> Result<(policy: Int32, parameters: sched_param), Errno> {
    var parameters = sched_param()
    let policy = sched_getscheduler(0)
    guard policy >= 0, sched_getparam(0, &parameters) == 0 else { return .failure(currentErrno()) }
    return .success((policy, parameters))
}

/// Sets the calling thread's scheduling policy (children it starts afterwards inherit it).
func system_sched_setscheduler(_ policy: Int32, _ parameters: sched_param) -> Result<Void, Errno> {
    var parameters = parameters
    return sched_setscheduler(0, policy, &parameters) == 0 ? .success(()) : .failure(currentErrno())
}

func system_open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
    retryingOnInterrupt { Glibc.open(path, flags) }
}

func system_fcntl(_ fd: Int32, _ command: Int32, _ argument: Int32) -> Result<Int32, Errno> {
    retryingOnInterrupt { Glibc.fcntl(fd, command, argument) }
}

func system_fstat(_ fd: Int32) -> Result<stat, Errno> {
    var info = stat()
    return privsep_fstat(fd, &info) == 0 ? .success(info) : .failure(currentErrno())
}

func system_socket(_ domain: Int32, _ type: Int32, _ proto: Int32) -> Result<Int32, Errno> {
    let fd = Glibc.socket(domain, type, proto)
    return fd >= 0 ? .success(fd) : .failure(currentErrno())
}

func system_connect(_ fd: Int32, _ address: UnsafeRawPointer, _ length: socklen_t) -> Result<Void, Errno> {
    // Not retried: a connect interrupted by a signal continues asynchronously.
    Glibc.connect(fd, address.assumingMemoryBound(to: sockaddr.self), length) == 0 ? .success(()) : .failure(currentErrno())
}

func system_bind(_ fd: Int32, _ address: UnsafeRawPointer, _ length: socklen_t) -> Result<Void, Errno> {
    Glibc.bind(fd, address.assumingMemoryBound(to: sockaddr.self), length) == 0 ? .success(()) : .failure(currentErrno())
}

func system_setsockopt(_ fd: Int32, _ level: Int32, _ option: Int32, _ value: Int32) -> Result<Void, Errno> {
    var value = value
    return Glibc.setsockopt(fd, level, option, &value, socklen_t(4)) == 0 ? .success(()) : .failure(currentErrno())
}

func system_getsockopt_int(_ fd: Int32, _ level: Int32, _ option: Int32) -> Result<Int32, Errno> {
    var value: Int32 = 0
    var length = socklen_t(4)
    return Glibc.getsockopt(fd, level, option, &value, &length) == 0 ? .success(value) : .failure(currentErrno())
}

func system_epoll_create() -> Result<Int32, Errno> {
    let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
    return fd >= 0 ? .success(fd) : .failure(currentErrno())
}

func system_epoll_ctl(_ epoll: Int32, _ operation: Int32, _ fd: Int32, events: UInt32, data: UInt64) -> Result<Void, Errno> {
    var event = epoll_event()
    event.events = events
    event.data.u64 = data
    return epoll_ctl(epoll, operation, fd, &event) == 0 ? .success(()) : .failure(currentErrno())
}

func system_epoll_wait(_ epoll: Int32, _ events: UnsafeMutableBufferPointer<epoll_event>, timeoutMilliseconds: Int32) -> Result<Int, Errno> {
    let count = epoll_wait(epoll, events.baseAddress, Int32(events.count), timeoutMilliseconds)
    if count >= 0 { return .success(Int(count)) }
    let error = currentErrno()
    return error == .interrupted ? .success(0) : .failure(error)
}

func system_eventfd() -> Result<Int32, Errno> {
    let fd = privsep_eventfd(0, privsep_EFD_CLOEXEC | privsep_EFD_NONBLOCK)
    return fd >= 0 ? .success(fd) : .failure(currentErrno())
}

/// An eventfd whose read blocks until it is signalled (for a thread of its own to wait on).
func system_eventfd_blocking() -> Result<Int32, Errno> {
    let fd = privsep_eventfd(0, privsep_EFD_CLOEXEC)
    return fd >= 0 ? .success(fd) : .failure(currentErrno())
}

func system_write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.write(fd, bytes.baseAddress, bytes.count) }
}

func system_read(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.read(fd, bytes.baseAddress, bytes.count) }
}

func system_posix_spawn(
    _ path: String, _ actions: UnsafePointer<posix_spawn_file_actions_t>, _ attributes: UnsafePointer<posix_spawnattr_t>,
    _ argv: [String], _ environment: [String]
) -> Result<pid_t, Errno> {
    func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }
    let cArgv = cStrings(argv), cEnvironment = cStrings(environment)
    defer { for pointer in cArgv + cEnvironment { free(pointer) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, actions, attributes, cArgv, cEnvironment)
    return rc == 0 ? .success(pid) : .failure(Errno(rawValue: rc))
}

func system_clock_monotonic() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// Lets a notified system call run as if the filter had allowed it.
func system_notif_continue(_ listener: Int32, _ id: UInt64) -> Result<Void, Errno> {
    privsep_notif_continue(listener, id) == 0 ? .success(()) : .failure(currentErrno())
}

func system_readlink(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: 256)
    let count = readlink(path, &buffer, 255)
    guard count >= 0 else { return nil }
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func isOpen(_ fd: Int32) -> Bool { Glibc.fcntl(fd, F_GETFD) >= 0 }

/// Opens /dev/null read-write without close-on-exec (for filling a standard stream's slot).
func openDevNull() -> Int32 { Glibc.open("/dev/null", O_RDWR) }

/// What a file open on procfs is, by the path the kernel gives its descriptor.
enum ProcFile {
    /// A file of the process with this number (beneath /proc/PID, however the path reached
    /// it: /proc/self and /proc/thread-self resolve to numbers), at this path.
    case process(pid_t, [UInt8])
    /// A file of no process (cpuinfo, /proc/sys...), at this path.
    case system([UInt8])
    /// Unreadable, or not as expected: no one's to hand out.
    case unknown
}

func inspectProcFile(_ fd: Int32) -> ProcFile {
    guard case .success(let path) = system_readlink_bytes("/proc/self/fd/\(fd)") else { return .unknown }
    let prefix = Array("/proc/".utf8)
    guard path.count > prefix.count, path.starts(with: prefix) else { return .system(path) }
    let component = path[prefix.count...].prefix { $0 != UInt8(ascii: "/") }
    if component.elementsEqual("self".utf8) || component.elementsEqual("thread-self".utf8) { return .unknown }
    guard component.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return .system(path) }
    return pid_t(String(decoding: component, as: UTF8.self)).map { .process($0, path) } ?? .unknown
}

/// Whether /proc numbers processes as this process sees them: a /proc mounted for another
/// PID namespace would give a requester's number to some other process there.
let procNumbersOurProcesses: Bool = system_readlink("/proc/self") == "\(getpid())"

/// procfs files of no process whose contents depend on who opened them, not on who reads:
/// kernel addresses in kallsyms and modules (shown to an opener with CAP_SYSLOG), physical
/// ranges in iomem and ioports (CAP_SYS_ADMIN), and mtrr, which checks CAP_SYS_ADMIN at open.
let procFilesShowingTheOpenersView: [[UInt8]] = ["/proc/kallsyms", "/proc/modules", "/proc/iomem", "/proc/ioports", "/proc/mtrr"]
    .map { Array($0.utf8) }

/// Files of a process that judge their opener, not their reader, beyond what the process may
/// see of itself: physical page numbers in pagemap and kernel stacks in stack (CAP_SYS_ADMIN),
/// and the id maps, setgroups and timens_offsets, whose writes are judged by the opener.
let processFilesShowingTheOpenersView: [[UInt8]] = ["pagemap", "stack", "uid_map", "gid_map", "projid_map", "setgroups", "timens_offsets"]
    .map { Array($0.utf8) }

/// The last component of `path`.
func lastComponent(_ path: [UInt8]) -> ArraySlice<UInt8> {
    path.lastIndex(of: UInt8(ascii: "/")).map { path[($0 + 1)...] } ?? path[...]
}

/// Whether `fd` is on procfs (fstatfs f_type PROC_SUPER_MAGIC).
func isProcFilesystem(_ fd: Int32) -> Bool {
    let type = privsep_fstatfs_type(fd)
    return type < 0 || type == 0x9fa0 // unknown: treat as the riskier case
}

/// Whether `fd` is on ext4, xfs, btrfs, tmpfs or overlayfs: filesystems whose regular
/// files never block a read or write.
func isPlainFilesystem(_ fd: Int32) -> Bool {
    let plain: Set<Int> = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630]
    return plain.contains(privsep_fstatfs_type(fd))
}

func system_pread(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer, offset: Int) -> Result<Int, Errno> {
    retryingOnInterrupt { Glibc.pread(fd, bytes.baseAddress, bytes.count, off_t(offset)) }
}

/// CPU time (user + system) consumed so far by process `pid`, in nanoseconds.
/// `pid` must be an unreaped child, so the number cannot name another process.
func system_process_cpu_nanoseconds(_ pid: pid_t) -> Result<UInt64, Errno> {
    var clock = clockid_t()
    let rc = clock_getcpuclockid(pid, &clock)
    guard rc == 0 else { return .failure(Errno(rawValue: rc)) }
    var now = timespec()
    guard clock_gettime(clock, &now) == 0 else { return .failure(currentErrno()) }
    return .success(UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec))
}

/// Names the calling thread (PR_SET_NAME; at most 15 bytes are kept).
func system_set_thread_name(_ name: String) {
    name.withCString { _ = privsep_prctl(PR_SET_NAME, UInt(bitPattern: $0), 0, 0, 0) }
}

/// This process's peak resident bytes (getrusage RUSAGE_SELF's ru_maxrss): a child
/// exec'd from it starts its own count at up to this much (see `WorkerRecord.inheritedPeakBound`).
func system_own_peak_resident_bytes() -> Int {
    var usage = rusage()
    guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return .max } // unknown: no child peak is then believed
    return usage.ru_maxrss * 1024
}

/// The names in directory `path`, "." and ".." left out.
func system_directory_entries(_ path: String) -> Result<[String], Errno> {
    guard let stream = opendir(path) else { return .failure(currentErrno()) }
    defer { closedir(stream) }
    var names: [String] = []
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return .success(names)
}

/// File `path` to its end, or its first `limit` bytes.
func system_read_file(_ path: String, limit: Int) -> Result<[UInt8], Errno> {
    let fd: Int32
    switch system_open(path, O_RDONLY | O_CLOEXEC) {
    case .success(let opened): fd = opened
    case .failure(let error): return .failure(error)
    }
    defer { _ = system_close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while bytes.count < limit {
        switch chunk.withUnsafeMutableBytes({ system_read(fd, $0) }) {
        case .success(0): return .success(bytes)
        case .success(let count): bytes += chunk[..<min(count, limit - bytes.count)]
        case .failure(let error): return .failure(error)
        }
    }
    return .success(bytes)
}

/// Sleeps the calling thread for `nanoseconds` (less if a signal interrupts it).
func system_sleep_nanoseconds(_ nanoseconds: Int) {
    var duration = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    _ = nanosleep(&duration, nil)
}
