import Glibc
import PrivsepIPC
import Testing
import Worker

/// The worker's connection against a supervisor played by the test: its replies are queued
/// before each request, so a thread that reads its own reply finds them at once.
@Suite(.timeLimit(.minutes(1))) struct SupervisorConnectionTests {
    /// A connection and the supervisor's end of its channel, past the handshake.
    final class Channel {
        let connection: SupervisorConnection
        let supervisorEnd: SeqpacketSocket

        init() throws {
            let pair = try SeqpacketSocket.pair()
            supervisorEnd = pair.first
            // The handshake checks WELCOME names this process's parent.
            try supervisorEnd.send(Envelope(requestID: 0, .welcome(Welcome(supervisorProcessID: getppid(), workerID: 1))))
            connection = try SupervisorConnection(handshakeOver: pair.second)
            _ = try supervisorEnd.receiveMessage() // HELLO
        }

        /// Queues a REPLY granting an fd (of /dev/null) to request `requestID`.
        func queueGrant(_ requestID: UInt64) throws {
            var fds = OwnedFileDescriptors()
            fds.append(OwnedFileDescriptor(adoptingRawValue: open("/dev/null", O_RDONLY | O_CLOEXEC)))
            try supervisorEnd.send(Envelope(requestID: requestID, .reply(.success(fileDescriptorCount: 1))), passing: fds)
        }
    }

    /// A request that fails before anything is sent gives up the reader's role: the next
    /// request reads its reply. (A role left taken leaves it waiting for ever: the run hangs
    /// and CI's watchdog fails it; checked by removing the release.)
    @Test func aRequestThatCannotBeSentLeavesTheConnectionUsable() throws {
        let channel = try Channel()
        #expect(throws: WorkerError.self) { _ = try channel.connection.open("/a\u{0}b", .readOnly) }
        try channel.queueGrant(2) // the failed request took id 1
        let fd = try channel.connection.open("/srv/data", .readOnly)
        #expect(fd.unsafeRawValue >= 0)
        let sent = try channel.supervisorEnd.receiveMessage()
        #expect(sent.envelope == Envelope(requestID: 2, .open(OpenRequest(path: "/srv/data", flags: O_RDONLY, mode: 0o600))))
    }

    /// A thread reading its own reply that finds a JOB first files it for nextJob and goes
    /// on to its reply; a refusal comes back as the errno.
    @Test func aJobBeforeTheReplyIsKeptForNextJob() throws {
        let channel = try Channel()
        try channel.supervisorEnd.send(Envelope(requestID: 77, .job(JobMessage(input: [1, 2, 3]))))
        try channel.queueGrant(1)
        let fd = try channel.connection.open("/srv/data", .readOnly)
        #expect(fd.unsafeRawValue >= 0)
        guard let job = try channel.connection.nextJob() else {
            Issue.record("the JOB was lost")
            return
        }
        let id = job.id, input = job.input
        #expect(id == 77 && input == [1, 2, 3])
        try channel.supervisorEnd.send(Envelope(requestID: 2, .reply(.failure(.permissionDenied))))
        #expect(throws: WorkerError.denied(.permissionDenied)) { _ = try channel.connection.open("/srv/other", .readOnly) }
    }

    /// A REPLY nobody asked for fails the connection, whichever thread reads it.
    @Test func aReplyForARequestNobodyMadeFailsTheConnection() throws {
        let channel = try Channel()
        try channel.queueGrant(9)
        #expect(throws: WorkerError.self) { _ = try channel.connection.open("/srv/data", .readOnly) }
        #expect(throws: WorkerError.self) { _ = try channel.connection.open("/srv/data", .readOnly) }
    }
}
