// privsep-intercept: the helper of intercept mode (`privsep run --intercept`).
//
//   privsep-intercept [--exec PATH]... [--identity UID:GID] -- PROGRAM ARGV0 [ARGS...]
//
// Spawned by the supervisor with the channel at fd 3. It says HELLO, drops to UID:GID if
// given, applies
// InterceptLockdown (no_new_privs; Landlock granting READ_FILE|EXECUTE beneath each
// --exec PATH only; a seccomp filter that sends file, socket and exec calls to the
// supervisor), hands the filter's listener to the supervisor, waits for the go-ahead
// and execs PROGRAM with argv [ARGV0, ARGS...]. The program keeps neither the listener
// nor the channel, and its environment loses PRIVSEP_FD and PRIVSEP_LEARN.
// No Foundation: this runs before every intercepted program.

import Glibc
import PrivsepIPC
import Worker

func fail(_ message: String, status: Int32) -> Never {
    let line = "privsep-intercept: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(status)
}

var arguments = Array(CommandLine.arguments.dropFirst())
let usage = "usage: privsep-intercept [--exec PATH]... [--identity UID:GID] -- PROGRAM ARGV0 [ARGS...]"
var executablePaths: [String] = []
var identity: (uid: UInt32, gid: UInt32)? = nil
while let first = arguments.first, first != "--" {
    guard arguments.count >= 2 else { fail(usage, status: 127) }
    switch first {
    case "--exec":
        executablePaths.append(arguments[1])
    case "--identity":
        let parts = arguments[1].split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) else { fail(usage, status: 127) }
        identity = (uid, gid)
    default:
        fail(usage, status: 127)
    }
    arguments.removeFirst(2)
}
guard arguments.first == "--", arguments.count >= 3 else {
    fail(usage, status: 127)
}
let program = arguments[1]
let programArguments = Array(arguments[2...])

let supervisor: SupervisorConnection
do {
    supervisor = try SupervisorConnection.connect()
} catch {
    fail("\(error)", status: 127)
}
// The channel must not survive the exec: the program does not speak the protocol.
if fcntl(supervisor.unsafeChannelFileDescriptor, F_SETFD, FD_CLOEXEC) != 0 {
    fail("fcntl(FD_CLOEXEC) on the channel failed", status: 127)
}
// Built before the lockdown: nothing after it may make a notified call until the go-ahead.
let hidden = [WireFormat.channelEnvironmentVariable, WireFormat.learningEnvironmentVariable]
var environment: [String] = []
var pointer = environ
while let entry = pointer.pointee {
    let text = String(cString: entry)
    let name = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
    if !hidden.contains(name) { environment.append(text) }
    pointer += 1
}
let argv: [UnsafeMutablePointer<CChar>?] = programArguments.map { strdup($0) } + [nil]
let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]

do {
    try InterceptLockdown(executablePaths: executablePaths, identity: identity).apply(handingListenerTo: supervisor)
} catch {
    fail("\(error)", status: 127)
}
execve(program, argv, envp)
let error = errno
fail("\(program): \(String(cString: strerror(error)))", status: error == ENOENT ? 127 : 126)
