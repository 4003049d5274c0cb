import CPrivsepShims
import Glibc
public import PrivsepIPC
import Synchronization
public import SystemPackage

/// The worker's line to its supervisor: find the inherited channel, say HELLO,
/// then ask for what the sandbox forbids taking directly.
///
/// ```swift
/// let supervisor = try SupervisorConnection.connect()
/// let input = try supervisor.open("/srv/input/data.csv", .readOnly)
/// ```
///
/// Calls may come from several threads at once: each request carries its own
/// id and each caller gets the reply with its id. If the supervisor dies, the
/// worker is killed (PR_SET_PDEATHSIG), and any call waiting for a reply fails
/// with ``WorkerError/supervisorGone``.
public final class SupervisorConnection: @unchecked Sendable {
    private let channel: SeqpacketSocket
    /// Supervisor's pid and its name for this worker, from WELCOME.
    public let supervisorProcessID: Int32
    public let workerID: UInt64
    // Guarded by `lock`: the reply mailbox and who is reading the socket.
    // Allocated and initialized once the handshake has succeeded, so a failed
    // handshake leaves nothing behind and deinit never destroys what was never made.
    // The state `lock` guards skips Swift's run-time exclusivity checks: the lock already
    // orders every access, and a check sees only its own thread's accesses, so on the
    // request path they would cost on every call without guarding anything more.
    // A futex lock and condition (privsep_monitor), not pthread's: the uncontended lock and
    // unlock are inline, where pthread's are calls into libc (BENCHMARKS.md, sixth round).
    private let lock: UnsafeMutablePointer<privsep_monitor>
    @exclusivity(unchecked) private var nextRequestID: UInt64 = 1
    // Arrays, not a dictionary and a set: they hold one entry per thread waiting
    // (usually one), and keep their storage from request to request.
    @exclusivity(unchecked) private var mailbox: [ReplyBox] = []
    @exclusivity(unchecked) private var waiting: [UInt64] = []
    @exclusivity(unchecked) private var readerActive = false
    /// Threads asleep in `privsep_monitor_wait`: the reader wakes them only if there are any.
    @exclusivity(unchecked) private var sleepers = 0
    /// Where the reader (whichever thread has `readerActive`) receives.
    private let receiveScratch: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) private var failure: WorkerError?
    @exclusivity(unchecked) private var jobInbox: [JobBox] = []

    /// Connects over the channel named by `PRIVSEP_FD` (normally fd 3).
    ///
    /// Checks that the fd is a connected AF_UNIX SOCK_SEQPACKET socket, sets
    /// PR_SET_PDEATHSIG so the worker dies with its supervisor, sends HELLO and
    /// waits for WELCOME: a worker does nothing else before the supervisor has
    /// applied its resource limits and let it go. Once per process: a later call throws
    /// ``WorkerError/noChannel(_:)``.
    public static func connect() throws(WorkerError) -> SupervisorConnection {
        guard let text = getenv(WireFormat.channelEnvironmentVariable) else {
            throw .noChannel("\(WireFormat.channelEnvironmentVariable) is not set: this program must be started by a privsep supervisor")
        }
        guard let fd = Int32(String(cString: text)), fd >= 0 else {
            throw .noChannel("\(WireFormat.channelEnvironmentVariable)=\(String(cString: text)) is not a file descriptor number")
        }
        // The inherited fd gets one owner. A second connection would close the same number
        // when it went, perhaps by then another descriptor's, and its HELLO would get the
        // worker killed. Kept claimed after a failure too: the fd is closed by then.
        guard !channelClaimed.exchange(true, ordering: .acquiringAndReleasing) else {
            throw .noChannel("the channel is already taken by an earlier connect(): a process has one connection, which its threads share")
        }
        let socket: SeqpacketSocket
        do {
            socket = try SeqpacketSocket.validated(OwnedFileDescriptor(adoptingRawValue: fd))
        } catch {
            throw .noChannel("fd \(fd) is not a connected AF_UNIX SOCK_SEQPACKET socket (\(error))")
        }
        return try SupervisorConnection(handshakeOver: socket)
    }

    /// Whether ``connect()`` has taken the inherited channel.
    private static let channelClaimed = Atomic<Bool>(false)

    /// Connects over a channel the caller already holds (for tests and embedders).
    public init(handshakeOver socket: consuming SeqpacketSocket) throws(WorkerError) {
        let welcome = try Self.handshake(over: socket)
        channel = socket
        supervisorProcessID = welcome.supervisorProcessID
        workerID = welcome.workerID
        // Storage of its own from the start, beside the rest of the connection: an empty
        // array is the run-time's shared empty storage, and every request's check that
        // nobody waits read it, on a page of data no other part of a request touches
        // (BENCHMARKS.md, seventh round).
        var waitingIDs: [UInt64] = []
        waitingIDs.reserveCapacity(4)
        waiting = waitingIDs
        // The lock and the receive scratch in one page-aligned block, the lock on a cache
        // line of its own before the scratch: a request's lock, control data and small reply
        // then always share one page (apart, where they fell depended on the heap).
        let block = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchOffset + SeqpacketSocket.receiveScratchSize,
                                                     alignment: 4096)
        let lock = block.bindMemory(to: privsep_monitor.self, capacity: 1)
        lock.initialize(to: privsep_monitor(lock: 0, sequence: 0))
        self.lock = lock
        receiveScratch = UnsafeMutableRawBufferPointer(start: block + Self.scratchOffset, count: SeqpacketSocket.receiveScratchSize)
    }

    /// Where the receive scratch starts in the block the lock heads.
    private static var scratchOffset: Int { 64 }

    /// HELLO out, WELCOME back, on a worker that will die with its supervisor.
    private static func handshake(over channel: borrowing SeqpacketSocket) throws(WorkerError) -> Welcome {
        // Die with the supervisor. Set before the handshake, checked after it: if the
        // supervisor died in between, getppid() no longer names it.
        if case .failure(let errno) = system_prctl(privsep_PR_SET_PDEATHSIG, UInt(SIGKILL)) {
            throw .system("prctl(PR_SET_PDEATHSIG)", errno)
        }
        let welcome: Welcome
        do {
            try channel.send(Envelope(requestID: 0, .hello(Hello(processID: system_getpid()))))
            let received = try channel.receiveMessage()
            guard case .welcome(let message) = received.envelope.message else {
                throw WorkerError.protocolError("expected WELCOME, got \(received.envelope.message.type)")
            }
            welcome = message
        } catch let error as ChannelError {
            throw error == .peerClosed ? .supervisorGone : .protocolError("handshake: \(error)")
        } catch let error as WorkerError {
            throw error
        } catch {
            throw .protocolError("handshake: \(error)")
        }
        if system_getppid() != welcome.supervisorProcessID {
            throw .supervisorGone
        }
        return welcome
    }

    deinit {
        UnsafeMutableRawPointer(lock).deallocate() // the block the scratch is part of
    }

    /// The raw channel fd, for the few things that need it (a seccomp trap handler).
    public var unsafeChannelFileDescriptor: Int32 { channel.unsafeRawValue }

    // MARK: Requests

    /// Opens `path` (absolute) through the supervisor. Fails with the errno the
    /// supervisor answered: EACCES for anything its policy does not grant.
    public func open(_ path: String, _ flags: OpenFlags, mode: UInt32 = 0o600) throws(WorkerError) -> OwnedFileDescriptor {
        // Sent from its parts, not as an Envelope: the same bytes, for a fraction of the
        // cost once many workers take turns on a CPU (BENCHMARKS.md, fourth round).
        try onlyFileDescriptor(request { (id) throws(ChannelError) in
            try channel.sendOpen(requestID: id, path: path, flags: flags.rawValue, mode: mode)
        })
    }

    /// A new socket; SOCK_CLOEXEC is always set. Internet stream and seqpacket sockets are
    /// refused (EACCES) whatever the policy: ask ``connect(to:type:protocol:)`` or ``listen(at:backlog:)``
    /// (BIND) for a TCP socket.
    public func socket(domain: Int32, type: Int32, protocol: Int32 = 0) throws(WorkerError) -> OwnedFileDescriptor {
        try singleFileDescriptor(.socket(SocketRequest(domain: domain, type: type, protocol: `protocol`)))
    }

    /// A socket connected to `address` (SOCK_STREAM unless `type` says otherwise).
    public func connect(to address: SocketAddress, type: Int32 = 1, protocol: Int32 = 0) throws(WorkerError) -> OwnedFileDescriptor {
        try singleFileDescriptor(.connect(AddressRequest(type: type, protocol: `protocol`, address: address)))
    }

    /// A socket bound at `address` (SOCK_STREAM unless `type` says otherwise): the
    /// worker calls `listen` on it itself, or uses ``listen(at:backlog:)``; after a
    /// lockdown either needs the `serve` group (``SyscallGroup/serve``), or the filter stops it.
    public func bind(to address: SocketAddress, type: Int32 = 1, protocol: Int32 = 0) throws(WorkerError) -> OwnedFileDescriptor {
        try singleFileDescriptor(.bind(AddressRequest(type: type, protocol: `protocol`, address: address)))
    }

    /// A listening stream socket bound at `address`. Its `listen` is the worker's own
    /// call: after a lockdown it needs the `serve` group.
    public func listen(at address: SocketAddress, backlog: Int32 = 128) throws(WorkerError) -> OwnedFileDescriptor {
        let socket = try bind(to: address)
        if case .failure(let errno) = system_listen(socket.unsafeRawValue, backlog) {
            throw .system("listen", errno)
        }
        return socket
    }

    /// Intercept mode: sends the seccomp listener (LISTENER, purpose intercept) and waits
    /// for the supervisor's go-ahead, an empty successful REPLY to it. Only then may the
    /// caller exec the program whose calls the supervisor now serves. Our copy of the
    /// listener is closed before this returns, so the program never holds it.
    public func handOverInterceptListener(_ listener: consuming OwnedFileDescriptor) throws(WorkerError) {
        // A request like any other (its id, its reply through the mailbox), so another
        // thread's request in flight meanwhile neither takes the go-ahead nor is taken for it.
        let listener = OwnedFileDescriptors(listener)
        let unexpected = try request { (id) throws(ChannelError) in
            try channel.send(Envelope(requestID: id, .listener(ListenerAnnouncement(purpose: .intercept))), passing: listener)
        }
        guard unexpected.isEmpty else {
            throw .protocolError("the go-ahead REPLY to LISTENER carried \(unexpected.count) fds")
        }
    }

    /// Sends a line to the supervisor's log.
    public func log(_ message: String, level: LogLine.Level = .info) throws(WorkerError) {
        try sendOnly(.log(LogLine(level: level, message: truncatedForLog(message))))
    }

    /// Reports which sandbox layers are in force (``Lockdown`` does this itself).
    public func reportSandbox(_ status: SandboxStatus) throws(WorkerError) {
        try sendOnly(.sandboxStatus(status))
    }

    /// Sends the seccomp listener of learning mode (LISTENER, with the fd).
    func sendListener(_ listener: consuming OwnedFileDescriptor) throws(WorkerError) {
        do {
            try channel.send(Envelope(requestID: 0, .listener(ListenerAnnouncement(purpose: .learning))),
                             passing: OwnedFileDescriptors(listener))
        } catch {
            throw WorkerError(sending: error)
        }
    }

    private func sendOnly(_ message: Message, requestID: UInt64 = 0) throws(WorkerError) {
        do { try channel.send(Envelope(requestID: requestID, message)) } catch {
            throw WorkerError(sending: error)
        }
    }

    private func singleFileDescriptor(_ message: Message) throws(WorkerError) -> OwnedFileDescriptor {
        try onlyFileDescriptor(request(message))
    }

    @inline(__always)
    private func onlyFileDescriptor(_ fds: consuming OwnedFileDescriptors) throws(WorkerError) -> OwnedFileDescriptor {
        let count = fds.count
        guard let fd = fds.takeOnly() else { throw .protocolError("reply carried \(count) fds, expected 1") }
        return fd
    }

    /// Sends `message` and waits for the reply with its id.
    private func request(_ message: Message) throws(WorkerError) -> OwnedFileDescriptors {
        try request { (id) throws(ChannelError) in try channel.send(Envelope(requestID: id, message)) }
    }

    /// Sends a request with `send`, under a fresh id, and waits for the reply with that id.
    @inline(__always)
    private func request(sending send: (UInt64) throws(ChannelError) -> Void) throws(WorkerError) -> OwnedFileDescriptors {
        privsep_monitor_lock(lock)
        // A failed connection sends nothing more: the supervisor would act on the request
        // (create, truncate, connect) while its caller is only told of the old failure.
        if let failure {
            privsep_monitor_unlock(lock)
            throw failure
        }
        let id = nextRequestID
        nextRequestID += 1
        // Alone (nobody else reading or waiting): take the reader's role before sending,
        // and read the reply straight off the channel, without boxing it for the mailbox.
        // A thread that comes meanwhile waits for the role as it would for any reader.
        // Such a thread is not listed in `waiting` (nobody else can read its reply while
        // it holds the role), sparing the list's upkeep; it lists itself before it gives
        // the role up without its reply.
        let readsOwnReply = !readerActive && waiting.isEmpty
        if readsOwnReply { readerActive = true } else { waiting.append(id) }
        privsep_monitor_unlock(lock)
        do {
            try send(id)
        } catch {
            privsep_monitor_lock(lock)
            if readsOwnReply { releaseReaderRoleLocked() } else { stopWaiting(for: id) }
            privsep_monitor_unlock(lock)
            throw WorkerError(sending: error)
        }
        if readsOwnReply {
            // Ours is decoded in place (no Envelope) and handed back without the mailbox;
            // anything else (another thread's reply, a job, an error) is delivered, and this
            // thread then waits for its own as any thread does.
            var denied: Errno? = nil
            do throws(ChannelError) {
                let received = try channel.receiveReply(to: id, using: receiveScratch,
                                                        maximumFileDescriptors: WireFormat.maximumFileDescriptors)
                switch consume received {
                case .reply(let reply, let fds):
                    privsep_monitor_lock(lock)
                    releaseReaderRoleLocked()
                    privsep_monitor_unlock(lock)
                    guard let errno = reply.error else { return fds }
                    denied = errno
                case .message(let message):
                    privsep_monitor_lock(lock)
                    waiting.append(id)
                    deliverLocked(Self.incoming(message))
                }
            } catch .peerClosed {
                privsep_monitor_lock(lock)
                waiting.append(id)
                deliverLocked(.success(.closed))
            } catch {
                privsep_monitor_lock(lock)
                waiting.append(id)
                deliverLocked(.failure(.protocolError("\(error)")))
            }
            if let denied { throw .denied(denied) }
        } else {
            privsep_monitor_lock(lock)
        }
        defer { privsep_monitor_unlock(lock) }
        let box: ReplyBox
        do throws(WorkerError) {
            box = try waitLocked {
                guard let index = mailbox.firstIndex(where: { $0.requestID == id }) else { return nil }
                return mailbox.remove(at: index)
            }
        } catch {
            stopWaiting(for: id)
            throw error
        }
        stopWaiting(for: id)
        if let errno = box.reply.error { throw .denied(errno) }
        return box.takeDescriptors()
    }

    /// With `lock` held. A thread alone, the usual case, is the last entry: taken off the
    /// end inline, without the general removal's call.
    @inline(__always)
    private func stopWaiting(for id: UInt64) {
        if waiting.last == id {
            waiting.removeLast()
        } else if let index = waiting.firstIndex(of: id) {
            waiting.remove(at: index)
        }
    }

    /// With `lock` held: returns what `take` finds, reading the channel for
    /// every waiting thread while nobody else does. The lock is released while
    /// this thread reads and while it waits for the reader.
    private func waitLocked<T>(_ take: () -> T?) throws(WorkerError) -> T {
        while true {
            if let found = take() { return found }
            if let failure { throw failure }
            if readerActive {
                sleepers += 1
                privsep_monitor_wait(lock)
                sleepers -= 1
                continue
            }
            readerActive = true
            privsep_monitor_unlock(lock)
            let outcome = receiveIncoming()
            privsep_monitor_lock(lock)
            deliverLocked(outcome)
        }
    }

    /// With `lock` held, by the reader once it is done reading: files what it received
    /// for the thread it is meant for, gives up the reader's role and wakes the threads
    /// waiting for a reply or for the role.
    private func deliverLocked(_ outcome: Result<Incoming, WorkerError>) {
        switch outcome {
        case .success(.reply(let box)):
            if waiting.contains(box.requestID) && !mailbox.contains(where: { $0.requestID == box.requestID }) {
                mailbox.append(box)
            } else {
                failure = .protocolError("reply to request \(box.requestID), which nobody is waiting for (or a second reply)")
            }
        case .success(.job(let job)):
            // The supervisor sends one job at a time, so the inbox holds at most one.
            if jobInbox.isEmpty {
                jobInbox.append(job)
            } else {
                failure = .protocolError("JOB \(job.id) arrived before the RESULT of JOB \(jobInbox[0].id)")
            }
        case .success(.closed):
            failure = .supervisorGone
        case .failure(let error):
            failure = error
        }
        releaseReaderRoleLocked()
    }

    /// With `lock` held: gives up the reader's role and wakes the threads waiting for a
    /// reply or for the role, if any.
    @inline(__always)
    private func releaseReaderRoleLocked() {
        readerActive = false
        if sleepers > 0 { privsep_monitor_broadcast(lock) }
    }

    private enum Incoming {
        case reply(ReplyBox)
        case job(JobBox)
        /// The supervisor closed the channel (it retires a pool worker this way).
        case closed
    }

    private func receiveIncoming() -> Result<Incoming, WorkerError> {
        do {
            return Self.incoming(try channel.receiveMessage(using: receiveScratch, maximumFileDescriptors: WireFormat.maximumFileDescriptors))
        } catch .peerClosed {
            return .success(.closed)
        } catch {
            return .failure(.protocolError("\(error)"))
        }
    }

    /// A received message, boxed for the thread it is meant for.
    private static func incoming(_ received: consuming ReceivedMessage) -> Result<Incoming, WorkerError> {
        switch received.envelope.message {
        case .reply(let reply):
            return .success(.reply(ReplyBox(requestID: received.envelope.requestID, reply: reply, fds: received.fileDescriptors)))
        case .job(let job):
            return .success(.job(JobBox(id: received.envelope.requestID, input: job.input, fds: received.fileDescriptors)))
        default:
            return .failure(.protocolError("expected REPLY or JOB, got \(received.envelope.message.type)"))
        }
    }

    // MARK: Pool jobs

    /// Waits for the next job from a ``WorkerPool``; nil once the supervisor has
    /// retired this worker (closed the channel), when the worker should exit.
    ///
    /// Answer each job with ``finish(_:status:output:)`` before asking for the next.
    public func nextJob() throws(WorkerError) -> Job? {
        privsep_monitor_lock(lock)
        defer { privsep_monitor_unlock(lock) }
        let box: JobBox
        do throws(WorkerError) {
            box = try waitLocked { jobInbox.isEmpty ? nil : jobInbox.removeFirst() }
        } catch .supervisorGone {
            return nil
        }
        return Job(id: box.id, input: box.input, fileDescriptors: box.takeDescriptors())
    }

    /// Sends the result of job `id`: status 0 for success, or the worker's own
    /// failure code (1...Int32.max). Output longer than one message goes in chunks.
    public func finish(_ id: UInt64, status: Int32 = 0, output: [UInt8]) throws(WorkerError) {
        guard status >= 0 else { throw .protocolError("a job's status is 0 or a positive failure code, not \(status)") }
        var start = 0
        repeat {
            let end = min(start + WireFormat.maximumJobBytes, output.count)
            let isLast = end == output.count
            let chunk = ResultChunk(status: isLast ? status : 0, isLast: isLast, output: Array(output[start..<end]))
            try sendOnly(.result(chunk), requestID: id)
            start = end
        } while start < output.count
    }

    /// Serves pool jobs until the supervisor retires this worker: calls `handler`
    /// for each and sends what it returns, or the ``JobRejection`` it throws, as
    /// the job's result. Returns normally when the worker should exit.
    ///
    /// ```swift
    /// try supervisor.serveJobs { job throws(JobRejection) in
    ///     guard let records = parse(job.fileDescriptors) else { throw JobRejection(code: 1, "not CSV") }
    ///     return Array("\(records.count) records".utf8)
    /// }
    /// ```
    public func serveJobs(_ handler: (consuming Job) throws(JobRejection) -> [UInt8]) throws(WorkerError) {
        while let job = try nextJob() {
            let id = job.id
            let status: Int32, output: [UInt8]
            do throws(JobRejection) {
                output = try handler(job)
                status = 0
            } catch {
                (status, output) = (error.code, error.message)
            }
            try finish(id, status: status, output: output)
        }
    }
}

private func truncatedForLog(_ message: String) -> String {
    var bytes = Array(message.utf8.filter { $0 != 0 })
    if bytes.count > WireFormat.maximumLogLength - 1 {
        bytes = Array(bytes[..<(WireFormat.maximumLogLength - 1)])
        // Do not cut a UTF-8 sequence in half.
        while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }
        if let last = bytes.last, last & 0xC0 == 0xC0 { bytes.removeLast() }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A reply waiting for the thread that asked.
private final class ReplyBox: @unchecked Sendable {
    let requestID: UInt64
    let reply: Reply
    private var fds: OwnedFileDescriptors
    init(requestID: UInt64, reply: Reply, fds: consuming OwnedFileDescriptors) {
        self.requestID = requestID
        self.reply = reply
        self.fds = fds
    }
    func takeDescriptors() -> OwnedFileDescriptors {
        var taken = OwnedFileDescriptors()
        swap(&taken, &fds)
        return taken
    }
}

/// A job that arrived while another thread was reading the channel.
private final class JobBox: @unchecked Sendable {
    let id: UInt64
    let input: [UInt8]
    private var fds: OwnedFileDescriptors
    init(id: UInt64, input: [UInt8], fds: consuming OwnedFileDescriptors) {
        self.id = id
        self.input = input
        self.fds = fds
    }
    func takeDescriptors() -> OwnedFileDescriptors {
        var taken = OwnedFileDescriptors()
        swap(&taken, &fds)
        return taken
    }
}

/// One job from a ``WorkerPool``, as a pool worker receives it.
public struct Job: ~Copyable {
    /// The supervisor's id for the job (the JOB's request id).
    public let id: UInt64
    /// The input bytes the embedder passed (at most ``WireFormat/maximumJobBytes``).
    public let input: [UInt8]
    /// The fds the embedder passed, in order; owned by the job.
    public var fileDescriptors: OwnedFileDescriptors
}

/// Thrown by a job handler to fail the job with the worker's own reason
/// (bad input, say) rather than a crash: the pool reports it as
/// `JobFailure.rejected(code:message:)` and the worker stays in service.
public struct JobRejection: Error, Sendable {
    /// 1...Int32.max; the embedder's to define.
    public var code: Int32
    public var message: [UInt8]
    public init(code: Int32 = 1, _ message: String) {
        self.code = max(code, 1)
        self.message = Array(message.utf8)
    }
}

/// open(2) flags for ``SupervisorConnection/open(_:_:mode:)``.
public struct OpenFlags: OptionSet, Sendable {
    public var rawValue: Int32
    @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }
    // Computed and inlinable, from swift-system's always-inlined constants: the caller's
    // code folds them. A `static let` is a lazily initialized global that every use reaches
    // through a call into this module and swift_once, two more pages of code for an open to
    // fault in when many workers take turns on a CPU (BENCHMARKS.md, fifth round).
    @inlinable public static var readOnly: OpenFlags { OpenFlags(rawValue: FileDescriptor.AccessMode.readOnly.rawValue) }
    @inlinable public static var writeOnly: OpenFlags { OpenFlags(rawValue: FileDescriptor.AccessMode.writeOnly.rawValue) }
    @inlinable public static var readWrite: OpenFlags { OpenFlags(rawValue: FileDescriptor.AccessMode.readWrite.rawValue) }
    @inlinable public static var create: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.create.rawValue) }
    @inlinable public static var exclusive: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.exclusiveCreate.rawValue) }
    @inlinable public static var truncate: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.truncate.rawValue) }
    @inlinable public static var append: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.append.rawValue) }
    @inlinable public static var nonBlocking: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.nonBlocking.rawValue) }
    @inlinable public static var directory: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.directory.rawValue) }
    @inlinable public static var noFollow: OpenFlags { OpenFlags(rawValue: FileDescriptor.OpenOptions.noFollow.rawValue) }
}

/// Why a worker-side call failed.
public enum WorkerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The supervisor refused, with the errno the syscall would have given.
    case denied(Errno)
    /// There is no usable channel (not started by a supervisor, or fd 3 is not the channel).
    case noChannel(String)
    /// The supervisor is gone (its end of the channel closed).
    case supervisorGone
    /// The supervisor sent something this protocol does not allow.
    case protocolError(String)
    /// The caller's request could not be put in a message (a path with a NUL byte, empty or
    /// too long; more fds than a message carries), so nothing was sent. The errno is the one
    /// the system call would give: ENAMETOOLONG for a string too long, EINVAL otherwise.
    case invalidArgument(Errno, String)
    /// A local system call failed.
    case system(String, Errno)
    /// A sandbox layer that was asked for cannot be applied.
    case lockdownFailed(String)

    public var description: String {
        switch self {
        case .denied(let errno): "\(errno)"
        case .noChannel(let why): "no supervisor channel: \(why)"
        case .supervisorGone: "the supervisor is gone"
        case .protocolError(let why): "protocol error: \(why)"
        case .invalidArgument(_, let why): "invalid argument: \(why)"
        case .system(let call, let errno): "\(call): \(errno)"
        case .lockdownFailed(let why): "lockdown failed: \(why)"
        }
    }

    /// The errno of a refusal or a failed call, if this is one.
    public var errno: Errno? {
        switch self {
        case .denied(let errno), .system(_, let errno), .invalidArgument(let errno, _): errno
        default: nil
        }
    }

    /// What a failed send means to the caller: the supervisor gone, an argument of its own
    /// that no message can carry, or the system call's error; never the supervisor's fault.
    init(sending error: ChannelError) {
        switch error {
        case .peerClosed: self = .supervisorGone
        case .malformed(.stringTooLong): self = .invalidArgument(.fileNameTooLong, "\(error)")
        case .malformed, .tooManyFileDescriptorsToSend: self = .invalidArgument(.invalidArgument, "\(error)")
        case .system(let errno): self = .system("sendmsg", errno)
        default: self = .protocolError("\(error)")
        }
    }
}
