import CPrivsepShims
import Glibc
public import SystemPackage

/// A file descriptor that this value owns: it is closed exactly once, when the
/// value is consumed by ``close()`` or goes out of scope.
///
/// Being move-only, an owned descriptor cannot be copied and so cannot be
/// closed twice or used after close. The raw number is reachable only through
/// the escape hatches whose names say so.
@frozen // one descriptor number, for good: lets its small operations inline across modules
public struct OwnedFileDescriptor: ~Copyable, Sendable {
    /// The raw descriptor number, for a system call this library does not wrap.
    /// The number stays owned by this value: do not close it or keep it past
    /// this value's lifetime.
    public let unsafeRawValue: Int32

    /// Takes ownership of `rawValue`, which must be an open descriptor that
    /// nothing else will close.
    @inlinable
    public init(adoptingRawValue rawValue: Int32) {
        precondition(rawValue >= 0, "OwnedFileDescriptor adopts only valid descriptors, not \(rawValue)")
        self.unsafeRawValue = rawValue
    }

    deinit {
        _ = system_close(unsafeRawValue)
    }

    /// Closes the descriptor now and reports the kernel's answer.
    ///
    /// The descriptor is released whatever the result; an error tells only that
    /// buffered data may have been lost (EIO) or similar. The corresponding C
    /// function is `close`.
    public consuming func close() throws(Errno) {
        let raw = unsafeRawValue
        discard self
        try system_close(raw).get()
    }

    /// Gives up ownership and returns the raw number: the caller now closes it.
    @inlinable
    public consuming func releaseUnsafeRawValue() -> Int32 {
        let raw = unsafeRawValue
        discard self
        return raw
    }

    /// A second owned descriptor for the same open file, close-on-exec.
    /// The corresponding C call is `fcntl(fd, F_DUPFD_CLOEXEC, 0)`.
    public func duplicate() throws(Errno) -> OwnedFileDescriptor {
        OwnedFileDescriptor(adoptingRawValue: try system_fcntl(unsafeRawValue, F_DUPFD_CLOEXEC, 0).get())
    }

    /// Whether the descriptor is closed on `execve` (FD_CLOEXEC).
    public func isCloseOnExec() throws(Errno) -> Bool {
        (try system_fcntl(unsafeRawValue, F_GETFD).get() & FD_CLOEXEC) != 0
    }

    /// Sets or clears FD_CLOEXEC.
    public func setCloseOnExec(_ enabled: Bool) throws(Errno) {
        let flags = try system_fcntl(unsafeRawValue, F_GETFD).get()
        let wanted = enabled ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC
        if wanted != flags { _ = try system_fcntl(unsafeRawValue, F_SETFD, wanted).get() }
    }

    /// The file's type and identity, from `fstat`.
    public func status() throws(Errno) -> FileStatus {
        var info = stat()
        if let errno = system_fstat(unsafeRawValue, into: &info) { throw errno }
        return FileStatus(info)
    }
}

/// The part of `struct stat` a broker needs to decide what it is handing out.
public struct FileStatus: Sendable, Equatable {
    /// The file type bits of `st_mode` (S_IFMT).
    public var type: FileType
    /// The permission bits of `st_mode`.
    public var permissions: UInt32
    public var device: UInt64
    public var inode: UInt64
    public var size: Int64

    init(_ info: stat) {
        type = FileType(rawValue: info.st_mode & FileType.mask)
        permissions = info.st_mode & 0o7777
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
    }
}

/// A file type, as the S_IFMT bits of `st_mode`.
public struct FileType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    // Linux's values (the same on every architecture; the tests hold them to the C
    // library's), as inlinable computed constants: Glibc's are calls into its overlay, and
    // a `static let` of one was a lazily initialized global behind swift_once, two more
    // pages of code on every brokered OPEN (BENCHMARKS.md, fifth round).
    /// S_IFMT: the bits of `st_mode` that say the type.
    @inlinable public static var mask: UInt32 { 0o170000 }
    @inlinable public static var regular: FileType { FileType(rawValue: 0o100000) }
    @inlinable public static var directory: FileType { FileType(rawValue: 0o040000) }
    @inlinable public static var symbolicLink: FileType { FileType(rawValue: 0o120000) }
    @inlinable public static var socket: FileType { FileType(rawValue: 0o140000) }
    @inlinable public static var fifo: FileType { FileType(rawValue: 0o010000) }
    @inlinable public static var characterDevice: FileType { FileType(rawValue: 0o020000) }
    @inlinable public static var blockDevice: FileType { FileType(rawValue: 0o060000) }

    public var description: String {
        switch self {
        case .regular: "regular file"
        case .directory: "directory"
        case .symbolicLink: "symbolic link"
        case .socket: "socket"
        case .fifo: "FIFO"
        case .characterDevice: "character device"
        case .blockDevice: "block device"
        default: "unknown file type \(rawValue)"
        }
    }
}
