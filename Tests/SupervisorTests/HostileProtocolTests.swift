import Glibc
import PrivsepIPC
import PrivsepTestSupport
import Supervisor
import Testing

/// Raw-byte attacks on the supervisor. Each must kill the attacker with the
/// precise rule it broke; the supervisor stays up, keeps serving an honest worker
/// meanwhile, and ends holding exactly the fds it held before.
@Suite struct HostileProtocolTests {
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format2: $0) }.joined() }

    static func patched(_ bytes: [UInt8], at offset: Int, _ values: [UInt8]) -> [UInt8] {
        var bytes = bytes
        for (index, value) in values.enumerated() { bytes[offset + index] = value }
        return bytes
    }

    /// (steps after the handshake, expected exit reason)
    static func attacks() -> [([String], ExitReason)] {
        let open = try! WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hosts", flags: 0))))
        var oversized = open + [UInt8](repeating: 0x41, count: 9000)
        oversized = patched(oversized, at: 8, [0x28, 0x23, 0, 0]) // length 9000 + 19
        let longPath = try! WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/" + String(repeating: "a", count: 4094), flags: 0))))
        let tooLongPath = patched(longPath + [0x61], at: 8, withUnsafeBytes(of: UInt32(longPath.count + 1 - 24)) { Array($0) })
        return [
            (["raw:" + hex(Array(open[..<10]))], .protocolViolation("datagram of 10 bytes is shorter than the 24-byte header")),
            (["raw:" + hex(patched(open, at: 8, [100, 0, 0, 0]))], .protocolViolation("header.length says 100 payload bytes, datagram has 19")),
            (["raw:" + hex(patched(open, at: 8, [5, 0, 0, 0]))], .protocolViolation("header.length says 5 payload bytes, datagram has 19")),
            (["raw:" + hex(oversized)], .protocolViolation("message longer than 8192 bytes (truncated)")),
            (["raw:" + hex(patched(open, at: 4, [99, 0]))], .protocolViolation("unknown message type 99")),
            (["raw:" + hex(patched(open, at: 2, [2, 0]))], .protocolViolation("unsupported protocol version 2 (expected 1)")),
            (["raw:" + hex(patched(open, at: 12, [1, 0, 0, 0]))], .protocolViolation("reserved field header.reserved is not zero")),
            (["raw:" + hex(patched(open, at: open.count - 1, [0x41]))], .protocolViolation("open.path is not NUL-terminated")),
            (["raw:" + hex(patched(open, at: 36, [0]))], .protocolViolation("open.path contains a NUL byte")),
            (["raw:" + hex(tooLongPath)], .protocolViolation("open.path is 4097 bytes, at most 4096 allowed")),
            // Fds from a worker neither learning nor intercepted (which hands over none):
            // refused by the kernel where it can (the worker's send fails, and it carries
            // on), else by the receive.
            SeqpacketSocket.kernelCanRefuseFileDescriptors
                ? (["rawfds:253:" + hex(open), "rawfds:1:" + hex(open), "exit:0"], .exited(code: 0))
                : (["rawfds:253:" + hex(open)], .protocolViolation("control data truncated: more than 1 fds sent")),
            // Lifecycle: gone before the reply (the reply meets a closed socket), and flooding.
            (["diemidrequest"], .exited(code: 0)),
            (["flood:100000"], .resourceCapExceeded("not reading its replies for 1.0 s")),
            // Refusals (the worker carries on and exits) and filter kills, for the fd count too.
            (["read:/etc/shadow", "read:/proc/self/root/etc/shadow", "open:/etc/hostname:rw", "socket:17:3",
              "connect:127.0.0.1:1", "exit:0"], .exited(code: 0)),
            (["lockdown", "attack:openat"], .seccompViolation(SyscallViolation(number: 257, architecture: 0xC000_003E, instructionPointer: nil))),
        ]
    }

    @Test func everyProtocolAttackIsKilledPreciselyAndTheSupervisorHolds() async {
        await #expect(processExitsWith: .success) {
            let scratch = ScratchDirectory()
            scratch.write("data.txt", "honest\n")
            var policy = Policy()
            policy.allow(path: scratch.path + "/data.txt", .file, [.read])
            let supervisor = try! Supervisor(logger: quietLogger())
            _ = try! await runWorker(["handshake", "read:\(scratch.path)/data.txt"], policy: policy, supervisor: supervisor)
            let before = openFileDescriptorSet()
            // An honest worker keeps asking while the attacks run.
            var honestSteps = ["handshake"]
            for _ in 0..<200 { honestSteps += ["read:\(scratch.path)/data.txt", "sleep:0.005"] }
            let grants = policy
            let steps = honestSteps
            async let honest = runWorker(steps, policy: grants, supervisor: supervisor)
            for (attack, expected) in Self.attacks() {
                let run = try! await runWorker(["handshake"] + attack + ["sleep:5"], policy: policy, supervisor: supervisor,
                                               configure: { $0.caps.replyStallSeconds = 1 })
                require(sameOutcome(run.reason, expected), "\(attack.first!.prefix(40)): \(run.reason), expected \(expected)")
            }
            let honestRun = try! await honest
            require(honestRun.reason == .exited(code: 0), "honest worker: \(honestRun.reason)")
            require(honestRun.lines.filter { $0.hasSuffix("honest") }.count == 200, "honest worker was not served every time")
            let leaked = newFileDescriptors(since: before)
            require(leaked.isEmpty, "supervisor fds leaked: \(leaked.sorted())")
            await supervisor.shutdown()
        }
    }
}

/// A worker that sends the supervisor a TCP socket set to linger, with data its peer never
/// takes, must not make the serving thread do the blocking last close: that thread would
/// serve no one for as long as the worker chose. A learning worker's channel takes fds on
/// every kernel, as every channel does before Linux 6.16. The fd is read and refused, or
/// still queued when the worker is killed for an earlier datagram, or queued behind empty
/// datagrams (which read like the channel's end) when its channel is closed.
@Suite(.serialized) struct LingeringSocketTests {
    @Test(arguments: ["lingerfd", "lingerfdqueued", "lingerfdempty"]) func aLingeringSocketFromAWorkerHoldsUpNoOne(step: String) async throws {
        // The peer: a listener of the test's that never accepts, so the connection outlives the worker.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        #expect(listen(listener, 8) == 0)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)

        let supervisor = try Supervisor(logger: quietLogger())
        let watchdog = Task {
            try await Task.sleep(for: .seconds(30))
            return true
        }
        // Two LOG lines spend the worker's token: the supervisor stops reading it for a second,
        // so the fd is in flight when the worker closes its own copy, and the supervisor's is last.
        let hostile = try await runWorker(["handshake", "log:a", "log:b", "\(step):60:\(port)", "sleep:2"], supervisor: supervisor) {
            $0.learning = true
            $0.caps.messagesPerSecond = 1
            $0.caps.messageBurst = 1
        }
        #expect(hostile.lines.contains("lingerfd sent"))
        // Empty datagrams close the channel: the worker is left to end, which it does after its sleep.
        if step != "lingerfdempty" {
            guard case .protocolViolation = hostile.reason else { Issue.record("\(hostile.reason)"); return }
        }
        // Another worker, on the same (only) serving thread, is served as usual.
        let honest = try await runWorker(["handshake", "exit:0"], supervisor: supervisor)
        #expect(honest.reason == .exited(code: 0))
        watchdog.cancel()
        #expect(await (try? watchdog.value) == nil, "the serving thread waited on the worker's socket")
        await supervisor.shutdown()
    }
}

/// Equal outcomes; a seccomp violation is compared by call and architecture only.
func sameOutcome(_ a: ExitReason, _ b: ExitReason) -> Bool {
    if case .seccompViolation(let x) = a, case .seccompViolation(let y) = b {
        return x.name == y.name && x.architecture == y.architecture
    }
    return a == b
}

@Suite struct PathRaceTests {
    /// A directory component swapped for a symlink (and back) in a tight loop while
    /// the worker reads through it: no read may ever land outside the grant.
    @Test func aSwappedComponentNeverLeadsOutside() async throws {
        let scratch = ScratchDirectory()
        scratch.mkdir("granted")
        scratch.mkdir("granted/real")
        scratch.write("granted/real/file.txt", "inside\n")
        scratch.mkdir("outside")
        scratch.write("outside/file.txt", "ESCAPED\n")
        scratch.symlink("granted/link", to: "../outside")
        var policy = Policy()
        policy.allow(path: scratch.path + "/granted", .directory, [.read], symlinks: .followBeneath)
        let stop = StopFlag()
        let root = scratch.path
        // Swap granted/sub between the real directory and the symlink out, as fast as possible.
        Thread.detach {
            var swaps = 0
            while !stop.isSet {
                rename(root + "/granted/real", root + "/granted/sub")
                rename(root + "/granted/sub", root + "/granted/real")
                rename(root + "/granted/link", root + "/granted/sub")
                rename(root + "/granted/sub", root + "/granted/link")
                swaps += 1
            }
            stop.swaps = swaps
        }
        let steps = ["handshake"] + Array(repeating: "read:\(root)/granted/sub/file.txt", count: 3000)
        let run = try await runWorker(steps, policy: policy)
        stop.set()
        #expect(run.reason == .exited(code: 0))
        let results = run.lines.dropFirst()
        #expect(results.count == 3000)
        #expect(!results.contains { $0.contains("ESCAPED") }, "a read escaped the grant")
        #expect(results.contains { $0.hasSuffix(" inside") }, "the race never let a read through at all")
    }
}

final class StopFlag: @unchecked Sendable {
    private var flag = false
    var swaps = 0
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    var isSet: Bool { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return flag }
    func set() { pthread_mutex_lock(&lock); flag = true; pthread_mutex_unlock(&lock) }
}
