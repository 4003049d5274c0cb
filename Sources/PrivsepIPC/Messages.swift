public import SystemPackage

/// One protocol message with its request id: what travels in one datagram.
public struct Envelope: Sendable, Equatable {
    /// Chosen by the requester; a REPLY carries the id of the request it answers.
    public var requestID: UInt64
    public var message: Message

    public init(requestID: UInt64 = 0, _ message: Message) {
        self.requestID = requestID
        self.message = message
    }
}

/// Every message of the protocol, one case per type (see `docs/PROTOCOL.md`).
public enum Message: Sendable, Equatable {
    case hello(Hello)
    case welcome(Welcome)
    case open(OpenRequest)
    case socket(SocketRequest)
    case connect(AddressRequest)
    case bind(AddressRequest)
    case reply(Reply)
    case violation(Violation)
    case log(LogLine)
    case sandboxStatus(SandboxStatus)
    case listener(ListenerAnnouncement)
    case job(JobMessage)
    case result(ResultChunk)

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .open: .open
        case .socket: .socket
        case .connect: .connect
        case .bind: .bind
        case .reply: .reply
        case .violation: .violation
        case .log: .log
        case .sandboxStatus: .sandboxStatus
        case .listener: .listener
        case .job: .job
        case .result: .result
        }
    }

    /// The exact number of fds that must travel with this message.
    public var fileDescriptorCount: Int {
        switch self {
        case .reply(let reply): reply.fileDescriptorCount
        case .listener: 1
        case .job(let job): job.fileDescriptorCount
        default: 0
        }
    }
}

/// HELLO: the worker introduces itself; `processID` must match the socket's peer credentials.
public struct Hello: Sendable, Equatable {
    public var processID: Int32
    public init(processID: Int32) { self.processID = processID }
}

/// WELCOME: the supervisor lets the worker go.
public struct Welcome: Sendable, Equatable {
    public var supervisorProcessID: Int32
    /// The supervisor's name for this worker, for logs.
    public var workerID: UInt64
    public init(supervisorProcessID: Int32, workerID: UInt64) {
        self.supervisorProcessID = supervisorProcessID
        self.workerID = workerID
    }
}

/// OPEN: open an absolute path with open(2) flags.
public struct OpenRequest: Sendable, Equatable {
    public var path: String
    /// open(2) flags as the worker asked; the supervisor vets every bit.
    public var flags: Int32
    /// Advisory: a created file gets the mode its policy names.
    public var mode: UInt32
    public init(path: String, flags: Int32, mode: UInt32 = 0) {
        self.path = path
        self.flags = flags
        self.mode = mode
    }
}

/// An OPEN decoded where it was received (``WireCodec/decodeOpenInPlace(_:fileDescriptorCount:)``):
/// its path is not copied out of the datagram, so it is valid only until that memory
/// is received into again. For this package's serving loop only (`package`): a pointer
/// into memory it does not own is no API to hand an embedder.
package struct InPlaceOpenRequest {
    package let requestID: UInt64
    package let flags: Int32
    package let mode: UInt32
    /// The path's bytes, validated as every decoded path is (UTF-8, no NUL, within
    /// PATH_MAX); a NUL follows them in memory, so they are also a C string.
    package let path: UnsafeBufferPointer<UInt8>

    /// A copy that owns its path.
    package var request: OpenRequest {
        OpenRequest(path: String(decoding: path, as: UTF8.self), flags: flags, mode: mode)
    }
}

/// SOCKET: create a socket.
public struct SocketRequest: Sendable, Equatable {
    public var domain: Int32
    /// SOCK_* type, optionally with SOCK_NONBLOCK (SOCK_CLOEXEC is always applied).
    public var type: Int32
    public var `protocol`: Int32
    public init(domain: Int32, type: Int32, protocol: Int32 = 0) {
        self.domain = domain
        self.type = type
        self.protocol = `protocol`
    }
}

/// CONNECT or BIND: a socket connected to, or bound at, `address`.
public struct AddressRequest: Sendable, Equatable {
    public var type: Int32
    public var `protocol`: Int32
    public var address: SocketAddress
    public init(type: Int32, protocol: Int32 = 0, address: SocketAddress) {
        self.type = type
        self.protocol = `protocol`
        self.address = address
    }
}

/// An address a worker asks to connect to or bind at.
public enum SocketAddress: Sendable, Hashable, CustomStringConvertible {
    case ipv4(IPv4Address, port: UInt16)
    case ipv6(IPv6Address, port: UInt16, scopeID: UInt32 = 0)
    case unix(path: String)

    public var description: String {
        switch self {
        case .ipv4(let address, let port): "\(address):\(port)"
        case .ipv6(let address, let port, let scope): scope == 0 ? "[\(address)]:\(port)" : "[\(address)%\(scope)]:\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// An IPv4 address; `value`'s most significant byte is the first octet.
public struct IPv4Address: Sendable, Hashable, CustomStringConvertible {
    public var value: UInt32
    public init(_ value: UInt32) { self.value = value }
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    public static let loopback = IPv4Address(127, 0, 0, 1)
    public static let any = IPv4Address(0)

    /// Parses dotted-quad notation ("127.0.0.1"); nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  part.count == 1 || part.first != "0",
                  let octet = UInt8(part) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }
}

/// An IPv6 address; `value`'s most significant byte is the first byte on the wire.
public struct IPv6Address: Sendable, Hashable, CustomStringConvertible {
    public var value: UInt128
    public init(_ value: UInt128) { self.value = value }
    public static let loopback = IPv6Address(1)
    public static let any = IPv6Address(0)

    /// The IPv4 address this is a mapping of (::ffff:a.b.c.d), if it is one.
    public var mappedIPv4: IPv4Address? {
        value >> 32 == 0xffff ? IPv4Address(UInt32(truncatingIfNeeded: value)) : nil
    }

    /// Parses RFC 4291 text ("::1", "fe80::1", "::ffff:127.0.0.1"); nil for anything else.
    public init?(_ text: String) {
        /// Hex groups separated by single colons; the last may be a dotted IPv4 address.
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            var result: [UInt16] = []
            for (index, piece) in pieces.enumerated() {
                if index == pieces.count - 1, piece.contains(".") {
                    guard let v4 = IPv4Address(String(piece)) else { return nil }
                    result += [UInt16(v4.value >> 16), UInt16(v4.value & 0xffff)]
                } else {
                    guard (1...4).contains(piece.count), piece.allSatisfy(\.isHexDigit),
                          let group = UInt16(piece, radix: 16) else { return nil }
                    result.append(group)
                }
            }
            return result
        }
        let all: [UInt16]
        if let gap = text.firstRange(of: "::") {
            let left = text[..<gap.lowerBound], right = text[gap.upperBound...]
            guard !right.contains("::"), !left.contains("."),
                  let head = groups(left), let tail = groups(right), head.count + tail.count <= 7 else { return nil }
            all = head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard let parsed = groups(text[...]), parsed.count == 8 else { return nil }
            all = parsed
        }
        value = all.reduce(UInt128(0)) { $0 << 16 | UInt128($1) }
    }

    public var description: String {
        if let v4 = mappedIPv4 { return "::ffff:\(v4)" }
        let groups = (0..<8).map { UInt16(truncatingIfNeeded: value >> (112 - 16 * UInt128($0))) }
        // Compress the longest run of two or more zero groups.
        var bestStart = -1, bestLength = 0, runStart = -1
        for i in 0...8 {
            if i < 8 && groups[i] == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength && i - runStart >= 2 { bestStart = runStart; bestLength = i - runStart }
                runStart = -1
            }
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(groups[$0], radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}

/// REPLY: the answer to a request, carrying either fds or an errno.
public struct Reply: Sendable, Equatable {
    /// nil on success. (Spelled `Optional`: `Errno?` would have an implicit `= nil`, an
    /// out-of-line initializer that even the inlined `init` below calls.)
    public var error: Optional<Errno>
    /// How many fds travel with the reply (0 on failure).
    public var fileDescriptorCount: Int

    // Inlinable: the serving thread makes one per request, from another module.
    @inlinable init(error: Errno?, fileDescriptorCount: Int) {
        self.error = error
        self.fileDescriptorCount = fileDescriptorCount
    }

    /// A successful reply carrying `fileDescriptorCount` fds.
    @inlinable
    public static func success(fileDescriptorCount: Int) -> Reply {
        Reply(error: nil, fileDescriptorCount: fileDescriptorCount)
    }

    /// A failed reply carrying `error`.
    @inlinable
    public static func failure(_ error: Errno) -> Reply {
        Reply(error: error, fileDescriptorCount: 0)
    }
}

/// VIOLATION: the worker's seccomp filter trapped a syscall.
public struct Violation: Sendable, Equatable {
    public var syscallNumber: Int32
    /// AUDIT_ARCH_* of the trapped call.
    public var architecture: UInt32
    public var instructionPointer: UInt64
    /// The six syscall arguments (set by `init`, which checks there are six).
    public private(set) var arguments: [UInt64]
    public init(syscallNumber: Int32, architecture: UInt32, instructionPointer: UInt64, arguments: [UInt64] = [0, 0, 0, 0, 0, 0]) {
        precondition(arguments.count == 6, "a syscall has six argument registers")
        self.syscallNumber = syscallNumber
        self.architecture = architecture
        self.instructionPointer = instructionPointer
        self.arguments = arguments
    }
}

/// LOG: a line for the supervisor's log.
public struct LogLine: Sendable, Equatable {
    public enum Level: UInt32, Sendable, CaseIterable {
        case debug = 0, info = 1, warning = 2, error = 3
    }
    public var level: Level
    public var message: String
    public init(level: Level, message: String) {
        self.level = level
        self.message = message
    }
}

/// Sandbox layers, as the PRIVSEP_LAYER_* bits.
public struct SandboxLayers: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let noNewPrivileges = SandboxLayers(rawValue: 0x01)
    public static let seccomp = SandboxLayers(rawValue: 0x02)
    public static let landlock = SandboxLayers(rawValue: 0x04)
    public static let userNamespace = SandboxLayers(rawValue: 0x08)
    public static let networkNamespace = SandboxLayers(rawValue: 0x10)
    public static let resourceLimits = SandboxLayers(rawValue: 0x20)
    /// Landlock's scoping (ABI 6+): no signal, and no abstract unix socket connection, to a
    /// process outside the worker's sandbox. Also in force without filesystem rules.
    public static let landlockScopes = SandboxLayers(rawValue: 0x40)
    /// Every layer this protocol version knows.
    public static let known: SandboxLayers = [.noNewPrivileges, .seccomp, .landlock, .userNamespace, .networkNamespace,
                                              .resourceLimits, .landlockScopes]
}

/// SANDBOX_STATUS: which layers the worker asked for and which are in force.
public struct SandboxStatus: Sendable, Equatable {
    public var requested: SandboxLayers
    public var active: SandboxLayers
    /// The Landlock ABI in force, 0 if Landlock is not active.
    public var landlockABI: UInt32
    public init(requested: SandboxLayers, active: SandboxLayers, landlockABI: UInt32 = 0) {
        self.requested = requested
        self.active = active
        self.landlockABI = landlockABI
    }
}

/// LISTENER: a seccomp user-notification fd travels with it (learning and intercept modes).
public struct ListenerAnnouncement: Sendable, Equatable {
    public enum Purpose: UInt32, Sendable {
        /// Record each system call the filter did not allow, and let it run.
        case learning = 1
        /// Intercept mode: serve each notified system call under the worker's policy. The
        /// supervisor answers with an empty REPLY (same request id) once it serves the listener.
        case intercept = 2
    }
    public var purpose: Purpose
    public init(purpose: Purpose) { self.purpose = purpose }
}

/// JOB: work for a pool worker: opaque input bytes and `fileDescriptorCount` fds.
public struct JobMessage: Sendable, Equatable {
    /// At most ``WireFormat/maximumJobBytes``; larger inputs travel as fds.
    public var input: [UInt8]
    public var fileDescriptorCount: Int
    public init(input: [UInt8], fileDescriptorCount: Int = 0) {
        self.input = input
        self.fileDescriptorCount = fileDescriptorCount
    }
}

/// RESULT: one chunk of a pool worker's answer to a JOB.
public struct ResultChunk: Sendable, Equatable {
    /// 0: the job succeeded; 1...Int32.max: the worker's own failure code. Always 0 when ``isLast`` is false.
    public var status: Int32
    /// False when more RESULT chunks follow for the same job.
    public var isLast: Bool
    /// At most ``WireFormat/maximumJobBytes``.
    public var output: [UInt8]
    public init(status: Int32 = 0, isLast: Bool = true, output: [UInt8]) {
        self.status = status
        self.isLast = isLast
        self.output = output
    }
}
