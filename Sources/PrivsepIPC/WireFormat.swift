// The Swift mirror of Sources/CPrivsepProtocol/include/privsep_protocol.h, which is
// the spec. Tests check every size and offset here against the C structs.

/// Constants of the wire protocol.
public enum WireFormat {
    /// The fd number at which a worker inherits its channel.
    public static let channelFileDescriptor: Int32 = 3
    /// The environment variable naming the channel fd.
    public static let channelEnvironmentVariable = "PRIVSEP_FD"
    /// Set to "1" in a worker's environment when the supervisor wants learning mode.
    public static let learningEnvironmentVariable = "PRIVSEP_LEARN"
    public static let magic: UInt16 = 0x5350
    public static let version: UInt16 = 1
    /// The largest datagram, header included.
    public static let maximumMessageSize = 8192
    /// The most fds one message may carry (SCM_MAX_FD).
    public static let maximumFileDescriptors = 253
    /// Path bytes, NUL included (PATH_MAX).
    public static let maximumPathLength = 4096
    /// Unix socket path bytes, NUL included (sizeof sun_path).
    public static let maximumUnixPathLength = 108
    /// Log line bytes, NUL included.
    public static let maximumLogLength = 2048
    /// The largest errno a REPLY may carry.
    public static let maximumErrno: Int32 = 4095
    /// Opaque bytes after a JOB or RESULT struct: what is left of one message.
    public static let maximumJobBytes = 8160
    public static let headerSize = 24
    /// RESULT flag: more chunks follow for the same job.
    public static let resultMoreFlag: UInt32 = 1

    // Byte offsets inside the header.
    static let magicOffset = 0
    static let versionOffset = 2
    static let typeOffset = 4
    static let flagsOffset = 6
    static let lengthOffset = 8
    static let reservedOffset = 12
    static let requestIDOffset = 16
}

/// The type of a message: the header's `type` field.
public enum MessageType: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case hello = 1
    case welcome = 2
    case open = 3
    case socket = 4
    case connect = 5
    case bind = 6
    case reply = 7
    case violation = 8
    case log = 9
    case sandboxStatus = 10
    case listener = 11
    case job = 12
    case result = 13

    // The three below are inlined into the decoders: out of line, each was one more page of
    // code for a worker's open to fault in when many workers take turns on a CPU.

    /// Size of the fixed payload struct.
    @inline(__always)
    public var fixedPayloadSize: Int {
        switch self {
        case .hello: 8
        case .welcome: 16
        case .open: 8
        case .socket: 16
        case .connect, .bind: 32
        case .reply: 8
        case .violation: 64
        case .log: 8
        case .sandboxStatus: 16
        case .listener: 8
        case .job, .result: 8
        }
    }

    /// Whether a string may follow the fixed payload (for CONNECT and BIND, only with AF_UNIX).
    @inline(__always)
    public var hasTrailingString: Bool {
        switch self {
        case .open, .connect, .bind, .log: true
        default: false
        }
    }

    /// Whether opaque bytes may follow the fixed payload.
    @inline(__always)
    public var hasTrailingBytes: Bool {
        switch self {
        case .job, .result: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .welcome: "WELCOME"
        case .open: "OPEN"
        case .socket: "SOCKET"
        case .connect: "CONNECT"
        case .bind: "BIND"
        case .reply: "REPLY"
        case .violation: "VIOLATION"
        case .log: "LOG"
        case .sandboxStatus: "SANDBOX_STATUS"
        case .listener: "LISTENER"
        case .job: "JOB"
        case .result: "RESULT"
        }
    }
}
