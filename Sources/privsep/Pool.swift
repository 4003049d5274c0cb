import ArgumentParser
import CPrivsepShims
import Glibc
import Logging
import PrivsepIPC
import Supervisor
import SystemPackage

struct Pool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run PROGRAM as a pool of sandboxed workers, one job per input file.",
        discussion: """
        Each input file is opened here, with this command's authority, read-only, and \
        handed to a free worker as the job's fd; the job's input bytes are the file's \
        path. Only regular files are sent, reached by a path with no symlink in it (give \
        resolved paths: a directory swapped for a link after the listing would lead \
        anywhere); a FIFO or device is refused before it is opened. The workers' stdout \
        goes to /dev/null (their stderr too, unless --worker-stderr), so they cannot forge \
        result lines. PROGRAM is a pool worker: it serves jobs with SupervisorConnection.serveJobs \
        (Swift) or answers JOB messages with RESULT (privsep_protocol.h).

        Inputs come from --input, else from standard input, one path per line:
          find samples -type f | privsep pool --policy p.json --workers 4 -- ./parser

        One line per input goes to stdout (with --json, one JSON object): the path, ok or \
        the failure's kind, and the job's output or the failure's detail. A summary \
        (throughput, failures by kind) goes to stderr.

        Exit status: 0 if every job succeeded, 1 if any failed, 2 for a bad policy or audit \
        log, 3 if the workers could not be started, 64 for bad options, 127 if PROGRAM is \
        not found, 141 when stdout's reader is gone, 128+N after signal N.
        """
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("The policy file (JSON); see 'privsep check'.", valueName: "file"))
    var policy: String

    @Option(help: ArgumentHelp("Workers kept serving.", valueName: "count"))
    var workers = 2

    @Option(help: ArgumentHelp("Jobs a worker runs before it is replaced (1: a fresh process per input).", valueName: "count"))
    var jobsPerWorker = 1

    @Option(help: ArgumentHelp("Wall-clock limit per job (default: the policy's \"timeout\", else 30).", valueName: "seconds"))
    var timeout: Double?

    @Option(help: ArgumentHelp("Resident-memory limit per job, such as 64M.", valueName: "size"))
    var memory: String?

    @Option(name: .customLong("cpu"), help: ArgumentHelp("CPU-time limit per job.", valueName: "seconds"))
    var cpuSeconds: Double?

    @Option(help: ArgumentHelp("Output bytes a job may return, such as 1M.", valueName: "size"))
    var maxOutput: String = "1M"

    @Option(name: .customLong("input"), help: ArgumentHelp("An input file. Repeatable; without it, paths are read from stdin.", valueName: "path"))
    var inputs: [String] = []

    @Flag(help: "Print one JSON object per input instead of a text line.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print only the summary.")
    var quiet = false

    @Flag(help: "Let the workers write to this command's stderr (their stdout always goes to /dev/null, so they cannot forge result lines).")
    var workerStderr = false

    @OptionGroup var audit: AuditOptions

    @Option(help: ArgumentHelp("Where the serving thread and the workers run: unmanaged (the kernel decides), batch-workers (a woken worker does not preempt the serving thread) or dedicated-cpu (the serving thread gets a CPU of its own). See BENCHMARKS.md.", valueName: "placement"))
    var placement: Placement = .unmanaged

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The worker program and its arguments, after --.", valueName: "program"))
    var command: [String] = []

    mutating func validate() throws {
        guard (1...WorkerPoolConfiguration.maximumSize).contains(workers) else {
            throw ValidationError("--workers must be 1 to \(WorkerPoolConfiguration.maximumSize)")
        }
        guard jobsPerWorker >= 1 else { throw ValidationError("--jobs-per-worker must be at least 1") }
        if let timeout, !(timeout > 0 && timeout.isFinite) { throw ValidationError("--timeout must be a positive number of seconds") }
        if let cpuSeconds, !(cpuSeconds > 0 && cpuSeconds.isFinite) { throw ValidationError("--cpu must be a positive number of seconds") }
        if let memory, try parseIntSize(memory, "--memory") == 0 { throw ValidationError("--memory must be more than 0") }
        _ = try parseIntSize(maxOutput, "--max-output")
        // A pool lives on one serving thread; colocated would put every worker on its one CPU.
        if placement == .colocated {
            throw ValidationError("--placement colocated would run every worker of the pool on one CPU; use unmanaged, batch-workers or dedicated-cpu")
        }
    }

    mutating func run() async throws {
        let file = try loadPolicy(policy)
        var logger = Logger(label: "privsep")
        logger.logLevel = .error
        let auditLog = try audit.open()
        var worker = try workerConfiguration(command: command, file: file)
        audit.apply(to: &worker.caps)
        // Jobs arrive on the channel; the workers' stdin is not the list of inputs, and
        // what they print must not mix with the results.
        worker.standardInput = .null
        worker.standardOutput = .null
        worker.standardError = workerStderr ? .inherit : .null
        let relay = try TerminalRelay(guarding: &worker, shared: true)
        worker.resourceLimits = file.resourceLimits
        worker.requiredLayers = file.requiredLayers
        var configuration = WorkerPoolConfiguration(worker: worker, size: workers, jobsPerWorker: jobsPerWorker,
                                                    jobTimeout: timeout ?? file.timeout ?? 30)
        if let memory { configuration.memoryLimit = try parseIntSize(memory, "--memory") }
        configuration.cpuTimeLimit = cpuSeconds
        configuration.maximumOutputBytes = try parseIntSize(maxOutput, "--max-output")

        let supervisor: Supervisor
        do { supervisor = try Supervisor(logger: logger, auditLog: auditLog, placement: placement) } catch {
            printError("privsep: \(error)")
            throw ExitCode(1)
        }
        let signals = shutDownOnTerminationSignals(supervisor, relay: relay)
        defer { _ = signals }
        let pool: WorkerPool
        do { pool = try await WorkerPool(supervisor: supervisor, configuration: configuration) } catch {
            printError("privsep: \(error)")
            throw ExitCode(3)
        }

        let reader = PathReader(InputSource(paths: inputs))
        let started = Clock.now
        // A bounded window of jobs in flight: each holds an open fd until its worker has it.
        let window = workers + configuration.queueCapacity
        var failures = 0, unreadable = 0, total = 0
        let printer = OutcomePrinter(json: json, quiet: quiet)
        // Paths are read on a thread of their own, one at a time, while results are printed as
        // they come: a producer that writes a path now and then (tail -f, inotifywait -m) sees
        // each result at once, not when the window has filled.
        enum Event: Sendable {
            case path([UInt8]?)
            case outcome(Outcome)
        }
        await withTaskGroup(of: Event.self) { group in
            var inFlight = 0, reading = false, inputEnded = false
            func readNextIfRoom() {
                guard !reading, !inputEnded, inFlight < window else { return }
                reading = true
                group.addTask { .path(await reader.next()) }
            }
            readNextIfRoom()
            while let event = await group.next() {
                switch event {
                case .path(let path?):
                    reading = false
                    inFlight += 1
                    group.addTask { .outcome(await runOne(path, pool: pool)) }
                case .path(nil):
                    reading = false
                    inputEnded = true
                case .outcome(let outcome):
                    inFlight -= 1
                    total += 1
                    if let failure = outcome.failure {
                        failures += 1
                        if failure.kind == "unreadable" { unreadable += 1 }
                    }
                    if !printer.print(outcome) {
                        // Nobody reads the results (`| head`): stop at once, as SIGPIPE would
                        // have, but with the workers stopped first.
                        await pool.shutdown(gracePeriod: 0)
                        await supervisor.shutdown()
                        await relay.finish(writersGone: true)
                        Glibc.exit(128 + SIGPIPE)
                    }
                }
                readNextIfRoom()
            }
        }
        let elapsed = Clock.now - started
        let metrics = pool.metrics
        await pool.shutdown()
        await supervisor.shutdown()
        // The pool keeps its configuration, so the copy never sees its terminal's end; but
        // every worker has exited: what they wrote is copied, and nothing more comes.
        await relay.finish(writersGone: true)
        printSummary(total: total, failures: failures, unreadable: unreadable, seconds: elapsed, metrics: metrics)
        if failures > 0 { throw ExitCode(1) }
    }

    private func printSummary(total: Int, failures: Int, unreadable: Int, seconds: Double, metrics: PoolMetrics) {
        let rate = seconds > 0 ? Double(total) / seconds : 0
        var lines = ["privsep pool: \(total) jobs in \(format(seconds, 2)) s (\(format(rate, 0)) jobs/s, \(workers) workers, \(jobsPerWorker) job(s) per worker)",
                     "  succeeded: \(metrics.jobsSucceeded)", "  failed: \(failures)"]
        for (kind, count) in metrics.jobsFailed.sorted(by: { $0.key < $1.key }) {
            lines.append("    \(kind.rawValue): \(count)")
        }
        if unreadable > 0 { lines.append("    unreadable (not opened, never sent): \(unreadable)") }
        lines.append("  workers started: \(metrics.workersSpawned), recycled: \(metrics.workersRecycled), replaced after a failure: \(metrics.workerRestarts)")
        lines.append("  latency: median \(format(metrics.latency.median * 1000, 2)) ms, p99 \(format(metrics.latency.p99 * 1000, 2)) ms (last \(metrics.latency.count) jobs)")
        printError(lines.joined(separator: "\n"))
    }
}

/// The audit options of `run` and `pool`.
struct AuditOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Append decisions to this file as JSON lines (see --audit-rate).", valueName: "file"))
    var auditLog: String?

    @Option(help: ArgumentHelp("Records of decisions and LOG lines a worker may cause per second, with bursts of ten times as many; past it they are counted in an AUDIT record, not written, so a worker looping on refused calls cannot fill the disk. 0: every one.", valueName: "records"))
    var auditRate = WorkerCaps().auditRecordsPerSecond

    func validate() throws {
        guard (0...Self.maximumRate).contains(auditRate) else { throw ValidationError("--audit-rate must be 0 to \(Self.maximumRate)") }
    }

    /// Ten times it is still an Int on every platform Swift runs on.
    static let maximumRate = 100_000_000

    /// The audit log (appended to), nil without `--audit-log`; exit status 2 if it cannot be opened.
    func open() throws -> AuditLog? {
        guard let auditLog else { return nil }
        do { return try AuditLog(path: auditLog) } catch {
            printError("privsep: cannot open the audit log \(auditLog): \(error)")
            throw ExitCode(2)
        }
    }

    func apply(to caps: inout WorkerCaps) {
        caps.auditRecordsPerSecond = auditRate
        caps.auditRecordBurst = auditRate * 10
    }
}

/// Seconds on the monotonic clock.
private enum Clock {
    static var now: Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

private func format(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    return decimals == 0 ? "\(Int(rounded))" : "\(rounded)"
}

/// Input paths from the command line, else from stdin one per line. A path is its bytes:
/// Linux file names need not be UTF-8, and decoding one (as `readLine` does) would put
/// U+FFFD in place of a byte and name another file.
/// Reads the inputs' paths on a thread of its own (a blocking read of stdin must not hold a
/// thread of the cooperative pool, nor keep finished results from being printed), one path
/// per ``next()`` call. The thread ends at the end of the input.
private final class PathReader: @unchecked Sendable {
    // Touched by the reading thread only, after init.
    private var source: InputSource
    // Allocated, so that their addresses never move.
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wanted = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Under `lock`: the caller waiting for the next path, and whether the thread runs.
    private var waiting: CheckedContinuation<[UInt8]?, Never>?
    private var started = false

    init(_ source: InputSource) {
        self.source = source
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wanted, nil)
    }

    deinit {
        pthread_cond_destroy(wanted)
        pthread_mutex_destroy(lock)
        wanted.deallocate()
        lock.deallocate()
    }

    /// The next path, or nil at the end of the input. One call at a time.
    func next() async -> [UInt8]? {
        await withCheckedContinuation { continuation in
            pthread_mutex_lock(lock)
            waiting = continuation
            let start = !started
            started = true
            pthread_cond_signal(wanted)
            pthread_mutex_unlock(lock)
            if start { startThread() }
        }
    }

    private func startThread() {
        let rc = startDetachedThread { self.run() }
        if rc != 0 {
            fatalError("privsep pool: cannot start the thread that reads the inputs: \(Errno(rawValue: rc))")
        }
    }

    private func run() {
        while true {
            pthread_mutex_lock(lock)
            while waiting == nil { pthread_cond_wait(wanted, lock) }
            let continuation = waiting!
            waiting = nil
            pthread_mutex_unlock(lock)
            let path = source.next()
            continuation.resume(returning: path)
            if path == nil { return }
        }
    }
}

private struct InputSource {
    private var paths: [String]
    private var index = 0
    private let fromStandardInput: Bool
    private var buffered: [UInt8] = []
    private var start = 0
    private var atEnd = false
    /// Inside a line too long to be a path, whose rest is read and dropped.
    private var skipping = false
    /// No path is longer (PATH_MAX); a longer line is cut here, and fails to open.
    private static let longestLine = 4097

    init(paths: [String]) {
        self.paths = paths
        fromStandardInput = paths.isEmpty
    }

    mutating func next() -> [UInt8]? {
        guard fromStandardInput else {
            guard index < paths.count else { return nil }
            defer { index += 1 }
            return Array(paths[index].utf8)
        }
        while true {
            if let newline = buffered[start...].firstIndex(of: UInt8(ascii: "\n")) {
                defer { start = newline + 1 }
                if skipping { skipping = false; continue }
                if newline > start { return Array(buffered[start..<newline]) }
                continue
            }
            // Memory is held to one read's worth past a path's length, whatever comes in.
            if skipping {
                start = buffered.count
            } else if buffered.count - start > Self.longestLine {
                skipping = true
                defer { start = buffered.count }
                return Array(buffered[start..<(start + Self.longestLine)])
            }
            if atEnd {
                defer { start = buffered.count }
                return start < buffered.count && !skipping ? Array(buffered[start...]) : nil
            }
            buffered.removeFirst(start)
            start = 0
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = read(0, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { atEnd = true } else { buffered += chunk[..<count] }
        }
    }
}

/// A path's bytes for people and JSON: a UTF-8 path as it is; in one that is not, each byte
/// that is not part of a character as "\xHH", and a backslash doubled.
func displayPath(_ bytes: [UInt8]) -> String {
    if let text = String(validating: bytes, as: UTF8.self) { return text }
    var out = ""
    var index = 0
    while index < bytes.count {
        // The character of 1 to 4 bytes that starts here, if one does.
        var decoded: String? = nil
        var length = 1
        for candidate in 1...min(4, bytes.count - index) {
            if let text = String(validating: bytes[index..<(index + candidate)], as: UTF8.self) {
                decoded = text
                length = candidate
                break
            }
        }
        if let decoded {
            out += decoded == "\\" ? "\\\\" : decoded
        } else {
            let hex = String(bytes[index], radix: 16)
            out += "\\x" + (hex.count == 1 ? "0" : "") + hex
        }
        index += length
    }
    return out
}

private struct Outcome: Sendable {
    var path: String
    var output: [UInt8] = []
    /// The failure's kind ("crashed", ...; "unreadable" when this command could not open the input) and detail.
    var failure: (kind: String, detail: String)?
}

private func runOne(_ bytes: [UInt8], pool: WorkerPool) async -> Outcome {
    let path = displayPath(bytes)
    let fd: Int32
    switch openInput(bytes) {
    case .success(let opened): fd = opened
    case .failure(let refusal): return Outcome(path: path, failure: ("unreadable", refusal.why)) // not a job failure
    }
    do {
        let output = try await pool.run(PoolJob(input: Array(bytes.prefix(WireFormat.maximumJobBytes)),
                                                fileDescriptors: OwnedFileDescriptors(OwnedFileDescriptor(adoptingRawValue: fd))))
        return Outcome(path: path, output: output.bytes, failure: nil)
    } catch {
        return Outcome(path: path, failure: (error.kind.rawValue, error.description))
    }
}

/// Opens an input with this command's authority, read-only, for a worker. The inputs may
/// lie where others write (an upload directory), so the path may hold no symlink at all (a
/// directory of it swapped for a link after it was listed would lead anywhere), and only a
/// regular file is opened: the path is first taken as O_PATH, which opens nothing (a
/// device's open has effects, a FIFO's blocks), then reopened through that descriptor.
private func openInput(_ path: [UInt8]) -> Result<Int32, InputRefusal> {
    guard !path.contains(0) else { return .failure(InputRefusal(why: "the path has a NUL byte in it")) }
    var how = open_how()
    how.flags = UInt64(privsep_O_PATH | O_CLOEXEC) // no O_NOFOLLOW: it would open a final link itself, not refuse it
    how.resolve = privsep_RESOLVE_NO_SYMLINKS | privsep_RESOLVE_NO_MAGICLINKS
    let located = (path + [0]).withUnsafeBufferPointer { bytes in
        bytes.withMemoryRebound(to: CChar.self) { privsep_openat2(AT_FDCWD, $0.baseAddress!, &how, MemoryLayout<open_how>.size) }
    }
    guard located >= 0 else {
        let error = errno
        return .failure(InputRefusal(why: error == ELOOP ? "the path has a symlink in it (give the resolved path)"
                                     : "cannot open: \(Errno(rawValue: error))"))
    }
    defer { close(located) }
    var status = stat()
    guard fstat(located, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return .failure(InputRefusal(why: "not a regular file")) }
    // O_NONBLOCK: a file under a lease fails at once rather than holding the pool for the
    // lease's break time (it means nothing to a regular file's reads).
    let fd = open("/proc/self/fd/\(located)", O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
    guard fd >= 0 else { return .failure(InputRefusal(why: "cannot open: \(Errno(rawValue: errno))")) }
    return .success(fd)
}

private struct InputRefusal: Error {
    var why: String
}

private struct OutcomePrinter {
    let json: Bool
    let quiet: Bool

    /// Writes the outcome's line; false once stdout's reader is gone (EPIPE: SIGPIPE is
    /// ignored, so the write says so instead of ending the process).
    func print(_ outcome: Outcome) -> Bool {
        guard !quiet else { return true }
        let output = String(decoding: outcome.output, as: UTF8.self)
        let line: String
        if json {
            var fields = ["\"input\":" + jsonString(outcome.path)]
            if let failure = outcome.failure {
                fields.append("\"status\":" + jsonString(failure.kind))
                fields.append("\"detail\":" + jsonString(failure.detail))
            } else {
                fields.append("\"status\":\"ok\"")
                fields.append("\"output\":" + jsonString(output))
            }
            line = "{" + fields.joined(separator: ",") + "}"
        } else if let failure = outcome.failure {
            line = "\(printable(outcome.path))\t\(failure.kind)\t\(printable(failure.detail))"
        } else {
            line = "\(printable(outcome.path))\tok\t\(printable(output))"
        }
        let bytes = Array((line + "\n").utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return !(n < 0 && errno == EPIPE) }
            written += n
        }
        return true
    }
}
