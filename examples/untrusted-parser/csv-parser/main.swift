// csv-parser: a CSV statistics tool that runs as a sandboxed worker.
//
// It locks itself down before it reads a byte of input: no open, no socket, no
// exec. Its inputs come from the supervisor, which opens them under the policy.
//
// The parser has a deliberate "legacy feature" standing in for the kind of bug
// an exploit turns into a capability: a line "#include PATH" makes it open PATH
// itself, and "#exec PROGRAM" makes it run PROGRAM. Under the sandbox both are
// stopped at the system call, and the supervisor reports which one.
import Glibc
import PrivsepIPC
import Worker

func fail(_ message: String) -> Never {
    let line = "csv-parser: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

let inputs = CommandLine.arguments.dropFirst()
guard !inputs.isEmpty else { fail("usage: csv-parser FILE.csv...") }

let supervisor: SupervisorConnection
do {
    supervisor = try SupervisorConnection.connect()
    try Lockdown.brokered().apply(reportingTo: supervisor)
} catch {
    fail("\(error)")
}

/// Statistics of one CSV document.
struct Statistics {
    var header: [String] = []
    var rows = 0
    var sums: [Double] = []
    var numeric: [Bool] = []
}

func parse(_ text: String) -> Statistics {
    var statistics = Statistics()
    for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
        if line.hasPrefix("#include ") {
            // The "bug": follow the include by opening the path directly.
            let path = String(line.dropFirst("#include ".count))
            let fd = open(path, O_RDONLY)
            if fd >= 0 { close(fd) }
            continue
        }
        if line.hasPrefix("#exec ") {
            let program = String(line.dropFirst("#exec ".count))
            var argv: [UnsafeMutablePointer<CChar>?] = [strdup(program), nil]
            execv(program, &argv)
            continue
        }
        let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters() }
        if statistics.header.isEmpty {
            statistics.header = fields
            statistics.sums = Array(repeating: 0, count: fields.count)
            statistics.numeric = Array(repeating: true, count: fields.count)
            continue
        }
        statistics.rows += 1
        for (index, field) in fields.enumerated() where index < statistics.sums.count {
            if let value = Double(field) { statistics.sums[index] += value } else { statistics.numeric[index] = false }
        }
    }
    return statistics
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\r" }.reversed())
    }
}

var refused = false
for path in inputs {
    let fd: OwnedFileDescriptor
    do {
        fd = try supervisor.open(path, .readOnly)
    } catch {
        print("\(path): the supervisor refused: \(error)")
        refused = true
        continue
    }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd.unsafeRawValue, &chunk, chunk.count)
        if count < 0 && errno == EINTR { continue }
        // A failed read is an error, not the end of the file: no statistics of part of it.
        if count < 0 { fail("\(path): read: \(String(cString: strerror(errno)))") }
        if count == 0 { break }
        bytes += chunk[..<count]
        if bytes.count > 64 << 20 { fail("\(path): larger than 64 MiB") }
    }
    let statistics = parse(String(decoding: bytes, as: UTF8.self))
    print("\(path): \(statistics.rows) rows, \(statistics.header.count) columns")
    for (index, name) in statistics.header.enumerated() where statistics.numeric[index] {
        print("  sum of \(name): \(statistics.sums[index])")
    }
}
exit(refused ? 1 : 0)
