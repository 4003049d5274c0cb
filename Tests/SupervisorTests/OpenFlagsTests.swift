import Glibc
import Testing
import Worker

/// The worker's open flags are folded from swift-system's constants (see OpenFlags): each
/// must still be the C library's.
@Suite struct OpenFlagsTests {
    @Test func eachFlagIsTheCLibrarysValue() {
        let expected: [(OpenFlags, Int32, String)] = [
            (.readOnly, O_RDONLY, "O_RDONLY"), (.writeOnly, O_WRONLY, "O_WRONLY"), (.readWrite, O_RDWR, "O_RDWR"),
            (.create, O_CREAT, "O_CREAT"), (.exclusive, O_EXCL, "O_EXCL"), (.truncate, O_TRUNC, "O_TRUNC"),
            (.append, O_APPEND, "O_APPEND"), (.nonBlocking, O_NONBLOCK, "O_NONBLOCK"), (.directory, O_DIRECTORY, "O_DIRECTORY"),
            (.noFollow, O_NOFOLLOW, "O_NOFOLLOW"),
        ]
        for (flags, value, name) in expected {
            #expect(flags.rawValue == value, "\(name)")
        }
    }
}
