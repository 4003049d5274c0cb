import Glibc
import PrivsepIPC
import PrivsepTestSupport
@testable import Supervisor
import Testing

/// Lockdown is exercised in spawned workers only, never in the test runner.
@Suite struct LockdownTests {
    static let allLayers = 1 | 2 | 4 | 0x40 // no_new_privs, seccomp, Landlock, Landlock's scopes

    func violation(_ run: WorkerRun) -> SyscallViolation? {
        if case .seccompViolation(let violation) = run.reason { return violation }
        return nil
    }

    @Test func brokeredWorkerCanStillGetFilesFromTheSupervisor() async throws {
        let scratch = ScratchDirectory()
        scratch.write("in.txt", "through the broker\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/in.txt", .file, [.read])
        let run = try await runWorker(["handshake", "lockdown", "read:\(scratch.path)/in.txt"], policy: policy,
                                      configure: { $0.requiredLayers = [.seccomp, .landlock] })
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.dropFirst() == ["lockdown \(Self.allLayers) abi 7", "read \(scratch.path)/in.txt through the broker"])
        let sandbox = run.audit.first { $0.event == "SANDBOX" }
        #expect(sandbox?.detail == "no_new_privs, seccomp, landlock, landlock-scopes (Landlock ABI 7)")
    }

    @Test(arguments: [
        ("openat", "openat"), ("openat2", "openat2"), ("execve", "execve"), ("socket", "socket"),
        ("ptrace", "ptrace"), ("unshare", "unshare"), ("seccomp", "seccomp"), ("io_uring", "io_uring_setup"),
        ("memfd_exec", "memfd_create"), ("prctl", "prctl"), ("fork", "clone"),
        ("fcntl_clear_append", "fcntl"), ("fcntl_setown", "fcntl"), ("fcntl_async", "fcntl"),
        ("madvise_hwpoison", "madvise"), ("sendto_address", "sendto"),
        ("sendto_fastopen", "sendto"), ("prlimit_other", "prlimit64"),
    ])
    func deniedSyscallIsReportedByName(attack: String, syscall: String) async throws {
        let run = try await runWorker(["handshake", "lockdown", "attack:\(attack)", "exit:0"])
        let reported = try #require(violation(run), "\(attack): \(run.reason)")
        #expect(reported.name == syscall)
        #expect(reported.arguments?.count == 6, "the report's arguments, for the group hints")
        #expect(reported.architectureName == "x86_64")
        #expect(reported.instructionPointer != 0)
        #expect(run.lines.count == 2, "nothing after the attack ran: \(run.lines)")
    }

    @Test(arguments: ["i386", "x32"])
    func otherArchitecturesAreKilled(attack: String) async throws {
        let run = try await runWorker(["handshake", "lockdown", "attack:\(attack)", "exit:0"])
        let reported = try #require(violation(run), "\(attack): \(run.reason)")
        #expect(run.lines.count == 2)
        _ = reported
    }

    @Test func theBaselineKeepsWhatItAllowsUsable() async throws {
        // F_SETFL that keeps O_APPEND set is allowed (stdout is a pipe: the kernel accepts it).
        // madvise's guard-page advice (102, past the 0-31 range) is let through.
        let run = try await runWorker(["handshake", "lockdown", "attack:fcntl_keep_append", "attack:tcgets2", "attack:madvise_guard", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        // TCGETS2 (isatty in glibc 2.42) reaches the kernel, which says a pipe is no terminal.
        #expect(run.lines.dropFirst(2) == ["attack fcntl_keep_append 0", "attack tcgets2 -\(ENOTTY)", "attack madvise_guard 0"])
    }

    @Test func clone3GetsENOSYSAndThreadsStillStart() async throws {
        let run = try await runWorker(["handshake", "lockdown:threads", "attack:clone3", "attack:thread", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.dropFirst(2) == ["attack clone3 -\(ENOSYS)", "attack thread 0"])
    }

    @Test func killModeKillsWithoutAReport() async throws {
        let run = try await runWorker(["handshake", "lockdown:kill", "attack:openat", "exit:0"])
        #expect(violation(run)?.name == nil, "the kernel killed it before it could report: \(run.reason)")
        #expect(violation(run) != nil)
    }

    /// The SIGSYS reporter remembers which socket the channel was: a worker that freed its
    /// connection, so that the channel's fd number went to something else (here its stdout,
    /// a socket the test reads), does not send the report (the call's instruction pointer and
    /// arguments) to whatever took the number. It still ends with 159.
    @Test func aViolationIsNotReportedToWhateverReusedTheChannelsNumber() async throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | O_CLOEXEC /* SOCK_CLOEXEC */, 0, &pair) == 0)
        let reader = OwnedFileDescriptor(adoptingRawValue: pair[0])
        let writer = SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: pair[1]))
        let run = try await runWorker(["stalereporter"]) { $0.standardOutput = .descriptor(writer) }
        #expect(run.reason == .exited(code: 128 + SIGSYS))
        _ = consume writer
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while case let count = read(reader.unsafeRawValue, &chunk, chunk.count), count > 0 { output += chunk[..<count] }
        #expect(String(decoding: output, as: UTF8.self) == "stalereporter reused 3\n")
    }

    /// The brokered profile gives up root: a worker a root supervisor spawned becomes nobody.
    @Test func theBrokeredProfileGivesUpRoot() async throws {
        let run = try await runWorker(["handshake", "lockdown:brokered", "ids", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        let expected = getuid() == 0 ? "ids uid 65534 euid 65534 gid 65534 groups 0" : "ids uid \(getuid()) euid \(geteuid()) gid \(getgid())"
        #expect(run.lines.last?.hasPrefix(expected) == true, "\(run.lines)")
    }

    @Test func errnoModeFailsTheCallAndCarriesOn() async throws {
        let run = try await runWorker(["handshake", "lockdown:errno", "attack:openat", "attack:execve:/bin/sh", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.dropFirst(2) == ["attack openat -\(EACCES)", "attack execve -\(EACCES)"])
        // ENOSYS is also clone3's own answer: one rule for both, not a lockdown that fails.
        let enosys = try await runWorker(["handshake", "lockdown:enosys", "attack:openat", "attack:clone3", "exit:0"])
        #expect(enosys.reason == .exited(code: 0))
        #expect(enosys.lines.dropFirst(2) == ["attack openat -\(ENOSYS)", "attack clone3 -\(ENOSYS)"])
    }

    /// The filter's errno is 16 bits, and 0 is success: an errno the filter cannot carry
    /// as asked would make refused calls "succeed", so the lockdown fails instead.
    @Test(arguments: [0, 65536, 4096]) func anErrnoTheFilterCannotCarryFailsTheLockdown(errno: Int) async throws {
        let run = try await runWorker(["handshake", "lockdown:errno=\(errno)", "attack:openat", "exit:0"])
        #expect(run.reason == .exited(code: 4))
        #expect(run.lines.dropFirst().first == "lockdown failed: lockdown failed: Violation.fail(\(errno)): the errno must be 1 to 4095", "\(run.lines)")
    }

    @Test func landlockLimitsDirectOpensToTheListedPaths() async throws {
        let scratch = ScratchDirectory()
        scratch.write("visible.txt", "v\n")
        let run = try await runWorker([
            "handshake", "lockdown:ro=\(scratch.path)", "attack:openat:\(scratch.path)/visible.txt", "attack:openat:/etc/hostname", "exit:0",
        ])
        #expect(run.reason == .exited(code: 0))
        let results = run.lines.dropFirst(2).map { $0.split(separator: " ").last.map(String.init) ?? "" }
        #expect(results.count == 2)
        #expect((Int(results.first ?? "") ?? -1) >= 0, "the listed path opens")
        #expect(results.last == "-\(EACCES)", "everything else is refused by Landlock")
    }

    @Test func theWorkerCanDropToAnotherUser() async throws {
        let scratch = ScratchDirectory()
        scratch.write("in.txt", "brokered\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/in.txt", .file, [.read])
        let run = try await runWorker(["handshake", "lockdown:nobody", "ids", "pdeathsig", "read:\(scratch.path)/in.txt", "attack:ptrace"], policy: policy)
        #expect(run.lines.dropFirst(2).first == "ids uid 65534 euid 65534 gid 65534 groups 0")
        #expect(run.lines.dropFirst(3).first == "pdeathsig 9", "changing identity clears the parent-death signal; lockdown sets it again")
        #expect(run.lines.dropFirst(4).first == "read \(scratch.path)/in.txt brokered", "the broker still serves it")
        #expect(violation(run)?.name == "ptrace")
    }

    @Test func namespacesAreEnteredAndReported() async throws {
        let run = try await runWorker(["handshake", "lockdown:ns", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "lockdown \(Self.allLayers | 8 | 16) abi 7")
    }

    @Test func aRequiredLayerMustBeReportedBeforeTheFirstRequest() async throws {
        let run = try await runWorker(["handshake", "read:/etc/hostname"], configure: { $0.requiredLayers = [.seccomp] })
        #expect(run.reason == .sandboxIncomplete("request before SANDBOX_STATUS; required layers: seccomp"))
        let missing = try await runWorker(["handshake", "lockdown:nolandlock", "read:/etc/hostname"],
                                          configure: { $0.requiredLayers = [.seccomp, .landlock] })
        #expect(missing.reason == .sandboxIncomplete("layers landlock requested but not active"))
    }

    /// A required layer the kernel can show is checked against it, on every thread: a report
    /// of layers never applied, or a filter that binds one thread of two, is not believed.
    @Test func requiredLayersAreCheckedAgainstTheKernel() async throws {
        let unapplied = try await runWorker(["handshake", "claim:\(SandboxLayers([.noNewPrivileges, .seccomp]).rawValue)", "read:/etc/hostname"],
                                            configure: { $0.requiredLayers = [.noNewPrivileges, .seccomp] })
        guard case .sandboxIncomplete(let why) = unapplied.reason else { Issue.record("\(unapplied.reason)"); return }
        #expect(why.hasPrefix("reported no_new_privs, seccomp in force, but thread "), "\(why)")
        #expect(why.hasSuffix(" runs without no_new_privs"), "\(why)")
        #expect(!unapplied.lines.contains { $0.hasPrefix("read ") })

        let halfFiltered = try await runWorker(["handshake", "halffilter", "read:/etc/hostname"],
                                               configure: { $0.requiredLayers = [.seccomp] })
        guard case .sandboxIncomplete(let halfWhy) = halfFiltered.reason else { Issue.record("\(halfFiltered.reason)"); return }
        #expect(halfWhy.hasSuffix(" runs without a seccomp filter"), "\(halfWhy)")
        #expect(!halfFiltered.lines.contains { $0.hasPrefix("read ") })

        let namespaces = SandboxLayers([.userNamespace, .networkNamespace])
        let claimedNamespaces = try await runWorker(["handshake", "claim:\(namespaces.rawValue)", "exit:0"],
                                                    configure: { $0.requiredLayers = namespaces })
        guard case .sandboxIncomplete(let nsWhy) = claimedNamespaces.reason else { Issue.record("\(claimedNamespaces.reason)"); return }
        #expect(nsWhy.hasSuffix(" is still in the supervisor's user namespace"), "\(nsWhy)")

        // Where the layers are in force, the same checks pass.
        let real = try await runWorker(["handshake", "lockdown:ns", "exit:0"],
                                       configure: { $0.requiredLayers = [.noNewPrivileges, .seccomp, .userNamespace, .networkNamespace] })
        #expect(real.reason == .exited(code: 0))
    }

    @Test func theWorkerDiesWithItsSupervisor() async throws {
        let pidFile = "/tmp/privsep-orphan-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        // The supervisor runs in a child process of its own, which then dies abruptly.
        await #expect(processExitsWith: .exitCode(42)) { [pidFile = pidFile as String] in
            let supervisor = try! Supervisor(logger: quietLogger())
            let handle = try! await supervisor.spawn(WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "lockdown", "sleep:30"]))
            try! await Task.sleep(for: .milliseconds(300))
            let text = "\(handle.pid)"
            let fd = open(pidFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            _ = write(fd, text, text.utf8.count)
            close(fd)
            _exit(42)
        }
        let fd = open(pidFile, O_RDONLY | O_CLOEXEC)
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = read(fd, &buffer, 32)
        close(fd)
        let pid = try #require(Int32(String(decoding: buffer[..<max(count, 0)], as: UTF8.self)))
        #expect(try await processEnds(pid), "worker \(pid) outlived its supervisor")
    }

    /// A worker granted `proc` may fork, but what it forks cannot leave the worker's process
    /// group (no setsid, setpgid or CLONE_PARENT), and the supervisor ends the group with it.
    @Test func whatAWorkerForksCannotLeaveItsGroupAndEndsWithIt() async throws {
        let run = try await runWorker(["handshake", "lockdown:proc", "attack:leave_group", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        let fields = try #require(run.lines.last).split(separator: " ").map(String.init)
        #expect(fields.count == 9 && fields[1] == "leave_group", "\(run.lines)")
        let child = try #require(Int32(fields[2]), "\(run.lines)")
        #expect(Array(fields.dropFirst(3)) == ["setsid", "-\(EACCES)", "setpgid", "-\(EACCES)", "clone_parent", "-\(EACCES)"])
        #expect(try await processEnds(child), "the worker's child \(child) outlived it")
    }

    /// kill with the `proc` group reaches processes of the worker's user, the supervisor among
    /// them: Landlock's scoping refuses it, with or without filesystem rules.
    @Test(arguments: ["proc", "procnolandlock"])
    func aWorkerThatMaySignalCannotSignalItsSupervisor(mode: String) async throws {
        let run = try await runWorker(["handshake", "lockdown:\(mode)", "attack:kill_parent", "exit:0"],
                                      configure: { $0.requiredLayers = [.landlockScopes] })
        #expect(run.reason == .exited(code: 0))
        let scopes = Int(SandboxLayers.landlockScopes.rawValue)
        let layers = mode == "proc" ? Self.allLayers : 1 | 2 | scopes
        #expect(run.lines.dropFirst() == ["lockdown \(layers) abi 7", "attack kill_parent -\(EPERM)"])
    }

    /// Landlock's scoping does not cover priority and affinity: the `proc` group allows them
    /// for the worker itself only, so it cannot renice the supervisor (or every process of
    /// its user) or pin it to one CPU.
    @Test func aWorkerThatMayForkCannotReniceOrPinItsSupervisor() async throws {
        let attacks = ["renice_parent", "renice_user", "pin_parent", "renice_self", "pin_self"]
        let run = try await runWorker(["handshake", "lockdown:proc"] + attacks.map { "attack:" + $0 } + ["exit:0"])
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.dropFirst(2) == [
            "attack renice_parent -\(EACCES)", "attack renice_user -\(EACCES)", "attack pin_parent -\(EACCES)",
            "attack renice_self 0", "attack pin_self 0",
        ])
    }

    /// The tty group is terminal ioctls only: FIOSETOWN (with FIOASYNC the kernel would send
    /// the supervisor SIGIO, which ends it) is refused by the filter.
    @Test func theTTYGroupIsTerminalIoctlsOnly() async throws {
        let run = try await runWorker(["handshake", "lockdown:tty", "attack:fiosetown", "attack:tcgets", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        // TCGETS reaches the kernel, which says stdout (a pipe) is not a terminal.
        #expect(run.lines.dropFirst(2) == ["attack fiosetown -\(EACCES)", "attack tcgets -\(ENOTTY)"])
    }

    /// rpath opens for reading only, even with no Landlock rules behind it.
    @Test func rpathOpensReadOnly() async throws {
        let scratch = ScratchDirectory()
        scratch.write("file.txt", "x\n")
        let file = scratch.path + "/file.txt"
        let run = try await runWorker(["handshake", "lockdown:rpath", "attack:openat:\(file)", "attack:openat_write:\(file)", "exit:0"])
        #expect(run.reason == .exited(code: 0))
        let results = run.lines.dropFirst(2).map { $0.split(separator: " ").last.flatMap { Int($0) } ?? 0 }
        #expect(results.count == 2 && results[0] >= 0, "\(run.lines)")
        #expect(results.last == -Int(EACCES), "\(run.lines)")
    }

    /// Whether `pid` is gone, or a zombie waiting for its new parent to reap it, within 30 s.
    func processEnds(_ pid: Int32) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            var state = ""
            if let file = fopen("/proc/\(pid)/stat", "r") {
                var line = [CChar](repeating: 0, count: 512)
                fgets(&line, 512, file)
                fclose(file)
                let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                state = text.split(separator: ")").last?.split(separator: " ").first.map(String.init) ?? ""
            }
            if state.isEmpty || state == "Z" { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

@Suite struct LearningModeTests {
    @Test func callsOutsideTheFilterAreRecordedAndAllowed() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        let pipe = Pipe()
        var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: [
            "handshake", "lockdown", "attack:socket", "attack:openat:/etc/hostname", "attack:socket", "exit:0",
        ])
        configuration.learning = true
        configuration.standardOutput = .descriptor(SharedFileDescriptor(pipe.write))
        let handle = try await supervisor.spawn(configuration)
        #expect(await handle.exit() == .exited(code: 0))
        #expect(handle.learnedSyscalls.compactMap(\.name) == ["socket", "openat"])
        configuration = WorkerConfiguration(executable: "/")
        let lines = readAvailable(pipe.read).split(separator: "\n")
        // socket ran (it returned an fd); openat ran into Landlock, which still denies every path.
        #expect(lines.dropFirst(2).first.map { Int($0.split(separator: " ").last!)! >= 0 } == true)
        #expect(lines.dropFirst(3).first == "attack openat -\(EACCES)")
        await supervisor.shutdown()
    }

    /// Learning mode lets setsid through, so what a learning worker forks can leave its
    /// process group and outlive it. Once the worker is reaped its listener is no longer
    /// served: the thread is woken and ends at once, though the escaped child is asleep, and
    /// the child's next call outside the filter fails ENOSYS.
    @Test func aLearningWorkersListenerEndsWithIt() async throws {
        let audit = AuditLog(collectingUpTo: 1_000)
        let supervisor = try Supervisor(logger: quietLogger(), auditLog: audit)
        let pipe = Pipe()
        var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: [
            "handshake", "lockdown", "attack:escape_and_call:2", "exit:0",
        ])
        configuration.learning = true
        configuration.standardOutput = .descriptor(SharedFileDescriptor(pipe.write))
        let handle = try await supervisor.spawn(configuration)
        #expect(await handle.exit() == .exited(code: 0))
        var reported = readAvailable(pipe.read)
        let line = reported.split(separator: "\n").first { $0.hasPrefix("attack escape_and_call") } ?? ""
        let child = try #require(Int32(line.split(separator: " ").last ?? ""), "\(reported)")
        defer { kill(child, SIGKILL) }
        #expect(kill(child, 0) == 0, "the escaped child lives on")
        // The child sleeps 2 s before its first call: the thread must end without one.
        for _ in 0..<100 where handle.isLearningListenerServed { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!handle.isLearningListenerServed, "the learning thread still waits on a worker that is gone")
        for _ in 0..<1_000 where !reported.contains("escaped enosys") {
            reported += readAvailable(pipe.read)
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(reported.contains("escaped enosys"), "the escaped child's call was still let through")
        let exit = try #require(audit.records.firstIndex { $0.workerID == handle.id && $0.event == "EXIT" })
        #expect(!audit.records[(exit + 1)...].contains { $0.event == "LEARN" }, "learned from after the worker's exit")
        await supervisor.shutdown()
    }

    /// A learning worker can make a notification of every syscall number: the calls learned
    /// are capped, and the cap is said once.
    @Test func learnedCallsAreCapped() async throws {
        let audit = AuditLog(collectingUpTo: 10_000)
        let supervisor = try Supervisor(logger: quietLogger(), auditLog: audit)
        let count = WorkerHandle.maximumLearnedSyscalls + 100
        var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: [
            "handshake", "lockdown", "attack:unknown_syscalls:\(count)", "exit:0",
        ])
        configuration.learning = true
        configuration.standardOutput = .null
        let handle = try await supervisor.spawn(configuration)
        #expect(await handle.exit() == .exited(code: 0))
        #expect(handle.learnedSyscalls.count == WorkerHandle.maximumLearnedSyscalls)
        let capped = audit.records.filter { $0.event == "LEARN" && $0.reason.contains("no more are recorded") }
        #expect(capped.count == 1)
        await supervisor.shutdown()
    }

    /// Which groups allow a call can depend on its arguments: a read-only openat and one that
    /// writes are learned apart, and only groups that allow each are named for it.
    @Test func callsAreLearnedWithTheGroupsTheirArgumentsNeed() async throws {
        let supervisor = try Supervisor(logger: quietLogger())
        var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: [
            "handshake", "lockdown", "attack:openat:/etc/hostname", "attack:openat_write:/dev/null",
            "attack:openat:/etc/hosts", "exit:0",
        ])
        configuration.learning = true
        configuration.standardOutput = .null
        let handle = try await supervisor.spawn(configuration)
        #expect(await handle.exit() == .exited(code: 0))
        #expect(handle.learnedSyscalls.map { $0.allowingGroups.map(\.name) } == [["rpath", "wpath", "cpath", "dispatch"], ["wpath", "cpath"]])
        await supervisor.shutdown()
    }

    @Test func aListenerIsRefusedOutsideLearningMode() async throws {
        // The fixture cannot send a real listener without learning mode. A worker neither
        // learning nor intercepted cannot send the supervisor an fd at all where the
        // kernel refuses them (SO_PASSRIGHTS); elsewhere, any fd with a LISTENER message
        // is a protocol violation for a supervisor not learning.
        let listener = try WireCodec.encode(Envelope(requestID: 0, .listener(ListenerAnnouncement(purpose: .learning))))
        let hex = listener.map { String(format2: $0) }.joined()
        if SeqpacketSocket.kernelCanRefuseFileDescriptors {
            let scratch = ScratchDirectory()
            scratch.write("data.txt", "still served\n")
            var policy = Policy()
            policy.allow(path: scratch.path + "/data.txt", .file, [.read])
            let run = try await runWorker(["handshake", "rawfds:1:" + hex, "read:\(scratch.path)/data.txt", "exit:0"], policy: policy)
            #expect(run.reason == .exited(code: 0))
            #expect(run.lines.dropFirst().first == "raw failed \(ChannelError.system(.notPermitted))")
            #expect(run.lines.dropFirst(2).first?.hasSuffix("still served") == true, "\(run.lines)")
            // Without its fd the LISTENER is malformed.
            let bare = try await runWorker(["handshake", "raw:" + hex, "sleep:5"])
            #expect(bare.reason == .protocolViolation("LISTENER carries 0 fds, expected 1"))
        } else {
            let run = try await runWorker(["handshake", "rawfds:1:" + hex, "sleep:5"])
            #expect(run.reason == .protocolViolation("LISTENER sent, but this worker is not in learning mode"))
        }
        let fake = try await runWorker(["handshake", "rawfds:1:" + hex, "sleep:5"], configure: { $0.learning = true })
        #expect(fake.reason == .protocolViolation("the fd sent with LISTENER is not a seccomp listener"))
        // A learning worker's channel still takes an fd, so too many are reported by the receive.
        let flood = try await runWorker(["handshake", "rawfds:253:" + hex, "sleep:5"], configure: { $0.learning = true })
        #expect(flood.reason == .protocolViolation("253 fds received, at most 1 allowed"))
    }
}
