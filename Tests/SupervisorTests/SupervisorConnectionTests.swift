import CPrivsepShims
import Glibc
import PrivsepIPC
import Testing
import Worker

/// The worker's connection against a supervisor played by the test: its replies are queued
/// before each request, so a thread that reads its own reply finds them at once.
@Suite(.timeLimit(.minutes(1))) struct SupervisorConnectionTests {
    /// A connection and the supervisor's end of its channel, past the handshake.
    final class Channel: @unchecked Sendable { // its supervisor's end is used by one thread at a time
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
    /// The caller's own bad argument is an invalidArgument with the errno open(2) would give,
    /// not a protocol error (which blames the supervisor).
    @Test func aRequestThatCannotBeSentLeavesTheConnectionUsable() throws {
        let channel = try Channel()
        #expect { _ = try channel.connection.open("/a\u{0}b", .readOnly) } throws: { error in
            guard case WorkerError.invalidArgument(.invalidArgument, let why)? = error as? WorkerError else { return false }
            return why.contains("NUL")
        }
        #expect { _ = try channel.connection.open("/" + String(repeating: "a", count: 5000), .readOnly) } throws: { error in
            (error as? WorkerError)?.errno == .fileNameTooLong
        }
        try channel.queueGrant(3) // the failed requests took ids 1 and 2
        let fd = try channel.connection.open("/srv/data", .readOnly)
        #expect(fd.unsafeRawValue >= 0)
        let sent = try channel.supervisorEnd.receiveMessage()
        #expect(sent.envelope == Envelope(requestID: 3, .open(OpenRequest(path: "/srv/data", flags: O_RDONLY, mode: 0o600))))
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

    /// A REPLY nobody asked for fails the connection, whichever thread reads it; a failed
    /// connection sends no more requests (the supervisor would create or truncate a file
    /// for a caller told only of the old failure).
    @Test func aReplyForARequestNobodyMadeFailsTheConnection() throws {
        let channel = try Channel()
        try channel.queueGrant(9)
        #expect(throws: WorkerError.self) { _ = try channel.connection.open("/srv/data", .readOnly) }
        #expect(throws: WorkerError.self) { _ = try channel.connection.open("/srv/new", [.writeOnly, .create, .truncate]) }
        #expect(try channel.supervisorEnd.receiveMessage().envelope.message.type == .open)
        try channel.supervisorEnd.setNonBlocking(true)
        #expect(throws: ChannelError.system(.resourceTemporarilyUnavailable)) { _ = try channel.supervisorEnd.receiveMessage() }
    }

    /// Intercept mode's hand-over is a request like the others: made while another thread
    /// waits for its reply, the go-ahead reaches the hand-over (whoever reads it) and the
    /// other reply its own thread.
    @Test func theInterceptHandOverSharesTheConnectionWithOtherThreads() throws {
        let channel = try Channel()
        let outcomes = Tally()
        let opener = TestThread {
            do {
                _ = try channel.connection.open("/srv/a", .readOnly)
                outcomes.add("open ok")
            } catch {
                outcomes.add("open \(error)")
            }
        }
        let open = try channel.supervisorEnd.receiveMessage() // the opener now holds the reader's role
        let handOver = TestThread {
            do {
                try channel.connection.handOverInterceptListener(OwnedFileDescriptor(adoptingRawValue: Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC)))
                outcomes.add("hand-over ok")
            } catch {
                outcomes.add("hand-over \(error)")
            }
        }
        let listener = try channel.supervisorEnd.receiveMessage(maximumFileDescriptors: 1)
        #expect(listener.envelope.message == .listener(ListenerAnnouncement(purpose: .intercept)))
        #expect(listener.envelope.requestID != open.envelope.requestID)
        // The go-ahead first: the opener, reading, finds it before its own reply.
        try channel.supervisorEnd.send(Envelope(requestID: listener.envelope.requestID, .reply(.success(fileDescriptorCount: 0))))
        try channel.queueGrant(open.envelope.requestID)
        opener.join()
        handOver.join()
        #expect(outcomes.items.sorted() == ["hand-over ok", "open ok"])
    }

    /// Many threads at once, their replies answered two at a time in reverse order: each
    /// thread gets the fd of its own request, whichever thread reads it off the channel.
    @Test func manyThreadsEachGetTheirOwnReply() throws {
        let channel = try Channel()
        let threads = 16, requestsEach = 200
        let supervisor = TestThread {
            // Each request read, and a second if one is already queued: two are answered
            // the later first.
            var answered = 0
            while answered < threads * requestsEach {
                guard let first = try? channel.supervisorEnd.receiveMessage() else { return }
                if let second = try? channel.supervisorEnd.receiveMessage(nonBlocking: true) {
                    try? answer(second.envelope, over: channel.supervisorEnd)
                    answered += 1
                }
                try? answer(first.envelope, over: channel.supervisorEnd)
                answered += 1
            }
        }
        let failures = Tally()
        runThreads(threads) { index in
            for request in 0..<requestsEach {
                let path = "/t\(index)/r\(request)"
                do {
                    let fd = try channel.connection.open(path, .readOnly)
                    var bytes = [UInt8](repeating: 0, count: 64)
                    let count = read(fd.unsafeRawValue, &bytes, bytes.count)
                    let content = count > 0 ? String(decoding: bytes[..<count], as: UTF8.self) : ""
                    if content != path { failures.add("\(path) got \(content)") }
                } catch {
                    failures.add("\(path): \(error)")
                }
            }
        }
        supervisor.join()
        #expect(failures.items.isEmpty, "\(failures.items.prefix(3))")
    }

    /// The connection's lock and condition alone: increments under the lock from 8 threads
    /// lose none, and two threads taking turns by waiting and broadcasting never miss a
    /// turn (a lost wake-up would hang until the suite's time limit).
    @Test func theMonitorExcludesAndLosesNoWakeUp() {
        let monitor = UnsafeMutablePointer<privsep_monitor>.allocate(capacity: 1)
        monitor.initialize(to: privsep_monitor(lock: 0, sequence: 0))
        defer { monitor.deallocate() }
        nonisolated(unsafe) var counter = 0
        let monitorAddress = UInt(bitPattern: monitor)
        runThreads(8) { _ in
            let monitor = UnsafeMutablePointer<privsep_monitor>(bitPattern: monitorAddress)!
            for _ in 0..<20_000 {
                privsep_monitor_lock(monitor)
                counter += 1
                privsep_monitor_unlock(monitor)
            }
        }
        #expect(counter == 160_000)
        nonisolated(unsafe) var turn = 0
        runThreads(2) { index in
            let monitor = UnsafeMutablePointer<privsep_monitor>(bitPattern: monitorAddress)!
            privsep_monitor_lock(monitor)
            for _ in 0..<5_000 {
                while turn % 2 != index { privsep_monitor_wait(monitor) }
                turn += 1
                privsep_monitor_broadcast(monitor)
            }
            privsep_monitor_unlock(monitor)
        }
        #expect(turn == 10_000)
    }
}

/// Answers an OPEN with the read end of a pipe that holds the path asked for.
private func answer(_ envelope: Envelope, over socket: borrowing SeqpacketSocket) throws {
    guard case .open(let open) = envelope.message else { return }
    var ends: [Int32] = [-1, -1]
    guard pipe(&ends) == 0 else { return }
    _ = open.path.withCString { write(ends[1], $0, strlen($0)) }
    close(ends[1])
    var fds = OwnedFileDescriptors()
    fds.append(OwnedFileDescriptor(adoptingRawValue: ends[0]))
    try socket.send(Envelope(requestID: envelope.requestID, .reply(.success(fileDescriptorCount: 1))), passing: fds)
}

/// Failures collected from several threads.
private final class Tally: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private(set) var items: [String] = []
    init() { pthread_mutex_init(&lock, nil) }
    func add(_ item: String) {
        pthread_mutex_lock(&lock)
        items.append(item)
        pthread_mutex_unlock(&lock)
    }
}

/// A thread of its own (the cooperative pool is not to be blocked in recvmsg).
private final class TestThread: @unchecked Sendable {
    private var thread = pthread_t()
    init(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        pthread_create(&thread, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(Box(body)).toOpaque())
    }
    func join() { pthread_join(thread, nil) }
}

/// Runs `body(index)` on `count` threads at once and waits for them all.
private func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let threads = (0..<count).map { index in TestThread { body(index) } }
    for thread in threads { thread.join() }
}
