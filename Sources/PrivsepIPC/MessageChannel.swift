import Glibc
import SystemPackage

extension SeqpacketSocket {
    /// Encodes and sends `envelope` with exactly the fds its type requires.
    ///
    /// A reply that claims N fds must be sent with N fds; a mismatch is refused
    /// here rather than left for the peer to reject. `flags` are sendmsg's
    /// (MSG_DONTWAIT: `.system(.resourceTemporarilyUnavailable)` rather than waiting).
    public func send(_ envelope: Envelope, passing fds: borrowing OwnedFileDescriptors = OwnedFileDescriptors(),
                     flags: Int32 = 0) throws(ChannelError) {
        let expected = envelope.message.fileDescriptorCount
        guard fds.ownedCount == expected else {
            throw .malformed(.wrongFileDescriptorCount(envelope.message.type, expected: expected, actual: fds.ownedCount))
        }
        try sendEncoded(passing: fds, flags: flags) { (body) throws(ProtocolError) in try WireCodec.withEncodedBytes(envelope, body) }
    }

    /// Sends an OPEN from its parts: what ``send(_:passing:flags:)`` sends for
    /// `Envelope(requestID:, .open(OpenRequest(path:flags:mode:)))`, without building
    /// either. A worker's commonest request: many workers taking turns on a CPU showed the
    /// general path's cost many times over (see BENCHMARKS.md).
    @inline(__always)
    package func sendOpen(requestID: UInt64, path: String, flags: Int32, mode: UInt32) throws(ChannelError) {
        let none = OwnedFileDescriptors()
        try sendEncoded(passing: none, flags: 0) { (body) throws(ProtocolError) in
            try WireCodec.withEncodedOpen(requestID: requestID, path: path, flags: flags, mode: mode, body)
        }
        none.close() // inline: no call to the list's deinit on every request
    }

    /// Sends a REPLY from its parts: what ``send(_:passing:flags:)`` sends for
    /// `Envelope(requestID:, .reply(reply))`, with the same check that `fds` holds exactly
    /// the fds the reply claims, without building the `Envelope`. The serving thread's
    /// answer to every request (see BENCHMARKS.md).
    @inline(__always)
    package func sendReply(requestID: UInt64, _ reply: Reply, passing fds: borrowing OwnedFileDescriptors,
                           flags: Int32 = 0) throws(ChannelError) {
        guard fds.ownedCount == reply.fileDescriptorCount else {
            throw .malformed(.wrongFileDescriptorCount(.reply, expected: reply.fileDescriptorCount, actual: fds.ownedCount))
        }
        try sendEncoded(passing: fds, flags: flags) { (body) throws(ProtocolError) in
            try WireCodec.withEncodedReply(requestID: requestID, reply, body)
        }
    }

    /// Sends the bytes `encode` hands its body, with `fds`: every send's frame. An encoding
    /// error comes back as ``ChannelError/malformed(_:)`` and nothing is sent.
    @inline(__always)
    private func sendEncoded(passing fds: borrowing OwnedFileDescriptors, flags: Int32,
                             by encode: ((UnsafeRawBufferPointer) -> Void) throws(ProtocolError) -> Void) throws(ChannelError) {
        var result: Result<Void, ChannelError> = .success(())
        do throws(ProtocolError) {
            try encode { buffer in
                do throws(ChannelError) {
                    try fds.withUnsafeRawValues { (raw) throws(ChannelError) in try sendRaw(buffer, fileDescriptors: raw, flags: flags) }
                } catch {
                    result = .failure(error)
                }
            }
        } catch {
            throw .malformed(error)
        }
        try result.get()
    }

    /// Receives and decodes one message, accepting at most `maximumFileDescriptors` fds.
    ///
    /// A datagram that is not a valid message fails with ``ChannelError/malformed(_:)``
    /// and every fd it carried is closed. A REPLY whose fds this process had no free fd
    /// number for comes back as the failure EMFILE, without fds, as the system call would
    /// have failed; any other message whose fds could not be installed fails with
    /// ``ChannelError/fileDescriptorsNotInstalled(byteCount:)``.
    public func receiveMessage(maximumFileDescriptors: Int = 0, nonBlocking: Bool = false) throws(ChannelError) -> ReceivedMessage {
        try withUnsafeTemporaryAllocation(byteCount: WireFormat.maximumMessageSize, alignment: 8) {
            (buffer) throws(ChannelError) -> ReceivedMessage in
            let datagram: ReceivedDatagram
            do throws(ChannelError) {
                datagram = try receive(into: buffer, maximumFileDescriptors: maximumFileDescriptors, nonBlocking: nonBlocking)
            } catch .fileDescriptorsNotInstalled(let byteCount) {
                return try Self.replyFailedForWantOfRoom(UnsafeRawBufferPointer(rebasing: buffer[..<byteCount])).message
            }
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
        let datagram: ReceivedDatagram
        do throws(ChannelError) {
            datagram = try receive(intoScratch: scratch, maximumFileDescriptors: maximumFileDescriptors, nonBlocking: nonBlocking)
        } catch .fileDescriptorsNotInstalled(let byteCount) {
            return try Self.replyFailedForWantOfRoom(in: scratch, byteCount: byteCount).message
        }
        return try decoded(datagram, from: UnsafeRawBufferPointer(Self.messageWindow(of: scratch)))
    }

    /// ``receiveMessage(using:maximumFileDescriptors:nonBlocking:)`` for a serving loop:
    /// an OPEN comes back decoded in place (``WireCodec/decodeOpenInPlace(_:fileDescriptorCount:)``),
    /// its path still in `scratch` and valid only until the next receive into it; any
    /// other message comes back decoded as usual. Both are held to the same rules.
    package func receiveRequest(
        using scratch: UnsafeMutableRawBufferPointer, maximumFileDescriptors: Int = 0, nonBlocking: Bool = false
    ) throws(ChannelError) -> ReceivedRequest {
        let datagram = try receive(intoScratch: scratch, maximumFileDescriptors: maximumFileDescriptors, nonBlocking: nonBlocking)
        let bytes = UnsafeRawBufferPointer(rebasing: Self.messageWindow(of: scratch)[..<datagram.byteCount])
        // Only a datagram that says it is an OPEN takes the in-place decoder; it checks
        // the whole header again, as the full decoder does for the rest.
        if bytes.count >= WireFormat.headerSize,
           bytes.loadUnaligned(fromByteOffset: WireFormat.typeOffset, as: UInt16.self) == MessageType.open.rawValue {
            do throws(ProtocolError) {
                if let open = try WireCodec.decodeOpenInPlace(bytes, fileDescriptorCount: datagram.fileDescriptors.count) {
                    return .open(open) // carried no fds (checked), so dropping the datagram closes nothing
                }
            } catch {
                throw .malformed(error)
            }
        }
        return .message(try decoded(datagram, from: bytes))
    }

    /// ``receiveMessage(using:maximumFileDescriptors:nonBlocking:)`` for a worker waiting
    /// for the answer to `requestID`: that REPLY comes back decoded in place
    /// (``WireCodec/decodeReplyInPlace(_:fileDescriptorCount:)``, no `Envelope` built);
    /// anything else, another request's REPLY included, comes back decoded as usual. Both
    /// are held to the same rules.
    @inline(__always)
    package func receiveReply(
        to requestID: UInt64, using scratch: UnsafeMutableRawBufferPointer, maximumFileDescriptors: Int
    ) throws(ChannelError) -> ReceivedReply {
        let datagram: ReceivedDatagram
        do throws(ChannelError) {
            datagram = try receive(intoScratch: scratch, maximumFileDescriptors: maximumFileDescriptors, nonBlocking: false)
        } catch .fileDescriptorsNotInstalled(let byteCount) {
            let failed = try Self.replyFailedForWantOfRoom(in: scratch, byteCount: byteCount)
            return failed.requestID == requestID ? .reply(failed.reply, OwnedFileDescriptors()) : .message(failed.message)
        }
        let bytes = UnsafeRawBufferPointer(rebasing: Self.messageWindow(of: scratch)[..<datagram.byteCount])
        if bytes.count >= WireFormat.headerSize,
           bytes.loadUnaligned(fromByteOffset: WireFormat.typeOffset, as: UInt16.self) == MessageType.reply.rawValue {
            let decoded: (requestID: UInt64, reply: Reply)?
            do throws(ProtocolError) {
                decoded = try WireCodec.decodeReplyInPlace(bytes, fileDescriptorCount: datagram.fileDescriptors.count)
            } catch {
                throw .malformed(error) // the datagram's fds close with it
            }
            if let decoded {
                if decoded.requestID == requestID { return .reply(decoded.reply, datagram.fileDescriptors) }
                return .message(ReceivedMessage(envelope: Envelope(requestID: decoded.requestID, .reply(decoded.reply)),
                                                fileDescriptors: datagram.fileDescriptors,
                                                senderCredentials: datagram.senderCredentials))
            }
        }
        return .message(try decoded(datagram, from: bytes))
    }

    /// Receives into a scratch buffer: the control data at its start, the message right
    /// after the largest control data, so that a small message and its control data share
    /// a page (the other way round, with the control data after the largest message, every
    /// receive touched two pages: BENCHMARKS.md, sixth round).
    @inline(__always)
    private func receive(
        intoScratch scratch: UnsafeMutableRawBufferPointer, maximumFileDescriptors: Int, nonBlocking: Bool
    ) throws(ChannelError) -> ReceivedDatagram {
        precondition(scratch.count >= Self.receiveScratchSize, "a scratch buffer holds the largest message and its control data")
        precondition(Int(bitPattern: scratch.baseAddress) % MemoryLayout<cmsghdr>.alignment == 0, "scratch must be aligned")
        let control = UnsafeMutableRawBufferPointer(rebasing: scratch[..<Self.maximumControlLength])
        return try receive(into: Self.messageWindow(of: scratch), control: control, maximumFileDescriptors: maximumFileDescriptors,
                           nonBlocking: nonBlocking)
    }

    /// A REPLY that carried fds this process had no free fd number for (the datagram lies
    /// in `scratch`, its fds already closed): the answer to its request is EMFILE, as the
    /// system call would have given. Any other message, or a malformed one, still fails.
    private static func replyFailedForWantOfRoom(_ bytes: UnsafeRawBufferPointer) throws(ChannelError) -> FailedReply {
        let decoded: (requestID: UInt64, reply: Reply)?
        do throws(ProtocolError) { decoded = try WireCodec.decodeReplyInPlace(bytes) } catch { throw .malformed(error) }
        guard let decoded, decoded.reply.fileDescriptorCount > 0 else { throw .fileDescriptorsNotInstalled(byteCount: bytes.count) }
        return FailedReply(requestID: decoded.requestID, reply: .failure(.tooManyOpenFiles))
    }

    private static func replyFailedForWantOfRoom(in scratch: UnsafeMutableRawBufferPointer, byteCount: Int) throws(ChannelError) -> FailedReply {
        try replyFailedForWantOfRoom(UnsafeRawBufferPointer(rebasing: messageWindow(of: scratch)[..<byteCount]))
    }

    private struct FailedReply {
        let requestID: UInt64
        let reply: Reply
        var message: ReceivedMessage {
            ReceivedMessage(envelope: Envelope(requestID: requestID, .reply(reply)), fileDescriptors: OwnedFileDescriptors(),
                            senderCredentials: nil)
        }
    }

    /// Where in a scratch buffer the message lands: after the largest control data (a
    /// multiple of 8 bytes, so the message is as aligned as the buffer).
    @inline(__always)
    private static func messageWindow(of scratch: UnsafeMutableRawBufferPointer) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: scratch[maximumControlLength..<(maximumControlLength + WireFormat.maximumMessageSize)])
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

/// What ``SeqpacketSocket/receiveRequest(using:maximumFileDescriptors:nonBlocking:)`` received.
package enum ReceivedRequest: ~Copyable {
    /// An OPEN whose path lies in the caller's scratch buffer.
    case open(InPlaceOpenRequest)
    /// Any other message.
    case message(ReceivedMessage)
}

/// What ``SeqpacketSocket/receiveReply(to:using:maximumFileDescriptors:)`` received.
package enum ReceivedReply: ~Copyable {
    /// The REPLY asked for, with its fds (exactly as many as it says).
    case reply(Reply, OwnedFileDescriptors)
    /// Any other message.
    case message(ReceivedMessage)
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
