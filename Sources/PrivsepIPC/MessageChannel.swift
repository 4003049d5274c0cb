import Glibc

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
        let result: Result<Void, ChannelError>
        do throws(ProtocolError) {
            result = try WireCodec.withEncoded(envelope) { buffer in
                Result { () throws(ChannelError) in try send(buffer, passing: fds) }
            }
        } catch {
            throw .malformed(error)
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
            return try decoded(datagram, from: UnsafeRawBufferPointer(buffer))
        }
    }

    /// The size of a scratch buffer for ``receiveMessage(using:maximumFileDescriptors:nonBlocking:)``:
    /// the largest message and the largest control data (253 fds and credentials).
    public static let receiveScratchSize = WireFormat.maximumMessageSize + maximumControlLength

    /// ``receiveMessage(maximumFileDescriptors:nonBlocking:)`` into scratch memory the
    /// caller keeps between calls (``receiveScratchSize`` bytes, 8-byte aligned), for a
    /// serving loop or a worker's reader: temporary buffers that large come from the
    /// heap on every call. The decoded message copies what it keeps, so the scratch is
    /// free again on return. One receive at a time per scratch buffer.
    public func receiveMessage(
        using scratch: UnsafeMutableRawBufferPointer, maximumFileDescriptors: Int = 0, nonBlocking: Bool = false
    ) throws(ChannelError) -> ReceivedMessage {
        precondition(scratch.count >= Self.receiveScratchSize, "a scratch buffer holds the largest message and its control data")
        precondition(Int(bitPattern: scratch.baseAddress) % MemoryLayout<cmsghdr>.alignment == 0, "scratch must be aligned")
        let window = UnsafeMutableRawBufferPointer(rebasing: scratch[..<WireFormat.maximumMessageSize])
        let control = UnsafeMutableRawBufferPointer(rebasing: scratch[WireFormat.maximumMessageSize...])
        let datagram = try receive(into: window, control: control, maximumFileDescriptors: maximumFileDescriptors,
                                   nonBlocking: nonBlocking)
        return try decoded(datagram, from: UnsafeRawBufferPointer(window))
    }

    /// Decodes a received datagram; a malformed one's fds close as the error is thrown.
    private func decoded(_ datagram: consuming ReceivedDatagram, from buffer: UnsafeRawBufferPointer) throws(ChannelError) -> ReceivedMessage {
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

/// A decoded message and the fds that came with it (exactly as many as its type requires).
@frozen
public struct ReceivedMessage: ~Copyable, Sendable {
    public var envelope: Envelope
    /// Owned; any left unclaimed close with this value.
    public var fileDescriptors: OwnedFileDescriptors
    /// Who sent it, if the socket has ``SeqpacketSocket/enableSenderCredentials()`` on.
    public var senderCredentials: PeerCredentials?
}
