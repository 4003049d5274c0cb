import Glibc

/// What /proc/self/fd/N points at ("pipe:[123]", "/etc/hosts"...). The " (deleted)" the
/// kernel appends once a file is unlinked is left off: an exit test's child inherits the
/// runner's fds, and another test deleting its temporary file must not make that fd look
/// new (CI once saw a policy file of ExampleTests reported as a leak that way).
public func descriptorTarget(_ fd: Int32) -> String? {
    var target = [CChar](repeating: 0, count: 256)
    let count = readlink("/proc/self/fd/\(fd)", &target, 255)
    guard count >= 0 else { return nil }
    let text = String(decoding: target[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let deleted = " (deleted)"
    return text.hasSuffix(deleted) ? String(text.dropLast(deleted.count)) : text
}

/// The names in directory `path` ("." and ".." left out; the fd reading it too, under
/// /proc/self/fd); empty if it cannot be read.
public func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    let own = "\(dirfd(directory))"
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." && !(path == "/proc/self/fd" && name == own) { names.append(name) }
    }
    return names
}

/// This process's open pipes, sockets and files as "N->target": every kind of fd the tests
/// pass around. anon_inode fds are left out because libdispatch creates its timerfd and
/// eventfd lazily, at moments no test controls.
public func openFileDescriptorSet() -> Set<String> {
    var result: Set<String> = []
    for name in directoryEntries("/proc/self/fd") {
        guard let fd = Int32(name), let target = descriptorTarget(fd), !target.hasPrefix("anon_inode:") else { continue }
        result.insert("\(fd)->\(target)")
    }
    return result
}

/// The descriptors open now that were not in `before`, once none are (or after `seconds`):
/// a leak stays, an fd the test runtime holds for a moment goes. Descriptors that closed
/// meanwhile do not count: an exit test's child inherits fds from the test runner (other
/// tests' pipes and sockets, open at the moment of the spawn), and the runtime may close
/// some of them while the test runs.
public func newFileDescriptors(since before: Set<String>, within seconds: Double = 2) -> Set<String> {
    var added = openFileDescriptorSet().subtracting(before)
    var waited = 0.0
    while !added.isEmpty && waited < seconds {
        usleep(10_000)
        waited += 0.01
        added = openFileDescriptorSet().subtracting(before)
    }
    return added
}
