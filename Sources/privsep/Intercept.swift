import ArgumentParser
import Glibc
import Supervisor

/// Turns the worker for the command line into an intercepted one: the helper
/// (`privsep-intercept`, next to this executable) runs the program, in our working directory.
func interceptConfiguration(_ plain: WorkerConfiguration, user: String? = nil) throws -> WorkerConfiguration {
    var identity: (uid: UInt32, gid: UInt32)? = nil
    if let user {
        // Digits only (UInt32("+5") is 5); not 0, which keeps root (and skips the check that
        // root cannot be regained), nor 4294967295, which set*id calls read as "no change".
        func id(_ text: Substring) -> UInt32? {
            guard !text.isEmpty, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                  let value = UInt32(text), value != 0, value != .max else { return nil }
            return value
        }
        let parts = user.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let uid = id(parts[0]), let gid = id(parts.count == 2 ? parts[1] : parts[0]) else {
            throw ValidationError("--user takes UID or UID:GID, numbers from 1 to 4294967294 (not root's 0), not \(user)")
        }
        identity = (uid, gid)
    }
    guard let helper = interceptHelperPath() else {
        printError("privsep: privsep-intercept not found next to this executable; it runs the program in intercept mode")
        throw ExitCode(127)
    }
    var configuration = WorkerConfiguration.intercepting(program: plain.executable, arguments: plain.arguments,
                                                         argv0: plain.argv0, policy: plain.policy, helper: helper, identity: identity)
    configuration.environment = plain.environment
    configuration.inheritedEnvironment = plain.inheritedEnvironment
    configuration.standardInput = plain.standardInput
    configuration.standardOutput = plain.standardOutput
    configuration.standardError = plain.standardError
    var buffer = [CChar](repeating: 0, count: 4096)
    if getcwd(&buffer, buffer.count) != nil {
        configuration.workingDirectory = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return configuration
}

/// privsep-intercept in the directory of this executable (/proc/self/exe), if it is there.
func interceptHelperPath() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return nil }
    let executable = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = executable.lastIndex(of: "/") else { return nil }
    let candidate = String(executable[..<slash]) + "/privsep-intercept"
    return access(candidate, X_OK) == 0 ? candidate : nil
}
