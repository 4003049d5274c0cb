/// Exactly what is wrong with a datagram that is not a valid protocol message.
///
/// The supervisor puts this in a killed worker's exit reason, so each case says
/// which rule of `privsep_protocol.h` was broken and with what values.
public enum ProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Fewer bytes than a header.
    case truncatedHeader(byteCount: Int)
    /// More bytes than PRIVSEP_MAX_MESSAGE.
    case messageTooLarge(byteCount: Int)
    case badMagic(UInt16)
    case unsupportedVersion(UInt16)
    case unknownType(UInt16)
    /// A reserved field, or a flags field with no defined bits, is not zero.
    case nonZeroReserved(field: String)
    /// header.length disagrees with the datagram's size.
    case lengthMismatch(declared: UInt32, actual: Int)
    /// A fixed-size payload of the wrong size.
    case wrongPayloadSize(MessageType, expected: Int, actual: Int)
    /// A string was required but the payload ends after the fixed part.
    case missingString(field: String)
    /// Bytes follow a payload that takes no string.
    case unexpectedString(field: String)
    case stringUnterminated(field: String)
    case stringHasEmbeddedNUL(field: String)
    case stringEmpty(field: String)
    case stringTooLong(field: String, maximum: Int, actual: Int)
    case stringNotUTF8(field: String)
    /// A field holds a value the protocol does not define (an unknown family, an errno out of range...).
    case invalidValue(field: String, value: Int64)
    /// The number of fds attached disagrees with what the message type allows.
    case wrongFileDescriptorCount(MessageType, expected: Int, actual: Int)

    public var description: String {
        switch self {
        case .truncatedHeader(let count): "datagram of \(count) bytes is shorter than the 24-byte header"
        case .messageTooLarge(let count): "datagram of \(count) bytes exceeds the \(WireFormat.maximumMessageSize)-byte limit"
        case .badMagic(let magic): "bad magic 0x\(String(magic, radix: 16))"
        case .unsupportedVersion(let version): "unsupported protocol version \(version) (expected \(WireFormat.version))"
        case .unknownType(let type): "unknown message type \(type)"
        case .nonZeroReserved(let field): "reserved field \(field) is not zero"
        case .lengthMismatch(let declared, let actual): "header.length says \(declared) payload bytes, datagram has \(actual)"
        case .wrongPayloadSize(let type, let expected, let actual): "\(type) payload is \(actual) bytes, expected \(expected)"
        case .missingString(let field): "\(field) is missing"
        case .unexpectedString(let field): "unexpected bytes after \(field)"
        case .stringUnterminated(let field): "\(field) is not NUL-terminated"
        case .stringHasEmbeddedNUL(let field): "\(field) contains a NUL byte"
        case .stringEmpty(let field): "\(field) is empty"
        case .stringTooLong(let field, let maximum, let actual): "\(field) is \(actual) bytes, at most \(maximum) allowed"
        case .stringNotUTF8(let field): "\(field) is not valid UTF-8"
        case .invalidValue(let field, let value): "\(field) has invalid value \(value)"
        case .wrongFileDescriptorCount(let type, let expected, let actual): "\(type) carries \(actual) fds, expected \(expected)"
        }
    }
}
