@testable import Supervisor
import Testing

@Suite struct LogEscapingTests {
    /// Worker-supplied text (LOG lines, paths in decisions) cannot forge a log line.
    @Test func controlCharactersAreEscaped() {
        #expect(printable("plain /srv/a.txt") == "plain /srv/a.txt")
        #expect(printable("x\n2026-11-24 critical: forged") == "x\\n2026-11-24 critical: forged")
        #expect(printable("\u{1b}[2Jclear") == "\\u001b[2Jclear")
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
        for index in 0..<2 { log.write(record(index)) }
        #expect(log.records.map(\.detail) == ["0", "1"])
        for index in 2..<8 { log.write(record(index)) }
        #expect(log.records.map(\.detail) == ["5", "6", "7"])
    }

    /// A limit of 0 (or less) keeps nothing, rather than trapping on the first record.
    @Test(arguments: [0, -1]) func anInMemoryLogWithNoRoomKeepsNothing(limit: Int) {
        let log = AuditLog(collectingUpTo: limit)
        log.write(record(0))
        #expect(log.records.isEmpty)
    }
}
