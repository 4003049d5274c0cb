// record-parser: a parser for a small configuration format, run as a pool
// worker. It locks itself down, then serves jobs: each job carries one input
// file as an fd (opened by the supervisor side) and its path as the input bytes.
//
//   # comment
//   [section]
//   key = value
//   key = {a = 1, b = {c = 2}}        nested values
//   key = first part \              a trailing backslash continues the line
//         second part
//   !include PATH                    merge another file
//   !reserve N                       preallocate room for N records
//
// The parser has deliberate bugs, each standing in for a class of real ones
// that an input can trigger; the pool contains every one of them:
//   - !include opens PATH itself (an arbitrary-file-read bug): the seccomp
//     filter stops the openat, and only that job fails.
//   - nested values recurse without a depth limit: a deeply nested value
//     overflows the stack (SIGSEGV).
//   - !reserve trusts N: a huge N grows memory until the pool's limit.
//   - a continuation backslash on the last line loops forever: the job's
//     timeout ends it.
// Malformed input is rejected with a line number and the worker keeps serving.
import Glibc
import SystemPackage
import PrivsepIPC
import Worker

func fail(_ message: String) -> Never {
    let line = "record-parser: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

struct Summary {
    var sections = 0
    var keys = 0
    var deepest = 0
    var reserved: [[UInt64]] = []
}

struct Parser {
    let lines: [[UInt8]]
    var summary = Summary()

    init(_ bytes: [UInt8]) {
        lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
    }

    mutating func parse() throws(JobRejection) -> Summary {
        var index = 0
        while index < lines.count {
            var line = lines[index]
            let number = index + 1
            // BUG (on purpose): at the end of the input there is no next line, `next`
            // stays put, and the continuation never ends.
            var next = index
            while line.last == UInt8(ascii: "\\") {
                if next + 1 < lines.count { next += 1 }
                line = Array(line.dropLast()) + lines[next]
                if next == index { line.append(UInt8(ascii: "\\")) }
            }
            index = next + 1
            try statement(trimmed(line), line: number)
        }
        return summary
    }

    mutating func statement(_ line: [UInt8], line number: Int) throws(JobRejection) {
        guard let first = line.first, first != UInt8(ascii: "#") else { return }
        if first == UInt8(ascii: "[") {
            guard line.last == UInt8(ascii: "]"), line.count > 2 else { throw reject(number, "a section is [name]") }
            summary.sections += 1
        } else if first == UInt8(ascii: "!") {
            let words = line.split(separator: UInt8(ascii: " "), maxSplits: 1).map { String(decoding: $0, as: UTF8.self) }
            guard words.count == 2 else { throw reject(number, "a directive takes one argument") }
            switch words[0] {
            case "!include":
                // BUG (on purpose): follows the include by opening the path itself.
                let fd = open(words[1], O_RDONLY)
                if fd >= 0 { close(fd) }
            case "!reserve":
                // BUG (on purpose): trusts the count it was given.
                guard let count = Int(words[1]), count >= 0 else { throw reject(number, "!reserve takes a count") }
                for record in 0..<count { summary.reserved.append([UInt64](repeating: UInt64(record), count: 128)) }
            default:
                throw reject(number, "unknown directive \(words[0])")
            }
        } else {
            guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else { throw reject(number, "expected key = value") }
            let key = trimmed(Array(line[..<equals]))
            guard !key.isEmpty, key.allSatisfy({ isNameByte($0) }) else { throw reject(number, "a key is letters, digits, _ and -") }
            var value = Cursor(trimmed(Array(line[line.index(after: equals)...])))
            let depth = try value.value(line: number)
            guard value.atEnd else { throw reject(number, "unexpected text after the value") }
            summary.keys += 1
            summary.deepest = max(summary.deepest, depth)
        }
    }
}

/// A value: a scalar, or {key = value, ...}.
struct Cursor {
    let bytes: [UInt8]
    var position = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var atEnd: Bool { position >= bytes.count }

    /// Returns the nesting depth. BUG (on purpose): no depth limit.
    mutating func value(line: Int) throws(JobRejection) -> Int {
        skipSpaces()
        guard !atEnd else { throw reject(line, "missing value") }
        if bytes[position] != UInt8(ascii: "{") {
            while !atEnd, bytes[position] != UInt8(ascii: ","), bytes[position] != UInt8(ascii: "}") { position += 1 }
            return 0
        }
        position += 1
        var deepest = 0
        while true {
            skipSpaces()
            guard !atEnd else { throw reject(line, "unclosed {") }
            if bytes[position] == UInt8(ascii: "}") { position += 1; return deepest + 1 }
            let start = position
            while !atEnd, isNameByte(bytes[position]) { position += 1 }
            guard position > start else { throw reject(line, "expected a key inside {}") }
            skipSpaces()
            guard !atEnd, bytes[position] == UInt8(ascii: "=") else { throw reject(line, "expected = inside {}") }
            position += 1
            deepest = max(deepest, try value(line: line))
            skipSpaces()
            if !atEnd, bytes[position] == UInt8(ascii: ",") { position += 1 }
        }
    }

    mutating func skipSpaces() {
        while !atEnd, bytes[position] == UInt8(ascii: " ") || bytes[position] == UInt8(ascii: "\t") { position += 1 }
    }
}

func isNameByte(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
        || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
}

func trimmed(_ bytes: [UInt8]) -> [UInt8] {
    let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r") }
    guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else { return [] }
    return Array(bytes[first...last])
}

func reject(_ line: Int, _ why: String) -> JobRejection {
    JobRejection(code: 1, "line \(line): \(why)")
}

/// The whole input, up to 4 MiB.
func readAll(_ fd: borrowing OwnedFileDescriptor) throws(JobRejection) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd.unsafeRawValue, &chunk, chunk.count)
        if count < 0 && errno == EINTR { continue }
        guard count >= 0 else { throw JobRejection(code: 2, "read: \(Errno(rawValue: errno))") }
        if count == 0 { return bytes }
        bytes += chunk[..<count]
        guard bytes.count <= 4 << 20 else { throw JobRejection(code: 2, "input over 4 MiB") }
    }
}

let supervisor: SupervisorConnection
do throws(WorkerError) {
    supervisor = try SupervisorConnection.connect()
    try Lockdown.brokered().apply(reportingTo: supervisor)
    try supervisor.serveJobs { (job: consuming Job) throws(JobRejection) -> [UInt8] in
        guard job.fileDescriptors.count == 1, let input = job.fileDescriptors.take(at: 0) else {
            throw JobRejection(code: 2, "a job carries exactly one input fd")
        }
        var parser = Parser(try readAll(input))
        let summary = try parser.parse()
        return Array("\(summary.sections) sections, \(summary.keys) keys, nesting \(summary.deepest)".utf8)
    }
} catch .supervisorGone {
    exit(0) // retired before its first job: the pool is shutting down
} catch {
    fail("\(error)")
}
