import CPrivsepShims
import Dispatch
import Glibc
import Logging
public import PrivsepIPC
import Synchronization
import SystemPackage

/// One of the supervisor's serving threads: an epoll loop over the channel and
/// pidfd of every worker it serves, and the sockets of CONNECTs in progress. A
/// worker is served by one loop for its whole life (the one that spawned it).
///
/// Everything below `// MARK: Loop thread` runs on that thread only, so worker
/// state needs no locks; other threads reach it through ``submit(_:)`` and
/// ``call(_:)``. Nothing here blocks: sends are non-blocking (a worker that does
/// not read its replies gets back-pressure, then is killed), connects are
/// non-blocking, and opens are bounded by the filesystem.
final class EventLoop: @unchecked Sendable {
    enum Command: Sendable {
        case spawn(WorkerConfiguration, ActivePolicy, @Sendable (Result<WorkerHandle, SupervisorError>) -> Void)
        case stop(id: UInt64, grace: Double)
        case run(@Sendable (EventLoop) -> Void)
        case shutdown(grace: Double, @Sendable () -> Void)
    }

    private let epoll: OwnedFileDescriptor
    private let wakeup: OwnedFileDescriptor
    /// Commands for the loop thread, and whether it has ended (then nothing more is accepted).
    private let commands = Mutex(CommandQueue())
    private let auditor: Auditor
    private let supervisorPID = getpid()

    // Loop-thread state. What the loop reads and writes for every request skips Swift's
    // run-time exclusivity checks (`@exclusivity(unchecked)`, here and in WorkerRecord and
    // ChannelBox): only the loop thread touches it, in short reads and writes that never
    // overlap, and a check, which sees only its own thread's accesses, would guard nothing
    // more for its cost: four calls into the run-time per request (BENCHMARKS.md, fifth round).
    @exclusivity(unchecked) private var workers: [UInt64: WorkerRecord] = [:]
    @exclusivity(unchecked) private var registrations = TokenTable<Registration>()
    /// Worker ids, unique across every loop of the supervisor.
    private let workerIDs: WorkerIDSource
    /// Workers spawned here and not yet reaped, and places reserved for spawns not yet
    /// run: how loaded this loop is when a new worker needs one (read from any thread,
    /// so only approximately current).
    let load = Atomic<Int>(0)
    /// The thread's name: privsep-loop for the first, privsep-loop1... for the others
    /// (15 characters at most, the kernel's limit).
    private let threadName: String
    /// Who waits for the end of a shutdown: every caller, however many asked (nonempty once one has).
    @exclusivity(unchecked) private var shutdownWaiters: [@Sendable () -> Void] = []
    @exclusivity(unchecked) private var running = true
    /// Workers by their earliest deadline (handshake, wall clock, stop, throttle, parked
    /// replies, connects), so a due check looks only at the workers whose time has come.
    @exclusivity(unchecked) private var deadlines = DeadlineQueue<WorkerRecord>()
    /// When the pools' deadlines must next be checked; lowered by ``notePoolDeadline(_:)``.
    @exclusivity(unchecked) private var nextPoolCheck: UInt64 = .max
    /// When ``checkDeadlines(now:)`` must next run; `.max` while nothing is pending.
    private var nextDeadlineCheck: UInt64 { min(nextPoolCheck, deadlines.earliest) }
    /// Worker pools served by this loop.
    private var pools: [ObjectIdentifier: PoolCore] = [:]
    /// Run after the current batch of events, when the records they name are gone
    /// (so a worker's pidfd is closed before anyone learns it has exited).
    @exclusivity(unchecked) private var afterEvents: [() -> Void] = []
    /// Jobs of tasks that run on this loop as their executor, enqueued from this thread (a
    /// pool resuming its caller, say): run at the end of the turn, the batch there when it
    /// ends, so a task that keeps yielding cannot keep the loop from its events.
    @exclusivity(unchecked) private var taskJobs: [UnownedJob] = []
    /// Whether a task job is running on the loop thread: only such code, which runs between
    /// events, may have ``perform(_:)`` and ``call(_:)`` act at once (a log handler, which
    /// runs in the middle of an event, may not).
    @exclusivity(unchecked) private var runningTaskJob = false
    /// Names the loop whose thread is the current one, from the start of its run to its end:
    /// the thread-specific value is the loop's address. Unlike a `pthread_t`, which the
    /// system reuses once a thread has ended, it never names an ended loop.
    private static let threadKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create")
        return key
    }()
    /// Pool workers whose channels are read on the next turn even if epoll does not report
    /// them: their reading stopped short of EAGAIN (at the cap, or paused by back-pressure
    /// since lifted). A pool hands a worker its next job only once a read has found its
    /// channel empty, and an empty channel is never reported again. One reported anyway
    /// is read once that turn, not twice.
    @exclusivity(unchecked) private var readAgain: [UInt64] = []
    /// Counts the loop's turns, so a channel read in this one is not read again in it.
    @exclusivity(unchecked) private var turn: UInt64 = 0
    /// The monotonic clock when this turn's events came in: the token buckets refill to
    /// it, so a turn that serves many workers reads the clock once, not once per request.
    @exclusivity(unchecked) private var turnStarted: UInt64 = 0
    /// Every channel is read into this one buffer (loop thread only; a decoded message
    /// copies what it keeps).
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// Where the loop thread and the workers it spawns run.
    private let placement: PlacementPlan

    /// What an epoll token stands for. A registration names its worker's record itself, not
    /// its id: every registration of a worker is removed when its record leaves `workers`
    /// (``reap(_:)``, and a spawn that cannot watch it), so an event reaches its record
    /// without a second lookup, and ``WorkerRecord/isGone`` says if that ever did not hold.
    fileprivate enum Registration {
        case wakeup
        case channel(WorkerRecord)
        case pidfd(WorkerRecord)
        case connect(WorkerRecord, PendingConnectState)
    }

    init(auditor: Auditor, placement: PlacementPlan = .unmanaged, workerIDs: WorkerIDSource = WorkerIDSource(),
         index: Int = 0) throws(Errno) {
        threadName = index == 0 ? "privsep-loop" : "privsep-loop\(index)"
        epoll = OwnedFileDescriptor(adoptingRawValue: try system_epoll_create().get())
        wakeup = OwnedFileDescriptor(adoptingRawValue: try system_eventfd().get())
        self.auditor = auditor
        self.placement = placement
        self.workerIDs = workerIDs
        try system_epoll_ctl(epoll.unsafeRawValue, EPOLL_CTL_ADD, wakeup.unsafeRawValue, events: EPOLLIN.rawValue, data: 0).get()
        // Last, after everything that can throw: deinit frees it.
        receiveBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SeqpacketSocket.receiveScratchSize, alignment: 8)
        let wakeupToken = registrations.insert(.wakeup)
        precondition(wakeupToken == 0, "the wake-up fd is registered with token 0")
    }

    deinit { receiveBuffer.deallocate() }

    /// Starts the loop thread. The loop keeps itself alive until shutdown completes.
    /// Fails (EAGAIN: a thread limit) without starting anything.
    func start() throws(Errno) {
        let box = Unmanaged.passRetained(self)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        // Nobody joins the loop thread: detached, its stack goes when it ends.
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { context in
            let loop = Unmanaged<EventLoop>.fromOpaque(context!).takeRetainedValue()
            loop.run()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw Errno(rawValue: rc)
        }
    }

    private struct CommandQueue {
        var pending: [Command] = []
        var finished = false
    }

    /// Queues a command for the loop thread. False if the loop has ended: the
    /// command will never run (every command accepted before the end does run).
    @discardableResult
    func submit(_ command: Command) -> Bool {
        let accepted = commands.withLock { queue in
            if queue.finished { return false }
            queue.pending.append(command)
            return true
        }
        guard accepted else { return false }
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { system_write(wakeup.unsafeRawValue, $0) }
        return true
    }

    /// Whether this is the loop thread, while the loop runs (before its last commands).
    private var isLoopThread: Bool {
        pthread_getspecific(Self.threadKey) == Unmanaged.passUnretained(self).toOpaque()
    }

    /// Runs `body` now when called by a task on this loop's executor (between events), or
    /// queues it as ``submit(_:)`` does. False if the loop has ended.
    @discardableResult
    func perform(_ body: @escaping @Sendable (EventLoop) -> Void) -> Bool {
        if isLoopThread && runningTaskJob {
            body(self)
            return true
        }
        return submit(.run(body))
    }

    /// Runs `body` on the loop thread and returns its result, or nil if the loop has ended.
    /// Called by a task on this loop's executor, `body` runs at once. Must not be called from
    /// any other code on a loop thread: another loop's would stall its workers while it
    /// waits, and two loops waiting on each other would never wake; a log handler on this
    /// one would act in the middle of an event. `fromAnyThread`: the caller knows this loop
    /// waits on nothing (it has just started), so another loop's thread may wait for it.
    func call<T: Sendable>(fromAnyThread: Bool = false, _ body: @escaping @Sendable (EventLoop) -> T) -> T? {
        if let current = pthread_getspecific(Self.threadKey) {
            let here = current == Unmanaged.passUnretained(self).toOpaque()
            precondition(here ? runningTaskJob : fromAnyThread,
                         "a blocking Supervisor call (workers(), narrowPolicy, spawnBlocking) from a serving thread: "
                         + "from a task on a pool's executor it may only reach that pool's own serving thread")
            if here { return body(self) }
        }
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        guard submit(.run { loop in
            let value = body(loop)
            result.withLock { $0 = value }
            done.signal()
        }) else { return nil }
        done.wait()
        return result.withLock { $0 }
    }

    /// Whether the placement gives this loop's thread a CPU to move onto.
    var hasServingCPU: Bool { placement.servingCPU != nil }

    /// Loop thread, once, before anything is spawned: moves this thread onto the CPU
    /// the placement gives it.
    func moveOntoServingCPU() -> Result<Void, Errno> {
        guard let cpu = placement.servingCPU else { return .success(()) }
        return system_sched_setaffinity(CPUSet([cpu]))
    }

    // MARK: Loop thread

    private func run() {
        // Named so operators (top -H, perf) can tell the supervisor's serving threads apart.
        system_set_thread_name(threadName)
        pthread_setspecific(Self.threadKey, Unmanaged.passUnretained(self).toOpaque())
        let capacity = 128
        let events = UnsafeMutableBufferPointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while running {
            turn &+= 1
            var timeout: Int32 = -1
            var rereads: [UInt64] = []
            if !readAgain.isEmpty {
                swap(&rereads, &readAgain)
                // Cleared first: a cap met in this turn's reads queues the worker for the next.
                for id in rereads { workers[id]?.queuedToReadAgain = false }
                timeout = 0
            } else if !taskJobs.isEmpty {
                timeout = 0
            } else if case let next = nextDeadlineCheck, next != .max {
                // The clock is read only while a deadline is pending: a running worker
                // without one costs no clock reads per request here.
                let now = system_clock_monotonic()
                timeout = next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, 60_000))
            }
            let count: Int
            switch system_epoll_wait(epoll.unsafeRawValue, events, timeoutMilliseconds: timeout) {
            case .success(let n): count = n
            case .failure(let errno): fatalError("epoll_wait: \(errno)") // EBADF/EINVAL: a bug, not an environment error
            }
            turnStarted = system_clock_monotonic()
            for index in 0..<count {
                let token = events[index].data.u64
                let flags = events[index].events
                // nil: removed earlier in this batch (the token's generation is gone).
                guard let registration = registrations[token] else { continue }
                switch registration {
                case .wakeup: drainCommands()
                case .channel(let record): if !record.isGone { channelReady(record, flags: flags, othersReady: count > 1) }
                case .pidfd(let record): if !record.isGone { reap(record) }
                case .connect(let record, let pending): if !record.isGone { connectReady(record, pending, token: token) }
                }
            }
            for id in rereads {
                guard let record = workers[id], record.lastReadTurn != turn else { continue }
                channelReady(record, flags: EPOLLIN.rawValue, othersReady: false)
            }
            runAfterEvents()
            if !taskJobs.isEmpty {
                runTaskJobs()
                runAfterEvents()
            }
            if case let next = nextDeadlineCheck, next != .max {
                let after = system_clock_monotonic()
                if after >= next {
                    checkDeadlines(now: after)
                    // What the checks left for after events (a pool's JOB that found its
                    // worker's channel closed, say) runs now, not a turn later.
                    runAfterEvents()
                }
            }
            if !shutdownWaiters.isEmpty, workers.isEmpty {
                running = false
                for done in shutdownWaiters { done() }
            }
        }
        // Commands that came in before the end still run, here, so no caller waits forever;
        // from now on nothing runs inline or joins `taskJobs` (see `enqueue`).
        pthread_setspecific(Self.threadKey, nil)
        let late = commands.withLock { queue in
            queue.finished = true
            defer { queue.pending = [] }
            return queue.pending
        }
        for command in late {
            switch command {
            case .spawn(_, _, let completion):
                load.subtract(1, ordering: .relaxed) // reserved by the supervisor, never spawned
                completion(.failure(.shuttingDown))
            case .stop: break
            case .run(let body): body(self)
            case .shutdown(_, let done): done()
            }
        }
        // Tasks resumed here in the last turn; what they enqueue from now on goes to Swift's
        // global executor.
        runTaskJobs()
    }

    private func runTask(_ job: UnownedJob, on executor: UnownedTaskExecutor) {
        let outer = runningTaskJob
        runningTaskJob = true
        job.runSynchronously(on: executor)
        runningTaskJob = outer
    }

    private func runAfterEvents() {
        while !afterEvents.isEmpty {
            let actions = afterEvents
            afterEvents = []
            for action in actions { action() }
        }
    }

    /// Runs the task jobs queued when this is called; those they queue wait for the next turn.
    private func runTaskJobs() {
        let executor = asUnownedTaskExecutor()
        let batch = taskJobs.count
        for index in 0..<batch {
            // Copied out first: the job may append to the list while it runs.
            let job = taskJobs[index]
            runTask(job, on: executor)
        }
        taskJobs.removeFirst(batch)
    }

    private func drainCommands() {
        var counter: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &counter) { system_read(wakeup.unsafeRawValue, $0) }
        let pending = commands.withLock { queue in
            defer { queue.pending = [] }
            return queue.pending
        }
        for command in pending {
            switch command {
            case .spawn(let configuration, let policy, let completion):
                completion(spawn(configuration, policy))
            case .stop(let id, let grace):
                if let record = workers[id] { stop(record, grace: grace) }
            case .run(let body):
                body(self)
            case .shutdown(let grace, let done):
                shutdownWaiters.append(done)
                for pool in pools.values { pool.supervisorShuttingDown() }
                for record in workers.values { stop(record, grace: grace) }
            }
        }
    }

    /// Makes sure the worker is looked at by `deadline` (see ``DeadlineQueue``).
    private func noteDeadline(_ record: WorkerRecord, _ deadline: UInt64) {
        // A reaped worker has nothing left to wait for, and would only sit in the queue.
        guard !record.isGone else { return }
        deadlines.schedule(record, at: deadline)
    }

    private func register(_ fd: Int32, _ registration: Registration, events: UInt32) -> UInt64? {
        let token = registrations.insert(registration)
        guard case .success = system_epoll_ctl(epoll.unsafeRawValue, EPOLL_CTL_ADD, fd, events: events, data: token) else {
            registrations.remove(token)
            return nil
        }
        return token
    }

    private func unregister(_ fd: Int32, token: UInt64) {
        precondition(token != 0, "token 0 is the wake-up fd's")
        _ = system_epoll_ctl(epoll.unsafeRawValue, EPOLL_CTL_DEL, fd, events: 0, data: 0)
        registrations.remove(token)
    }

    // MARK: Spawning


    /// Spawns a worker, whose place in ``load`` the caller has reserved: a failed spawn
    /// gives it back, a spawned worker gives it back when reaped. Loop thread only
    /// (``submit(_:)`` or ``call(_:)`` bodies).
    func spawn(_ configuration: WorkerConfiguration, _ policy: ActivePolicy) -> Result<WorkerHandle, SupervisorError> {
        let result = startWorker(configuration, policy)
        if case .failure = result { load.subtract(1, ordering: .relaxed) }
        return result
    }

    private func startWorker(_ configuration: WorkerConfiguration, _ policy: ActivePolicy) -> Result<WorkerHandle, SupervisorError> {
        if !shutdownWaiters.isEmpty { return .failure(.shuttingDown) }
        let process: SpawnedProcess
        do { process = try spawnWorker(configuration, placement: placement) } catch {
            return .failure(.spawnFailed(error.description))
        }
        if let problem = process.placementProblem {
            auditor.log(.warning, "\(configuration.name): spawned without its placement: \(problem)")
        }
        let id = workerIDs.next()
        let handle = WorkerHandle(id: id, pid: process.pid, name: configuration.name, policy: configuration.policy, loop: self)
        let now = system_clock_monotonic()
        let record = WorkerRecord(id: id, configuration: configuration, policy: policy, handle: handle,
                                  pid: process.pid, pidfd: process.pidfd, channel: process.channel, now: now)
        // Read after the spawn returned, so after the child's exec: an upper bound of what it inherited.
        record.inheritedPeakBound = system_own_peak_resident_bytes()
        workers[id] = record
        record.channelToken = register(record.channel!.socket.unsafeRawValue, .channel(record), events: EPOLLIN.rawValue)
        record.pidfdToken = register(record.pidfd.unsafeRawValue, .pidfd(record), events: EPOLLIN.rawValue)
        guard record.channelToken != nil, record.pidfdToken != nil else {
            // Without both registrations the worker could be neither served nor reaped: end it here.
            record.killReason = .spawnFailed("cannot watch the worker (epoll_ctl failed)")
            _ = system_pidfd_send_signal(record.pidfd.unsafeRawValue, SIGKILL)
            _ = system_waitid_pidfd(record.pidfd.unsafeRawValue, nonBlocking: false)
            closeChannel(record)
            if let token = record.pidfdToken { unregister(record.pidfd.unsafeRawValue, token: token) }
            workers[id] = nil
            record.isGone = true
            handle.finish(record.killReason!)
            return .failure(.spawnFailed("cannot watch the worker (epoll_ctl failed)"))
        }
        noteDeadline(record, record.handshakeDeadline)
        if let deadline = record.wallClockDeadline { noteDeadline(record, deadline) }
        audit(record, event: "SPAWN", detail: ([configuration.executable] + configuration.arguments).joined(separator: " "))
        return .success(handle)
    }

    // MARK: Serving

    private func channelReady(_ record: WorkerRecord, flags: UInt32, othersReady: Bool) {
        if flags & EPOLLOUT.rawValue != 0 { flushParked(record) }
        guard flags & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 else { return }
        if !record.reading && flags & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            // Hang-up is level-triggered even with reading paused: the peer is gone.
            scanLastMessages(record)
            channelClosedByWorker(record)
            return
        }
        // At most a few messages per wake-up, so one busy worker cannot starve the others;
        // the level-triggered registration brings the loop back for the rest. When other
        // channels are ready too, one message each: a worker that waits for its reply has
        // sent nothing more, so a second read would only find EAGAIN (measured at 4 workers:
        // 0.8 failed recvmsg per request). A pool needs to see EAGAIN (its drained signal),
        // so pool workers are read on, and read again next turn if the cap comes first
        // (``readAgain``). A worker alone is read on too: sharing a CPU with this thread, it
        // runs as soon as the reply wakes it and has sent its next request by the time this
        // thread reads again (measured: 20,000 opens took 665 epoll_waits and 47 EAGAINs;
        // one read per wake-up cost 0.5 µs more per open).
        record.lastReadTurn = turn
        let reads = othersReady && record.pool == nil ? 1 : max(record.configuration.caps.messagesPerTurn, 1)
        for _ in 0..<reads {
            guard record.channel != nil, record.reading else { return }
            let received: ReceivedMessage
            do {
                // One fd at most (a LISTENER's); the decoder refuses fds on every other type.
                // The channel is not retained for the receive, which cannot close it (what
                // follows, which can, no longer uses it).
                let request = try withoutRetaining(.passUnretained(record.channel.unsafelyUnwrapped)) { channel in
                    Result { () throws(ChannelError) in
                        try channel.socket.receiveRequest(using: receiveBuffer, maximumFileDescriptors: 1, nonBlocking: true)
                    }
                }.get()
                switch consume request {
                case .open(let open):
                    // Served while its path still lies in the receive buffer (no String, no Envelope).
                    if !consumeToken(record) { return }
                    serveOpen(record, open)
                    continue
                case .message(let message):
                    received = message
                }
            } catch .system(.resourceTemporarilyUnavailable) {
                record.pool?.channelDrained(record.id)
                return
            } catch .peerClosed {
                if record.phase == .handshake && record.killReason == nil {
                    kill(record, .handshakeFailed("closed its channel before HELLO"))
                } else {
                    channelClosedByWorker(record)
                }
                return
            } catch .malformed(let error) {
                kill(record, .protocolViolation("\(error)"))
                return
            } catch .fileDescriptorsNotInstalled where record.configuration.learning || record.configuration.intercept {
                // Its LISTENER's fd found no free number here: the supervisor's shortage, not a
                // malformed message (the worker still cannot go on without its listener served).
                kill(record, .resourceCapExceeded("the supervisor had no free file descriptor to receive its seccomp listener"))
                return
            } catch {
                kill(record, .protocolViolation("\(error)"))
                return
            }
            if !consumeToken(record) { return }
            var fds = received.fileDescriptors
            if case .listener(let announcement) = received.envelope.message, let listener = fds.take(at: 0) {
                if announcement.purpose == .intercept || record.configuration.intercept {
                    adoptInterceptListener(record, listener, announcement.purpose, requestID: received.envelope.requestID)
                } else {
                    adoptListener(record, listener)
                }
                continue
            }
            handle(record, received.envelope, sender: received.senderCredentials)
        }
        // The cap ended these reads, not EAGAIN: the pool has not seen this channel empty.
        readAgainNextTurn(record)
    }

    /// Queues a pool worker's channel for ``readAgain``, once.
    private func readAgainNextTurn(_ record: WorkerRecord) {
        guard record.pool != nil, !record.queuedToReadAgain else { return }
        record.queuedToReadAgain = true
        readAgain.append(record.id)
    }

    private func handle(_ record: WorkerRecord, _ envelope: Envelope, sender: PeerCredentials?) {
        if record.phase == .handshake {
            guard case .hello(let hello) = envelope.message else {
                kill(record, .protocolViolation("\(envelope.message.type) before HELLO"))
                return
            }
            guard let sender, sender.processID == record.pid else {
                kill(record, .handshakeFailed("HELLO sent by pid \(sender.map { "\($0.processID)" } ?? "unknown"), not the spawned pid \(record.pid)"))
                return
            }
            guard hello.processID == record.pid else {
                kill(record, .handshakeFailed("HELLO claims pid \(hello.processID), the worker is pid \(record.pid)"))
                return
            }
            record.phase = .running
            // Identified: later messages need no credentials attached.
            record.channel?.disableSenderCredentials()
            send(record, Envelope(requestID: envelope.requestID, .welcome(Welcome(supervisorProcessID: supervisorPID, workerID: record.id))),
                 fds: OwnedFileDescriptors())
            if record.configuration.requiredLayers.isEmpty { record.pool?.workerReady(record.id) }
            return
        }
        let requestID = envelope.requestID
        switch envelope.message {
        case .open(let request):
            // Running workers' OPENs are served by serveOpen, in place; it passes on only one
            // sent before HELLO, refused above. Served here all the same, should one come.
            guard admitRequest(record, requestID) else { return }
            reply(record, requestID, event: "OPEN", detail: "\(request.path) \(describeOpenFlags(request.flags))",
                  request: envelope.message, record.policy.open(request, requester: ActivePolicy.Requester(process: record.pid, thread: record.pid)))
        case .socket(let request):
            guard admitRequest(record, requestID) else { return }
            reply(record, requestID, event: "SOCKET", detail: "domain \(request.domain) type \(request.type) protocol \(request.protocol)",
                  request: envelope.message, record.policy.socket(request))
        case .bind(let request):
            guard admitRequest(record, requestID) else { return }
            reply(record, requestID, event: "BIND", detail: "\(request.address) type \(request.type)", request: envelope.message,
                  record.policy.bind(request))
        case .connect(let request):
            guard admitRequest(record, requestID) else { return }
            startConnect(record, requestID, request)
        case .log(let line):
            log(line, from: record)
        case .violation(let report):
            record.violation = report
            kill(record, .seccompViolation(SyscallViolation(report)))
        case .sandboxStatus(let status):
            // The first report is part of the worker's start; it may send more (a tighter
            // lockdown applied later), as often as it likes, so those share its audit budget.
            let repeated = record.sandbox != nil
            record.sandbox = status
            record.handle.recordSandbox(status)
            let missing = SandboxLayers(rawValue: (status.requested.rawValue | record.configuration.requiredLayers.rawValue) & ~status.active.rawValue)
            // What the policy requires is checked against the kernel's view, once (see sandboxContradiction).
            let contradiction = missing.isEmpty && !repeated
                ? sandboxContradiction(pid: record.pid, claimed: record.configuration.requiredLayers) : nil
            if !missing.isEmpty {
                kill(record, .sandboxIncomplete("layers \(layerNames(missing)) requested but not active"))
            } else if let contradiction {
                kill(record, .sandboxIncomplete("reported \(layerNames(record.configuration.requiredLayers)) in force, but \(contradiction)"))
            } else {
                audit(record, event: "SANDBOX", detail: layerNames(status.active) + (status.landlockABI > 0 ? " (Landlock ABI \(status.landlockABI))" : ""),
                      budgeted: repeated)
                if !record.configuration.requiredLayers.isEmpty { record.pool?.workerReady(record.id) }
            }
        case .listener:
            break // handled with its fd in channelReady
        case .result(let chunk):
            guard let pool = record.pool else {
                kill(record, .protocolViolation("RESULT from a worker that is not in a pool"))
                return
            }
            if let reason = pool.received(chunk, requestID: envelope.requestID, from: record.id) { kill(record, reason) }
        case .hello:
            kill(record, .protocolViolation("second HELLO"))
        case .welcome, .reply, .job:
            kill(record, .protocolViolation("\(envelope.message.type) is sent by the supervisor, never by a worker"))
        }
    }

    /// An OPEN decoded in place (``handle(_:_:sender:)`` serves the rest).
    @inline(__always) // per request: part of channelReady's one stretch of code
    private func serveOpen(_ record: WorkerRecord, _ open: InPlaceOpenRequest) {
        guard record.phase == .running else {
            handle(record, Envelope(requestID: open.requestID, .open(open.request)), sender: nil) // refused there, as before HELLO
            return
        }
        guard admitRequest(record, open.requestID) else { return }
        let requester = ActivePolicy.Requester(process: record.pid, thread: record.pid)
        let decision = withoutRetaining(.passUnretained(record.policy)) { policy in
            policy.open(path: open.path, flags: open.flags, requester: requester)
        }
        func detail() -> String { "\(String(decoding: open.path, as: UTF8.self)) \(describeOpenFlags(open.flags))" }
        switch consume decision {
        case .granted(let fd, let rule):
            replyGranted(record, open.requestID, event: "OPEN", detail: detail(), request: .open(open.request), fd,
                         reason: record.policy.grantReason(rule: rule))
        case .denied(let errno, let reason):
            replyDenied(record, open.requestID, event: "OPEN", detail: detail(), request: .open(open.request), errno, reason: reason)
        }
    }

    private func log(_ line: LogLine, from record: WorkerRecord) {
        let level: Logger.Level = switch line.level {
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        case .error: .error
        }
        // The worker chooses how often it logs: its lines share its audit budget.
        guard auditor.loggerLevel <= level, admitAudit(record, isDenial: false) else { return }
        auditor.log(level, "\(record.configuration.name)[\(record.pid)]: \(printable(line.message))", metadata: ["worker": "\(record.id)"],
                    essential: false)
    }

    /// Checks a request may be served now: the required sandbox layers are
    /// reported, its id is not already in flight.
    private func admitRequest(_ record: WorkerRecord, _ requestID: UInt64) -> Bool {
        if !record.configuration.requiredLayers.isEmpty && record.sandbox == nil {
            kill(record, .sandboxIncomplete("request before SANDBOX_STATUS; required layers: \(layerNames(record.configuration.requiredLayers))"))
            return false
        }
        // Empty but for connects in progress: skip hashing the id for every other request.
        if !record.pendingRequestIDs.isEmpty && record.pendingRequestIDs.contains(requestID) {
            kill(record, .protocolViolation("request id \(requestID) is already in flight"))
            return false
        }
        return true
    }

    private func reply(_ record: WorkerRecord, _ requestID: UInt64, event: String, detail: @autoclosure () -> String,
                       request: @autoclosure () -> Message? = nil, _ result: consuming BrokerResult) {
        switch consume result {
        case .granted(let fd, let reason):
            replyGranted(record, requestID, event: event, detail: detail(), request: request(), fd, reason: reason)
        case .denied(let errno, let reason):
            replyDenied(record, requestID, event: event, detail: detail(), request: request(), errno, reason: reason)
        }
    }

    /// Hands `fd` to the worker, within its cap; `reason` is read only for a record.
    private func replyGranted(_ record: WorkerRecord, _ requestID: UInt64, event: String, detail: @autoclosure () -> String,
                              request: @autoclosure () -> Message?, _ fd: consuming OwnedFileDescriptor,
                              reason: @autoclosure () -> String) {
        guard record.fileDescriptorsHandedOut < record.configuration.caps.fileDescriptorsHandedOut else {
            audit(record, event: event, detail: detail(), decision: "denied", errno: .tooManyOpenFiles,
                  reason: "cap of \(record.configuration.caps.fileDescriptorsHandedOut) fds handed out reached", request: request())
            sendReply(record, requestID, .failure(.tooManyOpenFiles), fds: OwnedFileDescriptors())
            return
        }
        record.fileDescriptorsHandedOut += 1
        if auditor.wants(.debug) {
            audit(record, event: event, detail: detail(), decision: "granted", reason: reason(), request: request())
        }
        sendReply(record, requestID, .success(fileDescriptorCount: 1), fds: OwnedFileDescriptors(fd))
    }

    private func replyDenied(_ record: WorkerRecord, _ requestID: UInt64, event: String, detail: @autoclosure () -> String,
                             request: @autoclosure () -> Message?, _ errno: Errno, reason: String) {
        audit(record, event: event, detail: detail(), decision: "denied", errno: errno, reason: reason, request: request())
        sendReply(record, requestID, .failure(errno), fds: OwnedFileDescriptors())
    }

    private func startConnect(_ record: WorkerRecord, _ requestID: UInt64, _ request: AddressRequest) {
        switch record.policy.startConnect(request) {
        case .finished(let result):
            reply(record, requestID, event: "CONNECT", detail: "\(request.address) type \(request.type)", request: .connect(request), result)
        case .inProgress(let socket):
            let detail = "\(request.address) type \(request.type)"
            let raw = socket.unsafeRawValue
            let deadline = system_clock_monotonic() + nanoseconds(record.configuration.caps.connectTimeoutSeconds)
            let pending = PendingConnectState(requestID: requestID, detail: detail, deadline: deadline, socket: socket,
                                              requestedType: request.type, address: request.address)
            guard let token = register(raw, .connect(record, pending), events: EPOLLOUT.rawValue) else {
                reply(record, requestID, event: "CONNECT", detail: detail, .denied(.noMemory, "epoll registration failed"))
                return
            }
            pending.token = token
            record.pending[token] = pending
            noteDeadline(record, deadline)
            record.pendingRequestIDs.insert(requestID)
            updateInterest(record)
        }
    }

    private func connectReady(_ record: WorkerRecord, _ pending: PendingConnectState, token: UInt64) {
        guard let connect = pending.take() else { return }
        unregister(connect.socket.unsafeRawValue, token: token)
        record.pending[token] = nil
        record.pendingRequestIDs.remove(pending.requestID)
        reply(record, pending.requestID, event: "CONNECT", detail: pending.detail,
              request: .connect(AddressRequest(type: pending.requestedType, address: pending.address)), record.policy.finishConnect(connect))
        updateInterest(record)
    }

    /// Sends without blocking. A full queue (the worker is not reading its
    /// replies) parks the reply and stops reading the worker's requests.
    private func send(_ record: WorkerRecord, _ envelope: Envelope, fds: consuming OwnedFileDescriptors) {
        guard let channel = record.channel else { return }
        if record.parked.isEmpty {
            // Encoded on the stack and sent by one call into PrivsepIPC (its generics are
            // specialized there, not instantiated here at run time, per message).
            do throws(ChannelError) {
                try channel.socket.send(envelope, passing: fds, flags: privsep_MSG_DONTWAIT)
                return
            } catch {
                guard mustPark(record, afterFailing: error, carryingFileDescriptors: !fds.isEmpty, envelope) else { return }
            }
        }
        park(record, envelope, fds: fds)
    }

    /// ``send(_:_:fds:)`` for a REPLY, sent from its parts: no `Envelope` is built unless
    /// the reply has to be parked (see BENCHMARKS.md, fifth round).
    private func sendReply(_ record: WorkerRecord, _ requestID: UInt64, _ reply: Reply, fds: consuming OwnedFileDescriptors) {
        guard record.channel != nil else { return }
        if record.parked.isEmpty {
            let failure = withoutRetaining(.passUnretained(record.channel.unsafelyUnwrapped)) { (channel) -> ChannelError? in
                do throws(ChannelError) {
                    try channel.socket.sendReply(requestID: requestID, reply, passing: fds, flags: privsep_MSG_DONTWAIT)
                    return nil
                } catch {
                    return error
                }
            }
            guard let failure else { return }
            if reply.fileDescriptorCount > 0, Self.kernelRefusedToPassFileDescriptors(failure) {
                // Not the worker's doing (it may be others' unread replies, all charged to this
                // process): the request fails, its fd is closed here, and the worker goes on.
                _ = consume fds
                return answerUnpassable(record, requestID, failure)
            }
            guard mustPark(record, afterFailing: failure, carryingFileDescriptors: reply.fileDescriptorCount > 0,
                           Envelope(requestID: requestID, .reply(reply))) else { return }
        }
        park(record, Envelope(requestID: requestID, .reply(reply)), fds: fds)
    }

    /// Answers request `requestID` EMFILE in place of a reply whose fd the kernel would not
    /// pass (its fd already closed), with the fd no longer counted as handed out.
    private func answerUnpassable(_ record: WorkerRecord, _ requestID: UInt64, _ failure: ChannelError) {
        noteUnpassable(record, requestID, failure)
        sendReply(record, requestID, .failure(.tooManyOpenFiles), fds: OwnedFileDescriptors())
    }

    /// Records that request `requestID`'s fd was not passed after all, and counts it no more.
    private func noteUnpassable(_ record: WorkerRecord, _ requestID: UInt64, _ failure: ChannelError) {
        record.fileDescriptorsHandedOut -= 1
        audit(record, event: "REPLY", detail: "request \(requestID)", decision: "denied", errno: .tooManyOpenFiles,
              reason: "its fd could not be passed (\(failure)): the supervisor's fds in flight to workers are at its limit")
    }

    /// Whether a send failed because the kernel would not take its fds now: every fd in a
    /// worker's unread receive queue is charged to this process's user, and past its
    /// RLIMIT_NOFILE (without CAP_SYS_RESOURCE) any send with fds fails ETOOMANYREFS; memory
    /// for the control data can run short too.
    static func kernelRefusedToPassFileDescriptors(_ error: ChannelError) -> Bool {
        switch error {
        case .system(.tooManyReferences), .system(.noBufferSpace), .system(.noMemory): true
        default: false
        }
    }

    /// Why a worker whose JOB or parked reply could not carry its fds is ended: not its fault.
    static func fileDescriptorsNotPassed(_ error: ChannelError) -> ExitReason {
        .resourceCapExceeded("a message's fds could not be passed to it (\(error)): the supervisor's fds in flight "
                             + "to workers are at its RLIMIT_NOFILE")
    }

    /// Deals with a failed send of `envelope`: true if the queue was full and the message
    /// is to be parked; otherwise the worker's channel is closed or the worker stopped.
    private func mustPark(_ record: WorkerRecord, afterFailing error: ChannelError, carryingFileDescriptors: Bool,
                          _ envelope: @autoclosure () -> Envelope) -> Bool {
        switch error {
        case .system(.resourceTemporarilyUnavailable):
            return true
        case .peerClosed:
            channelClosedByWorker(record)
        case .malformed(let error):
            refuseOwnMessage(record, envelope(), error)
        case let error where carryingFileDescriptors && Self.kernelRefusedToPassFileDescriptors(error):
            // A JOB's fds (a REPLY's are answered EMFILE instead): the worker cannot be given
            // its job, through no fault of its own.
            kill(record, Self.fileDescriptorsNotPassed(error))
        default:
            kill(record, .protocolViolation("reply could not be sent: \(error)"))
        }
        return false
    }

    /// Queues `envelope` (and its fds) for when the worker's channel is writable again.
    private func park(_ record: WorkerRecord, _ envelope: Envelope, fds: consuming OwnedFileDescriptors) {
        let bytes: [UInt8]
        do {
            bytes = try WireCodec.encode(envelope)
        } catch {
            return refuseOwnMessage(record, envelope, error)
        }
        if record.parked.count > record.configuration.caps.requestsInFlight {
            kill(record, .resourceCapExceeded("not reading its replies"))
            return
        }
        if record.parked.isEmpty {
            let now = system_clock_monotonic()
            record.parkedSince = now
            noteDeadline(record, now + nanoseconds(record.configuration.caps.replyStallSeconds))
        }
        let replyTo: UInt64? = if case .reply = envelope.message { envelope.requestID } else { nil }
        record.parked.append(ParkedReply(bytes: bytes, fds: fds, replyTo: replyTo))
        updateInterest(record)
    }

    /// A message this supervisor built that breaks the protocol (a bug here, or a JOB an
    /// embedder made inconsistent): logged as the supervisor's error and not sent. The
    /// worker, left waiting for it, is stopped rather than blamed.
    private func refuseOwnMessage(_ record: WorkerRecord, _ envelope: Envelope, _ error: ProtocolError) {
        auditor.log(.error, "supervisor built an invalid \(envelope.message.type) for worker \(record.id): \(error)")
        kill(record, .stoppedBySupervisor)
    }

    private func flushParked(_ record: WorkerRecord) {
        guard let channel = record.channel else { return }
        while let first = record.parked.first {
            let result = first.bytes.withUnsafeBytes { buffer in
                Result { () throws(ChannelError) in
                    try first.fds.withUnsafeRawValues { (raw) throws(ChannelError) in
                        try channel.socket.unsafeSend(buffer, passingRawValues: raw, flags: privsep_MSG_DONTWAIT)
                    }
                }
            }
            switch result {
            case .success: record.parked.removeFirst()
            case .failure(.system(.resourceTemporarilyUnavailable)): return
            case .failure(.peerClosed): channelClosedByWorker(record); return
            case .failure(let error) where !first.fds.isEmpty && Self.kernelRefusedToPassFileDescriptors(error):
                guard let requestID = first.replyTo,
                      let failure = try? WireCodec.encode(Envelope(requestID: requestID, .reply(.failure(.tooManyOpenFiles)))) else {
                    kill(record, Self.fileDescriptorsNotPassed(error)); return
                }
                // As for a reply sent at once: EMFILE in its place, its fd closed, and try again.
                first.bytes = failure
                first.fds = OwnedFileDescriptors()
                noteUnpassable(record, requestID, error)
            case .failure(let error): kill(record, .protocolViolation("reply could not be sent: \(error)")); return
            }
        }
        record.parkedSince = nil
        updateInterest(record)
    }

    /// Token bucket: false (and reading paused) when the worker is over its rate.
    @inline(__always) // per request: part of channelReady's one stretch of code
    private func consumeToken(_ record: WorkerRecord) -> Bool {
        let caps = record.configuration.caps
        // A worker spawned during this turn has a later lastRefill than the turn's start.
        let now = max(turnStarted, record.lastRefill)
        let elapsed = Double(now - record.lastRefill) / 1e9
        record.lastRefill = now
        // A burst under 1 would throttle every message, however slow the worker.
        let burst = Double(max(caps.messageBurst, 1))
        record.tokens = min(burst, record.tokens + elapsed * Double(caps.messagesPerSecond))
        if record.tokens >= 1 {
            record.tokens -= 1
            // More than half the burst left: the worker is back under its rate.
            if record.tokens > burst / 2 { record.throttledSince = nil }
            return true
        }
        // This message is served (it was already read); then reading pauses. A flood holds the
        // worker back throttle after throttle, its next message there as soon as reading
        // resumes: a throttle that begins well after the last one ended starts a flood of its
        // own. (A burst of 1 or 2 never leaves more than half of it, so that alone would
        // count a throttle minutes later from the first.)
        record.tokens -= 1
        if let ended = record.lastThrottleEnded, now > ended, Double(now - ended) / 1e9 > Self.floodGapSeconds {
            record.throttledSince = nil
        }
        if record.throttledSince == nil { record.throttledSince = now }
        let until = now + nanoseconds((1 - record.tokens) / Double(max(caps.messagesPerSecond, 1)))
        record.throttledUntil = until
        noteDeadline(record, until)
        updateInterest(record)
        return true
    }

    /// Reading is on unless throttled, replies are parked, or too many requests are in flight;
    /// writability is watched only while replies are parked.
    private func updateInterest(_ record: WorkerRecord) {
        guard let channel = record.channel else { return }
        let reading = record.throttledUntil == nil && record.parked.isEmpty
            && record.pending.count < record.configuration.caps.requestsInFlight
        let writing = !record.parked.isEmpty
        guard reading != record.reading || writing != record.writing else { return }
        if reading && !record.reading { readAgainNextTurn(record) }
        record.reading = reading
        record.writing = writing
        let events = (reading ? EPOLLIN.rawValue : 0) | (writing ? EPOLLOUT.rawValue : 0)
        guard let token = record.channelToken else { return }
        _ = system_epoll_ctl(epoll.unsafeRawValue, EPOLL_CTL_MOD, channel.socket.unsafeRawValue, events: events, data: token)
    }

    // MARK: Learning mode

    private func adoptListener(_ record: WorkerRecord, _ listener: consuming OwnedFileDescriptor) {
        guard record.phase == .running else {
            kill(record, .protocolViolation("LISTENER before HELLO"))
            return
        }
        guard record.configuration.learning else {
            kill(record, .protocolViolation("LISTENER sent, but this worker is not in learning mode"))
            return
        }
        guard record.learning == nil else {
            kill(record, .protocolViolation("second LISTENER"))
            return
        }
        guard system_readlink("/proc/self/fd/\(listener.unsafeRawValue)") == "anon_inode:seccomp notify" else {
            kill(record, .protocolViolation("the fd sent with LISTENER is not a seccomp listener"))
            return
        }
        guard let server = try? LearningServer(listener: listener, handle: record.handle, auditor: auditor),
              server.start(on: placement.helperThreadCPUs) else {
            kill(record, .resourceCapExceeded("cannot start the thread serving the seccomp listener"))
            return
        }
        record.learning = server
        audit(record, event: "LEARN", reason: "learning mode: calls outside the filter are recorded and allowed")
    }

    // MARK: Intercept mode

    /// Takes the seccomp listener of an intercepted worker (LISTENER, purpose intercept),
    /// starts the thread that serves it under the worker's policy, and sends the go-ahead
    /// (an empty REPLY to the LISTENER) after which the helper execs the program.
    private func adoptInterceptListener(_ record: WorkerRecord, _ listener: consuming OwnedFileDescriptor,
                                        _ purpose: ListenerAnnouncement.Purpose, requestID: UInt64) {
        guard record.phase == .running else {
            kill(record, .protocolViolation("LISTENER before HELLO"))
            return
        }
        guard record.configuration.intercept, purpose == .intercept else {
            kill(record, .protocolViolation(record.configuration.intercept
                ? "a learning-mode LISTENER from a worker in intercept mode"
                : "an intercept LISTENER from a worker not spawned in intercept mode"))
            return
        }
        guard record.intercept == nil else {
            kill(record, .protocolViolation("second LISTENER"))
            return
        }
        guard system_readlink("/proc/self/fd/\(listener.unsafeRawValue)") == "anon_inode:seccomp notify" else {
            kill(record, .protocolViolation("the fd sent with LISTENER is not a seccomp listener"))
            return
        }
        // A duplicate of the pidfd: the serving thread kills the program with it if it must stop.
        guard case .success(let pidfd) = system_fcntl(record.pidfd.unsafeRawValue, F_DUPFD_CLOEXEC, 3) else {
            kill(record, .resourceCapExceeded("cannot duplicate the worker's pidfd for its serving thread"))
            return
        }
        let server = InterceptServer(listener: listener, policy: record.policy, auditor: auditor,
                                     workerID: record.id, workerName: record.configuration.name, workerPid: record.pid,
                                     identity: record.configuration.interceptIdentity,
                                     connectTimeout: record.configuration.caps.connectTimeoutSeconds,
                                     auditBudget: AuditBudget(caps: record.configuration.caps, now: system_clock_monotonic()),
                                     programPidfd: OwnedFileDescriptor(adoptingRawValue: pidfd))
        guard server.start(on: placement.helperThreadCPUs) else {
            kill(record, .resourceCapExceeded("cannot start the thread serving the seccomp listener"))
            return
        }
        record.intercept = server
        audit(record, event: "INTERCEPT", reason: "serving the program's file, socket and exec calls under the policy")
        sendReply(record, requestID, .success(fileDescriptorCount: 0), fds: OwnedFileDescriptors())
    }

    /// Every worker is spawned in its own session, so its process group's id is its pid, and
    /// what it forks (with the `proc` group, or an intercepted program) stays in that group:
    /// neither profile allows setsid or setpgid. Those processes are signalled with it, so
    /// none outlives it unsupervised. Called only while the worker is unreaped: until then
    /// its pid, which is the group's id, cannot name another group.
    private func signalProcessGroup(_ record: WorkerRecord, _ signal: Int32) {
        _ = system_kill_process_group(record.pid, signal)
    }

    // MARK: Deadlines

    /// Acts on every deadline that has passed: the pools' when theirs is due, and those of
    /// the workers whose queued deadline has come (no other worker is looked at).
    private func checkDeadlines(now: UInt64) {
        if now >= nextPoolCheck {
            nextPoolCheck = .max
            for pool in pools.values { notePoolDeadline(pool.checkDeadlines(now: now)) }
        }
        // Taken out first, then looked at: a deadline set meanwhile (a reply parked, say)
        // queues its worker again, and this turn does not loop on it.
        for record in deadlines.takeDue(now: now) where !record.isGone {
            noteDeadline(record, checkDeadlines(of: record, now: now))
        }
    }

    /// Acts on the worker's deadlines that have passed; returns its next one (`.max` when
    /// none is left, or once it is killed).
    private func checkDeadlines(of record: WorkerRecord, now: UInt64) -> UInt64 {
        var next: UInt64 = .max
        func consider(_ deadline: UInt64) { next = min(next, deadline) }
        if record.phase == .handshake, record.killReason == nil {
            if now >= record.handshakeDeadline {
                kill(record, .handshakeFailed("no HELLO within \(record.configuration.handshakeTimeout) s"))
                return .max
            }
            consider(record.handshakeDeadline)
        }
        if let deadline = record.wallClockDeadline, record.killReason == nil {
            if now >= deadline {
                kill(record, .timedOut(seconds: record.configuration.wallClockTimeout ?? 0))
                return .max
            }
            consider(deadline)
        }
        if let deadline = record.stopDeadline {
            if now >= deadline {
                record.stopDeadline = nil
                if let reason = record.stopDeadlineReason {
                    kill(record, reason)
                    return .max
                }
                _ = system_pidfd_send_signal(record.pidfd.unsafeRawValue, SIGKILL)
                signalProcessGroup(record, SIGKILL)
            } else {
                consider(deadline)
            }
        }
        if let until = record.throttledUntil {
            if let since = record.throttledSince, Double(now - since) / 1e9 > record.configuration.caps.floodKillSeconds {
                kill(record, .resourceCapExceeded("flooding: over \(record.configuration.caps.messagesPerSecond) messages/s for \(record.configuration.caps.floodKillSeconds) s"))
                return .max
            }
            if now >= until {
                record.throttledUntil = nil
                record.lastThrottleEnded = until
                updateInterest(record)
            } else {
                consider(until)
            }
        }
        if let since = record.parkedSince {
            let deadline = since + nanoseconds(record.configuration.caps.replyStallSeconds)
            if now >= deadline {
                kill(record, .resourceCapExceeded("not reading its replies for \(record.configuration.caps.replyStallSeconds) s"))
                return .max
            }
            consider(deadline)
        }
        for (token, pending) in record.pending {
            if now >= pending.deadline {
                if let connect = pending.take() {
                    unregister(connect.socket.unsafeRawValue, token: token)
                }
                record.pending[token] = nil
                record.pendingRequestIDs.remove(pending.requestID)
                reply(record, pending.requestID, event: "CONNECT", detail: pending.detail, .denied(.timedOut, "connect timed out"))
                updateInterest(record)
            } else {
                consider(pending.deadline)
            }
        }
        return next
    }

    // MARK: Ending

    /// Kills the worker now, remembering why. Its channel closes at once, so
    /// nothing more it sent is served.
    private func kill(_ record: WorkerRecord, _ reason: ExitReason) {
        if record.killReason == nil || record.killReason == .stoppedBySupervisor {
            record.killReason = reason
            audit(record, event: "KILL", reason: reason.description)
        }
        _ = system_pidfd_send_signal(record.pidfd.unsafeRawValue, SIGKILL)
        signalProcessGroup(record, SIGKILL)
        closeChannel(record)
    }

    private func stop(_ record: WorkerRecord, grace: Double) {
        if record.killReason == nil { record.killReason = .stoppedBySupervisor }
        // Asked to stop, it is not restarted, whatever it does in its grace period.
        record.handle.noteStopRequested()
        _ = system_pidfd_send_signal(record.pidfd.unsafeRawValue, SIGTERM)
        signalProcessGroup(record, SIGTERM)
        // A later stop with a longer grace does not put off the kill an earlier one set.
        let deadline = min(system_clock_monotonic() + nanoseconds(grace), record.stopDeadline ?? .max)
        record.stopDeadline = deadline
        noteDeadline(record, deadline)
    }

    /// The worker closed its end of the channel, or sent an empty datagram, which on
    /// SOCK_SEQPACKET reads the same. Any other worker may go on without the supervisor.
    /// A pool worker lives only to serve its channel, though: one that closed it and stayed
    /// would hold its slot with nothing to end it, and its pool would stall. So it gets the
    /// grace of a retired worker (it may just be exiting, and then its exit says how) and
    /// is killed after it. Its pool stops counting it at once and starts a replacement.
    private func channelClosedByWorker(_ record: WorkerRecord) {
        closeChannel(record)
        guard let pool = record.pool, record.killReason == nil, record.stopDeadline == nil else { return }
        let deadline = system_clock_monotonic() + nanoseconds(Self.poolWorkerExitGrace)
        record.stopDeadline = deadline
        record.stopDeadlineReason = .protocolViolation("closed its channel while serving a pool, and did not exit")
        noteDeadline(record, deadline)
        let id = record.id
        afterEvents.append { pool.channelLost(id) }
    }

    /// Closes the channel and drops everything waiting on it (pending connects, parked replies).
    private func closeChannel(_ record: WorkerRecord) {
        guard let channel = record.channel else { return }
        // Closed with datagrams queued, the channel would have the kernel close their fds here,
        // unseen: a socket the worker set to linger would hold this thread (see
        // SeqpacketSocket.closePeerFileDescriptorsAtOnce). Where fds can be queued, it is read
        // empty first. An empty datagram reads like the end of the channel, so a worker could
        // hide fds behind a few; with sender credentials on, every datagram carries them and
        // the end does not. (Were credentials refused, the drain would read on to its limit.)
        // Shut for reading too, so a worker still running gets EPIPE and cannot refill the
        // queue while it is read: the drain then ends with what was queued, well within its
        // limit. Only where the end is known: once shut, an empty queue reads as the end,
        // which without credentials would be read on to the limit.
        if !channel.socket.refusesPeerFileDescriptors {
            let endIsKnown = channel.enableSenderCredentials()
            if endIsKnown { _ = try? channel.socket.shutdown(.reading) } // on failure the limit still bounds it
            for _ in 0..<Self.drainLimit {
                do {
                    _ = try channel.socket.receiveMessage(using: receiveBuffer, maximumFileDescriptors: 0, nonBlocking: true)
                } catch .system {
                    break // empty (EAGAIN)
                } catch .peerClosed where endIsKnown {
                    break // the worker's end is gone and nothing is left
                } catch {
                    continue // refused, its fds closed as it was
                }
            }
        }
        if let token = record.channelToken { unregister(channel.socket.unsafeRawValue, token: token) }
        record.channelToken = nil
        record.channel = nil
        for (token, pending) in record.pending {
            if let connect = pending.take() { unregister(connect.socket.unsafeRawValue, token: token) }
        }
        record.pending = [:]
        record.pendingRequestIDs = []
        record.parked = []
        record.parkedSince = nil
        record.throttledUntil = nil
    }

    private func reap(_ record: WorkerRecord) {
        // What the worker left running ends with it.
        signalProcessGroup(record, SIGKILL)
        let status: (code: Int32, status: Int32, peakResidentBytes: Int)
        switch system_waitid_pidfd(record.pidfd.unsafeRawValue, nonBlocking: true) {
        case .success(let result?): status = result
        case .success(nil): return
        case .failure(let errno):
            auditor.log(.error, "waitid on worker \(record.id)'s pidfd failed: \(errno)")
            status = (0, 0, 0)
        }
        // What left its group (learning mode lets setsid through) is no longer learned from.
        record.learning?.stop()
        scanLastMessages(record)
        closeChannel(record)
        if let token = record.pidfdToken { unregister(record.pidfd.unsafeRawValue, token: token) }
        record.pidfdToken = nil
        workers[record.id] = nil
        record.isGone = true
        deadlines.remove(record)
        load.subtract(1, ordering: .relaxed)
        let reason: ExitReason
        if let killed = record.killReason {
            reason = killed
        } else if let report = record.violation {
            reason = .seccompViolation(SyscallViolation(report))
        } else if status.code == privsep_CLD_EXITED {
            reason = .exited(code: status.status)
        } else if status.status == SIGSYS {
            // Killed by its filter without a report (SECCOMP_RET_KILL_PROCESS).
            reason = .seccompViolation(SyscallViolation(number: -1, architecture: 0, instructionPointer: nil))
        } else {
            reason = .signaled(signal: status.status, coreDumped: status.code == privsep_CLD_DUMPED)
        }
        if let leftOut = record.auditBudget.remainder() { reportLeftOut(record, leftOut) }
        record.intercept?.reportRecordsLeftOut()
        audit(record, event: "EXIT", reason: reason.description)
        // Only a peak above what it could have inherited from this process is the worker's own.
        let peak = status.peakResidentBytes > record.inheritedPeakBound ? status.peakResidentBytes : nil
        let handle = record.handle, pool = record.pool, id = record.id
        afterEvents.append {
            handle.finish(reason)
            pool?.workerExited(id, reason: reason, peakResidentBytes: peak)
        }
    }

    /// Reads what a worker that is gone left in its channel (bounded) for a VIOLATION
    /// report, which names the call in its exit reason, LOG lines (the first 64), and a
    /// pool job's RESULT: a worker may answer and exit at once (a one-shot worker), and the
    /// answer is its job's even if the exit was handled first. Requests of a dead worker
    /// are not carried out. Its exit and its last messages can come in one batch of
    /// events, and the loop reads a few messages per worker and turn (one each with other
    /// channels ready), so they may still be waiting here.
    private func scanLastMessages(_ record: WorkerRecord) {
        // Before HELLO nothing it sent is believed (a live worker is killed for it); closing
        // the channel discards those messages and any fds in them.
        guard record.phase != .handshake else { return }
        // What the live loop would have killed the worker for (a VIOLATION, a malformed
        // message) ends what is believed: a RESULT after it is not its job's answer.
        var believed = true
        // At most 64 LOG lines (this scan's whole bound before it read RESULTs): the rest are
        // dropped rather than logged past the rate a live worker is held to.
        var linesLeft = 64
        for _ in 0..<Self.lastMessagesRead {
            guard let channel = record.channel else { return }
            let received: ReceivedMessage
            do {
                received = try channel.socket.receiveMessage(using: receiveBuffer, maximumFileDescriptors: 1, nonBlocking: true)
            } catch .malformed {
                believed = false
                continue // its fds are closed; the next message may still be the report
            } catch {
                return
            }
            switch received.envelope.message {
            case .violation(let report):
                record.violation = report
                believed = false
            case .log(let line) where linesLeft > 0:
                linesLeft -= 1
                log(line, from: record)
            case .result(let chunk):
                // Not once the supervisor has ended it (a timed-out job has failed already),
                // nor after a RESULT that broke the protocol (what follows is not believed).
                guard believed, record.killReason == nil, let pool = record.pool else { break }
                if let reason = pool.received(chunk, requestID: received.envelope.requestID, from: record.id) {
                    record.killReason = reason
                }
            default: break // its fds close here
            }
        }
    }

    /// The most messages read from a gone worker's channel: more than the worker's send
    /// buffer holds (about 280 small ones at Linux's default 208 KiB), so all an exited
    /// worker can have left, while one whose copy of the channel lives on in another
    /// process cannot keep the loop reading.
    static let lastMessagesRead = 1024

    /// A throttle that begins this long after the last one ended starts a flood of its own
    /// (a flooding worker's next message is read as soon as its pause ends).
    static let floodGapSeconds = 0.1

    /// The most datagrams ``closeChannel(_:)`` reads to empty a channel: more than the kernel
    /// queues on one (about 280 with the default send buffer, 11,000 at a 4 MB wmem_max),
    /// against a sender that keeps refilling it.
    static let drainLimit = 16_384

    // MARK: Pools (called by PoolCore, on this thread)

    func adoptPool(_ pool: PoolCore) { pools[ObjectIdentifier(pool)] = pool }
    func abandonPool(_ pool: PoolCore) { pools[ObjectIdentifier(pool)] = nil }
    func notePoolDeadline(_ deadline: UInt64) { nextPoolCheck = min(nextPoolCheck, deadline) }

    func spawnForPool(_ configuration: WorkerConfiguration, _ policy: ActivePolicy, pool: PoolCore) -> Result<(UInt64, pid_t), SupervisorError> {
        load.add(1, ordering: .relaxed)
        switch spawn(configuration, policy) {
        case .success(let handle):
            workers[handle.id]?.pool = pool
            return .success((handle.id, handle.pid))
        case .failure(let error):
            return .failure(error)
        }
    }

    /// Whether a JOB sent to the worker now would reach it (not killed, channel open).
    func canSendForPool(_ workerID: UInt64) -> Bool {
        guard let record = workers[workerID] else { return false }
        return record.channel != nil && record.killReason == nil
    }

    func sendForPool(_ workerID: UInt64, _ envelope: Envelope, fds: consuming OwnedFileDescriptors) {
        guard let record = workers[workerID] else { return }
        send(record, envelope, fds: fds)
    }

    func killForPool(_ workerID: UInt64, _ reason: ExitReason) {
        guard let record = workers[workerID] else { return }
        kill(record, reason)
    }

    /// Seconds a pool worker without a channel has to exit before it is killed: one retired,
    /// or one that closed its channel itself.
    static let poolWorkerExitGrace = 2.0

    /// Closes the worker's channel, which tells a pool worker to exit; SIGKILL if it has not
    /// within ``poolWorkerExitGrace``.
    func retireForPool(_ workerID: UInt64) {
        guard let record = workers[workerID], record.killReason == nil else { return }
        closeChannel(record)
        let deadline = system_clock_monotonic() + nanoseconds(Self.poolWorkerExitGrace)
        record.stopDeadline = deadline
        noteDeadline(record, deadline)
    }

    // MARK: Policy

    func narrow(workerID: UInt64, to narrower: ActivePolicy) -> PolicyError? {
        guard let record = workers[workerID] else { return nil }
        guard record.policy.policy.contains(narrower.policy), narrower.isAnchored(beneath: record.policy) else { return .wouldWiden }
        // The program's Landlock ruleset was fixed at start: a narrower policy must still match it.
        if record.configuration.intercept,
           let problem = narrower.policy.interceptProblem() ?? narrower.policy.executeRulesProblem(startedWith: record.configuration.policy) {
            return problem
        }
        record.policy = narrower
        record.intercept?.replacePolicy(narrower)
        audit(record, event: "POLICY", reason: "narrowed")
        return nil
    }

    func workerSnapshots() -> [WorkerInfo] {
        workers.values.sorted { $0.id < $1.id }.map {
            WorkerInfo(id: $0.id, pid: $0.pid, name: $0.configuration.name, isHandshakeDone: $0.phase == .running,
                       fileDescriptorsHandedOut: $0.fileDescriptorsHandedOut, sandbox: $0.sandbox)
        }
    }

    /// Records an event of `record`'s. A decision, or an event the worker may repeat at will
    /// (`budgeted`), only within the worker's audit budget; its text is built only if written.
    private func audit(_ record: WorkerRecord, event: String, detail: @autoclosure () -> String = "", decision: String = "",
                       errno: Errno? = nil, reason: @autoclosure () -> String = "", request: @autoclosure () -> Message? = nil,
                       budgeted: Bool = false) {
        let workerChosen = budgeted || !decision.isEmpty
        if workerChosen {
            guard auditor.wants(Auditor.level(ofDecision: decision)), admitAudit(record, isDenial: decision == "denied") else { return }
        }
        auditor.record(AuditRecord(time: wallClockSeconds(), workerID: record.id, workerName: record.configuration.name,
                                   pid: record.pid, event: event, detail: detail(), decision: decision,
                                   errno: errno?.rawValue ?? 0, reason: reason(), request: request()),
                       essential: !workerChosen)
    }

    /// Whether a record the worker caused is written now (its ``AuditBudget``); first writes
    /// the count of records left out, when a report of it is due.
    private func admitAudit(_ record: WorkerRecord, isDenial: Bool) -> Bool {
        let (write, leftOut) = record.auditBudget.admit(now: system_clock_monotonic(), isDenial: isDenial)
        if let leftOut { reportLeftOut(record, leftOut) }
        return write
    }

    private func reportLeftOut(_ record: WorkerRecord, _ leftOut: AuditBudget.LeftOut) {
        auditor.record(record.auditBudget.report(leftOut, time: wallClockSeconds(), workerID: record.id,
                                                 workerName: record.configuration.name, pid: record.pid), essential: true)
    }
}

/// The loop thread as a task executor (``WorkerPool/executor``): a task that prefers it runs
/// between the loop's events, so a pool's caller there is resumed without waking a thread.
extension EventLoop: TaskExecutor {
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if isLoopThread {
            taskJobs.append(job)
        } else if !submit(.run { loop in loop.runTask(job, on: loop.asUnownedTaskExecutor()) }) {
            // The loop has ended. A task is never dropped: it goes on, on Swift's global executor.
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }
}

/// What the loop knows of one worker. Loop-thread only: what a request touches skips the
/// run-time exclusivity checks (see EventLoop's loop-thread state).
final class WorkerRecord: DeadlineQueued {
    enum Phase { case handshake, running }

    let id: UInt64
    let configuration: WorkerConfiguration
    @exclusivity(unchecked) var policy: ActivePolicy
    let handle: WorkerHandle
    let pid: pid_t
    let pidfd: OwnedFileDescriptor
    @exclusivity(unchecked) var channel: ChannelBox?
    /// Set when the record leaves the loop's `workers` (reaped): an event that still names
    /// it is dropped.
    @exclusivity(unchecked) var isGone = false
    /// epoll tokens; nil until registered (token 0 is the loop's own wake-up fd).
    var channelToken: UInt64?
    var pidfdToken: UInt64?
    @exclusivity(unchecked) var phase = Phase.handshake
    /// Its place in the loop's ``DeadlineQueue``.
    @exclusivity(unchecked) var queuedDeadline: UInt64 = .max
    @exclusivity(unchecked) var deadlineQueueIndex = -1
    let handshakeDeadline: UInt64
    let wallClockDeadline: UInt64?
    var stopDeadline: UInt64?
    /// Why the worker is killed if it outlives ``stopDeadline``, when that is not a plain
    /// retirement (which needs no reason: the worker has no job).
    var stopDeadlineReason: ExitReason?
    @exclusivity(unchecked) var killReason: ExitReason?
    var violation: Violation?
    @exclusivity(unchecked) var sandbox: SandboxStatus?
    @exclusivity(unchecked) var fileDescriptorsHandedOut = 0
    /// Intercept mode: the thread serving the program's seccomp listener.
    var intercept: InterceptServer?
    @exclusivity(unchecked) var tokens: Double
    @exclusivity(unchecked) var lastRefill: UInt64
    @exclusivity(unchecked) var throttledSince: UInt64?
    @exclusivity(unchecked) var throttledUntil: UInt64?
    /// When the last throttle's pause ended (see consumeToken).
    @exclusivity(unchecked) var lastThrottleEnded: UInt64?
    @exclusivity(unchecked) var auditBudget: AuditBudget
    @exclusivity(unchecked) var parked: [ParkedReply] = []
    var parkedSince: UInt64?
    var pending: [UInt64: PendingConnectState] = [:]
    @exclusivity(unchecked) var pendingRequestIDs: Set<UInt64> = []
    @exclusivity(unchecked) var reading = true
    var writing = false
    /// In the loop's ``EventLoop/readAgain`` list.
    @exclusivity(unchecked) var queuedToReadAgain = false
    /// The loop's turn when the channel was last read.
    @exclusivity(unchecked) var lastReadTurn: UInt64 = 0
    /// The thread serving its learning-mode listener, stopped when the worker is reaped.
    var learning: LearningServer?
    /// The pool this worker serves, if any.
    @exclusivity(unchecked) var pool: PoolCore?
    /// This process's peak resident bytes just after the spawn. The kernel's peak for a
    /// child (waitid's ru_maxrss) starts at the peak of the process it was forked or
    /// vforked from, kept through exec: a worker that stays below it reports the
    /// supervisor's peak, not its own.
    var inheritedPeakBound = Int.max

    init(id: UInt64, configuration: WorkerConfiguration, policy: ActivePolicy, handle: WorkerHandle,
         pid: pid_t, pidfd: consuming OwnedFileDescriptor, channel: consuming SeqpacketSocket, now: UInt64) {
        self.id = id
        self.configuration = configuration
        self.policy = policy
        self.handle = handle
        self.pid = pid
        self.pidfd = pidfd
        self.channel = ChannelBox(channel)
        self.handshakeDeadline = now + nanoseconds(configuration.handshakeTimeout)
        self.wallClockDeadline = configuration.wallClockTimeout.map { now + nanoseconds($0) }
        self.tokens = Double(max(configuration.caps.messageBurst, 1))
        self.lastRefill = now
        // What learning mode learns is read back from the records: none may be left out.
        self.auditBudget = configuration.learning ? AuditBudget(perSecond: 0, burst: 0, now: now) : AuditBudget(caps: configuration.caps, now: now)
    }
}

/// The supervisor's end of a worker's channel; closed when the box goes.
final class ChannelBox {
    @exclusivity(unchecked) private(set) var socket: SeqpacketSocket
    init(_ socket: consuming SeqpacketSocket) { self.socket = socket }

    func disableSenderCredentials() {
        _ = try? socket.disableSenderCredentials()
    }

    /// Turns sender credentials on: each datagram, an empty one included, then comes with them,
    /// and only the end of the channel without (see EventLoop.closeChannel).
    func enableSenderCredentials() -> Bool {
        (try? socket.enableSenderCredentials()) != nil
    }
}

/// A reply that found the worker's queue full.
final class ParkedReply {
    var bytes: [UInt8]
    var fds: OwnedFileDescriptors
    /// The request a REPLY answers; nil for other messages (a JOB).
    let replyTo: UInt64?
    init(bytes: [UInt8], fds: consuming OwnedFileDescriptors, replyTo: UInt64?) {
        self.bytes = bytes
        self.fds = fds
        self.replyTo = replyTo
    }
}

/// A CONNECT in progress. Owns the connecting socket until ``take()``.
final class PendingConnectState {
    let requestID: UInt64
    let detail: String
    let deadline: UInt64
    let requestedType: Int32
    let address: SocketAddress
    /// The socket's raw fd, -1 once taken. (A raw field rather than an optional
    /// owned value: Swift 6.3 miscompiles Optional<~Copyable> stored in a class.)
    private var socket: Int32
    var token: UInt64 = 0

    init(requestID: UInt64, detail: String, deadline: UInt64, socket: consuming OwnedFileDescriptor,
         requestedType: Int32, address: SocketAddress) {
        self.requestID = requestID
        self.detail = detail
        self.deadline = deadline
        self.requestedType = requestedType
        self.address = address
        self.socket = socket.releaseUnsafeRawValue()
    }

    deinit {
        if socket >= 0 { _ = system_close(socket) }
    }

    /// The pending connect, once; nil if already taken.
    func take() -> PendingConnect? {
        guard socket >= 0 else { return nil }
        defer { socket = -1 }
        return PendingConnect(socket: OwnedFileDescriptor(adoptingRawValue: socket), requestedType: requestedType, address: address)
    }
}

/// A snapshot of one live worker.
public struct WorkerInfo: Sendable, Equatable {
    public var id: UInt64
    public var pid: Int32
    public var name: String
    public var isHandshakeDone: Bool
    public var fileDescriptorsHandedOut: Int
    public var sandbox: SandboxStatus?
}

/// Seconds as nanoseconds, clamped to 0...~31 years: a negative, NaN or huge setting never
/// traps the supervisor, and infinity is the longest wait, not none.
func nanoseconds(_ seconds: Double) -> UInt64 {
    guard seconds > 0 else { return 0 } // NaN included
    return UInt64(min(seconds, 1e9) * 1e9)
}

func layerNames(_ layers: SandboxLayers) -> String {
    let names: [(SandboxLayers, String)] = [
        (.noNewPrivileges, "no_new_privs"), (.seccomp, "seccomp"), (.landlock, "landlock"),
        (.userNamespace, "user-namespace"), (.networkNamespace, "network-namespace"), (.resourceLimits, "rlimits"),
        (.landlockScopes, "landlock-scopes"),
    ]
    let present = names.filter { layers.contains($0.0) }.map(\.1)
    return present.isEmpty ? "none" : present.joined(separator: ", ")
}

/// "O_RDONLY|O_CLOEXEC" and so on, for the audit log.
func describeOpenFlags(_ flags: Int32) -> String {
    var parts: [String] = [["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][Int(flags & O_ACCMODE)]]
    let named: [(Int32, String)] = [
        (O_CREAT, "O_CREAT"), (O_EXCL, "O_EXCL"), (O_NOCTTY, "O_NOCTTY"), (O_TRUNC, "O_TRUNC"), (O_APPEND, "O_APPEND"),
        (O_NONBLOCK, "O_NONBLOCK"), (O_DIRECTORY, "O_DIRECTORY"), (O_NOFOLLOW, "O_NOFOLLOW"), (O_CLOEXEC, "O_CLOEXEC"),
        (privsep_O_PATH, "O_PATH"), (privsep_O_TMPFILE, "O_TMPFILE"),
    ]
    var rest = flags & ~O_ACCMODE
    for (flag, name) in named where rest & flag == flag && flag != 0 {
        parts.append(name)
        rest &= ~flag
    }
    if rest != 0 { parts.append("0x" + String(UInt32(bitPattern: rest), radix: 16)) }
    return parts.joined(separator: "|")
}

/// Hands out worker ids, unique across the loops of one supervisor.
final class WorkerIDSource: Sendable {
    private let counter = Atomic<UInt64>(1)
    func next() -> UInt64 { counter.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// Calls `body` with `object`, not retained around the call: for a worker's policy or
/// channel while a request is served, which only the loop thread replaces and `body`
/// cannot, because it never calls back into the loop (a policy's checks, one send). Read
/// from a `var` of a class, each is otherwise retained and released around every call,
/// two calls into the run-time per request (BENCHMARKS.md, sixth round). Taken as
/// `Unmanaged` (`.passUnretained(record.policy)` at the call): passed as the object
/// itself, it would be retained for the call to this function.
@inline(__always)
func withoutRetaining<Object: AnyObject, Result: ~Copyable>(_ object: Unmanaged<Object>, _ body: (Object) -> Result) -> Result {
    var result: Result? = nil
    object._withUnsafeGuaranteedRef { result = body($0) }
    return result.take()!
}
