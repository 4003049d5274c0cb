import PrivsepIPC
import Testing

/// LISTENER purpose 2 (intercept mode): round trip, and the purposes the decoder refuses.
@Suite struct InterceptCodecTests {
    @Test func anInterceptListenerRoundTripsWithItsRequestID() throws {
        let envelope = Envelope(requestID: 42, .listener(ListenerAnnouncement(purpose: .intercept)))
        let bytes = try WireCodec.encode(envelope)
        #expect(bytes.count == 24 + 8)
        #expect(bytes[24] == 2) // purpose, little-endian u32
        #expect(try WireCodec.decode(bytes, fileDescriptorCount: 1) == envelope)
    }

    @Test(arguments: [UInt8(0), 3, 255])
    func otherPurposesAreRefused(purpose: UInt8) throws {
        var bytes = try WireCodec.encode(Envelope(requestID: 1, .listener(ListenerAnnouncement(purpose: .intercept))))
        bytes[24] = purpose
        #expect(throws: ProtocolError.invalidValue(field: "listener.purpose", value: Int64(purpose))) {
            try WireCodec.decode(bytes, fileDescriptorCount: 1)
        }
    }

    @Test func theGoAheadIsAnEmptySuccessfulReply() throws {
        let goAhead = Envelope(requestID: 42, .reply(.success(fileDescriptorCount: 0)))
        #expect(try WireCodec.decode(try WireCodec.encode(goAhead), fileDescriptorCount: 0) == goAhead)
    }
}
