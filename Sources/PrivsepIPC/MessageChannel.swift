extension SeqpacketSocket {
    /// Encodes and sends `envelope` with exactly the fds its type requires.
    ///
    /// A reply that claims N fds must be sent with N fds; a mismatch is refused
    /// here rather than left for the peer to reject.
    public func send(_ envelope: Envelope, passing fds: borrowing OwnedFileDescriptors = OwnedFileDescriptors()) throws(ChannelError) {
        let expected = envelope.message.fileDescriptorCount
        guard fds.ownedCount == expected else {
            throw .malformed(.wrongFileDescriptorCount(envelope.message.type, expected: expected, actual: fds.ownedCount))
        }
        let bytes: [UInt8]
        do throws(ProtocolError) { bytes = try WireCodec.encode(envelope) } catch { throw .malformed(error) }
        let rawFDs = fds.unsafeRawValues
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(ChannelError) in try unsafeSend(buffer, passingRawValues: rawFDs) }
        }
        try result.get()
    }

    /// Receives and decodes one message, accepting at most `maximumFileDescriptors` fds.
    ///
    /// A datagram that is not a valid message fails with ``ChannelError/malformed(_:)``
    /// and every fd it carried is closed.
    public func receiveMessage(maximumFileDescriptors: Int = 0, nonBlocking: Bool = false) throws(ChannelError) -> ReceivedMessage {
        try withUnsafeTemporaryAllocation(byteCount: WireFormat.maximumMessageSize, alignment: 8) {
            (buffer) throws(ChannelError) -> ReceivedMessage in
            let datagram = try receive(into: buffer, maximumFileDescriptors: maximumFileDescriptors, nonBlocking: nonBlocking)
            let envelope: Envelope
            do throws(ProtocolError) {
                envelope = try WireCodec.decode(UnsafeRawBufferPointer(rebasing: buffer[..<datagram.byteCount]),
                                                fileDescriptorCount: datagram.fileDescriptors.count)
            } catch {
                throw .malformed(error)
            }
            return ReceivedMessage(envelope: envelope, fileDescriptors: datagram.fileDescriptors,
                                   senderCredentials: datagram.senderCredentials)
        }
    }
}

/// A decoded message and the fds that came with it (exactly as many as its type requires).
@frozen
public struct ReceivedMessage: ~Copyable, Sendable {
    public var envelope: Envelope
    /// Owned; any left unclaimed close with this value.
    public var fileDescriptors: OwnedFileDescriptors
    /// Who sent it, if the socket has ``SeqpacketSocket/enableSenderCredentials()`` on.
    public var senderCredentials: PeerCredentials?
}
