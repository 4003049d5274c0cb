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
