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

    /// A limit of 0 (or less) keeps nothing, rather than trapping on the first record.
    @Test(arguments: [0, -1]) func anInMemoryLogWithNoRoomKeepsNothing(limit: Int) {
        let log = AuditLog(collectingUpTo: limit)
        _ = log.write(record(0))
        #expect(log.records.isEmpty)
    }
}
