import Glibc
import Logging
import Synchronization
public import SystemPackage
public import PrivsepIPC

/// One decision of the broker, or one lifecycle event of a worker.
public struct AuditRecord: Sendable, Equatable {
    /// Seconds since the Unix epoch.
    public var time: Double
    public var workerID: UInt64
    public var workerName: String
    public var pid: Int32
    /// "OPEN", "SOCKET", "CONNECT", "BIND", "SPAWN", "EXIT", "KILL", "LOG"...
    public var event: String
    /// What was asked, e.g. the path and flags of an OPEN.
    public var detail: String
    /// "granted", "denied", or "" for events that are not decisions.
    public var decision: String
    /// The errno answered, 0 if none.
    public var errno: Int32
    /// Why, in plain words.
    public var reason: String
    /// The request decided on, for OPEN, SOCKET, CONNECT and BIND (not written to the JSON line: `detail` says it).
    public var request: Message? = nil
    /// For an "AUDIT" record: how many of the worker's records were left out since the last
    /// such record, over its cap (``WorkerCaps/auditRecordsPerSecond``), and how many of
    /// those were denials.
    public var recordsLeftOut = 0
    public var denialsLeftOut = 0

    /// The most bytes of escaped `detail` or `reason` a JSON line holds (a PATH_MAX path of
    /// printable bytes fits); past it the string ends with how long it was.
    public static let maximumFieldBytes = 4200

    /// The record as one line of JSON (no trailing newline).
    public var jsonLine: String {
        var fields: [String] = []
        fields.append("\"time\":\(time)")
        fields.append("\"worker\":\(workerID)")
        fields.append("\"name\":\(jsonString(workerName))")
        fields.append("\"pid\":\(pid)")
        fields.append("\"event\":\(jsonString(event))")
        // What the worker wrote is capped: escaped, a path of control bytes would grow six-fold.
        if !detail.isEmpty { fields.append("\"detail\":\(jsonString(detail, maximumBytes: Self.maximumFieldBytes))") }
        if !decision.isEmpty { fields.append("\"decision\":\(jsonString(decision))") }
        if errno != 0 { fields.append("\"errno\":\(errno)"); fields.append("\"error\":\(jsonString(Errno(rawValue: errno).description))") }
        if !reason.isEmpty { fields.append("\"reason\":\(jsonString(reason, maximumBytes: Self.maximumFieldBytes))") }
        if recordsLeftOut != 0 { fields.append("\"left_out\":\(recordsLeftOut)"); fields.append("\"denials_left_out\":\(denialsLeftOut)") }
        return "{" + fields.joined(separator: ",") + "}"
    }
}

/// Where audit records go besides the logger: a JSON-lines file, an in-memory
/// collector (for tests and embedders), or both.
public final class AuditLog: Sendable {
    private let fd: Int32?
    private let collected: Mutex<RecentRecords>?

    /// Appends JSON lines to `path` (created 0600 if missing).
    public init(path: String) throws(Errno) {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Errno(rawValue: Glibc.errno) }
        self.fd = fd
        self.collected = nil
    }

    /// Keeps the latest `limit` records in memory (none if `limit` is 0 or less); read them
    /// with ``records``. Each record costs the same whatever the limit: a full log
    /// overwrites its oldest record in place.
    public init(collectingUpTo limit: Int) {
        self.fd = nil
        self.collected = Mutex(RecentRecords(limit: limit))
    }

    deinit {
        if let fd { Glibc.close(fd) }
    }

    /// The records collected so far, oldest first (in-memory logs only).
    public var records: [AuditRecord] { collected?.withLock { $0.inOrder } ?? [] }

    /// Records that could not be written whole (a full disk, a closed pipe), since the log
    /// was opened. The logger says when the first of a run of them is lost.
    public var lostRecords: Int { lost.load(ordering: .relaxed) }
    private let lost = Atomic<Int>(0)

    /// Writes `record`; says why if its line could not be written whole.
    func write(_ record: AuditRecord) -> String? {
        collect(record)
        return writeLines(Array((record.jsonLine + "\n").utf8), count: 1)
    }

    /// Keeps `record` in memory (in-memory logs only), on the thread that made it: a reader
    /// of ``records`` sees it at once.
    func collect(_ record: AuditRecord) {
        collected?.withLock { $0.add(record) }
    }

    /// Whether records are written to a file (and must go to the writing thread).
    var writesLines: Bool { fd != nil }

    /// Counts records that never reached the file (dropped before they were written).
    func noteLost(_ count: Int) {
        if count > 0 && fd != nil { lost.add(count, ordering: .relaxed) }
    }

    /// Appends `count` whole lines (`bytes`, each ending in a newline) in one write(2): on an
    /// O_APPEND fd, lines from concurrent writers never interleave. If it is not written
    /// whole, every record in it is counted lost. Says why it was not.
    func writeLines(_ bytes: [UInt8], count: Int) -> String? {
        guard let fd, !bytes.isEmpty else { return nil }
        let problem: String? = bytes.withUnsafeBytes { bytes in
            var written = Glibc.write(fd, bytes.baseAddress, bytes.count)
            while written < 0 && Glibc.errno == EINTR { written = Glibc.write(fd, bytes.baseAddress, bytes.count) }
            if written == bytes.count { return nil }
            return written < 0 ? "\(Errno(rawValue: Glibc.errno))" : "\(written) of \(bytes.count) bytes written"
        }
        if problem != nil { lost.add(count, ordering: .relaxed) }
        return problem
    }
}

/// The latest records, up to a limit, in a ring: a worker whose every request is audited
/// (denials are) must not cost the serving thread a shift of the whole log per record.
struct RecentRecords {
    private let limit: Int
    private var ring: [AuditRecord] = []
    /// Where the next record goes once the ring is full: the oldest record.
    private var oldest = 0

    init(limit: Int) { self.limit = max(limit, 0) }

    mutating func add(_ record: AuditRecord) {
        if ring.count < limit {
            ring.append(record)
        } else if limit > 0 {
            ring[oldest] = record
            oldest = (oldest + 1) % limit
        }
    }

    var inOrder: [AuditRecord] { Array(ring[oldest...] + ring[..<oldest]) }
}

/// A worker's allowance of audit records for what it asks: a token bucket over its decisions
/// (granted and denied), its LOG lines and its SANDBOX reports after the first, all of which
/// a hostile worker chooses how often to cause. Without it, a worker looping on refused requests writes a record per request,
/// tens of thousands a second, filling the log's disk and burying other workers' records.
/// Past the allowance records are counted, not written, and an "AUDIT" record says how many
/// were left out: at once when the first is (so a flood is seen when it starts), then at most
/// once a second while records are left out, and when the worker's serving ends. Lifecycle
/// records (SPAWN, EXIT, KILL...) are never left out. Owned by the thread serving the worker.
struct AuditBudget {
    /// Records counted, not written, since the last "AUDIT" record.
    struct LeftOut: Equatable {
        var records = 0
        var denials = 0
    }

    private let perSecond: Double
    private let burst: Double
    private var tokens: Double
    private var lastRefill: UInt64
    private var leftOut = LeftOut()
    /// When the last "AUDIT" record was made; nil before the first.
    private var lastReport: UInt64?

    /// `perSecond` 0 or less: every record is written.
    init(perSecond: Int, burst: Int, now: UInt64) {
        self.perSecond = Double(perSecond)
        self.burst = Double(max(burst, 1))
        self.tokens = self.burst
        self.lastRefill = now
    }

    init(caps: WorkerCaps, now: UInt64) {
        self.init(perSecond: caps.auditRecordsPerSecond, burst: caps.auditRecordBurst, now: now)
    }

    /// Whether a record made at `now` is written, and the count of records left out to
    /// report first (nil when no report is due). `now` is monotonic nanoseconds.
    mutating func admit(now: UInt64, isDenial: Bool) -> (write: Bool, report: LeftOut?) {
        guard perSecond > 0 else { return (true, nil) }
        if now > lastRefill {
            tokens = min(burst, tokens + Double(now - lastRefill) / 1e9 * perSecond)
            lastRefill = now
        }
        let write = tokens >= 1
        if write {
            tokens -= 1
        } else {
            leftOut.records += 1
            if isDenial { leftOut.denials += 1 }
        }
        guard leftOut.records > 0, lastReport.map({ now &- $0 >= 1_000_000_000 }) ?? true else { return (write, nil) }
        lastReport = now
        defer { leftOut = LeftOut() }
        return (write, leftOut)
    }

    /// The count not yet reported, when the worker's serving ends.
    mutating func remainder() -> LeftOut? {
        defer { leftOut = LeftOut() }
        return leftOut.records > 0 ? leftOut : nil
    }

    /// The "AUDIT" record that reports `leftOut`.
    func report(_ leftOut: LeftOut, time: Double, workerID: UInt64, workerName: String, pid: Int32) -> AuditRecord {
        AuditRecord(time: time, workerID: workerID, workerName: workerName, pid: pid, event: "AUDIT",
                    detail: "\(leftOut.records) records left out (\(leftOut.denials) denials)", decision: "", errno: 0,
                    reason: "over the worker's cap of \(Int(perSecond)) audit records a second (burst \(Int(burst))): counted, not written",
                    recordsLeftOut: leftOut.records, denialsLeftOut: leftOut.denials)
    }
}

/// A flag shared by copies of a struct (relaxed: it only decides whether to log).
final class SharedFlag: Sendable {
    private let value = Atomic<Bool>(false)
    /// Sets it; whether it was set already.
    func set() -> Bool { value.exchange(true, ordering: .relaxed) }
    func clear() { if value.load(ordering: .relaxed) { value.store(false, ordering: .relaxed) } }
}

/// Audits through swift-log and an optional ``AuditLog``.
///
/// The audit log's file and the logger are each written by a thread of their own
/// (``AuditWriter``): a serving thread never waits on a disk, a pipe or a terminal, and a
/// logger that blocks (a terminal a worker stopped) holds up the logger's lines only, not
/// the file. The in-memory log is kept by the caller. A class: the serving thread reads its
/// level on every request, and a struct of this many references was copied for it.
final class Auditor: Sendable {
    let logger: Logger
    let log: AuditLog?
    /// The logger's level, read once: reading it through the logger copies the
    /// handler each time, which cost the serving thread more per grant than the
    /// check saved. A level the handler changes later is not seen.
    let loggerLevel: Logger.Level
    /// Writes the audit log's lines (nil without a file).
    private let fileWriter: AuditWriter?
    /// Writes to the logger: records at its level, and the supervisor's own lines.
    private let loggerWriter: AuditWriter
    /// Whether the last write to the audit log failed, so a run of failures is reported once.
    private let lastWriteFailed: SharedFlag

    /// nil if a writing thread cannot be started.
    init?(logger: Logger, log: AuditLog?) {
        self.logger = logger
        self.log = log
        loggerLevel = logger.logLevel
        let lastWriteFailed = SharedFlag()
        self.lastWriteFailed = lastWriteFailed
        guard let loggerWriter = AuditWriter(name: "privsep-log", write: { entries in
            Self.writeToLogger(entries, logger: logger, loggerLevel: logger.logLevel)
        }, reportDropped: { records, lines in
            logger.error("\(records) audit records and \(lines) log lines were not logged: the logger was not taking them (\(AuditWriter.capacity) were waiting)")
        }) else { return nil }
        self.loggerWriter = loggerWriter
        if let log, log.writesLines {
            // What the file's writer has to say goes through the logger's writer: a logger that
            // blocks must not hold up the file.
            guard let fileWriter = AuditWriter(name: "privsep-audit", write: { entries in
                Self.writeToFile(entries, log: log, lastWriteFailed: lastWriteFailed) { loggerWriter.enqueue(.line(.error, $0, nil), essential: true) }
            }, reportDropped: { records, _ in
                log.noteLost(records)
                loggerWriter.enqueue(.line(.error, "\(records) audit records were dropped: the audit log was not being written (\(AuditWriter.capacity) were waiting)", nil),
                                     essential: true)
            }) else { return nil }
            self.fileWriter = fileWriter
        } else {
            fileWriter = nil
        }
    }

    /// Whether a record at `level` goes anywhere: when neither the audit log nor the
    /// logger wants it, the hot path skips building it (strings cost more than the open).
    func wants(_ level: Logger.Level) -> Bool {
        log != nil || loggerLevel <= level
    }

    /// The level a record is logged at: a report of records left out is a warning.
    static func level(of record: AuditRecord) -> Logger.Level {
        record.recordsLeftOut > 0 ? .warning : level(ofDecision: record.decision)
    }

    static func level(ofDecision decision: String) -> Logger.Level {
        decision == "denied" ? .notice : (decision == "granted" ? .debug : .info)
    }

    /// Audits `record` through the writing threads. `essential`: a record the worker does not
    /// choose the rate of (lifecycle, a report of records left out), which may use the
    /// writers' reserve when their queues are full.
    func record(_ record: AuditRecord, essential: Bool = false) {
        log?.collect(record)
        fileWriter?.enqueue(.record(record), essential: essential)
        if loggerLevel <= Self.level(of: record) { loggerWriter.enqueue(.record(record), essential: essential) }
    }

    /// Audits `record` on the calling thread, written before this returns: for an intercepted
    /// program's decisions, whose record must exist before the program sees the answer (its
    /// thread serves that program alone, so a log that blocks holds up that program only).
    func recordNow(_ record: AuditRecord) {
        log?.collect(record)
        if let log, log.writesLines {
            Self.writeToFile([.record(record)], log: log, lastWriteFailed: lastWriteFailed) { loggerWriter.enqueue(.line(.error, $0, nil), essential: true) }
        }
        if loggerLevel <= Self.level(of: record) { Self.writeToLogger([.record(record)], logger: logger, loggerLevel: loggerLevel) }
    }

    /// Logs a line (not an audit record) through the logger's writer. `essential`: a line of
    /// the supervisor's own, which may use the writer's reserve; a worker's LOG line may not.
    func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, metadata: Logger.Metadata? = nil,
             essential: Bool = true) {
        guard loggerLevel <= level else { return }
        loggerWriter.enqueue(.line(level, message(), metadata), essential: essential)
    }

    /// Returns once what was given to the writers so far is written, or after `seconds`;
    /// records the audit log's writer had not written by then count as lost.
    func drained(within seconds: Double) async {
        async let logged: Int = loggerWriter.drained(within: seconds)
        if let fileWriter { log?.noteLost(await fileWriter.drained(within: seconds)) }
        _ = await logged
    }

    /// The most bytes of JSON lines written to the audit log in one write(2).
    static let linesPerWriteBytes = 256 << 10

    /// Appends the records among `entries` to the audit log, a write(2) per batch of lines (a
    /// line a write cost the writer most of its time in a flood).
    private static func writeToFile(_ entries: [AuditWriter.Entry], log: AuditLog, lastWriteFailed: SharedFlag,
                                    report: (Logger.Message) -> Void) {
        var lines: [UInt8] = []
        var lineCount = 0
        func flushLines() {
            guard lineCount > 0 else { return }
            if let problem = log.writeLines(lines, count: lineCount) {
                if !lastWriteFailed.set() {
                    report("the audit log could not be written (\(problem)); records are being lost")
                }
            } else {
                lastWriteFailed.clear() // a load, while it is clear: no store to a line other threads read
            }
            lines.removeAll(keepingCapacity: true)
            lineCount = 0
        }
        for case .record(let record) in entries {
            lines += (record.jsonLine + "\n").utf8
            lineCount += 1
            if lines.count >= linesPerWriteBytes { flushLines() }
        }
        flushLines()
    }

    /// Hands `entries` to the logger in order: records at their level, lines as they are.
    private static func writeToLogger(_ entries: [AuditWriter.Entry], logger: Logger, loggerLevel: Logger.Level) {
        for entry in entries {
            switch entry {
            case .line(let level, let message, let metadata):
                logger.log(level: level, message, metadata: metadata)
            case .record(let record):
                let level = Self.level(of: record)
                guard loggerLevel <= level else { continue }
                var metadata: Logger.Metadata = [
                    "worker": "\(record.workerID)", "pid": "\(record.pid)", "event": "\(record.event)",
                ]
                if !record.decision.isEmpty { metadata["decision"] = "\(record.decision)" }
                if record.errno != 0 { metadata["errno"] = "\(Errno(rawValue: record.errno))" }
                // Paths and reasons come from the worker: escaped, so a newline cannot forge a log line.
                let detail = printable(record.detail, maximumBytes: AuditRecord.maximumFieldBytes)
                let reason = printable(record.reason, maximumBytes: AuditRecord.maximumFieldBytes)
                let message: Logger.Message = "\(record.workerName)[\(record.pid)] \(record.event) \(detail)\(reason.isEmpty ? "" : ": \(reason)")"
                logger.log(level: level, message, metadata: metadata)
            }
        }
    }
}

func wallClockSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// `text` with control characters escaped (\n, \u001b...), for log lines that
/// carry what a worker wrote.
public func printable(_ text: String, maximumBytes: Int = .max) -> String {
    guard text.utf8.count > maximumBytes || text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
        return text
    }
    let quoted = jsonString(text, maximumBytes: maximumBytes)
    return String(quoted.dropFirst().dropLast())
}

/// `text` as a JSON string literal, quotes included; with `maximumBytes`, at most that many
/// bytes of it, then "… (N bytes in all)".
public func jsonString(_ text: String, maximumBytes: Int = .max) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        if out.utf8.count > maximumBytes {
            out += "… (\(text.utf8.count) bytes in all)"
            break
        }
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || scalar.value == 0x7f:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
