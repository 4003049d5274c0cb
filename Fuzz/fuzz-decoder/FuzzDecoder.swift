// Fuzz target for the protocol decoder (WireCodec.decode), the first code that
// touches a hostile worker's bytes.
//
// Built with -D FUZZING -sanitize=fuzzer (Fuzz/run.sh) it runs libFuzzer.
// Built normally, it replays the files given on its command line (the seed
// corpus), so `swift run fuzz-decoder Fuzz/corpus/decoder/*` is a regression test.
import FuzzSupport
import Glibc
import PrivsepIPC

/// Decodes `bytes` with every plausible fd count; any message that decodes must
/// re-encode to the same bytes, and the serving loop's in-place OPEN decoder and the
/// worker's in-place REPLY decoder must agree with the full one.
func check(_ bytes: UnsafeRawBufferPointer) {
    checkInPlaceDecoder(on: bytes, fileDescriptorCounts: [0, 1], type: .open, WireCodec.decodeOpenInPlace) {
        Envelope(requestID: $0.requestID, .open($0.request))
    }
    checkInPlaceDecoder(on: bytes, fileDescriptorCounts: [0, 1, 2, 253], type: .reply, WireCodec.decodeReplyInPlace) {
        Envelope(requestID: $0.requestID, .reply($0.reply))
    }
    for count in [0, 1, 2, 253] {
        guard let envelope = try? WireCodec.decode(bytes, fileDescriptorCount: count) else { continue }
        guard let encoded = try? WireCodec.encode(envelope) else {
            fatalError("decoded but cannot re-encode: \(envelope)")
        }
        guard encoded.elementsEqual(bytes) else {
            fatalError("round trip changed the bytes of \(envelope)")
        }
    }
}

/// An in-place decoder must agree with the full one: the same error, the same message (as
/// `envelope` rebuilds it), or nil for a datagram of another type.
func checkInPlaceDecoder<Decoded>(
    on bytes: UnsafeRawBufferPointer, fileDescriptorCounts: [Int], type: MessageType,
    _ decodeInPlace: (UnsafeRawBufferPointer, Int) throws(ProtocolError) -> Decoded?, envelope: (Decoded) -> Envelope
) {
    for count in fileDescriptorCounts {
        let full = Result { () throws(ProtocolError) in try WireCodec.decode(bytes, fileDescriptorCount: count) }
        let inPlace = Result { () throws(ProtocolError) in try decodeInPlace(bytes, count).map(envelope) }
        switch (full, inPlace) {
        case (.failure(let expected), .failure(let error)):
            guard error == expected else { fatalError("in-place \(type) decoder threw \(error), the full one \(expected)") }
        case (.success(let expected), .success(let message?)):
            guard message == expected else { fatalError("in-place \(type) decoder read \(message), the full one \(expected)") }
        case (.success(let envelope), .success(nil)):
            guard envelope.message.type != type else { fatalError("in-place \(type) decoder passed over \(envelope)") }
        case (.failure(let error), .success(nil)):
            guard bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self) != type.rawValue else {
                fatalError("in-place \(type) decoder passed over a \(type) the full one refused: \(error)")
            }
        case (.failure(let error), .success(let message?)):
            fatalError("in-place \(type) decoder accepted \(message), the full one threw \(error)")
        case (.success(let envelope), .failure(let error)):
            fatalError("in-place \(type) decoder threw \(error) on \(envelope)")
        }
    }
}

@main
struct FuzzDecoder {
    static func main() {
        if CommandLine.arguments.count == 3 && CommandLine.arguments[1] == "--write-seeds" {
            writeSeeds(to: CommandLine.arguments[2])
            return
        }
        runFuzzTarget(name: "fuzz-decoder") { data, size in
            check(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        }
    }
}

/// One valid message of every type, as seed files.
func writeSeeds(to directory: String) {
    let seeds: [Envelope] = [
        Envelope(requestID: 0, .hello(Hello(processID: 4121))),
        Envelope(requestID: 0, .welcome(Welcome(supervisorProcessID: 1, workerID: 7))),
        Envelope(requestID: 1, .open(OpenRequest(path: "/srv/input/data.csv", flags: 0o101, mode: 0o600))),
        Envelope(requestID: 2, .socket(SocketRequest(domain: 2, type: 1))),
        Envelope(requestID: 3, .connect(AddressRequest(type: 1, address: .ipv4(.loopback, port: 443)))),
        Envelope(requestID: 4, .connect(AddressRequest(type: 2, address: .ipv6(.loopback, port: 53, scopeID: 1)))),
        Envelope(requestID: 5, .bind(AddressRequest(type: 5, address: .unix(path: "/run/app.sock")))),
        Envelope(requestID: 6, .reply(.success(fileDescriptorCount: 1))),
        Envelope(requestID: 7, .reply(.failure(.permissionDenied))),
        Envelope(requestID: 0, .violation(Violation(syscallNumber: 257, architecture: 0xC000_003E, instructionPointer: 0x7f00_0000_1234))),
        Envelope(requestID: 0, .log(LogLine(level: .warning, message: "a line"))),
        Envelope(requestID: 0, .sandboxStatus(SandboxStatus(requested: [.seccomp, .landlock], active: [.seccomp, .landlock], landlockABI: 7))),
        Envelope(requestID: 0, .listener(ListenerAnnouncement(purpose: .learning))),
    ]
    for (index, seed) in seeds.enumerated() {
        let bytes = try! WireCodec.encode(seed)
        let path = "\(directory)/\(index)-\(seed.message.type).bin"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        precondition(fd >= 0, "cannot write \(path)")
        _ = write(fd, bytes, bytes.count)
        close(fd)
    }
}
