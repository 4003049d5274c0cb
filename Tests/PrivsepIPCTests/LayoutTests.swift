import CPrivsepProtocol
import PrivsepIPC
import Testing

/// The Swift codec mirrors privsep_protocol.h; these pin the two together.
@Suite struct LayoutTests {
    @Test func constantsMatchTheSpecHeader() {
        #expect(WireFormat.magic == UInt16(PRIVSEP_MAGIC))
        #expect(WireFormat.version == UInt16(PRIVSEP_VERSION))
        #expect(WireFormat.maximumMessageSize == Int(PRIVSEP_MAX_MESSAGE))
        #expect(WireFormat.maximumFileDescriptors == Int(PRIVSEP_MAX_FDS))
        #expect(WireFormat.maximumPathLength == Int(PRIVSEP_MAX_PATH))
        #expect(WireFormat.maximumUnixPathLength == Int(PRIVSEP_MAX_UNIX_PATH))
        #expect(WireFormat.maximumLogLength == Int(PRIVSEP_MAX_LOG))
        #expect(WireFormat.maximumErrno == Int32(PRIVSEP_MAX_ERRNO))
        #expect(WireFormat.channelFileDescriptor == PRIVSEP_CHANNEL_FD)
        #expect(WireFormat.channelEnvironmentVariable == PRIVSEP_CHANNEL_ENV)
        #expect(WireFormat.headerSize == MemoryLayout<privsep_header>.size)
        #expect(SandboxLayers.known.rawValue == PRIVSEP_LAYER_ALL)
        #expect(SandboxLayers.seccomp.rawValue == PRIVSEP_LAYER_SECCOMP)
        #expect(SandboxLayers.landlock.rawValue == PRIVSEP_LAYER_LANDLOCK)
    }

    @Test func messageTypesMatchTheSpecHeader() {
        let pairs: [(MessageType, privsep_type)] = [
            (.hello, PRIVSEP_HELLO), (.welcome, PRIVSEP_WELCOME), (.open, PRIVSEP_OPEN),
            (.socket, PRIVSEP_SOCKET), (.connect, PRIVSEP_CONNECT), (.bind, PRIVSEP_BIND),
            (.reply, PRIVSEP_REPLY), (.violation, PRIVSEP_VIOLATION), (.log, PRIVSEP_LOG),
            (.sandboxStatus, PRIVSEP_SANDBOX_STATUS), (.listener, PRIVSEP_LISTENER),
            (.job, PRIVSEP_JOB), (.result, PRIVSEP_RESULT),
        ]
        #expect(pairs.count == MessageType.allCases.count)
        for (swift, c) in pairs { #expect(UInt32(swift.rawValue) == c.rawValue, "\(swift)") }
    }

    @Test func payloadSizesMatchTheSpecHeader() {
        #expect(MessageType.hello.fixedPayloadSize == MemoryLayout<privsep_hello>.size)
        #expect(MessageType.welcome.fixedPayloadSize == MemoryLayout<privsep_welcome>.size)
        #expect(MessageType.open.fixedPayloadSize == MemoryLayout<privsep_open>.size)
        #expect(MessageType.socket.fixedPayloadSize == MemoryLayout<privsep_socket>.size)
        #expect(MessageType.connect.fixedPayloadSize == MemoryLayout<privsep_address_request>.size)
        #expect(MessageType.bind.fixedPayloadSize == MemoryLayout<privsep_address_request>.size)
        #expect(MessageType.reply.fixedPayloadSize == MemoryLayout<privsep_reply>.size)
        #expect(MessageType.violation.fixedPayloadSize == MemoryLayout<privsep_violation>.size)
        #expect(MessageType.log.fixedPayloadSize == MemoryLayout<privsep_log>.size)
        #expect(MessageType.sandboxStatus.fixedPayloadSize == MemoryLayout<privsep_sandbox_status>.size)
        #expect(MessageType.listener.fixedPayloadSize == MemoryLayout<privsep_listener>.size)
        #expect(MessageType.job.fixedPayloadSize == MemoryLayout<privsep_job>.size)
        #expect(MessageType.result.fixedPayloadSize == MemoryLayout<privsep_result>.size)
        #expect(WireFormat.maximumJobBytes == Int(PRIVSEP_MAX_JOB_BYTES))
        #expect(WireFormat.resultMoreFlag == PRIVSEP_RESULT_MORE)
    }

    /// Builds messages with the C structs and checks the Swift decoder reads them field by field.
    @Test func swiftDecodesWhatCWrites() throws {
        var header = privsep_header()
        header.magic = UInt16(PRIVSEP_MAGIC)
        header.version = UInt16(PRIVSEP_VERSION)
        header.type = UInt16(PRIVSEP_CONNECT.rawValue)
        header.length = UInt32(MemoryLayout<privsep_address_request>.size)
        header.request_id = 0x0102_0304_0506_0708
        var request = privsep_address_request()
        request.type = 1 // SOCK_STREAM
        request.address.family = 2 // AF_INET
        request.address.port = 8080
        request.address.addr.0 = 10
        request.address.addr.1 = 1
        request.address.addr.2 = 2
        request.address.addr.3 = 3
        var bytes: [UInt8] = withUnsafeBytes(of: header) { Array($0) }
        bytes += withUnsafeBytes(of: request) { Array($0) }
        let envelope = try WireCodec.decode(bytes, fileDescriptorCount: 0)
        #expect(envelope.requestID == 0x0102_0304_0506_0708)
        #expect(envelope.message == .connect(AddressRequest(type: 1, address: .ipv4(IPv4Address(10, 1, 2, 3), port: 8080))))

        var violation = privsep_violation()
        violation.syscall_nr = 59
        violation.arch = 0xC000_003E
        violation.instruction_pointer = 0xdead_beef
        violation.args.5 = 42
        header.type = UInt16(PRIVSEP_VIOLATION.rawValue)
        header.length = UInt32(MemoryLayout<privsep_violation>.size)
        bytes = withUnsafeBytes(of: header) { Array($0) } + withUnsafeBytes(of: violation) { Array($0) }
        #expect(try WireCodec.decode(bytes, fileDescriptorCount: 0).message == .violation(
            Violation(syscallNumber: 59, architecture: 0xC000_003E, instructionPointer: 0xdead_beef, arguments: [0, 0, 0, 0, 0, 42])))
    }
}
