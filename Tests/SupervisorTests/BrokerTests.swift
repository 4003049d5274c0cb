import CPrivsepShims
import Glibc
import PrivsepIPC
import Supervisor
import SystemPackage
import Testing

@Suite struct PathBrokerTests {
    /// /tmp/X/granted/{a.txt, sub/b.txt, link-out -> ../secret.txt, link-in -> a.txt, fifo}, /tmp/X/secret.txt
    static func tree() -> ScratchDirectory {
        let scratch = ScratchDirectory()
        scratch.mkdir("granted")
        scratch.mkdir("granted/sub")
        scratch.write("granted/a.txt", "alpha\n")
        scratch.write("granted/sub/b.txt", "bravo\n")
        scratch.write("secret.txt", "secret\n")
        scratch.symlink("granted/link-out", to: "../secret.txt")
        scratch.symlink("granted/link-abs", to: scratch.path + "/secret.txt")
        scratch.symlink("granted/link-in", to: "a.txt")
        scratch.symlink("granted/link-proc", to: "/proc/self/root/etc/hostname")
        scratch.mkfifo("granted/fifo")
        return scratch
    }

    @Test func readsInsideTheGrantAndNothingOutside() async throws {
        let scratch = Self.tree()
        let root = scratch.path
        var policy = Policy()
        policy.allow(path: root + "/granted", .directory, [.read])
        let run = try await runWorker([
            "handshake",
            "read:\(root)/granted/a.txt",
            "read:\(root)/granted/sub/b.txt",
            "read:\(root)/secret.txt",
            "read:\(root)/granted/../secret.txt",
            "read:\(root)/granted/./a.txt",
            "read:\(root)//granted/a.txt",
            "read:granted/a.txt",
            "read:\(root)/granted/link-out",
            "read:\(root)/granted/link-abs",
            "read:\(root)/granted/link-in",
            "read:\(root)/granted/link-proc",
            "read:\(root)/granted/missing.txt",
            "read:\(root)/missing-outside.txt",
            "open:\(root)/granted/fifo:r",
            "open:\(root)/granted:rd",
        ], policy: policy)
        #expect(run.reason == .exited(code: 0))
        let eacces = "errno \(EACCES)"
        #expect(run.lines == [
            run.lines[0],
            "read \(root)/granted/a.txt alpha",
            "read \(root)/granted/sub/b.txt bravo",
            "read \(root)/secret.txt \(eacces)",
            "read \(root)/granted/../secret.txt \(eacces)",
            "read \(root)/granted/./a.txt \(eacces)",
            "read \(root)//granted/a.txt \(eacces)",
            "read granted/a.txt \(eacces)",
            "read \(root)/granted/link-out \(eacces)",
            "read \(root)/granted/link-abs \(eacces)",
            "read \(root)/granted/link-in \(eacces)", // symlinks refused unless the rule allows them
            "read \(root)/granted/link-proc \(eacces)",
            "read \(root)/granted/missing.txt errno \(ENOENT)", // inside the grant the worker may learn what is missing
            "read \(root)/missing-outside.txt \(eacces)", // outside, missing and denied look the same
            "open \(root)/granted/fifo \(eacces)", // and the supervisor did not hang on it
            "open \(root)/granted \(eacces)", // listing needs the list permission
        ])
        let decisions = run.audit.filter { $0.event == "OPEN" }
        #expect(decisions.count == 15)
        #expect(decisions.filter { $0.decision == "granted" }.count == 2)
        #expect(decisions.first?.jsonLine.contains("\"decision\":\"granted\"") == true)
    }

    @Test func symlinksThatStayBeneathMayBeFollowedWhenTheRuleSaysSo() async throws {
        let scratch = Self.tree()
        let root = scratch.path
        var policy = Policy()
        policy.allow(path: root + "/granted", .directory, [.read], symlinks: .followBeneath)
        let run = try await runWorker([
            "handshake", "read:\(root)/granted/link-in", "read:\(root)/granted/link-out",
            "read:\(root)/granted/link-abs", "read:\(root)/granted/link-proc",
        ], policy: policy)
        #expect(run.lines.dropFirst() == [
            "read \(root)/granted/link-in alpha",
            "read \(root)/granted/link-out errno \(EACCES)",
            "read \(root)/granted/link-abs errno \(EACCES)",
            "read \(root)/granted/link-proc errno \(EACCES)",
        ])
    }

    /// A rule inside /proc hands out the system's files (cpuinfo, /proc/sys) as anyone may
    /// open them, never another process's: opened by the supervisor, /proc/self would be the
    /// supervisor's (its environment, its memory), and a number another process's, whichever
    /// way the path reaches it (self, the supervisor's pid, a link followed beneath the rule).
    @Test func aProcRuleNeverHandsOutAProcesssFiles() async throws {
        var policy = Policy()
        policy.allow(path: "/proc", .directory, [.read], symlinks: .followBeneath)
        let supervisor = getpid()
        let run = try await runWorker([
            "handshake", "read:/proc/sys/kernel/ostype", "read:/proc/self/environ", "read:/proc/\(supervisor)/environ",
            "read:/proc/thread-self/comm", "read:/proc/1/cmdline", "read:/proc/mounts",
            "read:/proc/kallsyms", "read:/proc/kmsg", "read:/proc/sys/kernel/cad_pid", "read:/proc/iomem", "read:/proc/ioports",
        ], policy: policy)
        #expect(run.lines.dropFirst() == [
            "read /proc/sys/kernel/ostype Linux",
            "read /proc/self/environ errno \(EACCES)",
            "read /proc/\(supervisor)/environ errno \(EACCES)",
            "read /proc/thread-self/comm errno \(EACCES)",
            "read /proc/1/cmdline errno \(EACCES)",
            "read /proc/mounts errno \(EACCES)", // a link to self/mounts
            // Opened by the supervisor, with its rights: kernel addresses (the opener's view),
            // and files only root may read.
            "read /proc/kallsyms errno \(EACCES)",
            "read /proc/kmsg errno \(EACCES)",
            "read /proc/sys/kernel/cad_pid errno \(EACCES)",
            "read /proc/iomem errno \(EACCES)", // physical ranges, shown to an opener with CAP_SYS_ADMIN
            "read /proc/ioports errno \(EACCES)",
        ])
        var fileRule = Policy()
        fileRule.allow(path: "/proc/self/status", .file, [.read])
        let named = try await runWorker(["handshake", "read:/proc/self/status"], policy: fileRule)
        #expect(named.lines.dropFirst() == ["read /proc/self/status errno \(EACCES)"])
    }

    @Test func flagsAreVettedBitByBit() async throws {
        let scratch = Self.tree()
        let root = scratch.path
        var policy = Policy()
        policy.allow(path: root + "/granted", .directory, [.read, .listDirectory])
        policy.allow(path: root + "/granted/out", .directory, [.read, .write, .create], createMode: 0o640)
        policy.allow(path: root + "/granted/log.txt", .file, [.append, .create])
        scratch.mkdir("granted/out")
        let run = try await runWorker([
            "handshake",
            "open:\(root)/granted/a.txt:w",       // no write permission
            "open:\(root)/granted/a.txt:rw",
            "open:\(root)/granted/new.txt:wc",    // no create permission
            "open:\(root)/granted/a.txt:rt",      // no truncate permission
            "open:\(root)/granted:rd",            // listing granted
            "write:\(root)/granted/out/new.txt:x", // create+truncate: truncate not granted
            "open:\(root)/granted/out/new.txt:wc",
            "open:\(root)/granted/log.txt:w",     // append-only rule
            "open:\(root)/granted/log.txt:wca",
            "open:\(root)/granted/a.txt:rn",
        ], policy: policy)
        #expect(run.lines.dropFirst() == [
            "open \(root)/granted/a.txt errno \(EACCES)",
            "open \(root)/granted/a.txt errno \(EACCES)",
            "open \(root)/granted/new.txt errno \(EACCES)",
            "open \(root)/granted/a.txt errno \(EACCES)",
            "open \(root)/granted ok",
            "write \(root)/granted/out/new.txt errno \(EACCES)",
            "open \(root)/granted/out/new.txt ok",
            "open \(root)/granted/log.txt errno \(EACCES)",
            "open \(root)/granted/log.txt ok",
            "open \(root)/granted/a.txt ok",
        ])
        #expect(scratch.mode("granted/out/new.txt") & 0o777 == 0o640 & ~0o022, "mode from the rule, not the request")
        let denial = run.audit.first { $0.event == "OPEN" && $0.decision == "denied" }
        #expect(denial?.reason == "writing is not granted")
    }

    @Test func devicesAndSocketsInsideAGrantAreNotHandedOut() async throws {
        let scratch = ScratchDirectory()
        // A character device (the same numbers as /dev/null) planted in a granted directory.
        #expect(mknod(scratch.path + "/null", S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0) // makedev(1, 3)
        var policy = Policy()
        policy.allow(path: scratch.path, .directory, [.read, .write])
        let run = try await runWorker(["handshake", "open:\(scratch.path)/null:rw"], policy: policy)
        #expect(run.lines.last == "open \(scratch.path)/null errno \(EACCES)")
        var devices = policy
        devices.paths[0].allowedFileTypes.insert(.characterDevice)
        let allowed = try await runWorker(["handshake", "open:\(scratch.path)/null:rw"], policy: devices)
        #expect(allowed.lines.last == "open \(scratch.path)/null ok", "a rule may hand devices out when it says so")
    }

    @Test func vetoesExoticFlagsAndUnknownBits() {
        let rule = PathRule(path: "/srv", kind: .directory, permissions: [.read, .write, .create, .truncate, .append, .listDirectory])
        let policy = try! ActivePolicy(Policy(paths: [rule]))
        func errno(_ flags: Int32) -> Int32? {
            switch policy.open(OpenRequest(path: "/srv/x", flags: flags)) {
            case .granted: return nil
            case .denied(let errno, _): return errno.rawValue
            }
        }
        #expect(errno(privsep_O_PATH) == EACCES)
        #expect(errno(privsep_O_TMPFILE | O_RDWR) == EACCES)
        #expect(errno(privsep_O_NOATIME) == EACCES)
        #expect(errno(privsep_O_DIRECT) == EACCES)
        #expect(errno(0o20000) == EACCES, "O_ASYNC")
        // O_TMPFILE contains O_DIRECTORY's bit; O_DIRECTORY alone passes the vetting
        // and reaches the filesystem, where /srv/x does not exist.
        #expect(errno(O_DIRECTORY) == ENOENT)
        #expect(errno(0x4000_0000) == EINVAL, "unknown bit")
        #expect(errno(O_ACCMODE) == EINVAL, "access mode 3")
    }
}

/// A TCP socket bound to 127.0.0.1 on an ephemeral port, and the port.
private func boundLoopbackSocket() -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, privsep_SOCK_STREAM | privsep_SOCK_CLOEXEC, 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            precondition(bind(fd, $0, length) == 0)
            precondition(getsockname(fd, $0, &length) == 0)
        }
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

@Suite struct SocketBrokerTests {
    /// A loopback TCP listener on an ephemeral port that answers one line to each connection.
    final class Listener: @unchecked Sendable {
        let fd: Int32
        let port: UInt16
        private let thread: pthread_t
        init(answer: String, count: Int) {
            (fd, port) = boundLoopbackSocket()
            precondition(listen(fd, 16) == 0)
            let listening = fd
            thread = Thread.start {
                for _ in 0..<count {
                    let client = accept(listening, nil, nil)
                    if client < 0 { return }
                    _ = write(client, answer + "\n", answer.utf8.count + 1)
                    close(client)
                }
            }
        }
        deinit {
            // The accepting thread knows the listener by number: a test that ends before it
            // has accepted `count` times must stop it before the number can be reused, or it
            // accepts (and answers) another test's connections. shutdown wakes its accept.
            shutdown(fd, Int32(SHUT_RDWR))
            pthread_join(thread, nil)
            close(fd)
        }
    }

    @Test func connectsOnlyWhereThePolicyAllows() async throws {
        let listener = Listener(answer: "hi from the listener", count: 2)
        var policy = Policy()
        policy.allowConnect(to: AddressRule(network: .ipv4(IPv4Address(127, 0, 0, 0), prefixLength: 8), ports: listener.port...listener.port))
        let run = try await runWorker([
            "handshake",
            "connect:127.0.0.1:\(listener.port)",
            "connect:127.0.0.1:\(listener.port &+ 1)",
            "connect:::ffff:127.0.0.1:\(listener.port)", // IPv4-mapped: matched as IPv4
            "connect:::1:\(listener.port)",
            "connect:10.0.0.1:\(listener.port)",
        ], policy: policy)
        #expect(run.lines.dropFirst() == [
            "connect ok hi from the listener",
            "connect errno \(EACCES)",
            "connect ok hi from the listener",
            "connect errno \(EACCES)",
            "connect errno \(EACCES)",
        ])
    }

    /// A loopback connect's outcome is read from a second connect in the same call (or,
    /// if the machine is too busy for the handshake to be done by then, once the socket
    /// is writable): a refused port is ECONNREFUSED, an accepted one a connected socket,
    /// blocking unless the worker asked for SOCK_NONBLOCK.
    @Test func loopbackConnectsFinishAtOnceWithTheirRealOutcome() throws {
        let listener = Listener(answer: "hi", count: 2)
        // A port nobody listens on: bound but never listening, so the kernel answers RST.
        let (unlistened, closedPort) = boundLoopbackSocket()
        defer { close(unlistened) }
        var policy = Policy()
        for port in [listener.port, closedPort] {
            policy.allowConnect(to: AddressRule(network: .ipv4(.loopback, prefixLength: 32), ports: port...port))
        }
        let active = try ActivePolicy(policy)
        func finished(_ start: consuming ConnectStart, type: Int32, port: UInt16) -> BrokerResult {
            switch consume start {
            case .finished(let result): return result
            case .inProgress(let socket):
                var entry = pollfd(fd: socket.unsafeRawValue, events: Int16(POLLOUT), revents: 0)
                #expect(poll(&entry, 1, 10_000) == 1, "the loopback handshake ends")
                return active.finishConnect(PendingConnect(socket: socket, requestedType: type, address: .ipv4(.loopback, port: port)))
            }
        }
        func outcome(_ port: UInt16, type: Int32 = privsep_SOCK_STREAM) -> (errno: Errno?, nonBlocking: Bool?) {
            let start = active.startConnect(AddressRequest(type: type, address: .ipv4(.loopback, port: port)))
            switch finished(start, type: type, port: port) {
            case .denied(let errno, _): return (errno, nil)
            case .granted(let socket, _):
                var peer = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let connected = withUnsafeMutablePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(socket.unsafeRawValue, $0, &length) }
                }
                #expect(connected == 0, "the granted socket is connected")
                return (nil, fcntl(socket.unsafeRawValue, F_GETFL) & O_NONBLOCK != 0)
            }
        }
        #expect(outcome(closedPort).errno == .connectionRefused)
        let blocking = outcome(listener.port)
        #expect(blocking.errno == nil && blocking.nonBlocking == false)
        let nonBlocking = outcome(listener.port, type: privsep_SOCK_STREAM | privsep_SOCK_NONBLOCK)
        #expect(nonBlocking.errno == nil && nonBlocking.nonBlocking == true)
    }

    /// A connect that neither succeeds nor fails is answered ETIMEDOUT at the worker's
    /// `connectTimeoutSeconds`, while the loop goes on serving: the worker's later request
    /// is answered too.
    @Test func aConnectThatHangsIsAnsweredTimedOutAtTheCap() async throws {
        // A listener whose accept queue is full drops further SYNs, so a connect to it
        // hangs (retransmitting) rather than being refused. Backlog 0 holds one connection.
        let (listening, port) = boundLoopbackSocket()
        defer { close(listening) }
        precondition(listen(listening, 0) == 0)
        let queued = try #require(connectedToLoopback(port: port), "the one connection the queue holds")
        defer { close(queued) }
        var policy = Policy()
        policy.allowConnect(to: AddressRule(network: .ipv4(.loopback, prefixLength: 32), ports: port...port))
        let started = ContinuousClock.now
        let run = try await runWorker(["handshake", "connect:127.0.0.1:\(port)", "connect:127.0.0.1:\(port &+ 1)"],
                                      policy: policy, configure: { $0.caps.connectTimeoutSeconds = 0.4 })
        #expect(ContinuousClock.now - started >= .milliseconds(400), "not answered before the cap")
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.dropFirst() == ["connect errno \(ETIMEDOUT)", "connect errno \(EACCES)"])
        #expect(run.audit.contains { $0.event == "CONNECT" && $0.reason == "connect timed out" })
    }

    @Test func bindsAPrivilegedPortForTheWorker() async throws {
        var policy = Policy()
        policy.allowBind(to: AddressRule(network: .ipv4(.loopback, prefixLength: 32), ports: 80...80))
        let port = UInt16(80)
        let supervisor = try Supervisor(logger: quietLogger())
        async let run = runWorker(["handshake", "bind:127.0.0.1:\(port)", "bind:127.0.0.1:81"], policy: policy, supervisor: supervisor)
        // Connect to the worker's listener once it is up.
        var answer = ""
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let client = connectedToLoopback(port: port) {
                var buffer = [UInt8](repeating: 0, count: 64)
                let count = read(client, &buffer, 64)
                answer = String(decoding: buffer[..<max(count, 0)], as: UTF8.self)
                close(client)
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(answer == "hello\n")
        let lines = try await run.lines
        #expect(lines.dropFirst() == ["bind ok", "bind errno \(EACCES)"])
        await supervisor.shutdown()
    }

    /// Port 0 lets the kernel pick a port anywhere in its ephemeral range: a rule for
    /// "0-1023" must not bind one at 33605. Only a rule for every port from 1 allows it.
    @Test func portZeroIsBoundOnlyWhereEveryPortIsAllowed() throws {
        func bindsPortZero(_ ports: ClosedRange<UInt16>) throws -> Bool {
            var policy = Policy()
            policy.allowBind(to: AddressRule(network: .ipv4(.loopback, prefixLength: 32), ports: ports))
            policy.allowBind(to: AddressRule(network: .ipv6(.any, prefixLength: 0), ports: ports))
            let active = try ActivePolicy(policy)
            func binds(_ address: SocketAddress) -> Bool? {
                switch active.bind(AddressRequest(type: privsep_SOCK_STREAM, address: address)) {
                case .granted: return true
                case .denied(.permissionDenied, _): return false
                case .denied(let errno, let reason):
                    Issue.record("\(ports) \(address): \(errno) \(reason)")
                    return nil
                }
            }
            let v4 = binds(.ipv4(.loopback, port: 0)), v6 = binds(.ipv6(.any, port: 0))
            #expect(v4 == v6, "\(ports)")
            return v4 == true
        }
        #expect(try !bindsPortZero(0...1023))
        #expect(try !bindsPortZero(0...60000))
        #expect(try !bindsPortZero(1024...65535))
        #expect(try bindsPortZero(1...65535))
        #expect(try bindsPortZero(0...65535))
    }

    /// Linux sockets are dual-stack by default: one bound at `::` also takes IPv4 traffic at
    /// 0.0.0.0, which only an IPv4 rule may grant.
    @Test func anIPv6WildcardBindTakesIPv4TrafficOnlyIfAnIPv4RuleAllowsIt() throws {
        func v6Only(_ active: ActivePolicy, port: UInt16) -> (v6Only: Int32, ipv4Reaches: Bool)? {
            switch active.bind(AddressRequest(type: privsep_SOCK_STREAM, address: .ipv6(.any, port: port))) {
            case .denied(let errno, let reason):
                // Another test may have taken the free port picked below: the caller tries another.
                if errno != .addressInUse { Issue.record("bind denied: \(errno) \(reason)") }
                return nil
            case .granted(let bound, _):
                #expect(listen(bound.unsafeRawValue, 4) == 0)
                var value: Int32 = -1
                var length = socklen_t(4)
                #expect(getsockopt(bound.unsafeRawValue, 41 /* IPPROTO_IPV6 */, 26 /* IPV6_V6ONLY */, &value, &length) == 0)
                let client = connectedToLoopback(port: port)
                if let client { close(client) }
                return (value, client != nil)
            }
        }
        for _ in 0..<10 {
            let (unused, port) = boundLoopbackSocket()
            close(unused)
            var policy = Policy()
            policy.allowBind(to: AddressRule(network: .ipv6(.any, prefixLength: 0), ports: port...port))
            guard let ipv6Only = v6Only(try ActivePolicy(policy), port: port) else { continue }
            #expect(ipv6Only.v6Only == 1)
            #expect(!ipv6Only.ipv4Reaches, "127.0.0.1 must not reach a socket only an IPv6 rule granted")
            policy.allowBind(to: AddressRule(network: .ipv4(.any, prefixLength: 32), ports: port...port))
            guard let dualStack = v6Only(try ActivePolicy(policy), port: port) else { continue }
            #expect(dualStack.v6Only == 0)
            #expect(dualStack.ipv4Reaches)
            return
        }
        Issue.record("no free port in ten tries")
    }

    @Test func unixSocketsOnlyAtListedPaths() async throws {
        let scratch = ScratchDirectory()
        var policy = Policy()
        policy.allowConnect(to: AddressRule(network: .unix(path: scratch.path + "/allowed.sock"), types: [1]))
        let run = try await runWorker(["handshake", "connect:\(scratch.path)/other.sock:0", "connect:/run/systemd/private:0"], policy: policy)
        #expect(run.lines.dropFirst() == ["connect errno \(EACCES)", "connect errno \(EACCES)"])
    }

    @Test func socketsOnlyOfListedKinds() async throws {
        var policy = Policy()
        policy.allowSocket(domain: AF_INET, type: privsep_SOCK_DGRAM)
        let run = try await runWorker([
            "handshake",
            "socket:\(AF_INET):\(privsep_SOCK_DGRAM)",
            "socket:\(AF_INET):\(privsep_SOCK_STREAM)",
            "socket:\(AF_PACKET):3",
            "socket:\(AF_INET):3", // SOCK_RAW
        ], policy: policy)
        #expect(run.lines.dropFirst() == ["socket ok", "socket errno \(EACCES)", "socket errno \(EACCES)", "socket errno \(EACCES)"])
    }

    /// An unbound TCP socket would let a worker listen on every interface (listen binds it)
    /// or connect it where no rule reaches: a brokered worker gets TCP sockets from CONNECT
    /// and BIND, whatever SOCKET rule the policy lists.
    @Test func noUnboundTCPSocketsForABrokeredWorker() async throws {
        var policy = Policy()
        policy.allowSocket(domain: AF_INET, type: privsep_SOCK_STREAM)
        policy.allowSocket(domain: AF_INET6, type: privsep_SOCK_STREAM)
        policy.allowSocket(domain: AF_INET, type: privsep_SOCK_SEQPACKET) // SCTP: listen binds it too
        policy.allowSocket(domain: AF_UNIX, type: privsep_SOCK_STREAM)
        let run = try await runWorker([
            "handshake", "socket:\(AF_INET):\(privsep_SOCK_STREAM)", "socket:\(AF_INET6):\(privsep_SOCK_STREAM | privsep_SOCK_NONBLOCK)",
            "socket:\(AF_INET):\(privsep_SOCK_SEQPACKET)", "socket:\(AF_UNIX):\(privsep_SOCK_STREAM)",
        ], policy: policy)
        #expect(run.lines.dropFirst() == ["socket errno \(EACCES)", "socket errno \(EACCES)", "socket errno \(EACCES)", "socket ok"])
        let refusal = run.audit.first { $0.event == "SOCKET" && $0.decision == "denied" }
        #expect(refusal?.reason.contains("ask CONNECT or BIND") == true)
    }
}

/// A detached pthread, for test helpers that block.
enum Thread {
    /// Runs `body` on a new joinable thread (the caller joins it).
    static func start(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body))
        precondition(pthread_create(&thread, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, box.toOpaque()) == 0)
        return thread
    }

    static func detach(_ body: @escaping @Sendable () -> Void) {
        pthread_detach(start(body))
    }
}

/// A worker chooses how many records its requests cause: past its audit budget they are
/// counted in AUDIT records, not written, and every one is accounted for.
@Suite struct AuditBudgetWorkerTests {
    static func counts(_ records: [AuditRecord]) -> (written: Int, leftOut: Int, denialsLeftOut: Int, reports: Int) {
        let reports = records.filter { $0.event == "AUDIT" }
        return (records.filter { $0.event == "OPEN" }.count, reports.map(\.recordsLeftOut).reduce(0, +),
                reports.map(\.denialsLeftOut).reduce(0, +), reports.count)
    }

    @Test func aWorkerLoopingOnRefusedOpensIsAuditedWithinItsBudget() async throws {
        let run = try await runWorker(["handshake", "opens:500:/nonexistent"]) { configuration in
            configuration.caps.auditRecordsPerSecond = 20
            configuration.caps.auditRecordBurst = 40
        }
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "opens granted 0 refused 500")
        let (written, leftOut, denialsLeftOut, reports) = Self.counts(run.audit)
        #expect(written + leftOut == 500)
        #expect(denialsLeftOut == leftOut)
        #expect(reports >= 1)
        // No more than the burst and the rate over the time the records span.
        let times = run.audit.filter { $0.event == "OPEN" }.map(\.time)
        let span = (times.max() ?? 0) - (times.min() ?? 0)
        #expect(written >= 40 && Double(written) <= 40 + 20 * span + 1, "\(written) records over \(span) s")
        // Lifecycle records are never left out, and the count comes before the EXIT.
        #expect(run.audit.first?.event == "SPAWN")
        #expect(run.audit.last?.event == "EXIT")
        #expect(run.audit.dropLast().last?.event == "AUDIT")
    }

    /// A SANDBOX report after the first is the worker's to repeat: budgeted like a decision.
    @Test func repeatedSandboxReportsShareTheBudget() async throws {
        let status = try WireCodec.encode(Envelope(requestID: 0, .sandboxStatus(SandboxStatus(requested: [], active: [.seccomp]))))
        let raw = "raw:" + HostileProtocolTests.hex(status)
        // The OPEN's answer comes after every report before it has been read.
        let run = try await runWorker(["handshake"] + Array(repeating: raw, count: 300) + ["open:/nonexistent:r", "exit:0"]) { configuration in
            configuration.caps.auditRecordsPerSecond = 5
            configuration.caps.auditRecordBurst = 20
        }
        #expect(run.reason == .exited(code: 0))
        let written = run.audit.filter { $0.event == "SANDBOX" }.count
        let leftOut = run.audit.filter { $0.event == "AUDIT" }.map(\.recordsLeftOut).reduce(0, +)
        #expect(written + run.audit.filter { $0.event == "OPEN" }.count + leftOut == 301)
        #expect(written <= 1 + 20 + 5 * 2, "\(written) SANDBOX records") // the first, the burst, and the rate over a run of under 2 s
    }

    @Test func theDefaultBudgetRecordsAnOrdinaryBurstWhole() async throws {
        let run = try await runWorker(["handshake", "opens:2000:/nonexistent"])
        #expect(run.lines.last == "opens granted 0 refused 2000")
        let (written, leftOut, _, reports) = Self.counts(run.audit)
        #expect(written == 2000 && leftOut == 0 && reports == 0)
    }

    /// A worker's LOG lines share its budget, so they cannot flood the logger either.
    @Test func logLinesShareTheBudget() async throws {
        let (logger, messages) = CollectingLogHandler.logger(at: .info)
        let audit = AuditLog(collectingUpTo: 1_000)
        let supervisor = try Supervisor(logger: logger, auditLog: audit)
        let steps = ["handshake"] + Array(repeating: "log:flooding", count: 30)
        let run = try await runWorker(steps, supervisor: supervisor) { configuration in
            configuration.caps.auditRecordsPerSecond = 1
            configuration.caps.auditRecordBurst = 10
        }
        await supervisor.shutdown()
        #expect(run.reason == .exited(code: 0))
        let lines = messages.all.filter { $0.message.hasSuffix(": flooding") }
        let reports = audit.records.filter { $0.event == "AUDIT" }
        #expect(lines.count >= 10 && lines.count < 30)
        #expect(lines.count + reports.map(\.recordsLeftOut).reduce(0, +) == 30)
        #expect(reports.allSatisfy { $0.denialsLeftOut == 0 })
        #expect(messages.all.contains { $0.level == .warning && $0.event == "AUDIT" })
    }
}
