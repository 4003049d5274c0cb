@testable import Supervisor
import Testing

@Suite struct LogEscapingTests {
    /// Worker-supplied text (LOG lines, paths in decisions) cannot forge a log line.
    @Test func controlCharactersAreEscaped() {
        #expect(printable("plain /srv/a.txt") == "plain /srv/a.txt")
        #expect(printable("x\n2026-11-24 critical: forged") == "x\\n2026-11-24 critical: forged")
        #expect(printable("\u{1b}[2Jclear") == "\\u001b[2Jclear")
    }

    /// Escaped, a worker's control bytes grow six-fold: a record's worker-supplied fields are
    /// capped, and a PATH_MAX path of printable bytes still fits whole.
    @Test func aRecordsWorkerTextIsCapped() {
        func line(_ detail: String) -> String {
            AuditRecord(time: 0, workerID: 1, workerName: "w", pid: 1, event: "OPEN", detail: detail, decision: "denied",
                        errno: 13, reason: detail).jsonLine
        }
        let controls = "/" + String(repeating: "\u{01}", count: 4095)
        let capped = line(controls)
        #expect(capped.utf8.count < 2 * AuditRecord.maximumFieldBytes + 200)
        #expect(capped.contains("… (4096 bytes in all)"))
        let longPath = "/" + String(repeating: "a/", count: 2047) + "b"
        #expect(line(longPath).contains(jsonString(longPath)))
    }
}

@Suite struct AuditLogTests {
    private func record(_ index: Int) -> AuditRecord {
        AuditRecord(time: 0, workerID: 1, workerName: "w", pid: 1, event: "OPEN", detail: "\(index)", decision: "denied",
                    errno: 13, reason: "")
    }

    /// An in-memory log keeps the latest records, oldest first, whatever the order they wrapped in.
    @Test func anInMemoryLogKeepsTheLatestRecordsInOrder() {
        let log = AuditLog(collectingUpTo: 3)
        for index in 0..<2 { _ = log.write(record(index)) }
        #expect(log.records.map(\.detail) == ["0", "1"])
        for index in 2..<8 { _ = log.write(record(index)) }
        #expect(log.records.map(\.detail) == ["5", "6", "7"])
    }

    /// A record that cannot be written is counted, not silently dropped.
    @Test func recordsThatCannotBeWrittenAreCounted() throws {
        let log = try AuditLog(path: "/dev/full")
        #expect(log.write(record(0)) == "No space left on device")
        #expect(log.write(record(1)) != nil)
        #expect(log.lostRecords == 2)
    }

    /// Through a supervisor: records its log cannot take are counted, and the logger hears of
    /// it once for the run of failures (from the file's writer, through the logger's).
    @Test func aSupervisorWhoseLogCannotBeWrittenSaysSoOnce() async throws {
        let (logger, messages) = CollectingLogHandler.logger(at: .error)
        let log = try AuditLog(path: "/dev/full")
        let supervisor = try Supervisor(logger: logger, auditLog: log)
        let run = try await runWorker(["handshake", "exit:0"], supervisor: supervisor)
        await supervisor.shutdown()
        #expect(run.reason == .exited(code: 0))
        #expect(log.lostRecords >= 2) // SPAWN, EXIT at least
        #expect(messages.all.filter { $0.message.hasPrefix("the audit log could not be written (No space left on device)") }.count == 1)
    }

    /// A limit of 0 (or less) keeps nothing, rather than trapping on the first record.
    @Test(arguments: [0, -1]) func anInMemoryLogWithNoRoomKeepsNothing(limit: Int) {
        let log = AuditLog(collectingUpTo: limit)
        _ = log.write(record(0))
        #expect(log.records.isEmpty)
    }
}

@Suite struct AuditBudgetTests {
    private static let second: UInt64 = 1_000_000_000

    /// The burst is written, the first record past it is reported at once (a flood is seen
    /// when it starts), later ones at most once a second, and the rest when serving ends.
    @Test func recordsPastTheBurstAreCountedAndReportedAtMostOnceASecond() {
        var budget = AuditBudget(perSecond: 10, burst: 5, now: 0)
        for _ in 0..<5 { #expect(budget.admit(now: 0, isDenial: true) == (true, nil)) }
        let first = budget.admit(now: 0, isDenial: true)
        #expect(!first.write && first.report == AuditBudget.LeftOut(records: 1, denials: 1))
        // 0.05 s later half a token has come back: still left out, and no report yet.
        #expect(budget.admit(now: Self.second / 20, isDenial: false) == (false, nil))
        #expect(budget.admit(now: Self.second / 100 * 12, isDenial: true) == (true, nil))
        for _ in 0..<3 { #expect(budget.admit(now: Self.second / 100 * 12, isDenial: true) == (false, nil)) }
        // A second after the first report, the next record carries the count since.
        let later = budget.admit(now: Self.second, isDenial: true)
        #expect(later.write)
        #expect(later.report == AuditBudget.LeftOut(records: 4, denials: 3))
        #expect(budget.remainder() == nil)
        for _ in 0..<20 { _ = budget.admit(now: Self.second, isDenial: false) }
        #expect(budget.remainder()?.records ?? 0 > 0)
        #expect(budget.remainder() == nil)
    }

    /// Over any stretch of time no more than the burst plus the rate is written, and every
    /// record is either written or counted in exactly one report.
    @Test func everyRecordIsWrittenOrCountedOnceAndTheRateHolds() {
        var generator = SystemRandomNumberGenerator()
        let perSecond = 200, burst = 50
        var budget = AuditBudget(perSecond: perSecond, burst: burst, now: 0)
        var now: UInt64 = 0
        var written: [UInt64] = [], writtenDenials = 0, reported = AuditBudget.LeftOut(), denials = 0, total = 0
        var reports: [UInt64] = []
        for _ in 0..<100_000 {
            now += UInt64.random(in: 0...200_000, using: &generator) // 0–0.2 ms apart: mostly faster than the rate
            let isDenial = Bool.random(using: &generator)
            total += 1
            if isDenial { denials += 1 }
            let (write, report) = budget.admit(now: now, isDenial: isDenial)
            if write {
                written.append(now)
                if isDenial { writtenDenials += 1 }
            }
            if let report {
                reported.records += report.records
                reported.denials += report.denials
                reports.append(now)
            }
        }
        let rest = budget.remainder() ?? AuditBudget.LeftOut()
        #expect(written.count + reported.records + rest.records == total)
        #expect(writtenDenials + reported.denials + rest.denials == denials)
        #expect(reported.records > 0)
        // Reports: at most one a second.
        #expect(zip(reports, reports.dropFirst()).allSatisfy { $1 - $0 >= Self.second })
        // Any window of one second holds at most burst + rate written records.
        var start = 0
        for end in written.indices {
            while written[end] - written[start] > Self.second { start += 1 }
            #expect(end - start + 1 <= burst + perSecond)
        }
    }

    /// A rate of 0 writes every record and never reports.
    @Test func aRateOfZeroWritesEveryRecord() {
        var budget = AuditBudget(perSecond: 0, burst: 0, now: 0)
        for _ in 0..<100_000 { #expect(budget.admit(now: 0, isDenial: true) == (true, nil)) }
        #expect(budget.remainder() == nil)
    }

    /// A report names its counts in the JSON line, and is a warning in the logger.
    @Test func aReportSaysHowManyWereLeftOut() {
        let budget = AuditBudget(perSecond: 10, burst: 100, now: 0)
        let record = budget.report(AuditBudget.LeftOut(records: 7, denials: 5), time: 1, workerID: 2, workerName: "w", pid: 3)
        #expect(record.jsonLine.contains("\"event\":\"AUDIT\""))
        #expect(record.jsonLine.contains("\"left_out\":7,\"denials_left_out\":5"))
        #expect(record.reason.contains("10 audit records a second (burst 100)"))
        #expect(Auditor.level(of: record) == .warning)
    }
}
