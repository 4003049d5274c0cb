import CPrivsepShims
import Glibc
@testable import PrivsepIPC
import PrivsepTestSupport
import SystemPackage
import Testing

/// Ends an exit test's child with a reason its parent can print (precondition's
/// message is lost when the exit expectation fails).
/// Ends an exit test's child with `reason`: recorded as an issue (Swift Testing forwards a
/// child's issues to the test in the parent that ran it) and written to stderr.
func fail(_ reason: String) -> Never {
    Issue.record(Comment(rawValue: reason))
    let text = reason + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

func require(_ condition: Bool, _ reason: @autoclosure () -> String) {
    if !condition { fail(reason()) }
}

/// An fd of a fresh pipe's read end (the write end is closed).
func makeDescriptor() -> OwnedFileDescriptor {
    var fds: [Int32] = [-1, -1]
    require(pipe(&fds) == 0, "pipe: \(errno)")
    close(fds[1])
    let fd = OwnedFileDescriptor(adoptingRawValue: fds[0])
    try! fd.setCloseOnExec(true)
    return fd
}

func inode(_ fd: Int32) -> UInt64 {
    var info = stat()
    require(fstat(fd, &info) == 0, "fstat")
    return UInt64(info.st_ino)
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Appends `count` fresh pipe fds to `list`; returns the inode of each, in order.
func appendDescriptors(_ count: Int, to list: inout OwnedFileDescriptors) -> [UInt64] {
    (0..<count).map { _ in
        let fd = makeDescriptor()
        let number = inode(fd.unsafeRawValue)
        list.append(fd)
        return number
    }
}

@Suite struct ChannelTests {
    @Test func pairIsCloseOnExecSeqpacket() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        let closeOnExec = try a.withFileDescriptor { (fd) throws(Errno) in try fd.isCloseOnExec() }
        #expect(closeOnExec)
        var type: Int32 = 0
        var length = socklen_t(4)
        getsockopt(a.unsafeRawValue, SOL_SOCKET, SO_TYPE, &type, &length)
        #expect(type == privsep_SOCK_SEQPACKET)
    }

    @Test func bytesRoundTripAndKeepBoundaries() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        try bytes("first").withUnsafeBytes { try a.send($0) }
        try bytes("second!").withUnsafeBytes { try a.send($0) }
        let one = try b.receive(maximumBytes: 100, maximumFileDescriptors: 0)
        let two = try b.receive(maximumBytes: 100, maximumFileDescriptors: 0)
        #expect(one.bytes == bytes("first"))
        #expect(two.bytes == bytes("second!"))
    }

    @Test func fileDescriptorArrivesCloseOnExecAndRefersToTheSameFile() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        let original = makeDescriptor()
        try original.setCloseOnExec(false)
        try bytes("fd").withUnsafeBytes { try a.send($0, passing: original) }
        var received = try b.receive(maximumBytes: 16, maximumFileDescriptors: 1)
        #expect(received.fileDescriptors.count == 1)
        guard let fd = received.fileDescriptors.take(at: 0) else {
            Issue.record("no fd in slot 0")
            return
        }
        #expect(fd.unsafeRawValue != original.unsafeRawValue)
        #expect(try fd.isCloseOnExec(), "MSG_CMSG_CLOEXEC must set FD_CLOEXEC even when the sender's copy lacked it")
        #expect(inode(fd.unsafeRawValue) == inode(original.unsafeRawValue))
        let slotIsEmpty = received.fileDescriptors.take(at: 0) == nil
        #expect(slotIsEmpty, "a taken slot is empty")
    }


    /// A list sends the fds it still owns, in order: taken slots are left out whether
    /// the list is its one inline slot or several.
    @Test func aListSendsOnlyTheDescriptorsItStillOwnsInOrder() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        var several = OwnedFileDescriptors()
        let inodes = appendDescriptors(4, to: &several)
        let first = several.take(at: 0), third = several.take(at: 2)
        #expect(first != nil && third != nil)
        #expect(several.count == 4 && several.ownedCount == 2)
        #expect(several.unsafeRawValues.map(inode) == [inodes[1], inodes[3]])
        try bytes("two").withUnsafeBytes { try a.send($0, passing: several) }
        let received = try b.receive(maximumBytes: 16, maximumFileDescriptors: 4)
        #expect(received.fileDescriptors.unsafeRawValues.map(inode) == [inodes[1], inodes[3]])

        var one = OwnedFileDescriptors(makeDescriptor())
        _ = one.take(at: 0)
        #expect(one.unsafeRawValues.isEmpty && one.ownedCount == 0)
        try bytes("none").withUnsafeBytes { try a.send($0, passing: one) }
        let empty = try b.receive(maximumBytes: 16, maximumFileDescriptors: 4)
        let nothingArrived = empty.fileDescriptors.isEmpty
        #expect(nothingArrived)
    }
    @Test func twoHundredFiftyThreeDescriptorsInOneMessage() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        var outgoing = OwnedFileDescriptors()
        let inodes = appendDescriptors(253, to: &outgoing)
        try bytes("many").withUnsafeBytes { try a.send($0, passing: outgoing) }
        let received = try b.receive(maximumBytes: 16, maximumFileDescriptors: 253)
        #expect(received.fileDescriptors.count == 253)
        #expect(received.fileDescriptors.unsafeRawValues.map(inode) == inodes)
        outgoing.append(makeDescriptor())
        #expect(throws: ChannelError.tooManyFileDescriptorsToSend(254)) {
            try bytes("x").withUnsafeBytes { try a.send($0, passing: outgoing) }
        }
    }

    @Test func sendToAClosedPeerIsAnErrorNotSIGPIPE() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        _ = consume pair.second
        // A program another test spawns at this moment holds a copy of every fd until its
        // exec closes them, so the peer may outlive our close by a moment: send until it
        // is gone (each send before that just queues a datagram for it).
        var outcome: ChannelError? = nil
        for _ in 0..<2000 where outcome == nil {
            do {
                try bytes("x").withUnsafeBytes { try a.send($0) }
                usleep(1000)
            } catch let error as ChannelError {
                outcome = error
            } catch {
                Issue.record("not a ChannelError: \(error)")
                return
            }
        }
        #expect(outcome == .peerClosed)
        #expect(throws: ChannelError.peerClosed) { _ = try a.receive(maximumBytes: 8, maximumFileDescriptors: 0) }
    }

    @Test func nonBlockingReceiveSurfacesEAGAIN() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        try a.setNonBlocking(true)
        #expect(try a.isNonBlocking())
        #expect(throws: ChannelError.system(.resourceTemporarilyUnavailable)) {
            _ = try a.receive(maximumBytes: 8, maximumFileDescriptors: 0)
        }
        try a.setNonBlocking(false)
        #expect(try !a.isNonBlocking())
    }

    @Test func nonBlockingSendSurfacesEAGAINWhenTheQueueIsFull() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        let payload = [UInt8](repeating: 0, count: 4096)
        var sent = 0
        func fill() throws { while sent < 100_000 { try payload.withUnsafeBytes { try a.sendNonBlocking($0) }; sent += 1 } }
        #expect(throws: ChannelError.system(.resourceTemporarilyUnavailable)) { try fill() }
        #expect(sent > 0 && sent < 100_000)
    }

    @Test func shutdownGivesThePeerEndOfFile() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        try a.shutdown(.writing)
        #expect(throws: ChannelError.peerClosed) { _ = try b.receive(maximumBytes: 8, maximumFileDescriptors: 0) }
    }

    /// What the supervisor's drain relies on: an end shut for reading stops its peer's sends
    /// (EPIPE, so the queue cannot refill) and still reads what was queued before.
    @Test func shutdownForReadingStopsThePeerAndKeepsWhatIsQueued() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        try bytes("queued").withUnsafeBytes { try b.send($0) }
        try a.shutdown(.reading)
        #expect(throws: ChannelError.peerClosed) { try bytes("late").withUnsafeBytes { try b.send($0) } }
        #expect(try a.receive(maximumBytes: 8, maximumFileDescriptors: 0).bytes == bytes("queued"))
        #expect(throws: ChannelError.peerClosed) { _ = try a.receive(maximumBytes: 8, maximumFileDescriptors: 0) }
    }

    @Test func peerCredentialsNameTheCreator() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        let credentials = try a.peerCredentials()
        #expect(credentials == PeerCredentials(processID: getpid(), userID: getuid(), groupID: getgid()))
        let pidfd = try a.peerProcessDescriptor()
        #expect(try pidfd.isCloseOnExec())
        // /proc/self/fdinfo of a pidfd names the process it refers to.
        let fdinfo = "/proc/self/fdinfo/\(pidfd.unsafeRawValue)"
        let file = try #require(fopen(fdinfo, "r"))
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        var pidLine = ""
        while fgets(&line, 256, file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("Pid:") { pidLine = text }
        }
        #expect(pidLine == "Pid:\t\(getpid())\n")
    }

    @Test func senderCredentialsArriveWithEachDatagram() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        var b = pair.second
        try b.enableSenderCredentials()
        let fd = makeDescriptor()
        try bytes("who").withUnsafeBytes { try a.send($0, passing: fd) }
        let received = try b.receive(maximumBytes: 8, maximumFileDescriptors: 1)
        #expect(received.senderCredentials == PeerCredentials(processID: getpid(), userID: getuid(), groupID: getgid()))
        #expect(received.fileDescriptors.count == 1)
        // Credentials first, then the fds: the second control message ends where the
        // kernel's report ends, short of its CMSG_SPACE padding (an odd count: 3 fds).
        var three = OwnedFileDescriptors()
        let inodes = appendDescriptors(3, to: &three)
        try bytes("who").withUnsafeBytes { try a.send($0, passing: three) }
        var again = try b.receive(maximumBytes: 8, maximumFileDescriptors: 3)
        #expect(again.senderCredentials?.processID == getpid())
        #expect(again.fileDescriptors.count == 3)
        var arrived: [UInt64] = []
        for index in 0..<3 {
            if let fd = again.fileDescriptors.take(at: index) { arrived.append(inode(fd.unsafeRawValue)) }
        }
        #expect(arrived == inodes)
    }

    @Test func anEndThatRefusesDescriptorsTakesBytesOnly() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        var b = pair.second
        // Queued before the refusal (which belongs before the peer can send): the fd is
        // dropped by the kernel, never installed here.
        let early = makeDescriptor()
        try bytes("early").withUnsafeBytes { try a.send($0, passing: early) }
        guard SeqpacketSocket.kernelCanRefuseFileDescriptors else {
            #expect(throws: Errno.protocolNotAvailable) { try b.refuseFileDescriptors() }
            // The receive, as before: one fd installed at most, more reported.
            #expect(try b.receive(maximumBytes: 8, maximumFileDescriptors: 1).fileDescriptors.count == 1)
            var two = OwnedFileDescriptors()
            _ = appendDescriptors(2, to: &two)
            try bytes("two").withUnsafeBytes { try a.send($0, passing: two) }
            #expect(throws: ChannelError.controlTruncated(acceptedFileDescriptors: 1)) {
                _ = try b.receive(maximumBytes: 8, maximumFileDescriptors: 1)
            }
            return
        }
        try b.refuseFileDescriptors()
        let dropped = try b.receive(maximumBytes: 8, maximumFileDescriptors: 1)
        #expect(dropped.bytes == bytes("early") && dropped.fileDescriptors.isEmpty)
        // The kernel refuses the fd at the sender, and nothing of that message arrives.
        let fd = makeDescriptor()
        #expect(throws: ChannelError.system(.notPermitted)) { try bytes("fd").withUnsafeBytes { try a.send($0, passing: fd) } }
        try b.setNonBlocking(true)
        #expect(throws: ChannelError.system(.resourceTemporarilyUnavailable)) {
            _ = try b.receive(maximumBytes: 8, maximumFileDescriptors: 1)
        }
        try b.setNonBlocking(false)
        // Bytes arrive whole, with their boundaries, through recv.
        try bytes("first").withUnsafeBytes { try a.send($0) }
        try bytes("second").withUnsafeBytes { try a.send($0) }
        let first = try b.receive(maximumBytes: 16, maximumFileDescriptors: 1)
        #expect(first.bytes == bytes("first") && first.fileDescriptors.isEmpty && first.flags == 0 && first.senderCredentials == nil)
        #expect(try b.receive(maximumBytes: 16, maximumFileDescriptors: 0).bytes == bytes("second"))
        // A datagram longer than the buffer is refused, not cut short.
        try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try a.send($0) }
        #expect(throws: ChannelError.messageTruncated(capacity: 99)) { _ = try b.receive(maximumBytes: 99, maximumFileDescriptors: 0) }
        // A message in place, as the serving loop receives one.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
        defer { scratch.deallocate() }
        try a.send(Envelope(requestID: 9, .open(OpenRequest(path: "/srv/data.csv", flags: O_RDONLY))))
        let request = try b.receiveRequest(using: scratch, maximumFileDescriptors: 1, nonBlocking: true)
        switch consume request {
        case .open(let open): #expect(open.requestID == 9 && Array(open.path) == Array("/srv/data.csv".utf8))
        case .message(let message): Issue.record("OPEN came back decoded: \(message.envelope)")
        }
        // Sender credentials, while on, still come (by recvmsg).
        try b.enableSenderCredentials()
        try bytes("who").withUnsafeBytes { try a.send($0) }
        #expect(try b.receive(maximumBytes: 8, maximumFileDescriptors: 0).senderCredentials?.processID == getpid())
        try b.disableSenderCredentials()
        try a.shutdown(.writing)
        #expect(throws: ChannelError.peerClosed) { _ = try b.receive(maximumBytes: 8, maximumFileDescriptors: 0) }
    }

    @Test func validatedAcceptsOnlyConnectedSeqpacketSockets() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        let dup = try a.withFileDescriptor { (fd) throws(Errno) in try fd.duplicate() }
        _ = try SeqpacketSocket.validated(dup)
        #expect(throws: Errno.notSocket) { _ = try SeqpacketSocket.validated(makeDescriptor()) }
        let stream = socket(AF_UNIX, privsep_SOCK_STREAM | O_CLOEXEC, 0)
        #expect(throws: Errno.protocolWrongTypeForSocket) { _ = try SeqpacketSocket.validated(OwnedFileDescriptor(adoptingRawValue: stream)) }
        let lonely = socket(AF_UNIX, privsep_SOCK_SEQPACKET | O_CLOEXEC, 0)
        #expect(throws: Errno.socketNotConnected) { _ = try SeqpacketSocket.validated(OwnedFileDescriptor(adoptingRawValue: lonely)) }
    }

    /// A scratch buffer holds the largest message and the largest control data (253 fds
    /// and the sender's credentials) at once, neither overwriting the other.
    @Test func scratchHoldsTheLargestMessageWithTheMostDescriptors() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first
        var b = pair.second
        try b.enableSenderCredentials()
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
        defer { scratch.deallocate() }
        let input = (0..<(WireFormat.maximumMessageSize - 32)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var fds = OwnedFileDescriptors()
        let inodes = appendDescriptors(SeqpacketSocket.maximumFileDescriptorsPerMessage, to: &fds)
        let job = Envelope(requestID: 9, .job(JobMessage(input: input, fileDescriptorCount: fds.count)))
        #expect(try WireCodec.encode(job).count == WireFormat.maximumMessageSize)
        try a.send(job, passing: fds)
        var received = try b.receiveMessage(using: scratch, maximumFileDescriptors: SeqpacketSocket.maximumFileDescriptorsPerMessage)
        #expect(received.envelope == job)
        #expect(received.senderCredentials?.processID == getpid())
        var arrived: [UInt64] = []
        for index in 0..<received.fileDescriptors.count {
            if let fd = received.fileDescriptors.take(at: index) { arrived.append(inode(fd.unsafeRawValue)) }
        }
        #expect(arrived == inodes)
    }

    @Test func receiveRequestHandsOverAnOpenInPlaceAndDecodesTheRest() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
        defer { scratch.deallocate() }
        try a.send(Envelope(requestID: 5, .open(OpenRequest(path: "/srv/data.csv", flags: O_RDONLY | O_NONBLOCK, mode: 0o640))))
        try a.send(Envelope(requestID: 0, .log(LogLine(level: .info, message: "next"))))
        let first = try b.receiveRequest(using: scratch)
        switch consume first {
        case .open(let open):
            #expect(open.requestID == 5 && open.flags == O_RDONLY | O_NONBLOCK && open.mode == 0o640)
            #expect(Array(open.path) == Array("/srv/data.csv".utf8))
            #expect(open.path.baseAddress![open.path.count] == 0, "a NUL follows the path in the buffer")
            #expect(open.request == OpenRequest(path: "/srv/data.csv", flags: O_RDONLY | O_NONBLOCK, mode: 0o640))
        case .message(let message):
            Issue.record("OPEN came back decoded: \(message.envelope)")
        }
        let second = try b.receiveRequest(using: scratch)
        switch consume second {
        case .open:
            Issue.record("LOG came back as an OPEN")
        case .message(let message):
            #expect(message.envelope == Envelope(requestID: 0, .log(LogLine(level: .info, message: "next"))))
        }
    }

    @Test func sendOpenPutsOnTheWireWhatSendingTheEnvelopePuts() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        for (path, flags, mode) in [("/srv/data.csv", O_RDONLY, UInt32(0o600)), ("/données/été", O_WRONLY | O_CREAT, 0o640)] {
            try a.sendOpen(requestID: 41, path: path, flags: flags, mode: mode)
            try a.send(Envelope(requestID: 41, .open(OpenRequest(path: path, flags: flags, mode: mode))))
            let fromParts = try b.receive(maximumBytes: WireFormat.maximumMessageSize, maximumFileDescriptors: 0)
            let general = try b.receive(maximumBytes: WireFormat.maximumMessageSize, maximumFileDescriptors: 0)
            #expect(fromParts.bytes == general.bytes && fromParts.fileDescriptors.count == 0)
        }
        #expect(throws: ChannelError.malformed(.stringHasEmbeddedNUL(field: "open.path"))) {
            try a.sendOpen(requestID: 42, path: "/a\u{0}b", flags: O_RDONLY, mode: 0)
        }
    }

    /// The receive buffers' sizes are folded from a Swift CMSG_SPACE: it must be the C macro's.
    @Test func controlSpaceIsTheCMacros() {
        for length in 0...(SeqpacketSocket.maximumFileDescriptorsPerMessage * 4 + 64) {
            #expect(SeqpacketSocket.controlSpace(length) == privsep_cmsg_space(length), "CMSG_SPACE(\(length))")
        }
        #expect(SeqpacketSocket.receiveScratchSize == WireFormat.maximumMessageSize
            + privsep_cmsg_space(MemoryLayout<privsep_peer_credentials>.size) + privsep_cmsg_space(253 * 4))
    }

    @Test func sendReplyPutsOnTheWireWhatSendingTheEnvelopePuts() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        let devNull = OwnedFileDescriptor(adoptingRawValue: Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC))
        for reply in [Reply.success(fileDescriptorCount: 1), .success(fileDescriptorCount: 0), .failure(.permissionDenied)] {
            var fds = OwnedFileDescriptors()
            if reply.fileDescriptorCount == 1 { fds.append(try devNull.duplicate()) }
            try a.sendReply(requestID: 77, reply, passing: fds)
            try a.send(Envelope(requestID: 77, .reply(reply)), passing: fds)
            let fromParts = try b.receive(maximumBytes: WireFormat.maximumMessageSize, maximumFileDescriptors: 1)
            let general = try b.receive(maximumBytes: WireFormat.maximumMessageSize, maximumFileDescriptors: 1)
            #expect(fromParts.bytes == general.bytes)
            #expect(fromParts.fileDescriptors.count == reply.fileDescriptorCount && general.fileDescriptors.count == reply.fileDescriptorCount)
        }
        // A reply whose fds disagree with its count is refused before anything is sent, as send(Envelope) refuses it.
        let expected = ChannelError.malformed(.wrongFileDescriptorCount(.reply, expected: 1, actual: 0))
        #expect(throws: expected) { try a.sendReply(requestID: 78, .success(fileDescriptorCount: 1), passing: OwnedFileDescriptors()) }
        #expect(throws: expected) { try a.send(Envelope(requestID: 78, .reply(.success(fileDescriptorCount: 1)))) }
        #expect(throws: ChannelError.malformed(.invalidValue(field: "reply.error", value: 0))) {
            try a.sendReply(requestID: 79, .failure(Errno(rawValue: 0)), passing: OwnedFileDescriptors())
        }
        #expect(throws: ChannelError.system(.resourceTemporarilyUnavailable), "a refused reply was sent anyway") {
            _ = try b.receiveMessage(maximumFileDescriptors: 1, nonBlocking: true)
        }
    }

    /// The serving loop parks a reply on EAGAIN and closes the channel on peerClosed
    /// (EventLoop.mustPark): sendReply must report both as send(Envelope) does.
    @Test func sendReplyReportsAFullQueueAndAClosedPeerAsTheGeneralSendDoes() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        var queued = 0
        var full = false
        while !full && queued < 1_000_000 {
            do throws(ChannelError) {
                try a.sendReply(requestID: UInt64(queued), .failure(.permissionDenied), passing: OwnedFileDescriptors(), flags: privsep_MSG_DONTWAIT)
                queued += 1
            } catch {
                #expect(error == .system(.resourceTemporarilyUnavailable))
                full = true
            }
        }
        #expect(full && queued > 0)
        #expect(throws: ChannelError.system(.resourceTemporarilyUnavailable)) {
            try a.send(Envelope(requestID: 0, .reply(.failure(.permissionDenied))), flags: privsep_MSG_DONTWAIT)
        }
        _ = consume b
        // The close takes effect once no process holds the socket: a child another test is
        // spawning meanwhile holds a copy of this process's fds until its exec, and until
        // then the queue is still full (EAGAIN). So: EAGAIN for a while at most, then EPIPE.
        var outcome: ChannelError? = .system(.resourceTemporarilyUnavailable)
        var tries = 0
        while outcome == .system(.resourceTemporarilyUnavailable) && tries < 2_000 {
            do throws(ChannelError) {
                try a.sendReply(requestID: 1, .failure(.permissionDenied), passing: OwnedFileDescriptors(), flags: privsep_MSG_DONTWAIT)
                outcome = nil
            } catch {
                outcome = error
                if error == .system(.resourceTemporarilyUnavailable) { usleep(1_000) }
            }
            tries += 1
        }
        #expect(outcome == .peerClosed)
    }

    @Test func receiveReplyHandsOverTheAwaitedReplyInPlaceAndDecodesTheRest() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
        defer { scratch.deallocate() }
        let devNull = OwnedFileDescriptor(adoptingRawValue: Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC))
        var one = OwnedFileDescriptors()
        one.append(try devNull.duplicate())
        try a.send(Envelope(requestID: 9, .reply(.success(fileDescriptorCount: 1))), passing: one)
        var another = OwnedFileDescriptors()
        another.append(try devNull.duplicate())
        try a.send(Envelope(requestID: 8, .reply(.success(fileDescriptorCount: 1))), passing: another)
        try a.send(Envelope(requestID: 9, .reply(.failure(.permissionDenied))))
        try a.send(Envelope(requestID: 0, .log(LogLine(level: .info, message: "next"))))
        // A REPLY that claims an fd and carries none, sent raw: refused as the full decoder refuses it.
        let claimsOne = try WireCodec.encode(Envelope(requestID: 9, .reply(.success(fileDescriptorCount: 1))))
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: claimsOne.count, alignment: 8)
        defer { raw.deallocate() }
        raw.copyBytes(from: claimsOne)
        try a.send(UnsafeRawBufferPointer(raw))

        let first = try b.receiveReply(to: 9, using: scratch, maximumFileDescriptors: 253)
        switch consume first {
        case .reply(let reply, var fds):
            #expect(reply == .success(fileDescriptorCount: 1) && fds.count == 1)
            if let fd = fds.take(at: 0) {
                #expect(try fd.status().type == .characterDevice, "the fd sent, /dev/null")
            } else {
                Issue.record("the awaited REPLY lost its fd")
            }
        case .message(let message):
            Issue.record("the awaited REPLY came back decoded: \(message.envelope)")
        }
        let second = try b.receiveReply(to: 9, using: scratch, maximumFileDescriptors: 253)
        switch consume second {
        case .reply(let reply, _):
            Issue.record("another request's REPLY came back as the awaited one: \(reply)")
        case .message(let message):
            #expect(message.envelope == Envelope(requestID: 8, .reply(.success(fileDescriptorCount: 1))))
            #expect(message.fileDescriptors.count == 1)
        }
        let third = try b.receiveReply(to: 9, using: scratch, maximumFileDescriptors: 253)
        switch consume third {
        case .reply(let reply, let fds): #expect(reply == .failure(.permissionDenied) && fds.count == 0)
        case .message(let message): Issue.record("the awaited refusal came back decoded: \(message.envelope)")
        }
        let fourth = try b.receiveReply(to: 9, using: scratch, maximumFileDescriptors: 253)
        switch consume fourth {
        case .reply(let reply, _): Issue.record("LOG came back as a REPLY: \(reply)")
        case .message(let message): #expect(message.envelope == Envelope(requestID: 0, .log(LogLine(level: .info, message: "next"))))
        }
        #expect(throws: ChannelError.malformed(.wrongFileDescriptorCount(.reply, expected: 1, actual: 0))) {
            _ = try b.receiveReply(to: 9, using: scratch, maximumFileDescriptors: 253)
        }
    }

    @Test func messagesRoundTripWithTheirDescriptors() throws {
        let pair = try SeqpacketSocket.pair()
        let a = pair.first, b = pair.second
        try a.send(Envelope(requestID: 9, .open(OpenRequest(path: "/etc/hosts", flags: O_RDONLY))))
        let request = try b.receiveMessage()
        #expect(request.envelope == Envelope(requestID: 9, .open(OpenRequest(path: "/etc/hosts", flags: O_RDONLY))))
        var fds = OwnedFileDescriptors()
        fds.append(makeDescriptor())
        fds.append(makeDescriptor())
        try b.send(Envelope(requestID: 9, .reply(.success(fileDescriptorCount: 2))), passing: fds)
        let reply = try a.receiveMessage(maximumFileDescriptors: 2)
        #expect(reply.envelope.message == .reply(.success(fileDescriptorCount: 2)))
        #expect(reply.fileDescriptors.count == 2)
        #expect(throws: ChannelError.malformed(.wrongFileDescriptorCount(.reply, expected: 1, actual: 2))) {
            try b.send(Envelope(requestID: 9, .reply(.success(fileDescriptorCount: 1))), passing: fds)
        }
    }
}

/// Hostile transfers: each must fail precisely and leave no descriptor behind.
/// These run as exit tests, in a child process of their own, so the count of
/// open descriptors is exact whatever other tests do meanwhile.
@Suite struct ChannelHygieneTests {
    @Test func truncatedDatagramClosesItsDescriptors() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first, b = pair.second
            let before = openFileDescriptorSet()
            var fds = OwnedFileDescriptors()
            for _ in 0..<4 { fds.append(makeDescriptor()) }
            try! [UInt8](repeating: 7, count: 100).withUnsafeBytes { try a.send($0, passing: fds) }
            fds.closeAll()
            do {
                _ = try b.receive(maximumBytes: 50, maximumFileDescriptors: 4)
                fail("a 100-byte datagram fit in 50 bytes")
            } catch let error as ChannelError {
                require(error == .messageTruncated(capacity: 50), "\(error)")
            } catch {
                fail("\(error)")
            }
            require(newFileDescriptors(since: before).isEmpty, "leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
        }
    }

    /// With no free fd number here, a datagram's fds cannot be installed: that is not the
    /// sender's fault. A REPLY comes back as EMFILE for its request (as the system call would
    /// fail), anything else as fileDescriptorsNotInstalled; fds installed before the table
    /// filled are closed, and once numbers are free again fds arrive as before.
    @Test func descriptorsThatFindNoRoomFailTheirReplyWithEMFILE() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first, b = pair.second
            func send(_ envelope: Envelope, fds count: Int) {
                var fds = OwnedFileDescriptors()
                for _ in 0..<count { fds.append(makeDescriptor()) }
                do { try a.send(envelope, passing: fds) } catch { fail("send: \(error)") }
            }
            send(Envelope(requestID: 7, .reply(.success(fileDescriptorCount: 2))), fds: 2)
            send(Envelope(requestID: 8, .reply(.success(fileDescriptorCount: 1))), fds: 1)
            send(Envelope(requestID: 9, .job(JobMessage(input: [1], fileDescriptorCount: 1))), fds: 1)
            send(Envelope(requestID: 10, .reply(.success(fileDescriptorCount: 1))), fds: 1)
            send(Envelope(requestID: 11, .reply(.success(fileDescriptorCount: 1))), fds: 1)
            send(Envelope(requestID: 12, .reply(.success(fileDescriptorCount: 1))), fds: 1)
            // One free number: 0, under a limit of 3 (stdout and stderr stay open). Not a table
            // filled up to a higher limit: the test harness's threads in this process open and
            // close fds of their own, and one closing would free a second number.
            require(fcntl(1, F_GETFD) >= 0 && fcntl(2, F_GETFD) >= 0, "stdout and stderr are open")
            close(0)
            var limit = rlimit()
            let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
            getrlimit(resource, &limit)
            let saved = limit
            limit.rlim_cur = 3
            require(setrlimit(resource, &limit) == 0, "setrlimit")
            var filler: [Int32] = []
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
            defer { scratch.deallocate() }
            do {
                let seven = try b.receiveMessage(using: scratch, maximumFileDescriptors: 253)
                require(seven.envelope == Envelope(requestID: 7, .reply(.failure(.tooManyOpenFiles))) && seven.fileDescriptors.isEmpty,
                        "REPLY 7: \(seven.envelope)")
                // The fd installed before the table filled (as 0) was closed: its number is free again.
                let probe = dup(1)
                require(probe == 0, "the partly installed fd was not closed: dup gave \(probe)")
                filler.append(probe)
                let eight = try b.receiveMessage(maximumFileDescriptors: 1)
                require(eight.envelope == Envelope(requestID: 8, .reply(.failure(.tooManyOpenFiles))), "REPLY 8: \(eight.envelope)")
            } catch {
                fail("\(error)")
            }
            do {
                _ = try b.receiveMessage(using: scratch, maximumFileDescriptors: 1)
                fail("a JOB whose fd was not installed was accepted")
            } catch let error as ChannelError {
                guard case .fileDescriptorsNotInstalled = error else { fail("JOB: \(error)") }
            } catch {
                fail("\(error)")
            }
            // A worker waiting for its reply: its own, and another thread's, become EMFILE alike.
            do {
                switch try b.receiveReply(to: 11, using: scratch, maximumFileDescriptors: 253) {
                case .reply(let reply, let fds): fail("REPLY 10 taken for 11: \(reply), \(fds.count) fds")
                case .message(let other):
                    require(other.envelope == Envelope(requestID: 10, .reply(.failure(.tooManyOpenFiles))), "REPLY 10: \(other.envelope)")
                }
                switch try b.receiveReply(to: 11, using: scratch, maximumFileDescriptors: 253) {
                case .reply(let reply, let fds): require(reply == .failure(.tooManyOpenFiles) && fds.isEmpty, "REPLY 11: \(reply)")
                case .message(let other): fail("REPLY 11 not recognized: \(other.envelope)")
                }
            } catch {
                fail("\(error)")
            }
            for fd in filler { close(fd) }
            limit = saved
            require(setrlimit(resource, &limit) == 0, "setrlimit back")
            do {
                let twelve = try b.receiveMessage(using: scratch, maximumFileDescriptors: 1)
                require(twelve.envelope == Envelope(requestID: 12, .reply(.success(fileDescriptorCount: 1))) && twelve.fileDescriptors.count == 1,
                        "REPLY 12: \(twelve.envelope)")
            } catch {
                fail("\(error)")
            }
        }
    }

    @Test func surplusDescriptorsAreRefusedAndClosed() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first, b = pair.second
            let before = openFileDescriptorSet()
            // (sent, limit, expected error): the control buffer has room for exactly
            // `limit` fds, so the kernel installs no more than that and reports the
            // rest as truncated (MSG_CTRUNC); odd limits included, where the alignment
            // padding of CMSG_SPACE would have held one more.
            let cases: [(Int, Int, ChannelError)] = [
                (1, 0, .controlTruncated(acceptedFileDescriptors: 0)),
                (3, 1, .controlTruncated(acceptedFileDescriptors: 1)),
                (2, 1, .controlTruncated(acceptedFileDescriptors: 1)),
                (4, 3, .controlTruncated(acceptedFileDescriptors: 3)),
                (253, 16, .controlTruncated(acceptedFileDescriptors: 16)),
            ]
            for (sent, limit, expected) in cases {
                expectRefused(sending: sent, from: a, to: b, limit: limit, expected, before: before)
            }
        }
    }

    /// An end that closes a hostile peer's fds at once installs every fd a datagram carries
    /// (none is left for the kernel to close unseen on the receiving thread), refuses those
    /// past the limit, closes them, and sets a socket among them to close without lingering.
    @Test func anEndThatClosesPeerDescriptorsAtOnceTakesThemAllAndUnlingersSockets() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first
            var b = pair.second
            b.closePeerFileDescriptorsAtOnce()
            let before = openFileDescriptorSet()
            for (sent, limit) in [(3, 1), (253, 0), (253, 16)] {
                expectRefused(sending: sent, from: a, to: b, limit: limit, .tooManyFileDescriptors(received: sent, limit: limit), before: before)
            }
            // A TCP socket set to linger arrives set to close at once.
            let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var lingering = linger(l_onoff: 1, l_linger: 60)
            require(setsockopt(tcp, SOL_SOCKET, SO_LINGER, &lingering, socklen_t(MemoryLayout<linger>.size)) == 0, "SO_LINGER")
            do { try [UInt8](repeating: 1, count: 8).withUnsafeBytes { try a.send($0, passing: OwnedFileDescriptor(adoptingRawValue: tcp)) } }
            catch { fail("send: \(error)") }
            let received = try! b.receive(maximumBytes: 64, maximumFileDescriptors: 1)
            require(received.fileDescriptors.count == 1, "one fd")
            var now = linger()
            var size = socklen_t(MemoryLayout<linger>.size)
            require(getsockopt(received.fileDescriptors.unsafeRawValues[0], SOL_SOCKET, SO_LINGER, &now, &size) == 0, "getsockopt")
            require(now.l_onoff == 1 && now.l_linger == 0, "linger \(now.l_onoff) \(now.l_linger)")
        }
    }

    @Test func malformedMessagesCloseTheirDescriptors() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first, b = pair.second
            let before = openFileDescriptorSet()
            let open = try! WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/x", flags: 0))))
            var badMagic = open
            badMagic[0] = 0
            // An OPEN may carry no fds; a datagram of garbage; a REPLY claiming fewer fds than sent.
            let reply = try! WireCodec.encode(Envelope(requestID: 1, .reply(.success(fileDescriptorCount: 1))))
            let otherReply = try! WireCodec.encode(Envelope(requestID: 2, .reply(.success(fileDescriptorCount: 2))))
            let cases: [([UInt8], Int)] = [(open, 1), (open, 16), (badMagic, 2), ([1, 2, 3], 5), (reply, 3), (reply, 0),
                                           (otherReply, 3), ([], 1)]
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
            for (bytes, count) in cases {
                // Each case through every receiver: the serving loop's and the worker's in-place ones too.
                for receiver in 0..<3 {
                    var fds = OwnedFileDescriptors()
                    for _ in 0..<count { fds.append(makeDescriptor()) }
                    try! bytes.withUnsafeBytes { try a.send($0, passing: fds) }
                    fds.closeAll()
                    do {
                        switch receiver {
                        case 0: _ = try b.receiveMessage(maximumFileDescriptors: 16)
                        case 1: _ = try b.receiveRequest(using: scratch, maximumFileDescriptors: 16)
                        default: _ = try b.receiveReply(to: 1, using: scratch, maximumFileDescriptors: 16)
                        }
                        fail("malformed message accepted")
                    } catch let error as ChannelError {
                        guard case .malformed = error else { fail("\(error)") }
                    } catch {
                        fail("\(error)")
                    }
                    require(newFileDescriptors(since: before).isEmpty, "leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
                }
            }
            // A well-formed REPLY to another request comes back as a message; dropped, its fds close.
            var fds = OwnedFileDescriptors()
            for _ in 0..<2 { fds.append(makeDescriptor()) }
            try! otherReply.withUnsafeBytes { try a.send($0, passing: fds) }
            fds.closeAll()
            let received = try! b.receiveReply(to: 1, using: scratch, maximumFileDescriptors: 16)
            switch consume received {
            case .reply: fail("another request's REPLY came back as the awaited one")
            case .message(let message): require(message.fileDescriptors.count == 2, "\(message.fileDescriptors.count) fds")
            }
            require(newFileDescriptors(since: before).isEmpty, "leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
        }
    }

    @Test func aPidfdControlMessageIsRefusedAndEveryDescriptorClosed() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first, b = pair.second
            // SO_PASSPIDFD (Linux 6.5): each datagram brings an SCM_PIDFD message, an fd of its own.
            var on: Int32 = 1
            require(setsockopt(b.unsafeRawValue, SOL_SOCKET, 76, &on, socklen_t(MemoryLayout<Int32>.size)) == 0, "SO_PASSPIDFD: \(errno)")
            let before = openFileDescriptorSet()
            var fds = OwnedFileDescriptors()
            for _ in 0..<2 { fds.append(makeDescriptor()) }
            try! [UInt8](repeating: 1, count: 24).withUnsafeBytes { try a.send($0, passing: fds) }
            fds.closeAll()
            do {
                // Room for 8 fds: the pidfd's message (CMSG_SPACE(4)) and the two fds' (CMSG_LEN(8))
                // fit whole, so the walk meets both rather than the kernel truncating.
                _ = try b.receive(maximumBytes: 64, maximumFileDescriptors: 8)
                fail("a datagram with SCM_PIDFD was accepted")
            } catch let error as ChannelError {
                require(error == .unexpectedControlMessage(level: SOL_SOCKET, type: privsep_SCM_PIDFD), "\(error)")
            } catch {
                fail("\(error)")
            }
            require(newFileDescriptors(since: before).isEmpty, "leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
        }
    }

    /// takeOnly hands over the one fd of a one-fd list and closes everything else; close
    /// closes everything.
    @Test func takeOnlyHandsOverALoneDescriptorAndCloseClosesEverything() async {
        await #expect(processExitsWith: .success) {
            let before = openFileDescriptorSet()
            let one = makeDescriptor()
            let number = inode(one.unsafeRawValue)
            var list = OwnedFileDescriptors()
            list.append(one)
            guard let fd = list.takeOnly() else { fail("one fd: nil") }
            require(inode(fd.unsafeRawValue) == number, "a different fd came back")
            _ = consume fd
            require(OwnedFileDescriptors().takeOnly() == nil, "no fd: not nil")
            var two = OwnedFileDescriptors()
            two.append(makeDescriptor())
            two.append(makeDescriptor())
            require(two.takeOnly() == nil, "two fds: not nil")
            var taken = OwnedFileDescriptors()
            taken.append(makeDescriptor())
            _ = taken.take(at: 0)
            require(taken.takeOnly() == nil, "a taken fd came back")
            // Room reserved for more, one fd arrived (as a receive that expected more).
            var reserved = OwnedFileDescriptors()
            reserved.reserveCapacity(4)
            reserved.append(makeDescriptor())
            require(reserved.takeOnly() != nil, "one fd in reserved room: nil")
            // close() ends a list, owning nothing or some fds, with every fd closed.
            OwnedFileDescriptors().close()
            var closing = OwnedFileDescriptors()
            closing.append(makeDescriptor())
            closing.close()
            var closingTwo = OwnedFileDescriptors()
            closingTwo.append(makeDescriptor())
            closingTwo.append(makeDescriptor())
            closingTwo.close()
            require(newFileDescriptors(since: before).isEmpty, "leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
        }
    }

    @Test func unclaimedReceivedDescriptorsCloseThemselves() async {
        await #expect(processExitsWith: .success) {
            let pair = try! SeqpacketSocket.pair()
            let a = pair.first, b = pair.second
            let before = openFileDescriptorSet()
            for _ in 0..<1000 {
                var fds = OwnedFileDescriptors()
                for _ in 0..<3 { fds.append(makeDescriptor()) }
                try! a.send(Envelope(requestID: 1, .reply(.success(fileDescriptorCount: 3))), passing: fds)
                fds.closeAll()
                var message = try! b.receiveMessage(maximumFileDescriptors: 3)
                _ = message.fileDescriptors.take(at: 1) // claimed and dropped; the other two are never claimed
            }
            require(newFileDescriptors(since: before).isEmpty, "leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
        }
    }
}

/// Sends `count` fds from `a` and checks `b`'s receive, allowing `limit`, fails with
/// `expected` and leaves no fd open that was not open `before` (in an exit test).
private func expectRefused(sending count: Int, from a: borrowing SeqpacketSocket, to b: borrowing SeqpacketSocket, limit: Int,
                           _ expected: ChannelError, before: Set<String>) {
    var fds = OwnedFileDescriptors()
    for _ in 0..<count { fds.append(makeDescriptor()) }
    do { try [UInt8](repeating: 1, count: 24).withUnsafeBytes { try a.send($0, passing: fds) } } catch { fail("send \(count): \(error)") }
    fds.closeAll()
    do {
        _ = try b.receive(maximumBytes: 64, maximumFileDescriptors: limit)
        fail("\(count) fds accepted with limit \(limit)")
    } catch let error as ChannelError {
        require(error == expected, "sent \(count), limit \(limit): \(error)")
    } catch {
        fail("\(error)")
    }
    require(newFileDescriptors(since: before).isEmpty, "sent \(count), limit \(limit): leaked: \(newFileDescriptors(since: before, within: 0).sorted())")
}
