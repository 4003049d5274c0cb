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
    for count in [0, 1] {
        let full = Result { () throws(ProtocolError) in try WireCodec.decode(bytes, fileDescriptorCount: count) }
        let inPlace = Result { () throws(ProtocolError) in try WireCodec.decodeOpenInPlace(bytes, fileDescriptorCount: count) }
        switch (full, inPlace) {
        case (.failure(let expected), .failure(let error)):
            guard error == expected else { fatalError("in-place OPEN decoder threw \(error), the full one \(expected)") }
        case (.success(let envelope), .success(let open?)):
            guard envelope == Envelope(requestID: open.requestID, .open(open.request)) else {
                fatalError("in-place OPEN decoder read \(open.request), the full one \(envelope)")
            }
        case (.success(let envelope), .success(nil)):
            guard envelope.message.type != .open else { fatalError("in-place OPEN decoder passed over \(envelope)") }
        case (.failure(let error), .success(nil)):
            guard bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self) != MessageType.open.rawValue else {
                fatalError("in-place OPEN decoder passed over an OPEN the full one refused: \(error)")
            }
        case (.failure(let error), .success(let open?)):
            fatalError("in-place OPEN decoder accepted \(open.request), the full one threw \(error)")
        case (.success(let envelope), .failure(let error)):
            fatalError("in-place OPEN decoder threw \(error) on \(envelope)")
        }
    }
    // The worker's in-place REPLY decoder likewise.
    for count in [0, 1, 2, 253] {
        let full = Result { () throws(ProtocolError) in try WireCodec.decode(bytes, fileDescriptorCount: count) }
        let inPlace = Result { () throws(ProtocolError) in try WireCodec.decodeReplyInPlace(bytes, fileDescriptorCount: count) }
        switch (full, inPlace) {
        case (.failure(let expected), .failure(let error)):
            guard error == expected else { fatalError("in-place REPLY decoder threw \(error), the full one \(expected)") }
        case (.success(let envelope), .success(let reply?)):
            guard envelope == Envelope(requestID: reply.requestID, .reply(reply.reply)) else {
                fatalError("in-place REPLY decoder read \(reply), the full one \(envelope)")
            }
        case (.success(let envelope), .success(nil)):
            guard envelope.message.type != .reply else { fatalError("in-place REPLY decoder passed over \(envelope)") }
        case (.failure(let error), .success(nil)):
            guard bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self) != MessageType.reply.rawValue else {
                fatalError("in-place REPLY decoder passed over a REPLY the full one refused: \(error)")
            }
        case (.failure(let error), .success(let reply?)):
            fatalError("in-place REPLY decoder accepted \(reply), the full one threw \(error)")
        case (.success(let envelope), .failure(let error)):
            fatalError("in-place REPLY decoder threw \(error) on \(envelope)")
        }
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
