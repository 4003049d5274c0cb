import Glibc
import PrivsepIPC
@testable import Supervisor
import Synchronization
import Testing

@Suite struct SpawnTests {
    @Test func childSeesOnlyStdioAndTheChannelAtFd3() async throws {
        let run = try await runWorker(["fds", "env", "handshake", "pdeathsig"])
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.count == 4)
        #expect(run.lines.first == "fds 0,1,2,3")
        #expect(run.lines.dropFirst().first == "env PRIVSEP_FD=3")
        #expect(run.lines.dropFirst(2).first?.hasPrefix("welcome ") == true)
        #expect(run.lines.last == "pdeathsig 9", "the worker dies with its supervisor")
    }

    /// The inherited channel has one owner: a second connect() in the worker is refused
    /// before it adopts the fd (two owners would close it twice, the second time perhaps
    /// another descriptor) or says HELLO again (which would get the worker killed).
    @Test func aSecondConnectIsRefusedAndTheFirstConnectionGoesOn() async throws {
        var policy = Policy()
        policy.allow(path: "/etc/hostname", .file, .read)
        let run = try await runWorker(["handshake", "connectagain", "fds", "open:/etc/hostname"], policy: policy)
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.dropFirst().first?.hasPrefix("connectagain no supervisor channel: the channel is already taken") == true, "\(run.lines)")
        #expect(Array(run.lines.dropFirst(2)) == ["fds 0,1,2,3", "open /etc/hostname ok"])
    }

    @Test func exitStatusAndSignalsAreReported() async throws {
        #expect(try await runWorker(["handshake", "exit:7"]).reason == .exited(code: 7))
        let killed = try await runWorker(["handshake", "sleep:30"], configure: { $0.wallClockTimeout = 0.3 })
        #expect(killed.reason == .timedOut(seconds: 0.3))
    }

    /// Many workers on one loop, each with deadlines of its own, set at different moments
    /// and coming due in another order than they were set: every one fires, none early,
    /// and workers without a deadline are left alone.
    @Test func everyWorkersDeadlineFiresAmongMany() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        enum Expectation: Sendable, Equatable { case timedOut(Double), handshake(Double), exits }
        var plan: [Expectation] = []
        for index in 0..<6 {
            plan.append(.timedOut(1.5 - 0.12 * Double(index)))
            plan.append(.handshake(0.25 + 0.1 * Double(index)))
            plan.append(.exits)
        }
        try await withThrowingTaskGroup(of: (Expectation, ExitReason, Duration).self) { group in
            for expectation in plan {
                group.addTask {
                    let started = ContinuousClock.now
                    let run: WorkerRun
                    switch expectation {
                    case .timedOut(let seconds):
                        // The handshake's deadline comes first and passes met: the wall clock's must still fire.
                        run = try await runWorker(["handshake", "sleep:30"], supervisor: supervisor, configure: {
                            $0.wallClockTimeout = seconds
                            $0.handshakeTimeout = 0.6
                        })
                    case .handshake(let seconds):
                        run = try await runWorker(["nohello"], supervisor: supervisor, configure: { $0.handshakeTimeout = seconds })
                    case .exits:
                        run = try await runWorker(["handshake", "sleep:1.2"], supervisor: supervisor, configure: { $0.wallClockTimeout = 60 })
                    }
                    return (expectation, run.reason, ContinuousClock.now - started)
                }
                try await Task.sleep(for: .milliseconds(15))
            }
            for try await (expectation, reason, elapsed) in group {
                switch expectation {
                case .timedOut(let seconds):
                    #expect(reason == .timedOut(seconds: seconds))
                    #expect(elapsed >= .milliseconds(Int(seconds * 1000)), "not before its deadline")
                case .handshake(let seconds):
                    #expect(reason == .handshakeFailed("no HELLO within \(seconds) s"))
                    #expect(elapsed >= .milliseconds(Int(seconds * 1000)), "not before its deadline")
                case .exits:
                    #expect(reason == .exited(code: 0))
                }
            }
        }
        await supervisor.shutdown()
    }

    @Test func missingHelloIsAHandshakeFailure() async throws {
        let run = try await runWorker(["nohello"], configure: { $0.handshakeTimeout = 0.3 })
        #expect(run.reason == .handshakeFailed("no HELLO within 0.3 s"))
    }

    @Test func requestBeforeHelloKillsTheWorker() async throws {
        let open = try WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hosts", flags: 0))))
        let run = try await runWorker(["raw:" + open.map { String(format2: $0) }.joined(), "sleep:5"])
        #expect(run.reason == .protocolViolation("OPEN before HELLO"))
    }

    @Test func malformedMessageKillsWithAPreciseReason() async throws {
        var open = try WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hosts", flags: 0))))
        open[8] = 0xff // length field lies
        let run = try await runWorker(["handshake", "raw:" + open.map { String(format2: $0) }.joined(), "sleep:5"])
        #expect(run.reason == .protocolViolation("header.length says 255 payload bytes, datagram has 19"))
    }

    @Test func fdsAttachedToARequestAreRefusedOrKillTheWorker() async throws {
        let open = try WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hosts", flags: 0))))
        let hex = open.map { String(format2: $0) }.joined()
        // A worker that hands over no LISTENER: the kernel refuses its fds at the send
        // (SO_PASSRIGHTS), where it can.
        if SeqpacketSocket.kernelCanRefuseFileDescriptors {
            let run = try await runWorker(["handshake", "rawfds:3:" + hex, "rawfds:1:" + hex, "exit:0"])
            #expect(run.reason == .exited(code: 0))
            #expect(Array(run.lines.dropFirst()) == Array(repeating: "raw failed \(ChannelError.system(.notPermitted))", count: 2))
        }
        // Elsewhere, and for a learning worker (whose channel takes its LISTENER's fd), the
        // receive refuses them. More fds than any message may carry: the supervisor installs
        // them all (so that it, not the kernel unseen, closes each at once), then refuses them.
        let learning: (inout WorkerConfiguration) -> Void = SeqpacketSocket.kernelCanRefuseFileDescriptors ? { $0.learning = true } : { _ in }
        let run = try await runWorker(["handshake", "rawfds:3:" + hex, "sleep:5"], configure: learning)
        #expect(run.reason == .protocolViolation("3 fds received, at most 1 allowed"))
        // One fd on a request that takes none: the decoder refuses it (and it is closed).
        let one = try await runWorker(["handshake", "rawfds:1:" + hex, "sleep:5"], configure: learning)
        #expect(one.reason == .protocolViolation("OPEN carries 1 fds, expected 0"))
    }

    @Test func secondHelloAndSupervisorMessagesAreViolations() async throws {
        let hello = try WireCodec.encode(Envelope(requestID: 0, .hello(Hello(processID: 1))))
        let run = try await runWorker(["handshake", "raw:" + hello.map { String(format2: $0) }.joined(), "sleep:5"])
        #expect(run.reason == .protocolViolation("second HELLO"))
        let reply = try WireCodec.encode(Envelope(requestID: 0, .reply(.failure(.permissionDenied))))
        let other = try await runWorker(["handshake", "raw:" + reply.map { String(format2: $0) }.joined(), "sleep:5"])
        #expect(other.reason == .protocolViolation("REPLY is sent by the supervisor, never by a worker"))
    }

    @Test func spawnOfAMissingProgramFails() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        await #expect(throws: SupervisorError.spawnFailed("posix_spawn /nonexistent/program: No such file or directory")) {
            _ = try await supervisor.spawn(WorkerConfiguration(executable: "/nonexistent/program"))
        }
        // Relative to the worker's working directory, not the supervisor's: refused.
        await #expect(throws: SupervisorError.spawnFailed("executable \"bin/true\" must be an absolute path: Invalid argument")) {
            _ = try await supervisor.spawn(WorkerConfiguration(executable: "bin/true"))
        }
        // An environment name the worker's libc would split at its '=' (whatever Character it is part of).
        var equals = WorkerConfiguration(executable: testWorkerPath)
        equals.environment["LD_PRELOAD=\u{301}"] = "/tmp/x.so"
        await #expect(throws: SupervisorError.invalidConfiguration("environment variable name \"LD_PRELOAD=\u{301}\" is empty or contains '=' or NUL")) {
            _ = try await supervisor.spawn(equals)
        }
        var inherited = WorkerConfiguration(executable: testWorkerPath)
        inherited.inheritedEnvironment = ["PATH", ""]
        await #expect(throws: SupervisorError.invalidConfiguration("environment variable name \"\" is empty or contains '=' or NUL")) {
            _ = try await supervisor.spawn(inherited)
        }
        await supervisor.shutdown()
    }

    /// With SIGCHLD ignored the kernel reaps workers itself: their exit status is lost and
    /// their pids, which prlimit and the process-group kill use, could name other processes.
    @Test func aSupervisorRefusesAProcessThatIgnoresSIGCHLD() async {
        await #expect(processExitsWith: .exitCode(0)) {
            signal(SIGCHLD, SIG_IGN)
            guard case .failure(.systemError(let message)) = Result(catching: { () throws(SupervisorError) in try Supervisor() }),
                  message.hasPrefix("SIGCHLD is ignored") else { exit(1) }
            signal(SIGCHLD, SIG_DFL)
            guard let supervisor = try? Supervisor(logger: quietLogger()) else { exit(2) }
            await supervisor.shutdown()
            exit(0)
        }
    }

    @Test func resourceLimitsAreAppliedBeforeTheWorkerIsLetGo() async throws {
        let run = try await runWorker(["handshake", "limits"], configure: {
            $0.resourceLimits = ResourceLimits(openFiles: 64, cpuSeconds: 10, fileSize: 1 << 20)
        })
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "limits 64 10 1048576 0", "core size 0 by default")
    }

    /// A worker at its own fd limit gets EMFILE for a reply's fd, as openat would give it,
    /// and its connection goes on: the kernel could not install the fd, nothing was forged.
    @Test func aWorkerAtItsFileDescriptorLimitGetsEMFILEAndKeepsItsConnection() async throws {
        let scratch = ScratchDirectory()
        scratch.write("a.txt", "a\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/a.txt", .file, [.read])
        let run = try await runWorker(["handshake", "keep:40:\(scratch.path)/a.txt"], policy: policy, configure: {
            $0.resourceLimits = ResourceLimits(openFiles: 24)
        })
        #expect(run.reason == .exited(code: 0))
        let line = run.lines.last ?? ""
        #expect(line.hasPrefix("keep ") && line.hasSuffix(" errno \(EMFILE):\(40 - (Int(line.split(separator: " ")[1]) ?? 0)) then ok"), "\(line)")
    }

    @Test func helloMustNameTheSpawnedProcess() async throws {
        let hello = try WireCodec.encode(Envelope(requestID: 0, .hello(Hello(processID: 1))))
        let run = try await runWorker(["raw:" + hello.map { String(format2: $0) }.joined(), "sleep:5"])
        switch run.reason {
        case .handshakeFailed(let why): #expect(why.hasPrefix("HELLO claims pid 1, the worker is pid"))
        default: Issue.record("\(run.reason)")
        }
    }

    @Test func repliesAreMatchedToTheirThreads() async throws {
        let scratch = ScratchDirectory()
        scratch.write("shared.txt", "same for everyone\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/shared.txt", .file, [.read])
        let run = try await runWorker(["handshake", "threads:8:\(scratch.path)/shared.txt"], policy: policy)
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "threads ok 400")
    }

    @Test func theBlockingAPIWorksWithoutAsync() throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let handle = try supervisor.spawnBlocking(WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "exit:5"]))
        #expect(handle.waitForExit() == .exited(code: 5))
        #expect(supervisor.workers().isEmpty)
    }

    @Test func stopSendsTermThenKill() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let handle = try await supervisor.spawn(WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "sleep:30"]))
        try await Task.sleep(for: .milliseconds(200))
        handle.stop(grace: 0.5)
        #expect(await handle.exit() == .stoppedBySupervisor)
        await supervisor.shutdown()
    }

    @Test func shutdownLeavesNoWorkerBehind() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        var handles: [WorkerHandle] = []
        for _ in 0..<5 {
            handles.append(try await supervisor.spawn(WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "sleep:30"])))
        }
        await supervisor.shutdown(grace: 0.5)
        for handle in handles {
            #expect(handle.exitReason == .stoppedBySupervisor)
            #expect(kill(handle.pid, 0) == -1 && errno == ESRCH, "worker \(handle.pid) is gone and reaped")
        }
    }
}

/// A worker that ignores SIGTERM, so that only the grace period's SIGKILL ends it; spawned,
/// and returned once its shell has set the trap (before, SIGTERM would still end it).
func spawnTermIgnoringWorker(_ supervisor: Supervisor) async throws -> WorkerHandle {
    let scratch = ScratchDirectory()
    var configuration = WorkerConfiguration(executable: "/bin/sh", arguments: ["-c", "trap '' TERM; : > \(scratch.path)/ready; sleep 30"])
    configuration.handshakeTimeout = 60
    let handle = try await supervisor.spawn(configuration)
    for _ in 0..<1_000 where access(scratch.path + "/ready", F_OK) != 0 { try await Task.sleep(for: .milliseconds(10)) }
    #expect(access(scratch.path + "/ready", F_OK) == 0, "the worker's trap was not set within 10 s")
    return handle
}

@Suite(.timeLimit(.minutes(1))) struct ShutdownTests {
    /// Two callers of shutdown (a signal handler and the main path, say) both return.
    @Test func concurrentShutdownsBothReturn() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let handle = try await spawnTermIgnoringWorker(supervisor)
        async let first: Void = supervisor.shutdown(grace: 1)
        try await Task.sleep(for: .milliseconds(200))
        await supervisor.shutdown(grace: 1)
        await first
        #expect(handle.exitReason == .stoppedBySupervisor)
    }

    /// A later stop with a longer grace does not put off the kill an earlier one set.
    @Test func aLaterStopDoesNotExtendTheGrace() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let handle = try await spawnTermIgnoringWorker(supervisor)
        let started = ContinuousClock.now
        async let shutdown: Void = supervisor.shutdown(grace: 0.5)
        try await Task.sleep(for: .milliseconds(100))
        handle.stop(grace: 30)
        await shutdown
        #expect(handle.exitReason == .stoppedBySupervisor)
        #expect(ContinuousClock.now - started < .seconds(20), "the kill came at the first grace's end, not the second's")
    }
}

extension String {
    init(format2 byte: UInt8) {
        let hex = String(byte, radix: 16)
        self = hex.count == 1 ? "0" + hex : hex
    }
}

@Suite struct RestartTests {
    @Test func onFailureRestartsUntilTheBudgetIsSpent() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let starts = Counter()
        let reason = try await supervisor.run(
            WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "exit:3"]),
            restart: RestartPolicy(mode: .onFailure, maximumRestarts: 3, initialBackoff: 0.01),
            onStart: { _ in starts.increment() })
        #expect(reason == .exited(code: 3))
        #expect(starts.value == 4)
        await supervisor.shutdown()
    }

    @Test func aCleanExitIsNotRestartedOnFailure() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let starts = Counter()
        let reason = try await supervisor.run(
            WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "exit:0"]),
            restart: RestartPolicy(mode: .onFailure, maximumRestarts: 3, initialBackoff: 0.01),
            onStart: { _ in starts.increment() })
        #expect(reason == .exited(code: 0))
        #expect(starts.value == 1)
        await supervisor.shutdown()
    }

    /// `Duration.seconds` traps on infinity, NaN and values past Int64 nanoseconds.
    @Test func backOffsThatDurationCannotHoldDoNotTrap() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let reason = try await supervisor.run(
            WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "exit:3"]),
            restart: RestartPolicy(mode: .onFailure, maximumRestarts: 2, initialBackoff: .nan,
                                   maximumBackoff: .infinity, resetAfter: .infinity))
        #expect(reason == .exited(code: 3))
        #expect(clampedDuration(.infinity) == .seconds(1_000_000_000))
        #expect(clampedDuration(1e21) == .seconds(1_000_000_000))
        #expect(clampedDuration(-1) == .zero && clampedDuration(.nan) == .zero)
        #expect(clampedDuration(0.25) == .milliseconds(250))
        await supervisor.shutdown()
    }

    /// A worker asked to stop is not started again, even if it misbehaves in its grace
    /// period and is killed for that (here it writes garbage to its channel on SIGTERM).
    @Test func aStoppedWorkerIsNotRestartedWhateverItDoesInItsGrace() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let starts = Counter()
        var configuration = WorkerConfiguration(executable: "/bin/sh",
                                                arguments: ["-c", "trap 'printf garbage >&3; sleep 5' TERM; sleep 30 & wait"])
        configuration.handshakeTimeout = 60
        let reason = try await supervisor.run(configuration, restart: RestartPolicy(mode: .onFailure, maximumRestarts: 3, initialBackoff: 0.01),
                                              onStart: { handle in
                                                  starts.increment()
                                                  Thread.detach { usleep(300_000); handle.stop(grace: 2) }
                                              })
        #expect(starts.value == 1)
        #expect(reason != .stoppedBySupervisor, "killed for the garbage, which its reason still says: \(reason)")
        await supervisor.shutdown()
    }

    /// A stop that comes as the worker exits (before the loop reads it) still counts.
    @Test func aStopMadeAsTheWorkerExitsStillCounts() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let starts = Counter()
        let reason = try await supervisor.run(
            WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "exit:3"]),
            restart: RestartPolicy(mode: .onFailure, maximumRestarts: 3, initialBackoff: 0.01),
            onStart: { handle in starts.increment(); handle.stop() })
        #expect(starts.value == 1, "\(reason)")
        await supervisor.shutdown()
    }

    /// A task cancelled during the back-off starts no new worker.
    @Test(.timeLimit(.minutes(1))) func cancellingDuringTheBackOffStartsNoWorker() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let starts = Counter()
        let task = Task {
            try await supervisor.run(WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "exit:3"]),
                                     restart: RestartPolicy(mode: .onFailure, maximumRestarts: 3, initialBackoff: 30),
                                     onStart: { _ in starts.increment() })
        }
        for _ in 0..<1_000 where starts.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(300)) // its first run over, it waits out the back-off
        task.cancel()
        #expect(try await task.value == .exited(code: 3))
        #expect(starts.value == 1)
        await supervisor.shutdown()
    }

    @Test func decisions() {
        let always = RestartPolicy(mode: .always)
        #expect(always.restarts(after: .exited(code: 0)))
        #expect(!always.restarts(after: .stoppedBySupervisor))
        let onFailure = RestartPolicy(mode: .onFailure)
        #expect(onFailure.restarts(after: .signaled(signal: 9, coreDumped: false)))
        #expect(!onFailure.restarts(after: .exited(code: 0)))
        #expect(!RestartPolicy.never.restarts(after: .exited(code: 1)))
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
