import Glibc
public import PrivsepIPC
import SystemPackage

extension SandboxLayers {
    /// The layers a supervisor can see from outside, in /proc, and checks there when a
    /// worker's configuration requires them: the rest (Landlock, rlimits the worker set
    /// itself) it takes on the worker's word.
    public static let visibleToTheKernel: SandboxLayers = [.noNewPrivileges, .seccomp, .userNamespace, .networkNamespace]
}

/// Where what the kernel shows of worker `pid` contradicts its report that `claimed` are in
/// force, on every thread it has; nil where it agrees. A worker whose threads cannot be read
/// fails (the check was asked for). `pid` must be an unreaped child of ours, so it cannot
/// name another process. A thread that is gone, exiting, or a zombie is passed over: it runs no
/// more code. A supervisor that is not root cannot read the namespaces of a worker that made
/// itself non-dumpable: such a worker is killed, as one that cannot be checked.
///
/// A SANDBOX_STATUS is the worker's word, and a policy's `require` is what the supervisor
/// relies on. A lockdown that silently failed, a filter loaded without TSYNC that binds one
/// thread, or a worker that reports layers it never applied would otherwise be served.
/// Read once, at the worker's first report: no_new_privs, a filter and a namespace cannot be
/// undone, and a thread started later inherits its creator's. This catches a lockdown that
/// went wrong; it is not proof against a worker binary that sets out to deceive: one that
/// races the scan with threads it starts and ends, or forked a process holding its channel
/// before the lockdown, is not caught.
func sandboxContradiction(pid: pid_t, claimed: SandboxLayers) -> String? {
    let checked = claimed.intersection(.visibleToTheKernel)
    guard !checked.isEmpty else { return nil }
    let tasks: [String]
    switch system_directory_entries("/proc/\(pid)/task") {
    case .success(let names): tasks = names
    case .failure(let error): return "its threads cannot be read (/proc/\(pid)/task: \(error))"
    }
    let namespaces: [(SandboxLayers, String)] = [(.userNamespace, "user"), (.networkNamespace, "net")]
    var supervisorNamespace: [String: [UInt8]] = [:]
    for (layer, kind) in namespaces where checked.contains(layer) {
        guard case .success(let own) = system_readlink_bytes("/proc/self/ns/\(kind)") else {
            return "the supervisor's own \(kind) namespace cannot be read"
        }
        supervisorNamespace[kind] = own
    }
    for tid in tasks {
        let directory = "/proc/\(pid)/task/\(tid)"
        if !checked.isDisjoint(with: [.noNewPrivileges, .seccomp]) {
            let text: [UInt8]
            // Whole: a user in thousands of groups pushes these fields past 16 KiB.
            switch system_read_file(directory + "/status", limit: 1 << 20) {
            case .success(let bytes): text = bytes
            case .failure(.noSuchFileOrDirectory), .failure(.noSuchProcess): continue // the thread is gone
            case .failure(let error): return "thread \(tid)'s status cannot be read (\(error))"
            }
            // A zombie (a main thread that ended with pthread_exit) shows what it had when it
            // ended, and runs no more code.
            if let state = statusField(text, "State"), state.hasPrefix("Z") || state.hasPrefix("X") { continue }
            if checked.contains(.noNewPrivileges), statusField(text, "NoNewPrivs") != "1" {
                return "thread \(tid) runs without no_new_privs"
            }
            if checked.contains(.seccomp), statusField(text, "Seccomp") != "2" {
                return "thread \(tid) runs without a seccomp filter"
            }
        }
        for (layer, kind) in namespaces where checked.contains(layer) {
            switch system_readlink_bytes(directory + "/ns/\(kind)") {
            case .success(let namespace):
                if namespace == supervisorNamespace[kind] { return "thread \(tid) is still in the supervisor's \(kind) namespace" }
            // ENOENT: the thread is gone, or exiting (its namespaces are released first); it runs no more code.
            case .failure(.noSuchFileOrDirectory), .failure(.noSuchProcess): continue
            case .failure(let error): return "thread \(tid)'s \(kind) namespace cannot be read (\(error))"
            }
        }
    }
    return nil
}

/// The value of `name:` in a /proc status text, tabs and spaces trimmed.
private func statusField(_ text: [UInt8], _ name: String) -> Substring? {
    let key = Array((name + ":").utf8)
    var lineStart = 0
    while lineStart < text.count {
        let lineEnd = text[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? text.count
        if lineEnd - lineStart >= key.count && text[lineStart..<(lineStart + key.count)].elementsEqual(key) {
            let value = String(decoding: text[(lineStart + key.count)..<lineEnd], as: UTF8.self)
            return value.drop { $0 == "\t" || $0 == " " }
        }
        lineStart = lineEnd + 1
    }
    return nil
}
