import CPrivsepShims
import Glibc
import PrivsepIPC
import SystemPackage
import Testing

/// Every message type, once each, with non-trivial field values.
let everyMessage: [Envelope] = [
    Envelope(requestID: 0, .hello(Hello(processID: 4121))),
    Envelope(requestID: 0, .welcome(Welcome(supervisorProcessID: 1, workerID: 77))),
    Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hosts", flags: O_RDONLY, mode: 0))),
    Envelope(requestID: 2, .open(OpenRequest(path: "/tmp/ünïcödé file", flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600))),
    Envelope(requestID: 3, .socket(SocketRequest(domain: AF_INET6, type: privsep_SOCK_STREAM, protocol: 6))),
    Envelope(requestID: 4, .connect(AddressRequest(type: privsep_SOCK_STREAM, address: .ipv4(.loopback, port: 443)))),
    Envelope(requestID: 5, .connect(AddressRequest(type: privsep_SOCK_DGRAM, address: .ipv6(IPv6Address("fe80::1")!, port: 53, scopeID: 2)))),
    Envelope(requestID: 6, .bind(AddressRequest(type: privsep_SOCK_STREAM, address: .ipv4(.any, port: 80)))),
    Envelope(requestID: 7, .bind(AddressRequest(type: privsep_SOCK_SEQPACKET, address: .unix(path: "/run/app.sock")))),
    Envelope(requestID: 8, .reply(.success(fileDescriptorCount: 1))),
    Envelope(requestID: 9, .reply(.success(fileDescriptorCount: 0))),
    Envelope(requestID: 10, .reply(.success(fileDescriptorCount: 253))),
    Envelope(requestID: 11, .reply(.failure(.permissionDenied))),
    Envelope(requestID: .max, .violation(Violation(syscallNumber: 59, architecture: 0xC000_003E,
                                                   instructionPointer: 0x7fff_1234, arguments: [1, 2, 3, 4, 5, .max]))),
    Envelope(requestID: 0, .log(LogLine(level: .warning, message: "parsed 3 records"))),
    Envelope(requestID: 0, .log(LogLine(level: .debug, message: ""))),
    Envelope(requestID: 0, .sandboxStatus(SandboxStatus(requested: [.seccomp, .landlock], active: [.seccomp, .landlock, .noNewPrivileges], landlockABI: 7))),
    Envelope(requestID: 0, .listener(ListenerAnnouncement(purpose: .learning))),
    Envelope(requestID: 12, .job(JobMessage(input: Array("/in/a.csv".utf8) + [0, 255, 10], fileDescriptorCount: 2))),
    Envelope(requestID: 13, .job(JobMessage(input: [], fileDescriptorCount: 0))),
    Envelope(requestID: 14, .job(JobMessage(input: [UInt8](repeating: 0xAB, count: WireFormat.maximumJobBytes), fileDescriptorCount: 253))),
    Envelope(requestID: 12, .result(ResultChunk(status: 0, isLast: false, output: [UInt8](repeating: 7, count: WireFormat.maximumJobBytes)))),
    Envelope(requestID: 12, .result(ResultChunk(status: 3, output: Array("line 4: bad quote".utf8)))),
    Envelope(requestID: 15, .result(ResultChunk(status: 0, output: []))),
]

@Suite struct CodecTests {
    @Test(arguments: everyMessage)
    func roundTrip(_ envelope: Envelope) throws {
        let bytes = try WireCodec.encode(envelope)
        #expect(bytes.count <= WireFormat.maximumMessageSize)
        let decoded = try WireCodec.decode(bytes, fileDescriptorCount: envelope.message.fileDescriptorCount)
        #expect(decoded == envelope)
    }

    @Test func everyTypeIsCovered() {
        #expect(Set(everyMessage.map(\.message.type)) == Set(MessageType.allCases))
    }

    /// The header decoder turns a raw type into a MessageType by its tag (the raw value less
    /// one): that holds only while the types are 1 through 13 in declaration order, the last
    /// being RESULT.
    @Test func typesAreNumberedInDeclarationOrder() {
        #expect(MessageType.allCases.map(\.rawValue) == Array(1...UInt16(MessageType.allCases.count)))
        #expect(MessageType.allCases.last == .result)
        for type in MessageType.allCases {
            #expect(unsafeBitCast(UInt8(type.rawValue - 1), to: MessageType.self) == type)
        }
    }

    // MARK: Golden bytes: these pin the layout of docs/PROTOCOL.md.

    @Test func goldenHello() throws {
        let bytes = try WireCodec.encode(Envelope(requestID: 0x1122_3344_5566_7788, .hello(Hello(processID: 0x1234))))
        #expect(bytes == [
            0x50, 0x53, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, // magic "PS", version 1, type HELLO, flags 0
            0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // length 8, reserved 0
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // request id
            0x34, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // pid, flags
        ])
    }

    @Test func goldenOpen() throws {
        let bytes = try WireCodec.encode(Envelope(requestID: 5, .open(OpenRequest(path: "/a", flags: 0x241, mode: 0o644))))
        #expect(bytes == [
            0x50, 0x53, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00,
            0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // length 8 + 3
            0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x41, 0x02, 0x00, 0x00, 0xa4, 0x01, 0x00, 0x00, // flags 0x241, mode 0644
            0x2f, 0x61, 0x00,                               // "/a\0"
        ])
    }

    @Test func goldenConnectIPv4AndReply() throws {
        let connect = try WireCodec.encode(Envelope(requestID: 1, .connect(AddressRequest(
            type: 1, protocol: 0, address: .ipv4(IPv4Address(192, 168, 1, 2), port: 0x1f90)))))
        #expect(Array(connect[24...]) == [
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // type SOCK_STREAM, protocol 0
            0x02, 0x00, 0x90, 0x1f, 0x00, 0x00, 0x00, 0x00, // AF_INET, port 8080 (host order), scope 0
            0xc0, 0xa8, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // address bytes in network order
        ])
        let reply = try WireCodec.encode(Envelope(requestID: 1, .reply(.failure(.permissionDenied))))
        #expect(Array(reply[4...5]) == [0x07, 0x00])
        #expect(Array(reply[24...]) == [0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]) // EACCES, 0 fds
    }

    // MARK: The decoder rejects each way a datagram can be wrong, precisely.

    static func valid(_ message: Message, requestID: UInt64 = 1) -> [UInt8] {
        try! WireCodec.encode(Envelope(requestID: requestID, message))
    }

    static func patch<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, _ value: T) -> [UInt8] {
        var bytes = bytes
        withUnsafeBytes(of: value) { for (i, byte) in $0.enumerated() { bytes[offset + i] = byte } }
        return bytes
    }

    static let open = valid(.open(OpenRequest(path: "/etc/hosts", flags: 0)))

    @Test func rejectsShortAndLongDatagrams() {
        #expect(throws: ProtocolError.truncatedHeader(byteCount: 0)) { try WireCodec.decode([], fileDescriptorCount: 0) }
        #expect(throws: ProtocolError.truncatedHeader(byteCount: 23)) {
            try WireCodec.decode(Array(Self.open[..<23]), fileDescriptorCount: 0)
        }
        let huge = Self.open + [UInt8](repeating: 0x41, count: WireFormat.maximumMessageSize)
        #expect(throws: ProtocolError.messageTooLarge(byteCount: huge.count)) { try WireCodec.decode(huge, fileDescriptorCount: 0) }
    }

    @Test func rejectsBadHeaderFields() {
        #expect(throws: ProtocolError.badMagic(0x5351)) {
            try WireCodec.decode(Self.patch(Self.open, at: 0, UInt16(0x5351)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.unsupportedVersion(2)) {
            try WireCodec.decode(Self.patch(Self.open, at: 2, UInt16(2)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.unknownType(0)) {
            try WireCodec.decode(Self.patch(Self.open, at: 4, UInt16(0)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.unknownType(0x8000)) {
            try WireCodec.decode(Self.patch(Self.open, at: 4, UInt16(0x8000)), fileDescriptorCount: 0)
        }
        for unknown: UInt16 in [14, 255, 0x0107, 0xFFFF] { // one past RESULT, and values whose low byte is a type
            #expect(throws: ProtocolError.unknownType(unknown)) {
                try WireCodec.decode(Self.patch(Self.open, at: 4, unknown), fileDescriptorCount: 0)
            }
        }
        #expect(throws: ProtocolError.nonZeroReserved(field: "header.flags")) {
            try WireCodec.decode(Self.patch(Self.open, at: 6, UInt16(1)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.nonZeroReserved(field: "header.reserved")) {
            try WireCodec.decode(Self.patch(Self.open, at: 12, UInt32(0x8000_0000)), fileDescriptorCount: 0)
        }
    }

    @Test func neverTrustsTheLengthField() {
        let actual = Self.open.count - 24
        for declared: UInt32 in [0, UInt32(actual - 1), UInt32(actual + 1), 8192, .max] {
            #expect(throws: ProtocolError.lengthMismatch(declared: declared, actual: actual)) {
                try WireCodec.decode(Self.patch(Self.open, at: 8, declared), fileDescriptorCount: 0)
            }
        }
    }

    @Test func rejectsFixedPayloadsOfTheWrongSize() {
        var hello = Self.valid(.hello(Hello(processID: 9)))
        hello.append(0)
        hello = Self.patch(hello, at: 8, UInt32(9))
        #expect(throws: ProtocolError.wrongPayloadSize(.hello, expected: 8, actual: 9)) {
            try WireCodec.decode(hello, fileDescriptorCount: 0)
        }
        let shortOpen = Self.patch(Array(Self.open[..<28]), at: 8, UInt32(4))
        #expect(throws: ProtocolError.wrongPayloadSize(.open, expected: 8, actual: 4)) {
            try WireCodec.decode(shortOpen, fileDescriptorCount: 0)
        }
    }

    @Test func rejectsBadStrings() {
        func openWith(_ tail: [UInt8]) -> [UInt8] {
            Self.patch(Array(Self.open[..<32]) + tail, at: 8, UInt32(8 + tail.count))
        }
        #expect(throws: ProtocolError.missingString(field: "open.path")) { try WireCodec.decode(openWith([]), fileDescriptorCount: 0) }
        #expect(throws: ProtocolError.stringUnterminated(field: "open.path")) {
            try WireCodec.decode(openWith(Array("/etc".utf8)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.stringHasEmbeddedNUL(field: "open.path")) {
            try WireCodec.decode(openWith(Array("/etc\0/shadow".utf8) + [0]), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.stringHasEmbeddedNUL(field: "open.path")) {
            try WireCodec.decode(openWith(Array("/etc".utf8) + [0, 0]), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.stringEmpty(field: "open.path")) { try WireCodec.decode(openWith([0]), fileDescriptorCount: 0) }
        #expect(throws: ProtocolError.stringNotUTF8(field: "open.path")) {
            try WireCodec.decode(openWith([0x2f, 0xff, 0xfe, 0]), fileDescriptorCount: 0)
        }
        // The NUL and the UTF-8 checks read eight bytes at a time: a bad byte is found
        // wherever it lies in a path of any length.
        for length in 2...24 {
            for position in 1..<length {
                var path = [UInt8](repeating: 0x61, count: length)
                path[0] = 0x2f
                path[position] = 0
                #expect(throws: ProtocolError.stringHasEmbeddedNUL(field: "open.path")) {
                    try WireCodec.decode(openWith(path + [0]), fileDescriptorCount: 0)
                }
                path[position] = 0xff
                #expect(throws: ProtocolError.stringNotUTF8(field: "open.path")) {
                    try WireCodec.decode(openWith(path + [0]), fileDescriptorCount: 0)
                }
                path[position] = 0x7f
                #expect(throws: Never.self) { try WireCodec.decode(openWith(path + [0]), fileDescriptorCount: 0) }
            }
        }
        let long = [UInt8](repeating: 0x61, count: WireFormat.maximumPathLength) + [0]
        #expect(throws: ProtocolError.stringTooLong(field: "open.path", maximum: 4096, actual: 4097)) {
            try WireCodec.decode(openWith(long), fileDescriptorCount: 0)
        }
        let longest = [0x2f] + [UInt8](repeating: 0x61, count: WireFormat.maximumPathLength - 2) + [0]
        #expect((try? WireCodec.decode(openWith(longest), fileDescriptorCount: 0)) != nil)
    }

    @Test func rejectsBadAddresses() {
        let connect = Self.valid(.connect(AddressRequest(type: 1, address: .ipv4(.loopback, port: 80))))
        #expect(throws: ProtocolError.invalidValue(field: "connect.address.family", value: 17)) {
            try WireCodec.decode(Self.patch(connect, at: 32, UInt16(17)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.nonZeroReserved(field: "connect.address.addr[4...15]")) {
            try WireCodec.decode(Self.patch(connect, at: 45, UInt8(1)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.nonZeroReserved(field: "connect.address.scope_id")) {
            try WireCodec.decode(Self.patch(connect, at: 36, UInt32(1)), fileDescriptorCount: 0)
        }
        let trailing = Self.patch(connect + Array("/x\0".utf8), at: 8, UInt32(32 + 3))
        #expect(throws: ProtocolError.unexpectedString(field: "connect.address")) {
            try WireCodec.decode(trailing, fileDescriptorCount: 0)
        }
        let unix = Self.valid(.bind(AddressRequest(type: 5, address: .unix(path: "/run/s"))))
        #expect(throws: ProtocolError.nonZeroReserved(field: "bind.address.port")) {
            try WireCodec.decode(Self.patch(unix, at: 34, UInt16(1)), fileDescriptorCount: 0)
        }
        let unixNoPath = Self.patch(Array(unix[..<56]), at: 8, UInt32(32))
        #expect(throws: ProtocolError.missingString(field: "bind.path")) { try WireCodec.decode(unixNoPath, fileDescriptorCount: 0) }
    }

    @Test func rejectsBadRepliesAndReservedPayloadFields() {
        let reply = Self.valid(.reply(.failure(.permissionDenied)))
        #expect(throws: ProtocolError.invalidValue(field: "reply.error", value: -1)) {
            try WireCodec.decode(Self.patch(reply, at: 24, Int32(-1)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.invalidValue(field: "reply.error", value: 4096)) {
            try WireCodec.decode(Self.patch(reply, at: 24, Int32(4096)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.invalidValue(field: "reply.fd_count", value: 1)) {
            try WireCodec.decode(Self.patch(reply, at: 28, UInt32(1)), fileDescriptorCount: 1)
        }
        let success = Self.valid(.reply(.success(fileDescriptorCount: 0)))
        #expect(throws: ProtocolError.invalidValue(field: "reply.fd_count", value: 254)) {
            try WireCodec.decode(Self.patch(success, at: 28, UInt32(254)), fileDescriptorCount: 254)
        }
        #expect(throws: ProtocolError.nonZeroReserved(field: "hello.flags")) {
            try WireCodec.decode(Self.patch(Self.valid(.hello(Hello(processID: 3))), at: 28, UInt32(1)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.invalidValue(field: "hello.pid", value: 0)) {
            try WireCodec.decode(Self.patch(Self.valid(.hello(Hello(processID: 3))), at: 24, UInt32(0)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.invalidValue(field: "log.level", value: 4)) {
            try WireCodec.decode(Self.patch(Self.valid(.log(LogLine(level: .info, message: "x"))), at: 24, UInt32(4)), fileDescriptorCount: 0)
        }
        let status = Self.valid(.sandboxStatus(SandboxStatus(requested: [.seccomp], active: [.seccomp])))
        #expect(throws: ProtocolError.invalidValue(field: "sandbox_status.active", value: 0x82)) {
            try WireCodec.decode(Self.patch(status, at: 28, UInt32(0x82)), fileDescriptorCount: 0)
        }
    }

    @Test func rejectsBadJobsAndResults() {
        let job = Self.valid(.job(JobMessage(input: [1, 2, 3], fileDescriptorCount: 1)))
        #expect(throws: ProtocolError.invalidValue(field: "job.fd_count", value: 254)) {
            try WireCodec.decode(Self.patch(job, at: 24, UInt32(254)), fileDescriptorCount: 254)
        }
        #expect(throws: ProtocolError.nonZeroReserved(field: "job.reserved")) {
            try WireCodec.decode(Self.patch(job, at: 28, UInt32(1)), fileDescriptorCount: 1)
        }
        #expect(throws: ProtocolError.wrongFileDescriptorCount(.job, expected: 1, actual: 0)) {
            try WireCodec.decode(job, fileDescriptorCount: 0)
        }
        let last = Self.valid(.result(ResultChunk(status: 2, output: [9])))
        #expect(throws: ProtocolError.invalidValue(field: "result.status", value: -1)) {
            try WireCodec.decode(Self.patch(last, at: 24, Int32(-1)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.invalidValue(field: "result.flags", value: 2)) {
            try WireCodec.decode(Self.patch(last, at: 28, UInt32(2)), fileDescriptorCount: 0)
        }
        // A chunk that says more follows carries no status: the last one does.
        #expect(throws: ProtocolError.invalidValue(field: "result.status", value: 2)) {
            try WireCodec.decode(Self.patch(last, at: 28, UInt32(1)), fileDescriptorCount: 0)
        }
        #expect(throws: ProtocolError.wrongFileDescriptorCount(.result, expected: 0, actual: 1)) {
            try WireCodec.decode(last, fileDescriptorCount: 1)
        }
        #expect(throws: ProtocolError.messageTooLarge(byteCount: 8193)) {
            try WireCodec.encode(Envelope(.result(ResultChunk(output: [UInt8](repeating: 0, count: WireFormat.maximumJobBytes + 1)))))
        }
        #expect(throws: ProtocolError.invalidValue(field: "result.status", value: 1)) {
            try WireCodec.encode(Envelope(.result(ResultChunk(status: 1, isLast: false, output: []))))
        }
    }

    @Test func rejectsWrongFileDescriptorCounts() {
        #expect(throws: ProtocolError.wrongFileDescriptorCount(.open, expected: 0, actual: 1)) {
            try WireCodec.decode(Self.open, fileDescriptorCount: 1)
        }
        let reply = Self.valid(.reply(.success(fileDescriptorCount: 2)))
        #expect(throws: ProtocolError.wrongFileDescriptorCount(.reply, expected: 2, actual: 1)) {
            try WireCodec.decode(reply, fileDescriptorCount: 1)
        }
        #expect(throws: ProtocolError.wrongFileDescriptorCount(.reply, expected: 2, actual: 3)) {
            try WireCodec.decode(reply, fileDescriptorCount: 3)
        }
    }

    @Test func encoderRefusesWhatTheDecoderWouldReject() {
        #expect(throws: ProtocolError.stringHasEmbeddedNUL(field: "open.path")) {
            try WireCodec.encode(Envelope(.open(OpenRequest(path: "/a\0b", flags: 0))))
        }
        #expect(throws: ProtocolError.stringEmpty(field: "open.path")) { try WireCodec.encode(Envelope(.open(OpenRequest(path: "", flags: 0)))) }
        #expect(throws: ProtocolError.stringTooLong(field: "connect.path", maximum: 108, actual: 109)) {
            try WireCodec.encode(Envelope(.connect(AddressRequest(type: 1, address: .unix(path: String(repeating: "a", count: 108))))))
        }
        #expect(throws: ProtocolError.invalidValue(field: "reply.fd_count", value: 254)) {
            try WireCodec.encode(Envelope(.reply(.success(fileDescriptorCount: 254))))
        }
        #expect(throws: ProtocolError.invalidValue(field: "reply.error", value: 5000)) {
            try WireCodec.encode(Envelope(.reply(.failure(Errno(rawValue: 5000)))))
        }
        #expect(throws: ProtocolError.invalidValue(field: "hello.pid", value: -1)) { try WireCodec.encode(Envelope(.hello(Hello(processID: -1)))) }
    }

    /// The encoder checks a string for NUL and copies it eight bytes at a time when it is
    /// short (libc's memchr and memmove when long): every length on both sides of each
    /// threshold round-trips, and a NUL anywhere is refused.
    @Test func stringsOfEveryLengthRoundTripAndANulAnywhereIsRefused() throws {
        for length in 1...80 {
            let path = "/" + String((1..<length).map { Character(UnicodeScalar(UInt8(0x61 + $0 % 26))) })
            let encoded = try WireCodec.encode(Envelope(requestID: 3, .open(OpenRequest(path: path, flags: 0))))
            #expect(try WireCodec.decode(encoded, fileDescriptorCount: 0) == Envelope(requestID: 3, .open(OpenRequest(path: path, flags: 0))))
            // A NUL at each position:
            for position in 1..<length {
                var bytes = Array(path.utf8)
                bytes[position] = 0
                let withNUL = String(decoding: bytes, as: UTF8.self)
                #expect(throws: ProtocolError.stringHasEmbeddedNUL(field: "open.path")) {
                    try WireCodec.encode(Envelope(.open(OpenRequest(path: withNUL, flags: 0))))
                }
            }
        }
    }

    /// The serving loop's in-place OPEN decoder accepts exactly what the full decoder
    /// accepts, with the same error or the same request: over every truncation and byte
    /// flip of every message, and paths whose UTF-8 is valid or not in each way.
    @Test func inPlaceOpenDecoderAgreesWithTheFullDecoder() {
        var opens = 0
        // Checked one datagram at a time: kept all at once, the big messages' variants take a GiB.
        func check(_ bytes: [UInt8]) {
            opens += Self.inPlaceDecoderAgrees(on: bytes, fileDescriptorCounts: [0, 1], type: .open, WireCodec.decodeOpenInPlace) {
                Envelope(requestID: $0.requestID, .open($0.request))
            }
        }
        let paths: [[UInt8]] = [
            Array("/srv/données/été.csv".utf8), Array("/😀".utf8), [0x2f, 0xc0, 0xaf], [0x2f, 0xed, 0xa0, 0x80],
            [0x2f, 0xf4, 0x90, 0x80, 0x80], [0x2f, 0xe2, 0x82], [0x2f, 0x80], Array("/a/b/c/d/e/f/g/h/i".utf8),
        ]
        for path in paths {
            let tail = path + [0]
            check(Self.patch(Array(Self.open[..<32]) + tail, at: 8, UInt32(8 + tail.count)))
        }
        Self.forEachVariant(of: everyMessage, changingBytesTo: [0x00, 0x01, 0x7f, 0x80, 0xff], check)
        #expect(opens > 4)
    }

    /// The worker's in-place REPLY decoder accepts exactly what the full decoder accepts,
    /// with the same error or the same reply: over every truncation and byte flip of every
    /// message, with each fd count a REPLY may claim around the ones it does.
    @Test func inPlaceReplyDecoderAgreesWithTheFullDecoder() {
        var replies = 0
        var messages = everyMessage
        for count in [0, 2, 253] { messages.append(Envelope(requestID: 77, .reply(.success(fileDescriptorCount: count)))) }
        messages.append(Envelope(requestID: 78, .reply(.failure(Errno(rawValue: WireFormat.maximumErrno)))))
        Self.forEachVariant(of: messages, changingBytesTo: [0x00, 0x01, 0x7f, 0x80, 0xfd, 0xfe, 0xff]) { bytes in
            replies += Self.inPlaceDecoderAgrees(on: bytes, fileDescriptorCounts: [0, 1, 2, 253, 254], type: .reply,
                                                 WireCodec.decodeReplyInPlace) {
                Envelope(requestID: $0.requestID, .reply($0.reply))
            }
        }
        #expect(replies > 10)
    }

    /// Checks an in-place decoder against the full one on `bytes` with each fd count: the
    /// same error, the same message (as `envelope` rebuilds it, while `bytes` still hold
    /// what it points into), or nil for a datagram of another type. Returns how many
    /// times it decoded a message.
    static func inPlaceDecoderAgrees<Decoded>(
        on bytes: [UInt8], fileDescriptorCounts: [Int], type: MessageType,
        _ decodeInPlace: (UnsafeRawBufferPointer, Int) throws(ProtocolError) -> Decoded?,
        envelope: (Decoded) -> Envelope
    ) -> Int {
        var decoded = 0
        for count in fileDescriptorCounts {
            let full = Result { () throws(ProtocolError) in try WireCodec.decode(bytes, fileDescriptorCount: count) }
            let inPlace = bytes.withUnsafeBytes { buffer in
                Result { () throws(ProtocolError) in try decodeInPlace(buffer, count).map(envelope) }
            }
            switch (full, inPlace) {
            case (.failure(let expected), .failure(let error)):
                #expect(error == expected)
            case (.success(let expected), .success(let message?)):
                #expect(message == expected)
                decoded += 1
            case (.success(let envelope), .success(nil)):
                #expect(envelope.message.type != type)
            case (.failure, .success(nil)):
                // A valid header of another type: the full decoder refused its payload.
                #expect(bytes.count >= WireFormat.headerSize && bytes[4] != UInt8(type.rawValue))
            default:
                Issue.record("\(type) decoders disagree on \(bytes.prefix(64)) with \(count) fds: \(full) against \(inPlace)")
            }
        }
        return decoded
    }

    /// Calls `body` with each message's bytes, every truncation of them, and every change
    /// of one byte to each of `values`, one at a time.
    static func forEachVariant(of envelopes: [Envelope], changingBytesTo values: [UInt8], _ body: ([UInt8]) -> Void) {
        for envelope in envelopes {
            let bytes = try! WireCodec.encode(envelope)
            body(bytes)
            for length in 0..<bytes.count { body(Array(bytes[..<length])) }
            for index in bytes.indices {
                for value in values {
                    var corrupt = bytes
                    corrupt[index] = value
                    body(corrupt)
                }
            }
        }
    }

    /// The worker's OPEN encoder (from its parts) writes the bytes the general encoder
    /// writes, and refuses what it refuses with the same error.
    @Test func openEncoderFromItsPartsWritesWhatTheGeneralOneWrites() {
        let longest = "/" + String(repeating: "a", count: WireFormat.maximumPathLength - 2)
        let paths = ["/srv/data.csv", "/", "/srv/données/été.csv", "/😀", longest, longest + "a", "", "/a\u{0}b", "relative"]
        for path in paths {
            for (flags, mode) in [(O_RDONLY, UInt32(0)), (O_WRONLY | O_CREAT | O_TRUNC, 0o640), (-1, UInt32.max)] {
                Self.encoderFromPartsAgrees(
                    Envelope(requestID: 0xfeed_beef_0000_0001, .open(OpenRequest(path: path, flags: flags, mode: mode))),
                    "\(path.prefix(40))") { (body) throws(ProtocolError) in
                    try WireCodec.withEncodedOpen(requestID: 0xfeed_beef_0000_0001, path: path, flags: flags, mode: mode, body)
                }
            }
        }
    }

    /// The serving thread's REPLY encoder (from its parts) writes the bytes the general
    /// encoder writes, and refuses what it refuses with the same error.
    @Test func replyEncoderFromItsPartsWritesWhatTheGeneralOneWrites() {
        let replies: [Reply] = [
            .success(fileDescriptorCount: 0), .success(fileDescriptorCount: 1),
            .success(fileDescriptorCount: WireFormat.maximumFileDescriptors),
            .success(fileDescriptorCount: WireFormat.maximumFileDescriptors + 1), .success(fileDescriptorCount: -1),
            .failure(.permissionDenied), .failure(Errno(rawValue: WireFormat.maximumErrno)),
            .failure(Errno(rawValue: WireFormat.maximumErrno + 1)), .failure(Errno(rawValue: 0)), .failure(Errno(rawValue: -1)),
        ] + [{ var refusalWithAnFD = Reply.failure(.permissionDenied); refusalWithAnFD.fileDescriptorCount = 1; return refusalWithAnFD }()]
        for reply in replies {
            Self.encoderFromPartsAgrees(Envelope(requestID: 0xfeed_beef_0000_0002, .reply(reply)), "\(reply)") { (body) throws(ProtocolError) in
                try WireCodec.withEncodedReply(requestID: 0xfeed_beef_0000_0002, reply, body)
            }
        }
    }

    /// An encoder from parts (`fromParts`, handing its bytes to a body) agrees with the
    /// general encoder on `envelope`: the same bytes, or the same error.
    static func encoderFromPartsAgrees(_ envelope: Envelope, _ label: String,
                                       _ fromParts: ((UnsafeRawBufferPointer) -> Void) throws(ProtocolError) -> Void) {
        let general = Result { () throws(ProtocolError) in try WireCodec.encode(envelope) }
        let parts = Result { () throws(ProtocolError) -> [UInt8] in
            var bytes: [UInt8] = []
            try fromParts { bytes = Array($0) }
            return bytes
        }
        switch (general, parts) {
        case (.success(let expected), .success(let bytes)): #expect(bytes == expected, "\(label)")
        case (.failure(let expected), .failure(let error)): #expect(error == expected, "\(label)")
        default: Issue.record("encoders disagree on \(label): \(general) against \(parts)")
        }
    }

    /// Every truncation and every single-byte corruption of every message either
    /// decodes or fails with a ProtocolError; nothing traps.
    @Test func survivesEveryTruncationAndByteFlip() {
        var decoded = 0, rejected = 0
        for envelope in everyMessage {
            let bytes = try! WireCodec.encode(envelope)
            for length in 0..<bytes.count {
                #expect(throws: ProtocolError.self) { try WireCodec.decode(Array(bytes[..<length]), fileDescriptorCount: 0) }
            }
            for index in bytes.indices {
                for value: UInt8 in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    var corrupt = bytes
                    corrupt[index] = value
                    do {
                        _ = try WireCodec.decode(corrupt, fileDescriptorCount: envelope.message.fileDescriptorCount)
                        decoded += 1
                    } catch {
                        rejected += 1
                    }
                }
            }
        }
        #expect(rejected > 0 && decoded > 0)
    }
}

@Suite struct AddressTests {
    @Test func parsesIPv4() {
        #expect(IPv4Address("127.0.0.1") == .loopback)
        #expect(IPv4Address("255.255.255.255")?.value == .max)
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", "a.b.c.d", "1..2.3", " 1.2.3.4"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
        #expect(IPv4Address(10, 0, 0, 1).description == "10.0.0.1")
    }

    @Test func parsesIPv6() {
        #expect(IPv6Address("::1") == .loopback)
        #expect(IPv6Address("::") == .any)
        #expect(IPv6Address("fe80::1")?.value == UInt128(0xfe80) << 112 | 1)
        #expect(IPv6Address("1:2:3:4:5:6:7:8")?.description == "1:2:3:4:5:6:7:8")
        #expect(IPv6Address("::ffff:127.0.0.1")?.mappedIPv4 == .loopback)
        #expect(IPv6Address("::ffff:7f00:1")?.mappedIPv4 == .loopback)
        #expect(IPv6Address("2001:db8::8:800:200c:417a")?.description == "2001:db8::8:800:200c:417a")
        #expect(IPv6Address("1::")?.description == "1::")
        for bad in ["", ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "g::", ":1::", "1:::2", "::1.2.3.4.5", "1.2.3.4::"] {
            #expect(IPv6Address(bad) == nil, "\(bad)")
        }
    }
}
