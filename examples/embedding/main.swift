// Example 5: embedding the Supervisor library. This program is the supervisor:
// it builds a policy in Swift, spawns the CSV parser of example 1 as a worker,
// serves it, and reports how it ended.
//
//   swift run embedding-example <path to csv-parser> <file.csv>
import Logging
import Glibc
import PrivsepIPC
import Supervisor

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    print("usage: embedding-example CSV_PARSER FILE.csv")
    exit(2)
}
/// The absolute, canonical form of a path from the command line: a worker's executable and
/// a policy's paths must be absolute.
func absolute(_ path: String) -> String {
    guard let resolved = realpath(path, nil) else {
        print("embedding-example: \(path): \(String(cString: strerror(errno)))")
        exit(2)
    }
    defer { free(resolved) }
    return String(cString: resolved)
}
let parser = absolute(arguments[1]), input = absolute(arguments[2])

// Exactly the file the worker is for: not its directory (for a file in /, that would be
// every file on the machine).
var policy = Policy()
policy.allow(path: input, .file, [.read])

var worker = WorkerConfiguration(executable: parser, arguments: [input], policy: policy)
worker.requiredLayers = [.seccomp, .landlock]
worker.wallClockTimeout = 10
worker.resourceLimits = ResourceLimits(addressSpace: 1 << 30, openFiles: 32, cpuSeconds: 5)

let audit = AuditLog(collectingUpTo: 100)
let supervisor = try Supervisor(auditLog: audit)
let handle = try await supervisor.spawn(worker)
let reason = await handle.exit()
await supervisor.shutdown()

print("embedding-example: worker \(handle.pid) \(reason)")
for record in audit.records where record.event == "OPEN" {
    print("embedding-example: \(record.decision) \(record.detail)")
}
exit(reason.isSuccess ? 0 : 1)
