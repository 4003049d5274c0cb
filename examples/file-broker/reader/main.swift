// reader: prints the first line of each file it is given, or why the supervisor
// refused it. It cannot open anything itself: every path goes through the broker.
import Glibc
import PrivsepIPC
import Worker

let supervisor: SupervisorConnection
do {
    supervisor = try SupervisorConnection.connect()
    try Lockdown.brokered().apply(reportingTo: supervisor)
} catch {
    print("reader: \(error)")
    exit(1)
}

for path in CommandLine.arguments.dropFirst() {
    do {
        let fd = try supervisor.open(path, .readOnly)
        var bytes = [UInt8](repeating: 0, count: 256)
        let count = read(fd.unsafeRawValue, &bytes, bytes.count)
        let firstLine = String(decoding: bytes[..<max(count, 0)], as: UTF8.self).split(separator: "\n").first ?? ""
        print("read    \(path): \(firstLine)")
    } catch {
        print("refused \(path): \(error)")
    }
}
