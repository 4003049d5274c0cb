import Glibc
import PrivsepIPC
@testable import Supervisor
import Testing
import Worker

/// Constants written out so that the compiler folds them on the request paths (see
/// BENCHMARKS.md, fifth round), each held here to what it stands for.
@Suite struct FoldedConstantsTests {
    /// The worker's open flags come from swift-system's constants: each must be the C library's.
    @Test func eachOpenFlagIsTheCLibrarysValue() {
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

    /// File types are Linux's literal values: each must be the C library's.
    @Test func eachFileTypeIsTheCLibrarysValue() {
        #expect(FileType.mask == S_IFMT)
        let expected: [(FileType, UInt32, String)] = [
            (.regular, S_IFREG, "S_IFREG"), (.directory, S_IFDIR, "S_IFDIR"), (.symbolicLink, S_IFLNK, "S_IFLNK"),
            (.socket, S_IFSOCK, "S_IFSOCK"), (.fifo, S_IFIFO, "S_IFIFO"), (.characterDevice, S_IFCHR, "S_IFCHR"),
            (.blockDevice, S_IFBLK, "S_IFBLK"),
        ]
        for (type, value, name) in expected {
            #expect(type.rawValue == value, "\(name)")
        }
    }

    /// The broker's mask of never-granted open flags is spelled out: it must cover exactly the list.
    @Test func theRefusedFlagMaskIsTheListsBits() {
        #expect(refusedOpenFlagBits == refusedOpenFlags.reduce(0) { $0 | $1.0 })
    }
}
