import Glibc
import PrivsepIPC
import PrivsepTestSupport
@testable import Supervisor
import SystemPackage
import Synchronization
import Testing

/// A pool of fixture workers that shake hands, lock down, then serve jobs
/// (each job's input is a command of the fixture's `serve` step).
private func makePool(_ supervisor: Supervisor, size: Int = 2, lockdown: Bool = true, policy: Policy = Policy(),
                      configure: (inout WorkerPoolConfiguration) -> Void = { _ in }) async throws(JobFailure) -> WorkerPool {
    var worker = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake"] + (lockdown ? ["lockdown"] : []) + ["serve"],
                                     policy: policy, name: "pool-worker")
    worker.standardOutput = .null
    if lockdown { worker.requiredLayers = [.seccomp, .noNewPrivileges] }
    var configuration = WorkerPoolConfiguration(worker: worker, size: size)
    configure(&configuration)
    return try await WorkerPool(supervisor: supervisor, configuration: configuration)
}

private func openFile(_ path: String) -> OwnedFileDescriptor {
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    precondition(fd >= 0, "open \(path)")
    return OwnedFileDescriptor(adoptingRawValue: fd)
}

/// Waits (up to 60 s) until the pool's counters satisfy `condition`: tests wait for the
/// state they need rather than for a time that a loaded machine may not keep. (Other
/// suites block the two cooperative threads for seconds at a time while they run
/// programs, so an async test may not be scheduled for a while; healthy runs return at
/// once.)
private func waitFor(_ pool: WorkerPool, _ condition: (PoolMetrics) -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while !condition(pool.metrics) {
        guard ContinuousClock.now < deadline else {
            Issue.record("pool never reached the expected state: \(pool.metrics)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// A job that runs until the test lets it go: the worker reads a pipe to its end, and the
/// test holds the write end. A job that sleeps instead ends on its own time, which a loaded
/// machine may not give the test to look at it while it runs.
private final class HeldJob: Sendable {
    private let readEnd: Mutex<OwnedFileDescriptor?>
    private let writeEnd: Mutex<OwnedFileDescriptor?>

    init() {
        let pipe = Pipe()
        readEnd = Mutex(pipe.read)
        writeEnd = Mutex(pipe.write)
    }

    /// Runs the job in `pool`; nil when it succeeds. Once only: the pipe's read end goes with it.
    func run(in pool: WorkerPool) async -> JobFailure? {
        guard let fd = readEnd.withLock({ $0.take() }) else { preconditionFailure("a held job runs once") }
        do {
            _ = try await pool.run(PoolJob(input: Array("readfd".utf8), fileDescriptors: OwnedFileDescriptors(fd)))
            return nil
        } catch {
            return error
        }
    }

    /// Lets the job end.
    func release() { writeEnd.withLock { $0 = nil } }
}

/// A flag one thread sets and another polls.
private final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}

/// The highest of the values one thread notes, for another to read.
private final class Peak: Sendable {
    private let value = Mutex(0)
    var highest: Int { value.withLock { $0 } }
    func note(_ seen: Int) { value.withLock { $0 = max($0, seen) } }
}

/// Runs each job in turn, `pause` after the one before; each must finish within 30 s with
/// output of the size given. Stops at the first that does not: the rest would wait behind it.
private func expectEachRuns(_ jobs: [(command: String, outputBytes: Int)], in pool: WorkerPool,
                            pause: Duration = .zero) async {
    for (index, job) in jobs.enumerated() {
        try? await Task.sleep(for: pause)
        let size = await within(30) { (try? await pool.run(input: Array(job.command.utf8)))?.bytes.count }
        #expect(size == .some(job.outputBytes), "job \(index + 1), \(job.command), never ran (or its result never came)")
        if size == nil { return }
    }
}

private func text(_ output: JobOutput) -> String { String(decoding: output.bytes, as: UTF8.self) }

/// A supervisor that has run a pool once (its loop's own fds, the first spawn), and the fds
/// open then: what a leak test compares against.
private func warmedUpSupervisor() async -> (Supervisor, Set<String>) {
    let supervisor = try! Supervisor(logger: quietLogger())
    let warmUp = try! await makePool(supervisor, size: 2)
    _ = try! await warmUp.run(input: Array("pid".utf8))
    await warmUp.shutdown()
    return (supervisor, openFileDescriptorSet())
}

private func failure(of command: String, in pool: WorkerPool) async -> JobFailure? {
    do {
        _ = try await pool.run(input: Array(command.utf8))
        return nil
    } catch {
        return error
    }
}

@Suite struct PoolTests {
    @Test func jobsRunAndWorkersAreRecycledAfterKJobs() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) { $0.jobsPerWorker = 3 }
        var pids: [String: Int] = [:]
        for _ in 0..<12 {
            let output = try await pool.run(input: Array("pid".utf8))
            pids[text(output), default: 0] += 1
        }
        #expect(pids.values.allSatisfy { $0 <= 3 }, "\(pids)")
        #expect(pids.count >= 4)
        #expect(try await text(pool.run(input: Array("echo:hello".utf8))) == "hello")
        let metrics = pool.metrics
        #expect(metrics.jobsSucceeded == 13)
        #expect(metrics.jobsFailedTotal == 0)
        // Each recycled worker ran exactly 3 jobs; at most 4 workers (2 serving, 2 warming)
        // hold up to 2 jobs each that have not made them due yet.
        #expect(metrics.workersRecycled >= 2 && metrics.workersRecycled * 3 <= 13, "\(metrics.workersRecycled)")
        #expect(metrics.workerRestarts == 0)
        #expect(metrics.latency.count == 13)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func oneJobPerWorkerNeverReusesAProcess() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) { $0.jobsPerWorker = 1 }
        let pids = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<20 { group.addTask { text(try await pool.run(input: Array("pid".utf8))) } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(Set(pids).count == 20)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// A worker may answer and exit at once. Its RESULT still answers its job when the
    /// exit is handled before the loop has read that far (here, behind hundreds of LOGs).
    @Test func anAnswerLeftBehindByAWorkerThatExitedIsItsJobs() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) { $0.jobsPerWorker = 1 }
        for lines in [0, 100, 250, 0, 100, 250] {
            #expect(try await text(pool.run(input: Array("logthenexit:\(lines)".utf8))) == "done")
        }
        // Unless the live loop would have killed the worker before reading the answer: a
        // RESULT after a VIOLATION fails its job whichever reads it, the loop or the reap.
        for lines in [0, 250, 250, 0, 250, 250] {
            do {
                let output = try await pool.run(input: Array("violationthenresult:\(lines)".utf8))
                Issue.record("a RESULT sent after a VIOLATION answered its job: \(text(output))")
            } catch {
                #expect(error.kind == .seccompViolation, "\(error)")
            }
        }
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func eachFailureHasItsTypedReasonAndOnlyItsJobFails() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) {
            $0.jobsPerWorker = 100
            // Long enough that the 400 MB job below reaches its memory limit first even on a
            // machine loaded by the other suites (0.5 s once timed it out instead).
            $0.jobTimeout = 2
            $0.memoryLimit = 96 << 20
            $0.cpuTimeLimit = 10
            $0.maximumOutputBytes = 64 << 10
        }
        #expect(await failure(of: "crash", in: pool) == .crashed(signal: SIGSEGV))
        let violation = await failure(of: "syscall", in: pool)
        guard case .seccompViolation(let call)? = violation else {
            Issue.record("expected a seccomp violation, got \(String(describing: violation))")
            return
        }
        #expect(call.name == "openat")
        #expect(await failure(of: "spin", in: pool) == .timedOut(seconds: 2))
        let memory = await failure(of: "alloc:400", in: pool)
        guard case .outOfMemory(let resident, let limit)? = memory else {
            Issue.record("expected out of memory, got \(String(describing: memory))")
            return
        }
        #expect(limit == 96 << 20 && resident > limit)
        let exited = await failure(of: "exit:7", in: pool)
        #expect(exited == .exited(code: 7), "\(String(describing: exited))")
        let wrong = await failure(of: "wrongid", in: pool)
        guard case .protocolViolation? = wrong else {
            Issue.record("expected a protocol violation, got \(String(describing: wrong))")
            return
        }
        #expect(await failure(of: "big:100000", in: pool) == .outputTooLarge(limit: 64 << 10))
        #expect(await failure(of: "reject:4:bad header", in: pool) == .rejected(code: 4, message: Array("bad header".utf8)))
        // Output over one message arrives whole, in chunks.
        #expect(try await pool.run(input: Array("big:20000".utf8)).bytes.count == 20000)
        #expect(try await text(pool.run(input: Array("echo:still serving".utf8))) == "still serving")
        let metrics = pool.metrics
        #expect(metrics.jobsSucceeded == 2)
        #expect(metrics.jobsFailed == [.crashed: 1, .seccompViolation: 1, .timedOut: 1, .outOfMemory: 1, .exited: 1,
                                       .protocolViolation: 1, .outputTooLarge: 1, .rejected: 1])
        #expect(metrics.workerRestarts == 8)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func aJobOverItsCPULimitFails() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.cpuTimeLimit = 0.2 }
        #expect(await failure(of: "spin", in: pool) == .cpuTimeExceeded(seconds: 0.2))
        // Sleeping costs no CPU: the same limit lets a 0.3 s sleep through.
        #expect(try await text(pool.run(input: Array("sleep:0.3".utf8))).isEmpty)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func jobsCarryFileDescriptorsAndRequestsMidJob() async throws {
        let scratch = ScratchDirectory()
        scratch.write("input.csv", "a,b\n1,2\n")
        scratch.write("allowed.txt", "granted line\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/allowed.txt", .file, [.read])
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1, policy: policy) { $0.jobsPerWorker = 10 }
        let fd = openFile(scratch.path + "/input.csv")
        let contents = try await pool.run(PoolJob(input: Array("readfd".utf8), fileDescriptors: OwnedFileDescriptors(fd)))
        #expect(text(contents) == "a,b\n1,2\n")
        var three = OwnedFileDescriptors()
        for _ in 0..<3 { three.append(openFile("/dev/null")) }
        #expect(try await text(pool.run(PoolJob(input: Array("fdcount".utf8), fileDescriptors: three))) == "3")
        // A list with a slot taken out carries only the fds it still owns, and says so
        // (the JOB counted the empty slot, and the worker refused the message).
        var gapped = OwnedFileDescriptors()
        for _ in 0..<3 { gapped.append(openFile("/dev/null")) }
        _ = gapped.take(at: 1)
        #expect(try await text(pool.run(PoolJob(input: Array("fdcount".utf8), fileDescriptors: gapped))) == "2")
        #expect(try await text(pool.run(input: Array("open:\(scratch.path)/allowed.txt".utf8))) == "granted line")
        let denied = await failure(of: "open:/etc/passwd", in: pool)
        #expect(denied == .rejected(code: 3, message: Array("open: \(Errno.permissionDenied)".utf8)))
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func cancellingAJobKillsItsWorkerAndTheQueueMovesOn() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 10 }
        let running = Task { await failure(of: "spin", in: pool) }
        let queued = Task { await failure(of: "echo:never", in: pool) }
        try await Task.sleep(for: .milliseconds(200))
        queued.cancel()
        running.cancel()
        #expect(await running.value == .cancelled)
        #expect(await queued.value == .cancelled)
        #expect(try await text(pool.run(input: Array("echo:after".utf8))) == "after")
        #expect(pool.metrics.jobsFailed[.cancelled] == 2)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func aFullQueueRejectsOrWaits() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let rejecting = try await makePool(supervisor, size: 1) {
            $0.queueCapacity = 1
            $0.rejectWhenFull = true
            $0.jobsPerWorker = 100 // no replacement worker to take the queued job
        }
        let held = HeldJob()
        async let first = held.run(in: rejecting)
        try await waitFor(rejecting) { $0.jobsRunning == 1 }
        async let second = failure(of: "echo:queued", in: rejecting)
        try await waitFor(rejecting) { $0.queueDepth == 1 }
        #expect(await failure(of: "echo:x", in: rejecting) == .queueFull)
        held.release()
        #expect(await first == nil)
        #expect(await second == nil)
        await rejecting.shutdown()

        let waiting = try await makePool(supervisor, size: 1) {
            $0.queueCapacity = 1
            $0.jobsPerWorker = 100
        }
        let outputs = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<16 { group.addTask { text(try await waiting.run(input: Array("echo:\(index)".utf8))) } }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(outputs == Set((0..<16).map(String.init)))
        await waiting.shutdown()
        await supervisor.shutdown()
    }

    /// A job one JOB message cannot carry is refused before it is queued, each with its own
    /// reason; the pool serves on.
    @Test func aJobTooLargeForOneMessageIsRefusedWithItsReason() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1)
        let bytes = [UInt8](repeating: 0x41, count: WireFormat.maximumJobBytes + 1)
        do {
            _ = try await pool.run(input: bytes)
            Issue.record("an oversized input ran")
        } catch {
            #expect(error == .inputTooLarge(bytes: bytes.count, limit: WireFormat.maximumJobBytes))
        }
        var fds = OwnedFileDescriptors()
        for _ in 0...WireFormat.maximumFileDescriptors { fds.append(openFile("/dev/null")) }
        do {
            _ = try await pool.run(PoolJob(input: Array("readfd".utf8), fileDescriptors: fds))
            Issue.record("a job with too many fds ran")
        } catch {
            #expect(error == .tooManyFileDescriptors(count: WireFormat.maximumFileDescriptors + 1, limit: WireFormat.maximumFileDescriptors))
            #expect("\(error)" == "too many fds for one job message (254 > 253)")
        }
        #expect(text(try await pool.run(input: Array("echo:still".utf8))) == "still")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// Settings no pool can run are refused before any worker starts, each with its
    /// reason: a NaN check interval (which spun the serving thread), a zero start-up
    /// failure limit (which failed every job that found its workers busy), a size whose
    /// default queue overflowed.
    @Test func settingsNoPoolCanRunAreRefusedAtStart() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let cases: [(String, (inout WorkerPoolConfiguration) -> Void)] = [
            ("size must be 1 to 65536", { $0.size = 0 }),
            ("size must be 1 to 65536", { $0.size = .max / 2 }),
            ("jobsPerWorker must be at least 1", { $0.jobsPerWorker = 0 }),
            ("queueCapacity must be at least 1", { $0.queueCapacity = 0 }),
            ("startupFailureLimit must be at least 1", { $0.startupFailureLimit = 0 }),
            ("maximumOutputBytes must not be negative", { $0.maximumOutputBytes = -1 }),
            ("jobTimeout must be a positive, finite", { $0.jobTimeout = -1 }),
            ("jobTimeout must be a positive, finite", { $0.jobTimeout = .infinity }),
            ("cpuTimeLimit must be a positive, finite", { $0.cpuTimeLimit = .nan }),
            ("limitCheckInterval must be a positive, finite", { $0.limitCheckInterval = .nan }),
            ("memoryLimit must be a positive", { $0.memoryLimit = 0 }),
            // As for a single worker's spawn: a name the worker's libc would split at its '='.
            ("environment variable name \"LD_PRELOAD=\u{301}\" is empty or contains '='", { $0.worker.environment["LD_PRELOAD=\u{301}"] = "x" }),
        ]
        for (reason, configure) in cases {
            do {
                let pool = try await makePool(supervisor, size: 1, configure: configure)
                Issue.record("a pool started despite \(reason)")
                await pool.shutdown()
            } catch {
                #expect(error.description.contains(reason), "\(error)")
            }
        }
        #expect(WorkerPoolConfiguration(worker: WorkerConfiguration(executable: "/bin/true"), size: .max).queueCapacity == .max,
                "the default queue of a huge size does not overflow")
        #expect(supervisor.workers().isEmpty, "nothing was spawned")
        await supervisor.shutdown()
    }

    @Test func aWorkerThatNeverBecomesReadyFailsThePool() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let worker = WorkerConfiguration(executable: "/bin/true", policy: Policy(), name: "not-a-worker")
        do {
            _ = try await WorkerPool(supervisor: supervisor, configuration: WorkerPoolConfiguration(worker: worker, size: 2))
            Issue.record("a pool of /bin/true started")
        } catch {
            guard case .workerUnavailable = error else {
                Issue.record("\(error)")
                return
            }
        }
        await supervisor.shutdown()
    }

    @Test func shutdownFailsQueuedJobsAndLetsRunningOnesFinish() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let held = HeldJob()
        async let running = held.run(in: pool)
        try await waitFor(pool) { $0.jobsRunning == 1 }
        async let queued = failure(of: "echo:late", in: pool)
        try await waitFor(pool) { $0.queueDepth == 1 }
        let shutdown = Task { await pool.shutdown() }
        #expect(await queued == .poolClosed)
        held.release()
        await shutdown.value
        #expect(await running == nil)
        #expect(await failure(of: "echo:after", in: pool) == .poolClosed)
        #expect(supervisor.workers().isEmpty)
        await supervisor.shutdown()
    }

    /// Jobs that would never answer (no job timeout) end when the grace runs out: their
    /// workers are killed and the jobs fail with poolClosed.
    @Test func shutdownWithAGracePeriodKillsTheJobsStillRunning() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) { $0.jobsPerWorker = 100 }
        async let spinning = failure(of: "spin", in: pool)
        async let sleeping = failure(of: "sleep:600", in: pool)
        try await waitFor(pool) { $0.jobsRunning == 2 }
        let started = ContinuousClock.now
        await pool.shutdown(gracePeriod: 0.3)
        #expect(ContinuousClock.now - started >= .milliseconds(300), "the grace was cut short")
        #expect(await spinning == .poolClosed)
        #expect(await sleeping == .poolClosed)
        #expect(supervisor.workers().isEmpty)
        #expect(pool.metrics.workerRestarts == 0)
        await supervisor.shutdown()
    }

    /// Of overlapping shutdowns, the earliest deadline holds: one that would wait for ever
    /// returns when a later one with no grace kills the job.
    @Test func overlappingShutdownsKeepTheEarliestDeadline() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        async let sleeping = failure(of: "sleep:600", in: pool)
        try await waitFor(pool) { $0.jobsRunning == 1 }
        let patient = Task { await pool.shutdown() }
        let late = Task { await pool.shutdown(gracePeriod: 600) }
        await pool.shutdown(gracePeriod: 0)
        await patient.value
        await late.value
        #expect(await sleeping == .poolClosed)
        #expect(supervisor.workers().isEmpty)
        await supervisor.shutdown()
    }

    /// Thousands of jobs with fds, some failing: the supervisor ends with the fds it began with.
    @Test func jobsLeakNoDescriptor() async {
        await #expect(processExitsWith: .success) {
            let (supervisor, before) = await warmedUpSupervisor()
            let pool = try! await makePool(supervisor, size: 2) { $0.jobsPerWorker = 50 }
            for index in 0..<2000 {
                let fd = openFile("/dev/null")
                let command = index % 100 == 99 ? "crash" : index % 2 == 0 ? "readfd" : "reject:1:no"
                _ = try? await pool.run(PoolJob(input: Array(command.utf8), fileDescriptors: OwnedFileDescriptors(fd)))
            }
            await pool.shutdown()
            let leaked = newFileDescriptors(since: before)
            require(leaked.isEmpty, "supervisor fds leaked: \(leaked.sorted())")
            require(pool.metrics.jobsFailed[.crashed] == 20, "\(pool.metrics.jobsFailed)")
            await supervisor.shutdown()
        }
    }

    /// Every failure path with fds in flight: timeouts, cancelled running and queued jobs,
    /// output over the cap, wrong-id RESULTs, crashes, a full queue, memory watching (its
    /// /proc fds), and a shutdown with jobs still queued.
    @Test func jobsLeakNoDescriptorOnAnyFailurePath() async {
        await #expect(processExitsWith: .success) {
            let (supervisor, before) = await warmedUpSupervisor()
            let pool = try! await makePool(supervisor, size: 2) {
                $0.jobsPerWorker = 5
                $0.jobTimeout = 0.3
                $0.memoryLimit = 512 << 20
                $0.maximumOutputBytes = 1000
                $0.queueCapacity = 2
                $0.rejectWhenFull = true
            }
            func twoFiles() -> OwnedFileDescriptors {
                var fds = OwnedFileDescriptors(openFile("/dev/null"))
                fds.append(openFile("/dev/null"))
                return fds
            }
            let commands = ["sleep:5", "big:5000", "wrongid", "echo:x", "crash", "readfd", "spin"]
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    let command = commands[index % commands.count]
                    let task = Task { _ = try? await pool.run(PoolJob(input: Array(command.utf8), fileDescriptors: twoFiles())) }
                    if index % 5 == 0 {
                        try? await Task.sleep(for: .milliseconds(1))
                        task.cancel()
                    }
                    group.addTask { await task.value }
                    if index % 10 == 0 { try? await Task.sleep(for: .milliseconds(50)) }
                }
            }
            let queued = (0..<4).map { _ in
                Task { _ = try? await pool.run(PoolJob(input: Array("sleep:0.2".utf8), fileDescriptors: OwnedFileDescriptors(openFile("/dev/null")))) }
            }
            try? await Task.sleep(for: .milliseconds(20))
            await pool.shutdown()
            for task in queued { await task.value }
            let leaked = newFileDescriptors(since: before)
            require(leaked.isEmpty, "supervisor fds leaked: \(leaked.sorted())")
            await supervisor.shutdown()
        }
    }

    @Test func aSecondResultKillsTheWorkerButNotTheAnsweredJob() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        #expect(try await text(pool.run(input: Array("twice".utf8))) == "first")
        // Had a job been sent meanwhile, that job would fail: a worker that breaks the
        // protocol mid-job costs the job it is running. Idle, it costs nothing.
        try await waitFor(pool) { $0.workerRestarts == 1 }
        #expect(try await text(pool.run(input: Array("echo:next".utf8))) == "next")
        #expect(pool.metrics.workerRestarts == 1)
        #expect(pool.metrics.workersSpawned == 2)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func aWorkerOutsideAPoolThatSendsAResultIsKilled() async throws {
        let result = try WireCodec.encode(Envelope(requestID: 1, .result(ResultChunk(output: Array("forged".utf8)))))
        let hex = result.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        let run = try await runWorker(["handshake", "raw:\(hex)", "sleep:5"])
        #expect(run.reason == .protocolViolation("RESULT from a worker that is not in a pool"))
    }
}

/// The value of `body`, or nil if it has not returned within `seconds` (then the task is left
/// running). The bounds below are generous for the same reason as `waitFor`'s: they tell a
/// hang from a slow, loaded machine.
private func within<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async -> T) async -> T? {
    let result = Mutex<T?>(nil)
    let task = Task { let value = await body(); result.withLock { $0 = value } }
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if let value = result.withLock({ $0 }) { return value }
        try? await Task.sleep(for: .milliseconds(20))
    }
    _ = task
    return result.withLock { $0 }
}

/// Lifecycle corners found in review: every caller gets an answer, and the pool stays within its size.
@Suite(.serialized) struct PoolLifecycleTests {
    /// A worker that answers, then leaves its channel (closes it, or sends an empty datagram,
    /// which reads the same) and stays alive: it takes no more jobs and does not hold its slot.
    /// A replacement serves the next job, and the worker is killed after a retired worker's
    /// grace, with the reason in its exit.
    @Test(arguments: ["hangup", "empty"]) func aWorkerThatLeavesItsChannelIsReplacedAndKilled(command: String) async throws {
        let audit = AuditLog(collectingUpTo: 1_000)
        let supervisor = try Supervisor(logger: quietLogger(), auditLog: audit)
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let pid = try await text(pool.run(input: Array("pid".utf8)))
        #expect(try await text(pool.run(input: Array(command.utf8))) == "bye")
        // The next job can reach the worker before the loop reads that it left (the loop read
        // the RESULT, found the channel empty, and dispatched): that job fails with the
        // worker's exit. The one after it runs on the replacement.
        for attempt in 1...2 {
            let outcome = await within(30) { () -> Result<String, JobFailure> in
                do throws(JobFailure) { return .success(text(try await pool.run(input: Array("echo:after".utf8)))) } catch { return .failure(error) }
            }
            switch outcome {
            case .success("after")?: break
            case .failure(.protocolViolation(let why))? where attempt == 1 && why.contains("closed its channel"): continue
            default: Issue.record("job \(attempt) after the worker left: \(String(describing: outcome))")
            }
            break
        }
        #expect(pool.metrics.workersSpawned == 2)
        // Once, whether it left while idle or while holding the job that failed.
        #expect(pool.metrics.workerRestarts == 1)
        let deadline = ContinuousClock.now + .seconds(30)
        while !audit.records.contains(where: { $0.event == "EXIT" && $0.pid == Int32(pid) }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let exit = audit.records.first { $0.event == "EXIT" && $0.pid == Int32(pid) }
        #expect(exit?.reason.contains("closed its channel while serving a pool") == true, "\(String(describing: exit))")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// A worker that leaves its channel in the middle of a job, without answering, and stays
    /// alive: with no job timeout, the job still fails, once the worker's grace is over.
    @Test func aWorkerThatLeavesItsChannelMidJobFailsTheJob() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let failed = await within(30) { await failure(of: "hangupmidjob", in: pool) }
        guard case .protocolViolation(let why)?? = failed else {
            Issue.record("expected a protocol violation, got \(String(describing: failed))")
            return
        }
        #expect(why.contains("closed its channel"))
        #expect(try await text(pool.run(input: Array("echo:after".utf8))) == "after")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func cancellingAQueuedJobLetsTheOverflowThrough() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) {
            $0.jobsPerWorker = 100
            $0.queueCapacity = 1
        }
        let held = HeldJob()
        let running = Task { await held.run(in: pool) }
        try await waitFor(pool) { $0.jobsRunning == 1 }
        let queued = Task { await failure(of: "echo:a", in: pool) }
        try await waitFor(pool) { $0.queueDepth == 1 }
        let overflowed = Task { await failure(of: "echo:b", in: pool) }
        try await waitFor(pool) { $0.queueDepth == 2 }
        queued.cancel()
        #expect(await queued.value == .cancelled)
        held.release()
        #expect(await running.value == nil)
        let last = await within(30) { await overflowed.value }
        #expect(last == .some(nil), "the job that waited for room never ran")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    @Test func everyConcurrentShutdownReturns() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let held = HeldJob()
        let running = Task { await held.run(in: pool) }
        try await waitFor(pool) { $0.jobsRunning == 1 }
        let first = Task { await pool.shutdown(); return true }
        try await Task.sleep(for: .milliseconds(30))
        let second = Task { await pool.shutdown(); return true }
        held.release()
        #expect(await within(30) { await first.value } == true)
        #expect(await within(30) { await second.value } == true)
        #expect(await running.value == nil)
        await supervisor.shutdown()
    }

    @Test func aPoolWhoseSupervisorShutDownAnswersPoolClosed() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let held = HeldJob()
        let running = Task { await held.run(in: pool) }
        try await waitFor(pool) { $0.jobsRunning == 1 }
        let queued = Task { await failure(of: "echo:q", in: pool) }
        try await waitFor(pool) { $0.queueDepth == 1 }
        await supervisor.shutdown()
        #expect(await within(30) { await running.value } == .some(.poolClosed))
        #expect(await within(30) { await queued.value } == .some(.poolClosed))
        #expect(await within(30) { await failure(of: "echo:x", in: pool) } == .some(.poolClosed))
        #expect(await within(30) { await pool.shutdown(); return true } == true)
    }

    @Test func aPoolKeepsItsSupervisorAlive() async throws {
        var kept: WorkerPool?
        do {
            let supervisor = try Supervisor(logger: quietLogger())
            kept = try await makePool(supervisor, size: 1)
        }
        let pool = try #require(kept)
        try await Task.sleep(for: .milliseconds(200))
        #expect(await within(30) { await failure(of: "echo:x", in: pool) } == .some(nil))
        await pool.shutdown()
    }

    @Test func aPoolDroppedWithoutShutdownRetiresItsWorkers() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        do {
            let pool = try await makePool(supervisor, size: 3)
            _ = try await pool.run(input: Array("pid".utf8))
        }
        var live = supervisor.workers().count
        for _ in 0..<100 where live > 0 {
            try await Task.sleep(for: .milliseconds(20))
            live = supervisor.workers().count
        }
        #expect(live == 0)
        await supervisor.shutdown()
    }

    @Test func aWorkerThatNeverReportsItsSandboxFailsThePoolInTime() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        var worker = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "serve"], policy: Policy(), name: "silent")
        worker.standardOutput = .null
        worker.requiredLayers = [.seccomp]
        worker.handshakeTimeout = 0.5
        let configuration = WorkerPoolConfiguration(worker: worker, size: 1)
        let outcome = await within(30) { () async -> JobFailure? in
            do throws(JobFailure) {
                _ = try await WorkerPool(supervisor: supervisor, configuration: configuration)
                return nil
            } catch {
                return error
            }
        }
        guard case .some(.some(.workerUnavailable)) = outcome else {
            Issue.record("expected workerUnavailable, got \(String(describing: outcome))")
            return
        }
        await supervisor.shutdown()
    }

    @Test func workersThatDieBeforeTheirFirstJobAreRestartedWithBackOff() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        var worker = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "lockdown", "exit:0"], policy: Policy())
        worker.standardOutput = .null
        worker.requiredLayers = [.seccomp]
        let pool = try await WorkerPool(supervisor: supervisor, configuration: WorkerPoolConfiguration(worker: worker, size: 1))
        try await Task.sleep(for: .seconds(1))
        // 10 ms, 20, 40... doubling: about 7 starts in a second, not hundreds.
        #expect(pool.metrics.workersSpawned <= 10, "\(pool.metrics.workersSpawned) workers started in 1 s")
        // A job fails at once rather than wait: either no worker is up (workerUnavailable)
        // or it goes to one about to exit (exited).
        let kind = await within(30) { await failure(of: "echo:x", in: pool)?.kind }
        #expect(kind == .some(.workerUnavailable) || kind == .some(.exited), "\(String(describing: kind))")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// Failed starts, then a worker that starts and serves: the run of failures is over, so a
    /// job that finds that worker busy waits for it instead of failing workerUnavailable.
    @Test func aPoolThatRecoveredFromFailedStartsQueuesJobsAgain() async throws {
        let marker = "/tmp/privsep-pool-recovers-\(getpid())"
        unlink(marker)
        defer { unlink(marker) }
        let supervisor = try Supervisor(logger: quietLogger())
        let script = "if [ -e \(marker) ]; then exec \(testWorkerPath) handshake lockdown serve; "
            + "else exec \(testWorkerPath) handshake lockdown exit:0; fi"
        var worker = WorkerConfiguration(executable: "/bin/sh", arguments: ["-c", script], policy: Policy())
        worker.standardOutput = .null
        worker.requiredLayers = [.seccomp]
        var configuration = WorkerPoolConfiguration(worker: worker, size: 1, jobsPerWorker: 100)
        configuration.startupFailureLimit = 5
        let pool = try await WorkerPool(supervisor: supervisor, configuration: configuration)
        try await waitFor(pool) { $0.workersSpawned >= 7 }
        close(open(marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)) // the cause goes away
        var served = false
        for _ in 0..<500 where !served {
            served = (try? await pool.run(input: Array("pid".utf8))) != nil
            if !served { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(served)
        let held = HeldJob()
        async let first = held.run(in: pool)
        try await waitFor(pool) { $0.jobsRunning == 1 }
        let second = Task { await failure(of: "echo:queued", in: pool) }
        try await Task.sleep(for: .milliseconds(300))
        held.release()
        #expect(await first == nil)
        #expect(await second.value == nil)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// A job submitted in the same turn as the loop reads that an idle worker left its
    /// channel finds that worker out of the choice, and its replacement starts at once: it is
    /// spawned before the leaving worker's grace (2 s) ends and that worker is killed. The
    /// loop is held by a task on its executor so that both events land in one turn.
    @Test func aJobSubmittedAsAWorkerLeavesRunsOnItsReplacementAtOnce() async throws {
        let audit = AuditLog(collectingUpTo: 1_000)
        let supervisor = try Supervisor(logger: quietLogger(), auditLog: audit)
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let pid = Int32(try await text(pool.run(input: Array("pid".utf8))))!
        // It closes its channel 1 s after answering, once the loop has found the channel
        // empty (drained) and the holder below is in place.
        #expect(try await text(pool.run(input: Array("hangupafter:1".utf8))) == "bye")
        // Created on the loop thread, the holder is a task job there, not a command: the
        // wake-up fd is then not on epoll's ready list ahead of the channel when it ends.
        // Its yields let the turn that read the command end first.
        let release = Flag()
        let executor = pool.executor
        let holder = await withTaskExecutorPreference(executor) {
            Task(executorPreference: executor) {
                await Task.yield()
                await Task.yield()
                for _ in 0..<3_000 where !release.isSet { usleep(10_000) }
            }
        }
        // The worker has left (its fd 3 is gone); the held loop has not looked yet.
        var left = false
        for _ in 0..<3_000 where !left {
            var info = stat()
            left = lstat("/proc/\(pid)/fd/3", &info) != 0
            if !left { usleep(10_000) }
        }
        #expect(left, "the worker never closed its channel")
        let job = Task { try await text(pool.run(input: Array("echo:after".utf8))) }
        try await Task.sleep(for: .milliseconds(200)) // the submission is queued behind the hang-up
        release.set()
        #expect(try await job.value == "after")
        _ = await holder.value
        // The order of the audit records, not a time: the replacement was spawned before the
        // leaving worker was killed and reaped (with the old dispatch, only after).
        for _ in 0..<3_000 where !audit.records.contains(where: { $0.event == "EXIT" && $0.pid == pid }) {
            try await Task.sleep(for: .milliseconds(10))
        }
        let records = audit.records
        let exit = records.firstIndex { $0.event == "EXIT" && $0.pid == pid }
        let replacement = records.firstIndex { $0.event == "SPAWN" && $0.pid != pid }
        #expect(exit != nil && replacement != nil && replacement! < exit!,
                "replacement spawned at record \(String(describing: replacement)), the leaving worker's exit at \(String(describing: exit))")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// Workers that linger after their last job (here each answers, closes its channel and
    /// sleeps until killed) never make the pool hold more than `2 × size` processes: a
    /// replacement waits for one of them to go, rather than piling up one per job.
    @Test func workersThatLingerAfterTheirLastJobNeverExceedTwiceTheSize() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 1 }
        // Watched from a thread of its own: it blocks between looks, which the cooperative
        // pool's two threads must not.
        let done = Flag(), watched = Flag()
        let most = Peak()
        Thread.detach {
            while !done.isSet {
                most.note(supervisor.workers().count)
                usleep(2_000)
            }
            watched.set()
        }
        for _ in 0..<3 {
            #expect(try await text(pool.run(input: Array("hangup".utf8))) == "bye")
        }
        done.set()
        while !watched.isSet { try await Task.sleep(for: .milliseconds(5)) }
        let peak = most.highest
        #expect(peak <= 2, "\(peak) worker processes at once for a pool of size 1")
        #expect(pool.metrics.workersSpawned >= 3) // one per job at least (the fourth may still wait)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// Intercept mode runs programs that do not speak the protocol: a pool of them is refused
    /// before anything is spawned.
    @Test func aPoolOfInterceptedProgramsIsRefused() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        var worker = WorkerConfiguration(executable: "/bin/cat", arguments: [], policy: Policy())
        worker.intercept = true
        do throws(JobFailure) {
            _ = try await WorkerPool(supervisor: supervisor, configuration: WorkerPoolConfiguration(worker: worker, size: 1))
            Issue.record("a pool of intercepted programs was started")
        } catch {
            if case .workerUnavailable(let why) = error {
                #expect(why.contains("intercepted program"))
            } else {
                Issue.record("refused with \(error)")
            }
        }
        #expect(supervisor.workers().isEmpty)
        await supervisor.shutdown()
    }

    @Test func oneJobPerWorkerStillRunsAtMostSizeJobsAtOnce() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) {
            $0.jobsPerWorker = 1
            $0.queueCapacity = 64
        }
        let jobs = (0..<16).map { _ in Task { await failure(of: "sleep:0.2", in: pool) } }
        var peakRunning = 0, peakProcesses = 0
        for _ in 0..<20 {
            try await Task.sleep(for: .milliseconds(50))
            peakRunning = max(peakRunning, pool.metrics.jobsRunning)
            peakProcesses = max(peakProcesses, supervisor.workers().count)
        }
        for job in jobs { #expect(await job.value == nil) }
        #expect(peakRunning <= 2)
        // Two running, two replacements warming, and a retired one or two not yet reaped.
        #expect(peakProcesses <= 6, "\(peakProcesses) worker processes at once")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    // A pool sends a worker its next job only once a read has found the worker's channel
    // empty. The serving thread reads a worker a turn at a time, so a turn can end on the
    // last chunk of a RESULT, with nothing more to come: the next job must still go out.
    // (The fresh-clone CI once hung for 90 minutes when a 111-chunk result ended a turn.)
    @Test func aJobIsSentAfterATurnThatEndedOnTheLastResultChunk() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) {
            $0.jobsPerWorker = 100
            $0.worker.caps.messagesPerTurn = 1
        }
        await expectEachRuns([("echo:a", 1), ("echo:b", 1), ("big:40000", 40000), ("echo:c", 1)], in: pool)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    // The same when back-pressure pauses reading right after a last chunk: reading resumes
    // on a channel that is already empty, which epoll never reports.
    @Test func aJobIsSentAfterBackPressureLiftsOnAnEmptyChannel() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) {
            $0.jobsPerWorker = 100
            $0.worker.caps.messageBurst = 4
            $0.worker.caps.messagesPerSecond = 200
        }
        // With the bucket full (4 tokens, refilled while the test sleeps), a result of 5
        // chunks spends them on the first 4, and the 5th, the last, pauses reading.
        let bytes = 4 * WireFormat.maximumJobBytes + 100
        await expectEachRuns(Array(repeating: ("big:\(bytes)", bytes), count: 3), in: pool, pause: .milliseconds(100))
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// The kernel's peak for a child (waitid's ru_maxrss) starts at the peak of the process
    /// that spawned it. A supervisor whose own peak is past a pool's memory limit called every
    /// job that died there out of memory (seen when a test had grown the test runner to 800 MB).
    @Test func aSupervisorWhosePeakIsPastThePoolsLimitStillTellsAnExitFromRunningOutOfMemory() async {
        await #expect(processExitsWith: .success) {
            // This process's peak goes to 256 MiB, as a big supervisor's would, and stays there.
            let size = 256 << 20
            let block = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            for offset in stride(from: 0, to: size, by: 4096) { block[offset] = 1 }
            block.deallocate()
            let supervisor = try! Supervisor(logger: quietLogger())
            let pool = try! await makePool(supervisor, size: 1) { $0.memoryLimit = 96 << 20 }
            let exited = await failure(of: "exit:7", in: pool)
            require(exited == .exited(code: 7), "\(String(describing: exited))")
            // A peak past the supervisor's own is the worker's, and still counts.
            let memory = await failure(of: "alloc:400", in: pool)
            guard case .outOfMemory(let resident, let limit)? = memory, limit == 96 << 20, resident > limit else {
                return require(false, "expected out of memory past 96 MiB, got \(String(describing: memory))")
            }
            await pool.shutdown()
            await supervisor.shutdown()
        }
    }

    @Test func aDeathUnderTheMemoryLimitIsNotCalledOutOfMemory() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) {
            $0.jobsPerWorker = 100
            $0.memoryLimit = 256 << 20
        }
        // An earlier job raised the worker's lifetime peak; the kernel's peak at its death
        // is compared with the peak when this job began, not with zero.
        #expect(try await pool.run(input: Array("big:900000".utf8)).bytes.count == 900_000)
        let exited = await failure(of: "exit:7", in: pool)
        #expect(exited == .exited(code: 7), "\(String(describing: exited))")
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// The pool's executor: its caller runs on the serving thread, between the loop's events.
    /// Everything a caller does on the cooperative pool works the same there.
    @Test func tasksOnThePoolsExecutorRunJobsOnItsServingThread() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2) {
            $0.jobsPerWorker = 1_000
            $0.recycleAfterRejection = false
        }
        let task = Task(executorPreference: pool.executor) { () async -> (threads: Set<String>, echoed: Int, concurrent: Int, failures: [JobFailure?], workers: Int) in
            var threads: Set<String> = [currentThreadName()]
            var echoed = 0
            for index in 0..<200 {
                await Task.yield() // a yield comes back here too, after the loop's events
                threads.insert(currentThreadName())
                if let output = try? await pool.run(input: Array("echo:\(index)".utf8)), text(output) == "\(index)" { echoed += 1 }
                threads.insert(currentThreadName())
            }
            // Child tasks inherit the preference: jobs from many tasks at once, two running.
            let concurrent = await withTaskGroup(of: (Bool, String).self) { group in
                for index in 0..<40 {
                    group.addTask {
                        let echoed = (try? await pool.run(input: Array("echo:c\(index)".utf8))).map(text) == "c\(index)"
                        return (echoed, currentThreadName())
                    }
                }
                var count = 0
                for await (echoed, thread) in group {
                    if echoed { count += 1 }
                    threads.insert(thread)
                }
                return count
            }
            threads.insert(currentThreadName())
            let failures = [await failure(of: "crash", in: pool), await failure(of: "reject:3:no", in: pool)]
            // A supervisor call that waits for its loop answers from the loop itself, at once.
            let workers = supervisor.workers().count
            return (threads, echoed, concurrent, failures, workers)
        }
        guard let outcome = await within(60, { await task.value }) else {
            Issue.record("the task on the pool's executor never finished")
            return
        }
        #expect(outcome.threads == ["privsep-loop"])
        #expect(outcome.echoed == 200)
        #expect(outcome.concurrent == 40)
        #expect(outcome.failures == [.crashed(signal: SIGSEGV), .rejected(code: 3, message: Array("no".utf8))])
        #expect(outcome.workers >= 2)
        #expect(pool.metrics.jobsSucceeded == 240)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// Cancelling a task on the pool's executor cancels its job as anywhere else.
    @Test func aTaskOnThePoolsExecutorCanBeCancelled() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 10 }
        let running = Task(executorPreference: pool.executor) { await failure(of: "spin", in: pool) }
        try await waitFor(pool) { $0.jobsRunning == 1 }
        running.cancel()
        #expect(await within(30) { await running.value } == .some(.cancelled))
        let after = Task(executorPreference: pool.executor) { try? await text(pool.run(input: Array("echo:after".utf8))) }
        #expect(await within(30) { await after.value } == .some("after"))
        // A task cancelled before it calls `run` there: its cancel is seen before the job is
        // submitted, so no worker gets the job and none is killed and replaced for it.
        let spawned = pool.metrics.workersSpawned
        let cancelledFirst = Task(executorPreference: pool.executor) { () async -> JobFailure? in
            withUnsafeCurrentTask { $0?.cancel() }
            return await failure(of: "echo:never", in: pool)
        }
        #expect(await within(30) { await cancelledFirst.value } == .some(.cancelled))
        #expect(try await text(pool.run(input: Array("echo:still".utf8))) == "still")
        #expect(pool.metrics.workersSpawned == spawned)
        await pool.shutdown()
        await supervisor.shutdown()
    }

    /// A task on the pool's executor may shut the pool and its supervisor down: the loop it
    /// runs on ends under it, and it is resumed all the same.
    @Test func aTaskOnThePoolsExecutorCanShutEverythingDown() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 2)
        let task = Task(executorPreference: pool.executor) { () async -> (String?, JobFailure?) in
            let echoed = (try? await pool.run(input: Array("echo:last".utf8))).map(text)
            await pool.shutdown()
            await supervisor.shutdown()
            await Task.yield()
            return (echoed, await failure(of: "echo:after", in: pool))
        }
        let outcome = await within(30) { await task.value }
        #expect(outcome?.0 == "last")
        #expect(outcome?.1 == .poolClosed)
        #expect(supervisor.workers().isEmpty)
    }

    /// A blocking supervisor call from a task on a pool's executor that would wait for another
    /// serving thread traps, rather than risk two threads waiting on each other for ever.
    @Test func aBlockingCallToAnotherServingThreadFromThePoolsExecutorTraps() async {
        await #expect(processExitsWith: .failure) {
            let supervisor = try! Supervisor(logger: quietLogger(), servingThreads: 2)
            let pool = try! await makePool(supervisor, size: 1)
            await Task(executorPreference: pool.executor) { _ = supervisor.workers() }.value
        }
    }

    /// What a new supervisor waits for while it starts (its loops taking their CPUs) waits on
    /// nothing else, so a task on another supervisor's serving thread may create one.
    @Test func aTaskOnThePoolsExecutorCanStartAnotherSupervisor() async {
        await #expect(processExitsWith: .success) {
            let supervisor = try! Supervisor(logger: quietLogger())
            let pool = try! await makePool(supervisor, size: 1)
            let started = await Task(executorPreference: pool.executor) { () async -> Bool in
                guard let other = try? Supervisor(logger: quietLogger(), placement: .colocated, servingThreads: 2) else { return false }
                await other.shutdown()
                return true
            }.value
            require(started, "the second supervisor did not start")
            await pool.shutdown()
            await supervisor.shutdown()
        }
    }

    /// A task on the executor of a loop that has ended goes on, on Swift's global executor:
    /// its job fails with poolClosed and nothing it awaits afterwards hangs.
    @Test func aTaskOnThePoolsExecutorOutlivesItsLoop() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pool = try await makePool(supervisor, size: 1) { $0.jobsPerWorker = 100 }
        let held = HeldJob()
        let task = Task(executorPreference: pool.executor) { () async -> (JobFailure?, JobFailure?) in
            let first = await held.run(in: pool)
            await Task.yield()
            try? await Task.sleep(for: .milliseconds(1))
            return (first, await failure(of: "echo:late", in: pool))
        }
        try await waitFor(pool) { $0.jobsRunning == 1 }
        await supervisor.shutdown()
        let outcome = await within(30) { await task.value }
        #expect(outcome?.0 == .poolClosed)
        #expect(outcome?.1 == .poolClosed)
        await pool.shutdown()
    }
}

/// The calling thread's name, as the kernel knows it (15 characters at most).
private func currentThreadName() -> String {
    let fd = Glibc.open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { Glibc.close(fd) }
    var bytes = [UInt8](repeating: 0, count: 32)
    let count = Glibc.read(fd, &bytes, bytes.count)
    guard count > 0 else { return "" }
    return String(decoding: bytes[..<count].filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
}
