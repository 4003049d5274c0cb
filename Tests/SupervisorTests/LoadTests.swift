import Foundation
import Glibc
import Logging
import Synchronization
import PrivsepIPC
import PrivsepTestSupport
import Supervisor
import Testing

@Suite struct LoadTests {
    @Test func twoHundredConcurrentWorkersAreServed() async throws {
        let scratch = ScratchDirectory()
        scratch.write("data.txt", "payload\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/data.txt", .file, [.read])
        let supervisor = try Supervisor(logger: quietLogger())
        let grants = policy
        let runs = try await withThrowingTaskGroup(of: WorkerRun.self) { group in
            for _ in 0..<200 {
                group.addTask {
                    try await runWorker(["handshake", "sleep:0.5", "read:\(scratch.path)/data.txt", "read:/etc/passwd"],
                                        policy: grants, supervisor: supervisor)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(runs.count == 200)
        for run in runs {
            #expect(run.reason == .exited(code: 0))
            #expect(run.lines.dropFirst() == ["read \(scratch.path)/data.txt payload", "read /etc/passwd errno \(EACCES)"])
        }
        await supervisor.shutdown()
    }

    /// 10,000 requests, half granted and half denied, then the supervisor holds
    /// exactly the fds it held before. Run in a child process of its own so the count is exact.
    @Test func tenThousandRequestsLeakNoDescriptor() async {
        await #expect(processExitsWith: .success) {
            let scratch = ScratchDirectory()
            scratch.write("data.txt", "payload\n")
            var policy = Policy()
            policy.allow(path: scratch.path, .directory, [.read])
            let supervisor = try! Supervisor(logger: quietLogger())
            // Warm up (the loop's own fds, the fixture's first run).
            _ = try! await runWorker(["handshake", "read:\(scratch.path)/data.txt"], policy: policy, supervisor: supervisor)
            let before = openFileDescriptorSet()
            var steps = ["handshake"]
            for index in 0..<10_000 {
                steps.append(index % 2 == 0 ? "open:\(scratch.path)/data.txt:r" : "open:/etc/shadow:r")
            }
            let run = try! await runWorker(steps, policy: policy, supervisor: supervisor)
            require(run.reason == .exited(code: 0), "\(run.reason)")
            require(run.lines.count == 10_001, "\(run.lines.count) lines")
            require(run.lines.filter { $0.hasSuffix(" ok") }.count == 5_000, "granted opens: \(run.lines.filter { $0.hasSuffix(" ok") }.count)")
            let leaked = newFileDescriptors(since: before)
            require(leaked.isEmpty, "supervisor fds leaked: \(leaked.sorted())")
            await supervisor.shutdown()
        }
    }

    /// Every fd in a worker's unread replies is charged to the supervisor's user: past its
    /// RLIMIT_NOFILE (without CAP_SYS_RESOURCE) no reply can carry an fd (ETOOMANYREFS). A
    /// worker that hoards them must not get another killed: that one's OPEN fails EMFILE and
    /// it goes on. Run as nobody, with a low limit, in a process of its own.
    @Test(.enabled(if: geteuid() == 0, "drops to nobody: needs root"))
    func aWorkerThatLeavesRepliesUnreadCannotGetAnotherKilled() async {
        await #expect(processExitsWith: .success) {
            require(setgroups(0, nil) == 0 && setgid(65534) == 0 && setuid(65534) == 0,
                    "dropping to nobody")
            var limit = rlimit(rlim_cur: 48, rlim_max: 48)
            require(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, "setrlimit")
            var policy = Policy()
            policy.allow(path: "/etc/hostname", .file, [.read])
            let audit = AuditLog(collectingUpTo: 1_000)
            let supervisor = try! Supervisor(logger: quietLogger(), auditLog: audit)
            let hoarder = try! await supervisor.spawn(WorkerConfiguration(
                executable: testWorkerPath, arguments: ["handshake", "hoard:60:/etc/hostname", "sleep:30"], policy: policy))
            for _ in 0..<3_000 where audit.records.filter({ $0.workerID == hoarder.id && $0.event == "OPEN" }).count < 60 {
                usleep(10_000)
            }
            require(audit.records.filter({ $0.workerID == hoarder.id && $0.event == "OPEN" }).count == 60, "the hoard served")
            let honest = try! await runWorker(["handshake", "read:/etc/hostname", "exit:0"], policy: policy, supervisor: supervisor)
            require(honest.reason == .exited(code: 0), "the other worker ended \(honest.reason)")
            require(honest.lines.last == "read /etc/hostname errno \(EMFILE)", "\(honest.lines)")
            // Replies parked because a worker had not read them yet are refused their fds when
            // sent later too: answered EMFILE as well, and that worker goes on.
            let late = try! await runWorker(["handshake", "hoard:100:/etc/hostname", "sleep:1", "drain:100", "exit:0"],
                                            policy: policy, supervisor: supervisor)
            require(late.reason == .exited(code: 0), "the late reader ended \(late.reason)")
            require(late.lines.last == "drain fds 0 errnos \(EMFILE):100", "\(late.lines)")
            hoarder.stop(grace: 0)
            _ = await hoarder.exit()
            await supervisor.shutdown()
            exit(0)
        }
    }

    /// The supervisor out of file descriptors (its RLIMIT_NOFILE reached): a spawn fails with
    /// a typed error, a running worker's OPEN is answered EMFILE, and once fds are free again
    /// both work as before, with no fd leaked; a learning worker's LISTENER meanwhile is the
    /// supervisor's shortage, not the worker's fault. In a child process of its own: the limit is
    /// the process's.
    @Test func aSupervisorOutOfDescriptorsFailsCleanlyAndRecovers() async {
        await #expect(processExitsWith: .success) {
            let scratch = ScratchDirectory()
            scratch.write("data.txt", "payload\n")
            // Renamed into place while no fd can be opened: a rename needs none.
            scratch.write("first.pending", "")
            scratch.write("second.pending", "")
            scratch.write("learn.pending", "")
            var policy = Policy()
            policy.allow(path: scratch.path + "/data.txt", .file, [.read])
            let audit = AuditLog(collectingUpTo: 1_000)
            let supervisor = try! Supervisor(logger: quietLogger(), auditLog: audit)
            _ = try! await runWorker(["handshake"], supervisor: supervisor) // the loop's own fds, the fixture's first run
            let before = openFileDescriptorSet()
            let read = "read:\(scratch.path)/data.txt"
            // Bounded, so that a supervisor that never answers fails the test rather than hangs it.
            func waitUntil(_ what: String, _ condition: () -> Bool) {
                for _ in 0..<3_000 where !condition() { usleep(10_000) }
                require(condition(), "30 s and still not: \(what)")
            }
            async let running = runWorker(["handshake", "waitfile:\(scratch.path)/first", read, "waitfile:\(scratch.path)/second", read],
                                          policy: policy, supervisor: supervisor)
            // A learning worker whose LISTENER will come while no fd number is free.
            var learning = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "waitfile:\(scratch.path)/learn", "lockdown"])
            learning.learning = true
            learning.standardOutput = .null
            let learner = try! await supervisor.spawn(learning)
            waitUntil("the workers' handshakes") { supervisor.workers().filter(\.isHandshakeDone).count == 2 }

            // Every fd number below the limit is taken: the next open, socket or dup fails.
            var saved = rlimit()
            require(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) == 0, "getrlimit")
            let highest = openFileDescriptorSet().compactMap { Int32($0.prefix { $0 != "-" }) }.max() ?? 2
            var lowered = saved
            lowered.rlim_cur = rlim_t(highest + 1)
            require(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered) == 0, "setrlimit")
            var fillers: [Int32] = []
            while true {
                let fd = dup(2)
                if fd < 0 { break }
                fillers.append(fd)
            }
            require(errno == EMFILE, "dup failed with \(errno), not EMFILE")

            do throws(SupervisorError) {
                _ = try await supervisor.spawn(WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake"]))
                require(false, "a spawn succeeded with no fd to spare")
            } catch .spawnFailed(let why) {
                require(why.contains(String(cString: strerror(EMFILE))), "spawn failed with \(why)")
            } catch {
                require(false, "spawn failed with \(error)")
            }
            require(rename(scratch.path + "/first.pending", scratch.path + "/first") == 0, "rename")
            waitUntil("an OPEN answered EMFILE") { audit.records.contains(where: { $0.event == "OPEN" && $0.errno == EMFILE }) }
            // Its listener cannot be received: the supervisor's shortage, said as such.
            require(rename(scratch.path + "/learn.pending", scratch.path + "/learn") == 0, "rename")
            waitUntil("the learning worker killed") { audit.records.contains(where: { $0.workerID == learner.id && $0.event == "KILL" }) }
            let killed = audit.records.first(where: { $0.workerID == learner.id && $0.event == "KILL" })?.reason ?? ""
            require(killed.contains("no free file descriptor to receive its seccomp listener"), "learning worker killed: \(killed)")

            for fd in fillers { close(fd) }
            require(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved) == 0, "setrlimit")
            require(rename(scratch.path + "/second.pending", scratch.path + "/second") == 0, "rename")
            let run = try! await running
            require(run.reason == .exited(code: 0), "\(run.reason)")
            require(run.lines.dropFirst() == ["read \(scratch.path)/data.txt errno \(EMFILE)", "read \(scratch.path)/data.txt payload"],
                    "\(run.lines)")
            let after = try! await runWorker(["handshake", read], policy: policy, supervisor: supervisor)
            require(after.lines.last == "read \(scratch.path)/data.txt payload", "\(after.lines)")
            let leaked = newFileDescriptors(since: before)
            require(leaked.isEmpty, "supervisor fds leaked: \(leaked.sorted())")
            await supervisor.shutdown()
        }
    }

    @Test func aFloodingWorkerIsKilledAndOthersAreStillServed() async throws {
        let scratch = ScratchDirectory()
        scratch.write("data.txt", "payload\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/data.txt", .file, [.read])
        let supervisor = try Supervisor(logger: quietLogger())
        async let flood = runWorker(["handshake", "flood:100000", "sleep:30"], policy: policy, supervisor: supervisor, configure: {
            $0.caps.replyStallSeconds = 1
        })
        // Meanwhile another worker is served normally.
        let honest = try await runWorker(["handshake", "read:\(scratch.path)/data.txt"], policy: policy, supervisor: supervisor)
        #expect(honest.lines.last == "read \(scratch.path)/data.txt payload")
        let flooded = try await flood
        switch flooded.reason {
        case .resourceCapExceeded(let why): #expect(why.contains("not reading its replies"))
        default: Issue.record("flooding worker ended with \(flooded.reason)")
        }
        await supervisor.shutdown()
    }

    /// A worker's unread replies, each with an fd in flight, are bounded by its channel's
    /// send buffer: past about 80 they are parked, and a worker that leaves them is killed,
    /// rather than holding a few hundred fds for as long as it lives.
    @Test func aWorkerCannotHoardFileDescriptorsInUnreadReplies() async throws {
        var policy = Policy()
        policy.allow(path: "/etc/hostname", .file, [.read])
        let supervisor = try Supervisor(logger: quietLogger())
        let run = try await runWorker(["handshake", "hoard:200:/etc/hostname", "sleep:30"], policy: policy, supervisor: supervisor,
                                      configure: { $0.caps.replyStallSeconds = 1 })
        switch run.reason {
        case .resourceCapExceeded(let why): #expect(why.contains("not reading its replies"))
        default: Issue.record("the hoarding worker ended with \(run.reason)")
        }
        await supervisor.shutdown()
    }

    /// Whatever the burst: with 1 (and 0, taken as 1) every pause leaves the bucket full, so
    /// only the flood's pauses following one another tell it from a slow worker.
    @Test(arguments: [4, 1, 0]) func aWorkerOverItsMessageRateIsHeldBackThenKilled(burst: Int) async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let run = try await runWorker(["handshake", "flood:100000", "sleep:30"], supervisor: supervisor, configure: {
            // Slow enough that the worker's reply queue (about 80 replies) does not fill
            // first: that would be the other cap, "not reading its replies". Under a loaded
            // test run a serving thread kept from its CPU for a few burst's worth of time
            // finds the bucket refilled and restarts the flood's clock (it was not served
            // faster than the rate then); at 100 a second, 80 replies came within those
            // restarts once in a full run. At 20, they take 4 s of serving.
            $0.caps.messagesPerSecond = 20
            $0.caps.messageBurst = burst
            $0.caps.floodKillSeconds = 0.5
            $0.caps.replyStallSeconds = 60
        })
        #expect(run.reason == .resourceCapExceeded("flooding: over 20 messages/s for 0.5 s"))
        await supervisor.shutdown()
    }

    /// A worker is held to its rate: past its burst, a message a 1/rate. A lower bound on the
    /// time taken (a slow machine only adds to it): 44 opens at 20 a second, burst 4, take at
    /// least 2 s less one message's worth; served for free, the throttled ones took half that.
    @Test func aWorkerIsHeldToItsMessageRate() async throws {
        var policy = Policy()
        policy.allow(path: "/etc/hostname", .file, [.read])
        let started = ContinuousClock.now
        let run = try await runWorker(["handshake", "opens:44:/etc/hostname", "exit:0"], policy: policy, configure: {
            $0.caps.messagesPerSecond = 20
            $0.caps.messageBurst = 4
            $0.caps.floodKillSeconds = 60
        })
        let elapsed = ContinuousClock.now - started
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.contains("opens granted 44 refused 0"))
        #expect(elapsed >= .milliseconds(1_900), "\(elapsed)")
    }

    /// A throttle long after the last one is a new one, whatever the burst: with a burst of 2
    /// the flood's clock used to run from the first throttle, and with 0 every message
    /// throttled, so slow workers were killed for flooding.
    @Test(arguments: [2, 0]) func aSlowWorkerWithASmallBurstIsNotKilledForFlooding(burst: Int) async throws {
        var policy = Policy()
        policy.allow(path: "/etc/hostname", .file, [.read])
        let steps = ["handshake", "opens:3:/etc/hostname", "sleep:2.5"] + Array(repeating: ["opens:1:/etc/hostname", "sleep:0.4"], count: 4).flatMap { $0 }
            + ["opens:3:/etc/hostname", "sleep:0.5", "exit:0"] // the kill came at the throttle's end
        let run = try await runWorker(steps, policy: policy, configure: {
            $0.caps.messagesPerSecond = 10
            $0.caps.messageBurst = burst
            $0.caps.floodKillSeconds = 1
        })
        #expect(run.reason == .exited(code: 0))
    }

    @Test func aPolicyCanBeNarrowedButNotWidened() async throws {
        let scratch = ScratchDirectory()
        scratch.write("a.txt", "alpha\n")
        scratch.write("b.txt", "bravo\n")
        var policy = Policy()
        policy.allow(path: scratch.path, .directory, [.read])
        let supervisor = try Supervisor(logger: quietLogger())
        let pipe = Pipe()
        var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: [
            "handshake", "read:\(scratch.path)/a.txt", "waitfile:\(scratch.path)/narrowed", "read:\(scratch.path)/a.txt", "read:\(scratch.path)/b.txt",
        ], policy: policy)
        configuration.standardOutput = .descriptor(SharedFileDescriptor(pipe.write))
        let handle = try await supervisor.spawn(configuration)
        // Narrow only once the first read has been served (the fd count says so).
        for _ in 0..<3000 where (supervisor.workers().first?.fileDescriptorsHandedOut ?? 0) < 1 {
            try await Task.sleep(for: .milliseconds(10))
        }
        var narrower = Policy()
        narrower.allow(path: scratch.path + "/b.txt", .file, [.read])
        try handle.narrowPolicy(to: narrower)
        scratch.write("narrowed", "") // lets the worker go on (a fixed sleep would race a loaded machine)
        var wider = narrower
        wider.allow(path: "/etc", .directory, [.read])
        #expect(throws: PolicyError.wouldWiden) { try handle.narrowPolicy(to: wider) }
        #expect(await handle.exit() == .exited(code: 0))
        configuration = WorkerConfiguration(executable: "/")
        let lines = readAvailable(pipe.read).split(separator: "\n").dropFirst()
        #expect(Array(lines) == ["read \(scratch.path)/a.txt alpha", "read \(scratch.path)/a.txt errno \(EACCES)", "read \(scratch.path)/b.txt bravo"])
        await supervisor.shutdown()
    }
}

/// Log messages that wait until a gate opens: a terminal a worker stopped (TCXONC), or a
/// pipe nobody reads.
private final class LogGate: Sendable {
    private let state = Mutex<(open: Bool, entered: Bool, messages: [String])>((false, false, []))
    func open() { state.withLock { $0.open = true } }
    var entered: Bool { state.withLock { $0.entered } }
    var messages: [String] { state.withLock { $0.messages } }
    func pass(_ message: String) {
        state.withLock { $0.entered = true }
        while !state.withLock({ $0.open }) { usleep(1_000) }
        state.withLock { $0.messages.append(message) }
    }
}

@Suite struct BlockedLogTests {
    /// A logger that blocks holds up no worker, nor the audit log's file: records wait for the
    /// logger (up to its writer's capacity, the rest counted as not logged), the serving
    /// thread goes on serving, and the file gets every record, the worker's EXIT included.
    @Test func aLoggerThatBlocksHoldsUpNoWorker() async throws {
        let gate = LogGate()
        let scratch = ScratchDirectory()
        let audit = try AuditLog(path: scratch.path + "/audit.jsonl")
        let supervisor = try Supervisor(logger: ClosureLogHandler.logger(at: .notice) { _, message, _ in gate.pass(message) },
                                        auditLog: audit)
        var policy = Policy()
        policy.allow(path: "/etc/hostname", .file, [.read])
        let refusals = 20_000
        // Were the serving thread to wait on the logger, the worker would wait with it: a
        // watchdog opens the gate after a minute, and says so.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(60))
            gate.open()
            return true
        }
        let run = try await runWorker(["handshake", "opens:\(refusals):/etc/shadow", "read:/etc/hostname", "exit:0"],
                                      policy: policy, supervisor: supervisor, configure: { $0.caps.auditRecordsPerSecond = 0 })
        watchdog.cancel()
        #expect(await (try? watchdog.value) == nil, "the worker was served only once the logger was unblocked")
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.contains("opens granted 0 refused \(refusals)"))
        #expect(gate.entered)
        // The file, written by a thread of its own, is not held up by the logger.
        var lines: [Substring] = []
        for _ in 0..<300 {
            let text = (try? String(contentsOfFile: scratch.path + "/audit.jsonl", encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n")
            if lines.last?.contains(#""event":"EXIT""#) == true { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(lines.last?.contains(#""event":"EXIT""#) == true)
        #expect(lines.filter { $0.contains(#""event":"OPEN""#) && $0.contains("/etc/shadow") }.count == refusals)
        #expect(audit.lostRecords == 0)
        gate.open()
        await supervisor.shutdown()
        let messages = gate.messages
        let logged = messages.filter { $0.contains(" OPEN /etc/shadow") }.count
        let report = try #require(messages.first { $0.hasSuffix(" log lines were not logged: the logger was not taking them (16384 were waiting)") })
        let dropped = Int(report.prefix { $0 != " " })!
        #expect(logged + dropped == refusals, "\(logged) logged, \(dropped) dropped")
        #expect(logged >= 16_384)
    }
}
