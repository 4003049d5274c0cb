public import SystemPackage

/// Why a send or receive on a ``SeqpacketSocket`` failed.
///
/// Whenever a receive fails, every descriptor that arrived with the failing
/// datagram has already been closed.
public enum ChannelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The system call failed. `.resourceTemporarilyUnavailable` (EAGAIN) means a
    /// non-blocking socket had nothing to read or no room to write.
    case system(Errno)
    /// The peer closed its end (end-of-file on receive, EPIPE or ECONNRESET on send).
    case peerClosed
    /// The datagram was longer than the receive buffer (MSG_TRUNC).
    case messageTruncated(capacity: Int)
    /// The kernel could not deliver all ancillary data (MSG_CTRUNC): more fds were sent
    /// than this receive accepts.
    case controlTruncated(acceptedFileDescriptors: Int)
    /// The kernel could not install the fds that came with a datagram in this process: no
    /// free fd number under its RLIMIT_NOFILE (EMFILE; in principle also a security module
    /// refusing the fd, which Linux reports the same way). The datagram was consumed: its
    /// `byteCount` bytes are in the receive buffer, and the fds that were installed before
    /// the table filled are closed. Not the sender's fault, unlike ``controlTruncated(acceptedFileDescriptors:)``.
    case fileDescriptorsNotInstalled(byteCount: Int)
    /// More fds arrived than this receive accepts.
    case tooManyFileDescriptors(received: Int, limit: Int)
    /// A control message other than SCM_RIGHTS arrived.
    case unexpectedControlMessage(level: Int32, type: Int32)
    /// A send was asked to pass more than 253 fds (SCM_MAX_FD).
    case tooManyFileDescriptorsToSend(Int)
    /// The datagram was a well-formed transfer but not a valid protocol message.
    case malformed(ProtocolError)

    public var description: String {
        switch self {
        case .system(let errno): "\(errno)"
        case .peerClosed: "peer closed the channel"
        case .messageTruncated(let capacity): "message longer than \(capacity) bytes (truncated)"
        case .controlTruncated(let limit): "control data truncated: more than \(limit) fds sent"
        case .fileDescriptorsNotInstalled: "no room in this process's fd table for the fds sent (EMFILE)"
        case .tooManyFileDescriptors(let received, let limit): "\(received) fds received, at most \(limit) allowed"
        case .unexpectedControlMessage(let level, let type): "unexpected control message (level \(level), type \(type))"
        case .tooManyFileDescriptorsToSend(let count): "cannot send \(count) fds in one message (at most 253)"
        case .malformed(let error): "malformed message: \(error)"
        }
    }
}
