import Glibc
import SystemPackage

/// Encodes and decodes protocol messages.
///
/// ``decode(_:fileDescriptorCount:)-(UnsafeRawBufferPointer,_)`` is a pure function from the bytes and the
/// number of fds that arrived to a message or a precise ``ProtocolError``. It
/// never trusts a length field (each is checked against the datagram's real
/// size first) and never allocates more than the datagram already holds.
/// ``encode(_:)`` enforces the same rules, so this library cannot produce a
/// message its own decoder would reject.
public enum WireCodec {
    // MARK: Decoding

    /// Decodes one datagram that arrived with `fileDescriptorCount` fds.
    public static func decode(_ bytes: UnsafeRawBufferPointer, fileDescriptorCount: Int) throws(ProtocolError) -> Envelope {
        let header = try decodeHeader(bytes)
        let reader = Reader(bytes, base: WireFormat.headerSize)
        let tail = UnsafeRawBufferPointer(rebasing: bytes[(WireFormat.headerSize + header.type.fixedPayloadSize)...])
        let message = try decodePayload(header.type, reader, tail: tail)
        let expectedFDs = message.fileDescriptorCount
        guard fileDescriptorCount == expectedFDs else {
            throw .wrongFileDescriptorCount(header.type, expected: expectedFDs, actual: fileDescriptorCount)
        }
        return Envelope(requestID: header.requestID, message)
    }

    /// Decodes an OPEN without copying its path out of `bytes`: the serving loop's
    /// path for the commonest request, sparing it a String per OPEN. nil when the
    /// datagram's header is valid but it is not an OPEN (decode it with
    /// ``decode(_:fileDescriptorCount:)-(UnsafeRawBufferPointer,_)``). Every rule the
    /// full decoder applies to an OPEN applies here, through the same code.
    package static func decodeOpenInPlace(_ bytes: UnsafeRawBufferPointer, fileDescriptorCount: Int) throws(ProtocolError) -> InPlaceOpenRequest? {
        let header = try decodeHeader(bytes)
        guard header.type == .open else { return nil }
        let reader = Reader(bytes, base: WireFormat.headerSize)
        let fixed = MessageType.open.fixedPayloadSize
        let path = try validatedPath(UnsafeRawBufferPointer(rebasing: bytes[(WireFormat.headerSize + fixed)...]))
        guard fileDescriptorCount == 0 else {
            throw .wrongFileDescriptorCount(.open, expected: 0, actual: fileDescriptorCount)
        }
        return InPlaceOpenRequest(requestID: header.requestID, flags: Int32(bitPattern: reader.u32(at: 0)), mode: reader.u32(at: 4),
                                  path: path)
    }

    /// Decodes a REPLY without building an `Envelope`: the worker's path for the answer it
    /// waits for. nil when the datagram's header is valid but it is not a REPLY. Every rule
    /// the full decoder applies to a REPLY applies here, through the same code.
    @inline(__always)
    package static func decodeReplyInPlace(_ bytes: UnsafeRawBufferPointer, fileDescriptorCount: Int) throws(ProtocolError) -> (requestID: UInt64, reply: Reply)? {
        guard let (requestID, reply) = try decodeReplyInPlace(bytes) else { return nil }
        guard fileDescriptorCount == reply.fileDescriptorCount else {
            throw .wrongFileDescriptorCount(.reply, expected: reply.fileDescriptorCount, actual: fileDescriptorCount)
        }
        return (requestID, reply)
    }

    /// ``decodeReplyInPlace(_:fileDescriptorCount:)`` without the fd count's check: for a
    /// REPLY whose fds this process had no room to receive.
    @inline(__always)
    package static func decodeReplyInPlace(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> (requestID: UInt64, reply: Reply)? {
        let header = try decodeHeader(bytes)
        guard header.type == .reply else { return nil }
        return (header.requestID, try decodeReply(Reader(bytes, base: WireFormat.headerSize)))
    }

    /// The header's checks, shared by every decoder: what they return is the type
    /// and id of a datagram whose size fits its type.
    @inline(__always)
    private static func decodeHeader(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> (type: MessageType, requestID: UInt64) {
        guard bytes.count >= WireFormat.headerSize else { throw .truncatedHeader(byteCount: bytes.count) }
        guard bytes.count <= WireFormat.maximumMessageSize else { throw .messageTooLarge(byteCount: bytes.count) }
        let reader = Reader(bytes)
        let magic = reader.u16(at: WireFormat.magicOffset)
        guard magic == WireFormat.magic else { throw .badMagic(magic) }
        let version = reader.u16(at: WireFormat.versionOffset)
        guard version == WireFormat.version else { throw .unsupportedVersion(version) }
        let rawType = reader.u16(at: WireFormat.typeOffset)
        // The types are 1 through 13 in declaration order, so the enum's own tag is the raw
        // value less one (held to that by a test of every type): MessageType(rawValue:) is a
        // call of its own, one more page of code per message (BENCHMARKS.md, sixth round).
        guard rawType >= 1 && rawType <= MessageType.result.rawValue else { throw .unknownType(rawType) }
        let type = unsafeBitCast(UInt8(truncatingIfNeeded: rawType - 1), to: MessageType.self)
        guard reader.u16(at: WireFormat.flagsOffset) == 0 else { throw .nonZeroReserved(field: "header.flags") }
        let declaredLength = reader.u32(at: WireFormat.lengthOffset)
        let payloadSize = bytes.count - WireFormat.headerSize
        guard Int(declaredLength) == payloadSize else {
            throw .lengthMismatch(declared: declaredLength, actual: payloadSize)
        }
        guard reader.u32(at: WireFormat.reservedOffset) == 0 else { throw .nonZeroReserved(field: "header.reserved") }
        let fixed = type.fixedPayloadSize
        if type.hasTrailingString || type.hasTrailingBytes {
            guard payloadSize >= fixed else { throw .wrongPayloadSize(type, expected: fixed, actual: payloadSize) }
        } else {
            guard payloadSize == fixed else { throw .wrongPayloadSize(type, expected: fixed, actual: payloadSize) }
        }
        return (type, reader.u64(at: WireFormat.requestIDOffset))
    }

    /// Decodes a datagram held in an array.
    public static func decode(_ bytes: [UInt8], fileDescriptorCount: Int) throws(ProtocolError) -> Envelope {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(ProtocolError) in try decode(buffer, fileDescriptorCount: fileDescriptorCount) }
        }
        return try result.get()
    }

    @inline(__always)
    private static func decodeReply(_ r: Reader) throws(ProtocolError) -> Reply {
        let error = r.i32(at: 0)
        let count = r.u32(at: 4)
        guard (0...WireFormat.maximumErrno).contains(error) else {
            throw .invalidValue(field: "reply.error", value: Int64(error))
        }
        guard count <= UInt32(WireFormat.maximumFileDescriptors) else {
            throw .invalidValue(field: "reply.fd_count", value: Int64(count))
        }
        if error != 0 {
            guard count == 0 else { throw .invalidValue(field: "reply.fd_count", value: Int64(count)) }
            return .failure(Errno(rawValue: error))
        }
        return .success(fileDescriptorCount: Int(count))
    }

    private static func decodePayload(_ type: MessageType, _ r: Reader, tail: UnsafeRawBufferPointer) throws(ProtocolError) -> Message {
        switch type {
        case .hello:
            guard r.u32(at: 4) == 0 else { throw .nonZeroReserved(field: "hello.flags") }
            return .hello(Hello(processID: try positivePID(r.u32(at: 0), field: "hello.pid")))
        case .welcome:
            guard r.u32(at: 4) == 0 else { throw .nonZeroReserved(field: "welcome.reserved") }
            return .welcome(Welcome(supervisorProcessID: try positivePID(r.u32(at: 0), field: "welcome.supervisor_pid"),
                                    workerID: r.u64(at: 8)))
        case .open:
            let path = try validatedPath(tail)
            return .open(OpenRequest(path: String(validatedBytes: path), flags: Int32(bitPattern: r.u32(at: 0)), mode: r.u32(at: 4)))
        case .socket:
            guard r.u32(at: 12) == 0 else { throw .nonZeroReserved(field: "socket.reserved") }
            return .socket(SocketRequest(domain: r.i32(at: 0), type: r.i32(at: 4), protocol: r.i32(at: 8)))
        case .connect, .bind:
            let request = AddressRequest(type: r.i32(at: 0), protocol: r.i32(at: 4),
                                         address: try decodeAddress(r, at: 8, tail: tail, type: type))
            return type == .connect ? .connect(request) : .bind(request)
        case .reply:
            return .reply(try decodeReply(r))
        case .violation:
            let arguments = (0..<6).map { r.u64(at: 16 + 8 * $0) }
            return .violation(Violation(syscallNumber: r.i32(at: 0), architecture: r.u32(at: 4),
                                        instructionPointer: r.u64(at: 8), arguments: arguments))
        case .log:
            guard r.u32(at: 4) == 0 else { throw .nonZeroReserved(field: "log.reserved") }
            let rawLevel = r.u32(at: 0)
            guard let level = LogLine.Level(rawValue: rawLevel) else {
                throw .invalidValue(field: "log.level", value: Int64(rawLevel))
            }
            let text = try decodeString(tail, field: "log.message", maximum: WireFormat.maximumLogLength, allowEmpty: true)
            return .log(LogLine(level: level, message: text))
        case .sandboxStatus:
            guard r.u32(at: 12) == 0 else { throw .nonZeroReserved(field: "sandbox_status.reserved") }
            let requested = r.u32(at: 0), active = r.u32(at: 4)
            guard requested & ~SandboxLayers.known.rawValue == 0 else {
                throw .invalidValue(field: "sandbox_status.requested", value: Int64(requested))
            }
            guard active & ~SandboxLayers.known.rawValue == 0 else {
                throw .invalidValue(field: "sandbox_status.active", value: Int64(active))
            }
            return .sandboxStatus(SandboxStatus(requested: SandboxLayers(rawValue: requested),
                                                active: SandboxLayers(rawValue: active), landlockABI: r.u32(at: 8)))
        case .listener:
            guard r.u32(at: 4) == 0 else { throw .nonZeroReserved(field: "listener.reserved") }
            let raw = r.u32(at: 0)
            guard let purpose = ListenerAnnouncement.Purpose(rawValue: raw) else {
                throw .invalidValue(field: "listener.purpose", value: Int64(raw))
            }
            return .listener(ListenerAnnouncement(purpose: purpose))
        case .job:
            guard r.u32(at: 4) == 0 else { throw .nonZeroReserved(field: "job.reserved") }
            let count = r.u32(at: 0)
            guard count <= UInt32(WireFormat.maximumFileDescriptors) else {
                throw .invalidValue(field: "job.fd_count", value: Int64(count))
            }
            // The tail fits by construction: the datagram is at most one message.
            return .job(JobMessage(input: Array(tail), fileDescriptorCount: Int(count)))
        case .result:
            let status = r.i32(at: 0), flags = r.u32(at: 4)
            guard flags & ~WireFormat.resultMoreFlag == 0 else { throw .invalidValue(field: "result.flags", value: Int64(flags)) }
            let isLast = flags & WireFormat.resultMoreFlag == 0
            guard status >= 0, isLast || status == 0 else { throw .invalidValue(field: "result.status", value: Int64(status)) }
            return .result(ResultChunk(status: status, isLast: isLast, output: Array(tail)))
        }
    }

    private static func positivePID(_ raw: UInt32, field: String) throws(ProtocolError) -> Int32 {
        guard raw > 0, raw <= UInt32(Int32.max) else { throw .invalidValue(field: field, value: Int64(raw)) }
        return Int32(raw)
    }

    private static func decodeAddress(
        _ r: Reader, at offset: Int, tail: UnsafeRawBufferPointer, type: MessageType
    ) throws(ProtocolError) -> SocketAddress {
        let prefix = type == .connect ? "connect" : "bind"
        let family = Int32(r.u16(at: offset))
        let port = r.u16(at: offset + 2)
        let scope = r.u32(at: offset + 4)
        let high = r.bigEndianU64(at: offset + 8), low = r.bigEndianU64(at: offset + 16)
        switch family {
        case AF_INET:
            guard tail.isEmpty else { throw .unexpectedString(field: "\(prefix).address") }
            guard scope == 0 else { throw .nonZeroReserved(field: "\(prefix).address.scope_id") }
            guard high & 0xffff_ffff == 0, low == 0 else { throw .nonZeroReserved(field: "\(prefix).address.addr[4...15]") }
            return .ipv4(IPv4Address(UInt32(high >> 32)), port: port)
        case AF_INET6:
            guard tail.isEmpty else { throw .unexpectedString(field: "\(prefix).address") }
            return .ipv6(IPv6Address(UInt128(high) << 64 | UInt128(low)), port: port, scopeID: scope)
        case AF_UNIX:
            guard port == 0 else { throw .nonZeroReserved(field: "\(prefix).address.port") }
            guard scope == 0 else { throw .nonZeroReserved(field: "\(prefix).address.scope_id") }
            guard high == 0, low == 0 else { throw .nonZeroReserved(field: "\(prefix).address.addr") }
            let path = try decodeString(tail, field: "\(prefix).path", maximum: WireFormat.maximumUnixPathLength, allowEmpty: false)
            return .unix(path: path)
        default:
            throw .invalidValue(field: "\(prefix).address.family", value: Int64(family))
        }
    }

    /// A string occupying all of `bytes`: content, then exactly one NUL at the end.
    private static func decodeString(
        _ bytes: UnsafeRawBufferPointer, field: String, maximum: Int, allowEmpty: Bool
    ) throws(ProtocolError) -> String {
        String(validatedBytes: try validatedString(bytes, field: field, maximum: maximum, allowEmpty: allowEmpty))
    }

    /// OPEN's path, checked as ``validatedString(_:field:maximum:allowEmpty:)`` checks it.
    private static func validatedPath(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> UnsafeBufferPointer<UInt8> {
        try validatedString(bytes, field: "open.path", maximum: WireFormat.maximumPathLength, allowEmpty: false)
    }

    /// Checks that `bytes` are one string and nothing else: content, then exactly one NUL
    /// at the end, within `maximum` bytes (NUL included), UTF-8. Returns the content, which
    /// the NUL still follows in `bytes`.
    private static func validatedString(
        _ bytes: UnsafeRawBufferPointer, field: String, maximum: Int, allowEmpty: Bool
    ) throws(ProtocolError) -> UnsafeBufferPointer<UInt8> {
        guard !bytes.isEmpty else { throw .missingString(field: field) }
        guard bytes.count <= maximum else { throw .stringTooLong(field: field, maximum: maximum, actual: bytes.count) }
        guard bytes[bytes.count - 1] == 0 else { throw .stringUnterminated(field: field) }
        let contentLength = bytes.count - 1
        let content = UnsafeBufferPointer(start: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), count: contentLength)
        // ASCII without NUL (almost every path) passes in one pass. Anything else is
        // judged apart: a NUL inside is refused; then, strict, a string that is not UTF-8
        // is refused rather than repaired, because a repaired string would name a
        // different file than the bytes the worker sent (the standard library's
        // validating C-string initializer judges it).
        if !isASCIIWithoutNUL(content) {
            guard memchr(bytes.baseAddress!, 0, contentLength) == nil else { throw .stringHasEmbeddedNUL(field: field) }
            guard String(validatingCString: bytes.baseAddress!.assumingMemoryBound(to: CChar.self)) != nil else {
                throw .stringNotUTF8(field: field)
            }
        }
        guard allowEmpty || contentLength > 0 else { throw .stringEmpty(field: field) }
        return content
    }

    // MARK: Encoding

    /// Encodes `envelope` as one datagram. Throws the same ``ProtocolError`` the
    /// decoder would for a message that breaks the protocol's rules.
    public static func encode(_ envelope: Envelope) throws(ProtocolError) -> [UInt8] {
        try withEncoded(envelope) { Array($0) }
    }

    /// Encodes `envelope` into temporary memory and calls `body` with the bytes, which
    /// are valid only during the call: the send path's encoder. The memory is sized
    /// exactly and, for the usual message of well under 1 KiB, on the stack; building
    /// an array instead cost an allocation and a metadata lookup per message.
    ///
    /// Inlinable, over a non-generic encoder: called from another module, a generic
    /// body here looked up the metadata of `R` and its `Result` on every message
    /// (measured on the supervisor's serving thread, once per reply).
    @inlinable
    public static func withEncoded<R>(_ envelope: Envelope, _ body: (UnsafeRawBufferPointer) -> R) throws(ProtocolError) -> R {
        var result: R? = nil
        try withEncodedBytes(envelope) { result = body($0) }
        return result!
    }

    /// ``withEncoded(_:_:)`` without a result: one compiled body for every caller.
    @usableFromInline
    static func withEncodedBytes(_ envelope: Envelope, _ body: (UnsafeRawBufferPointer) -> Void) throws(ProtocolError) {
        try withWriter(capacity: encodedSize(envelope.message), { (w) throws(ProtocolError) in try write(envelope, into: &w) }, body)
    }

    /// Encodes with `write` into temporary memory of `capacity` bytes (on the stack for a
    /// usual message) and calls `body` with the bytes written: every encoder's frame.
    @inline(__always)
    private static func withWriter(capacity: Int, _ write: (inout Writer) throws(ProtocolError) -> Void,
                                   _ body: (UnsafeRawBufferPointer) -> Void) throws(ProtocolError) {
        try withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) { (buffer) throws(ProtocolError) in
            var w = Writer(buffer)
            try write(&w)
            body(UnsafeRawBufferPointer(rebasing: buffer[..<w.count]))
        }
    }

    /// Header, fixed payload and trailing string or bytes of `message`.
    private static func encodedSize(_ message: Message) -> Int {
        let tail = switch message {
        case .open(let open): open.path.utf8.count + 1
        case .log(let line): line.message.utf8.count + 1
        case .connect(let request), .bind(let request):
            if case .unix(let path) = request.address { path.utf8.count + 1 } else { 0 }
        case .job(let job): job.input.count
        case .result(let chunk): chunk.output.count
        default: 0
        }
        return WireFormat.headerSize + message.type.fixedPayloadSize + tail
    }

    /// ``withEncodedBytes(_:_:)`` for an OPEN, from its parts: the worker's path for its
    /// commonest request, with no `Envelope` or `Message` built and copied on the way. The
    /// bytes come from the same functions as every OPEN's (``writeHeader``, ``writeOpen``),
    /// so they are the same bytes and the same errors.
    @inline(__always)
    package static func withEncodedOpen(requestID: UInt64, path: String, flags: Int32, mode: UInt32,
                                _ body: (UnsafeRawBufferPointer) -> Void) throws(ProtocolError) {
        let capacity = WireFormat.headerSize + MessageType.open.fixedPayloadSize + path.utf8.count + 1
        try withWriter(capacity: capacity, { (w) throws(ProtocolError) in
            writeHeader(.open, requestID: requestID, into: &w)
            try writeOpen(path: path, flags: flags, mode: mode, into: &w)
            try finish(&w)
        }, body)
    }

    /// ``withEncodedBytes(_:_:)`` for a REPLY, from its parts: the serving thread's path
    /// for its commonest message, with no `Envelope` built, copied and destroyed per request.
    /// The bytes come from the same functions as every REPLY's (``writeHeader``,
    /// ``writeReply``), so they are the same bytes and the same errors.
    @inline(__always)
    package static func withEncodedReply(requestID: UInt64, _ reply: Reply,
                                         _ body: (UnsafeRawBufferPointer) -> Void) throws(ProtocolError) {
        try withWriter(capacity: WireFormat.headerSize + MessageType.reply.fixedPayloadSize, { (w) throws(ProtocolError) in
            writeHeader(.reply, requestID: requestID, into: &w)
            try writeReply(reply, into: &w)
            try finish(&w)
        }, body)
    }

    @inline(__always)
    private static func writeHeader(_ type: MessageType, requestID: UInt64, into w: inout Writer) {
        w.u16(WireFormat.magic)
        w.u16(WireFormat.version)
        w.u16(type.rawValue)
        w.u16(0)
        w.u32(0) // length, patched by `finish`
        w.u32(0)
        w.u64(requestID)
    }

    @inline(__always)
    private static func writeOpen(path: String, flags: Int32, mode: UInt32, into w: inout Writer) throws(ProtocolError) {
        w.u32(UInt32(bitPattern: flags))
        w.u32(mode)
        try w.string(path, field: "open.path", maximum: WireFormat.maximumPathLength, allowEmpty: false)
    }

    @inline(__always)
    private static func writeReply(_ reply: Reply, into w: inout Writer) throws(ProtocolError) {
        if let error = reply.error {
            guard (1...WireFormat.maximumErrno).contains(error.rawValue) else {
                throw .invalidValue(field: "reply.error", value: Int64(error.rawValue))
            }
            guard reply.fileDescriptorCount == 0 else {
                throw .invalidValue(field: "reply.fd_count", value: Int64(reply.fileDescriptorCount))
            }
            w.i32(error.rawValue)
        } else {
            guard (0...WireFormat.maximumFileDescriptors).contains(reply.fileDescriptorCount) else {
                throw .invalidValue(field: "reply.fd_count", value: Int64(reply.fileDescriptorCount))
            }
            w.i32(0)
        }
        w.u32(UInt32(reply.fileDescriptorCount))
    }

    /// Checks the size and fills in the header's length.
    @inline(__always)
    private static func finish(_ w: inout Writer) throws(ProtocolError) {
        guard w.count <= WireFormat.maximumMessageSize else { throw .messageTooLarge(byteCount: w.count) }
        w.patchU32(UInt32(w.count - WireFormat.headerSize), at: WireFormat.lengthOffset)
    }

    private static func write(_ envelope: Envelope, into w: inout Writer) throws(ProtocolError) {
        let message = envelope.message
        writeHeader(message.type, requestID: envelope.requestID, into: &w)
        switch message {
        case .hello(let hello):
            w.u32(try encodablePID(hello.processID, field: "hello.pid"))
            w.u32(0)
        case .welcome(let welcome):
            w.u32(try encodablePID(welcome.supervisorProcessID, field: "welcome.supervisor_pid"))
            w.u32(0)
            w.u64(welcome.workerID)
        case .open(let open):
            try writeOpen(path: open.path, flags: open.flags, mode: open.mode, into: &w)
        case .socket(let socket):
            w.i32(socket.domain)
            w.i32(socket.type)
            w.i32(socket.protocol)
            w.u32(0)
        case .connect(let request), .bind(let request):
            w.i32(request.type)
            w.i32(request.protocol)
            try encodeAddress(request.address, into: &w, field: message.type == .connect ? "connect" : "bind")
        case .reply(let reply):
            try writeReply(reply, into: &w)
        case .violation(let violation):
            w.i32(violation.syscallNumber)
            w.u32(violation.architecture)
            w.u64(violation.instructionPointer)
            precondition(violation.arguments.count == 6, "a syscall has six argument registers")
            for argument in violation.arguments { w.u64(argument) }
        case .log(let line):
            w.u32(line.level.rawValue)
            w.u32(0)
            try w.string(line.message, field: "log.message", maximum: WireFormat.maximumLogLength, allowEmpty: true)
        case .sandboxStatus(let status):
            for (field, layers) in [("sandbox_status.requested", status.requested), ("sandbox_status.active", status.active)] {
                guard layers.isSubset(of: .known) else { throw .invalidValue(field: field, value: Int64(layers.rawValue)) }
            }
            w.u32(status.requested.rawValue)
            w.u32(status.active.rawValue)
            w.u32(status.landlockABI)
            w.u32(0)
        case .listener(let announcement):
            w.u32(announcement.purpose.rawValue)
            w.u32(0)
        case .job(let job):
            guard (0...WireFormat.maximumFileDescriptors).contains(job.fileDescriptorCount) else {
                throw .invalidValue(field: "job.fd_count", value: Int64(job.fileDescriptorCount))
            }
            w.u32(UInt32(job.fileDescriptorCount))
            w.u32(0)
            w.bytes(job.input)
        case .result(let chunk):
            guard chunk.status >= 0, chunk.isLast || chunk.status == 0 else {
                throw .invalidValue(field: "result.status", value: Int64(chunk.status))
            }
            w.i32(chunk.status)
            w.u32(chunk.isLast ? 0 : WireFormat.resultMoreFlag)
            w.bytes(chunk.output)
        }
        try finish(&w)
    }

    private static func encodablePID(_ pid: Int32, field: String) throws(ProtocolError) -> UInt32 {
        guard pid > 0 else { throw .invalidValue(field: field, value: Int64(pid)) }
        return UInt32(pid)
    }

    private static func encodeAddress(_ address: SocketAddress, into w: inout Writer, field: String) throws(ProtocolError) {
        switch address {
        case .ipv4(let ip, let port):
            w.u16(UInt16(AF_INET))
            w.u16(port)
            w.u32(0)
            w.bigEndianU64(UInt64(ip.value) << 32)
            w.bigEndianU64(0)
        case .ipv6(let ip, let port, let scope):
            w.u16(UInt16(AF_INET6))
            w.u16(port)
            w.u32(scope)
            w.bigEndianU64(UInt64(truncatingIfNeeded: ip.value >> 64))
            w.bigEndianU64(UInt64(truncatingIfNeeded: ip.value))
        case .unix(let path):
            w.u16(UInt16(AF_UNIX))
            w.u16(0)
            w.u32(0)
            w.bigEndianU64(0)
            w.bigEndianU64(0)
            try w.string(path, field: "\(field).path", maximum: WireFormat.maximumUnixPathLength, allowEmpty: false)
        }
    }
}

/// Reads host-order integers at offsets from `base`. Callers have checked the
/// buffer is long enough; the loads are unaligned-safe.
private struct Reader {
    let bytes: UnsafeRawBufferPointer
    var base = 0
    init(_ bytes: UnsafeRawBufferPointer, base: Int = 0) {
        self.bytes = bytes
        self.base = base
    }
    func u16(at offset: Int) -> UInt16 { bytes.loadUnaligned(fromByteOffset: base + offset, as: UInt16.self) }
    func u32(at offset: Int) -> UInt32 { bytes.loadUnaligned(fromByteOffset: base + offset, as: UInt32.self) }
    func i32(at offset: Int) -> Int32 { bytes.loadUnaligned(fromByteOffset: base + offset, as: Int32.self) }
    func u64(at offset: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: base + offset, as: UInt64.self) }
    /// Eight address bytes in network order as a number.
    func bigEndianU64(at offset: Int) -> UInt64 { UInt64(bigEndian: u64(at: offset)) }
}

/// Writes host-order integers and strings into memory sized for the message; every
/// write is bounds-checked, so a wrong size estimate traps instead of overrunning.
private struct Writer {
    let buffer: UnsafeMutableRawBufferPointer
    private(set) var count = 0
    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

    private mutating func store<T: FixedWidthInteger>(_ value: T) {
        precondition(count + MemoryLayout<T>.size <= buffer.count, "message larger than its encoded size")
        buffer.storeBytes(of: value, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }
    mutating func u16(_ value: UInt16) { store(value) }
    mutating func u32(_ value: UInt32) { store(value) }
    mutating func i32(_ value: Int32) { store(value) }
    mutating func u64(_ value: UInt64) { store(value) }
    mutating func bigEndianU64(_ value: UInt64) { store(value.bigEndian) }
    mutating func patchU32(_ value: UInt32, at offset: Int) {
        precondition(offset + 4 <= count, "patch outside the written bytes")
        buffer.storeBytes(of: value, toByteOffset: offset, as: UInt32.self)
    }
    mutating func bytes(_ data: [UInt8]) {
        precondition(count + data.count <= buffer.count, "message larger than its encoded size")
        data.withUnsafeBytes { source in
            if let base = source.baseAddress { (buffer.baseAddress! + count).copyMemory(from: base, byteCount: source.count) }
        }
        count += data.count
    }
    @inline(__always)
    mutating func string(_ text: String, field: String, maximum: Int, allowEmpty: Bool) throws(ProtocolError) {
        // Native strings are contiguous UTF-8 already: their bytes are read in place (no
        // copy of the string, so no retain). Any other is made contiguous first.
        if let result = text.utf8.withContiguousStorageIfAvailable({ utf8 in
            string(bytes: UnsafeRawBufferPointer(utf8), field: field, maximum: maximum, allowEmpty: allowEmpty)
        }) {
            return try result.get()
        }
        var contiguous = text
        contiguous.makeContiguousUTF8()
        try contiguous.utf8.withContiguousStorageIfAvailable { utf8 in
            string(bytes: UnsafeRawBufferPointer(utf8), field: field, maximum: maximum, allowEmpty: allowEmpty)
        }!.get()
    }

    /// A string's bytes and its NUL. Short ones (a path, nearly always) are checked for
    /// NUL and copied eight bytes at a time inline, not by memchr and memmove: two calls
    /// into libc, each a page of code more per request (BENCHMARKS.md, sixth round).
    @inline(__always)
    private mutating func string(bytes utf8: UnsafeRawBufferPointer, field: String, maximum: Int,
                                 allowEmpty: Bool) -> Result<Void, ProtocolError> {
        guard allowEmpty || !utf8.isEmpty else { return .failure(.stringEmpty(field: field)) }
        guard !containsZeroByte(utf8) else { return .failure(.stringHasEmbeddedNUL(field: field)) }
        guard utf8.count + 1 <= maximum else {
            return .failure(.stringTooLong(field: field, maximum: maximum, actual: utf8.count + 1))
        }
        precondition(count + utf8.count + 1 <= buffer.count, "message larger than its encoded size")
        let destination = buffer.baseAddress! + count
        if utf8.count >= 8 && utf8.count <= inlineStringLimit {
            var offset = 0
            while offset + 8 <= utf8.count {
                destination.storeBytes(of: utf8.baseAddress!.loadUnaligned(fromByteOffset: offset, as: UInt64.self),
                                       toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
            if offset < utf8.count { // the last eight bytes, overlapping what is already copied
                destination.storeBytes(of: utf8.baseAddress!.loadUnaligned(fromByteOffset: utf8.count - 8, as: UInt64.self),
                                       toByteOffset: utf8.count - 8, as: UInt64.self)
            }
        } else if let base = utf8.baseAddress {
            destination.copyMemory(from: base, byteCount: utf8.count)
        }
        buffer[count + utf8.count] = 0
        count += utf8.count + 1
        return .success(())
    }
}

extension String {
    /// A string of bytes a decoder has already validated as UTF-8 (so nothing is repaired).
    fileprivate init(validatedBytes bytes: UnsafeBufferPointer<UInt8>) {
        self.init(decoding: bytes, as: UTF8.self)
    }
}

/// Whether every byte is below 0x80 and none is zero, eight at a time (the last eight
/// bytes overlapping the word before, when the count is not a multiple of eight).
package func isASCIIWithoutNUL(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let base = UnsafeRawPointer(bytes.baseAddress), bytes.count >= 8 else {
        return bytes.allSatisfy { $0 != 0 && $0 < 0x80 }
    }
    var high: UInt64 = 0
    var zero: UInt64 = 0
    func take(_ word: UInt64) {
        high |= word
        zero |= zeroByteMask(word)
    }
    var offset = 0
    while offset + 8 <= bytes.count {
        take(base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        offset += 8
    }
    if offset < bytes.count { take(base.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self)) }
    return (high & 0x8080_8080_8080_8080) | zero == 0
}

/// `byte` in each of a word's eight bytes.
@inlinable @inline(__always)
package func repeatedByte(_ byte: UInt8) -> UInt64 { 0x0101_0101_0101_0101 &* UInt64(byte) }

/// Nonzero exactly when one of `word`'s eight bytes is zero: subtracting 1 from each byte
/// sets the high bit of a zero byte (and of a byte at 0x81 or above), and `~word` keeps
/// only the bytes whose high bit was clear; a borrow into a higher byte comes only from a
/// zero byte below it.
@inlinable @inline(__always)
package func zeroByteMask(_ word: UInt64) -> UInt64 {
    (word &- 0x0101_0101_0101_0101) & ~word & 0x8080_8080_8080_8080
}

/// Whether any of `word`'s eight bytes is zero (``zeroByteMask(_:)``).
@inlinable @inline(__always)
package func hasZeroByte(_ word: UInt64) -> Bool { zeroByteMask(word) != 0 }

/// Strings up to this many bytes are checked for NUL and copied by the words of a loop
/// inline; longer ones by memchr and memmove, whose call then costs less than the loop.
var inlineStringLimit: Int { 64 } // computed: folds into the code, no global to read

/// Whether any byte of `bytes` is zero: eight at a time, the last word overlapping the one
/// before when the count is not a multiple of eight; memchr for long runs.
@inline(__always)
func containsZeroByte(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let base = bytes.baseAddress, bytes.count >= 8 else { return bytes.contains(0) }
    guard bytes.count <= inlineStringLimit else { return memchr(base, 0, bytes.count) != nil }
    var offset = 0
    while offset + 8 <= bytes.count {
        if hasZeroByte(base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) { return true }
        offset += 8
    }
    return offset < bytes.count && hasZeroByte(base.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self))
}
