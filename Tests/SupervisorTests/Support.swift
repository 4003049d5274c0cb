import CPrivsepShims
import Dispatch
import Glibc
import Logging
import Testing
import PrivsepIPC
import Supervisor
import SystemPackage
import Synchronization

/// The fixture worker built beside this test bundle.
let testWorkerPath: String = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, 4095)
    precondition(length > 0)
    let exe = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(exe[..<exe.lastIndex(of: "/")!]) + "/privsep-test-worker"
}()

/// What one fixture worker did.
struct WorkerRun {
    var reason: ExitReason
    var lines: [String]
    var audit: [AuditRecord]
}

/// A pipe whose write end becomes a worker's stdout.
struct Pipe: ~Copyable {
    var read: OwnedFileDescriptor
    var write: OwnedFileDescriptor
    init() {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0)
        read = OwnedFileDescriptor(adoptingRawValue: fds[0])
        write = OwnedFileDescriptor(adoptingRawValue: fds[1])
        try! read.setCloseOnExec(true)
        try! write.setCloseOnExec(true)
    }
}

/// Drains a pipe on a thread of its own until end-of-file, so a chatty worker
/// never blocks on a full pipe while the test waits for it to exit.
final class PipeDrain: @unchecked Sendable {
    private let fd: Int32
    private var bytes: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(_ descriptor: consuming OwnedFileDescriptor) {
        fd = descriptor.releaseUnsafeRawValue()
        Thread.detach { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = read(fd, &chunk, chunk.count)
                if count > 0 { bytes += chunk[..<count]; continue }
                if count < 0 && errno == EINTR { continue }
                break
            }
            done.signal()
        }
    }

    /// Everything read, once every write end has closed.
    func text() -> String {
        done.wait()
        close(fd)
        return String(decoding: bytes, as: UTF8.self)
    }
}

func readAvailable(_ fd: borrowing OwnedFileDescriptor) -> String {
    _ = fcntl(fd.unsafeRawValue, F_SETFL, O_NONBLOCK)
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd.unsafeRawValue, &chunk, chunk.count)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

func quietLogger() -> Logger {
    var logger = Logger(label: "privsep.test", factory: { _ in SwiftLogNoOpLogHandler() })
    logger.logLevel = .critical
    return logger
}

/// Runs the fixture worker with `steps` under `policy` and waits for it to end.
func runWorker(_ steps: [String], policy: Policy = Policy(), supervisor: Supervisor? = nil,
               configure: (inout WorkerConfiguration) -> Void = { _ in }) async throws -> WorkerRun {
    let audit = AuditLog(collectingUpTo: 100_000)
    let own = supervisor == nil ? try Supervisor(logger: quietLogger(), auditLog: audit) : nil
    let pipe = Pipe()
    let writeEnd = pipe.write
    let drain = PipeDrain(pipe.read)
    var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: steps, policy: policy, name: "test-worker")
    configuration.standardOutput = .descriptor(SharedFileDescriptor(writeEnd))
    configure(&configuration)
    let handle = try await (supervisor ?? own!).spawn(configuration)
    let reason = await handle.exit()
    // Our copy of the write end goes with the configuration; the supervisor's went with the worker.
    configuration = WorkerConfiguration(executable: "/")
    let output = await withCheckedContinuation { continuation in
        Thread.detach { continuation.resume(returning: drain.text()) }
    }
    if let own { await own.shutdown() }
    return WorkerRun(reason: reason, lines: output.split(separator: "\n").map(String.init), audit: audit.records)
}

/// A scratch directory, removed with its contents when the value goes.
final class ScratchDirectory: Sendable {
    let path: String
    init() {
        var template = Array("/tmp/privsep-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
    deinit { _ = system("rm -rf '\(path)'") }

    func write(_ name: String, _ text: String) {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        precondition(fd >= 0, "create \(name)")
        _ = Glibc.write(fd, text, text.utf8.count)
        close(fd)
    }
    func mkdir(_ name: String) { precondition(Glibc.mkdir(path + "/" + name, 0o755) == 0) }
    func symlink(_ name: String, to target: String) { precondition(Glibc.symlink(target, path + "/" + name) == 0) }
    func mkfifo(_ name: String) { precondition(Glibc.mkfifo(path + "/" + name, 0o644) == 0) }
    func contents(_ name: String) -> String? {
        let fd = open(path + "/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &buffer, buffer.count)
        return String(decoding: buffer[..<max(count, 0)], as: UTF8.self)
    }
    func mode(_ name: String) -> UInt32 {
        var info = stat()
        precondition(stat(path + "/" + name, &info) == 0)
        return info.st_mode & 0o7777
    }
}

/// In an exit test's child: ends it when `condition` is false, with `message` recorded as
/// an issue (Swift Testing forwards a child's issues to the test in the parent that ran it).
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        let text = message()
        Issue.record(Comment(rawValue: text))
        _ = (text + "\n").withCString { write(2, $0, strlen($0)) }
        exit(1)
    }
}

/// A log handler that hands each message, with its metadata, to `body`.
struct ClosureLogHandler: LogHandler {
    let body: @Sendable (Logger.Level, String, Logger.Metadata?) -> Void
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        body(level, "\(message)", metadata)
    }

    /// A logger at `level` whose messages go to `body`.
    static func logger(at level: Logger.Level, _ body: @escaping @Sendable (Logger.Level, String, Logger.Metadata?) -> Void) -> Logger {
        var logger = Logger(label: "privsep.test", factory: { _ in ClosureLogHandler(body: body) })
        logger.logLevel = level
        return logger
    }
}

/// Keeps every message, for tests of what reaches the logger.
enum CollectingLogHandler {
    final class Messages: Sendable {
        private let lines = Mutex<[(Logger.Level, String, String?)]>([])
        func append(_ level: Logger.Level, _ message: String, event: String?) { lines.withLock { $0.append((level, message, event)) } }
        /// Each message, with its "event" metadata (an audit record's event).
        var all: [(level: Logger.Level, message: String, event: String?)] { lines.withLock { $0 } }
    }

    /// A logger at `level` whose messages land in the returned collection.
    static func logger(at level: Logger.Level) -> (Logger, Messages) {
        let messages = Messages()
        let logger = ClosureLogHandler.logger(at: level) { level, message, metadata in
            messages.append(level, message, event: metadata?["event"].map { "\($0)" })
        }
        return (logger, messages)
    }
}
