import CPrivsepShims
import Foundation
import Glibc
import PrivsepTestSupport
import Supervisor
import Testing

/// The security review's findings on intercept mode, each proved closed with a real program.
extension InterceptTests {
    /// A listening unix stream socket at `path` (bound by this root test runner), mode `mode`.
    func unixListener(_ path: String, mode: mode_t, backlog: Int32 = 8) -> Int32 {
        let fd = socket(AF_UNIX, privsep_SOCK_STREAM | privsep_SOCK_CLOEXEC, 0)
        precondition(fd >= 0)
        let bound = withUnixAddress(path) { bind(fd, $0, $1) }
        precondition(bound == 0 && listen(fd, backlog) == 0 && chmod(path, mode) == 0)
        return fd
    }

    /// Calls `body` with `path` as a sockaddr_un and its length.
    func withUnixAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            for (index, byte) in path.utf8.enumerated() { bytes[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func unixConnectsAreMadeAsTheProgramsUser() async throws {
        let tree = Tree()
        tree.scratch.mkdir("sock")
        let privatePath = tree.path + "/sock/private", publicPath = tree.path + "/sock/public"
        let privateListener = unixListener(privatePath, mode: 0o600)
        let publicListener = unixListener(publicPath, mode: 0o666)
        defer { close(privateListener); close(publicListener) }
        let sockets = """
        ,
          "sockets": [ { "domain": "unix", "type": "stream" } ],
          "connect": [ { "unix": "\(privatePath)" }, { "unix": "\(publicPath)" } ]
        """
        let script = """
        import socket, sys
        for name in sys.argv[1:]:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(name); print('connected')
            except OSError as e:
                print('refused', e.errno)
        """
        let result = try await privsep(["run", "--intercept", "--user", "65534:65534", "--policy", tree.policy(sockets: sockets), "--",
                                  Self.python, "-c", script, privatePath, publicPath])
        #expect(result.status == 0, "\(result.stderr)")
        // The root-only socket is out of reach of user 65534, whatever the supervisor's own rights.
        #expect(result.stdout == "refused \(EACCES)\nconnected\n", "\(result.stderr)")
        // The server sees the program's user, not the supervisor's.
        _ = fcntl(publicListener, F_SETFL, O_NONBLOCK)
        let accepted = accept(publicListener, nil, nil)
        #expect(accepted >= 0)
        if accepted >= 0 {
            var credentials: [UInt32] = [0, 0, 0] // struct ucred: pid, uid, gid
            var length = socklen_t(12)
            #expect(getsockopt(accepted, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0)
            #expect(credentials[1] == 65534 && credentials[2] == 65534, "SO_PEERCRED \(credentials)")
            close(accepted)
        }
        _ = fcntl(privateListener, F_SETFL, O_NONBLOCK)
        #expect(accept(privateListener, nil, nil) < 0, "nothing reached the root-only socket")
    }

    /// A unix socket records who called listen, and its clients read that (SO_PEERCRED): the
    /// supervisor listens on the program's behalf as the program's user.
    @Test(.enabled(if: hasPython, "python3 is not installed")) func unixServersListenAsTheProgramsUser() async throws {
        let tree = Tree()
        tree.scratch.mkdir("sock")
        #expect(chmod(tree.path + "/sock", 0o777) == 0)
        let path = tree.path + "/sock/server"
        let sockets = """
        ,
          "sockets": [ { "domain": "unix", "type": "stream" } ],
          "bind": [ { "unix": "\(path)" } ]
        """
        let script = """
        import signal, socket, sys
        signal.alarm(20)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sys.argv[1]); s.listen(1)
        conn, _ = s.accept(); conn.close(); print('served')
        """
        async let run = privsep(["run", "--intercept", "--user", "65534:65534", "--policy", tree.policy(sockets: sockets), "--",
                                 Self.python, "-c", script, path])
        var listener: [UInt32]? = nil // struct ucred of the server, as its client sees it
        let deadline = ContinuousClock.now + .seconds(15)
        while listener == nil && ContinuousClock.now < deadline {
            let client = socket(AF_UNIX, privsep_SOCK_STREAM | privsep_SOCK_CLOEXEC, 0)
            if withUnixAddress(path, { connect(client, $0, $1) }) == 0 {
                var credentials: [UInt32] = [0, 0, 0]
                var length = socklen_t(12)
                if getsockopt(client, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 { listener = credentials }
            }
            close(client)
            if listener == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let result = try await run
        #expect(result.stdout == "served\n", "\(result.stderr)")
        #expect(listener?[1] == 65534 && listener?[2] == 65534, "SO_PEERCRED of the server \(String(describing: listener))")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func aBlockingConnectThatNeverCompletesTimesOutAndServingGoesOn() async throws {
        try await connectToAFullBacklog(clearingNonBlocking: false)
    }

    /// The same, while another thread of the program keeps clearing O_NONBLOCK on the socket
    /// (the open file description the supervisor's duplicate shares): the supervisor's own
    /// connect would then block until the listener accepts, which it never does. A timer that
    /// interrupts the serving thread at the deadline bounds it all the same.
    @Test(.enabled(if: hasPython, "python3 is not installed")) func aConnectWhoseSocketTheProgramMakesBlockingStillTimesOut() async throws {
        try await connectToAFullBacklog(clearingNonBlocking: true)
    }

    /// A program connects to a unix listener whose backlog is full, and is answered ETIMEDOUT
    /// after the 1 s connect timeout; then an open of its is still served.
    private func connectToAFullBacklog(clearingNonBlocking: Bool) async throws {
        let tree = Tree()
        tree.scratch.mkdir("sock")
        let path = tree.path + "/sock/full"
        // Backlog 0 and filled by this runner: a blocking connect would wait until accepted.
        let listener = unixListener(path, mode: 0o666, backlog: 0)
        var fillers: [Int32] = []
        defer { close(listener); fillers.forEach { close($0) } }
        for _ in 0..<8 {
            let fd = socket(AF_UNIX, privsep_SOCK_STREAM | privsep_SOCK_NONBLOCK | privsep_SOCK_CLOEXEC, 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { bytes in for (i, b) in path.utf8.enumerated() { bytes[i] = b } }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            fillers.append(fd)
            if rc != 0 { break }
        }
        let supervisor = try Supervisor(logger: quietLogger())
        var policy = dynamicProgramPolicy()
        policy.allow(path: tree.path + "/good.txt", .file, [.read])
        policy.allowSocket(domain: AF_UNIX, type: privsep_SOCK_STREAM)
        policy.allowConnect(to: AddressRule(network: .unix(path: path)))
        // Exit status: the connect's errno, plus 100 if the next served call (an open) still works.
        let script = """
        import fcntl, os, socket, sys, threading
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if sys.argv[3] == 'clear':
            def clear():
                while True:
                    fcntl.fcntl(s.fileno(), fcntl.F_SETFL, 0)
            threading.Thread(target=clear, daemon=True).start()
        try:
            s.connect(sys.argv[1]); code = 1
        except OSError as e:
            code = e.errno
        ok = open(sys.argv[2]).read().startswith('hello')
        os._exit(code + (100 if ok else 0))
        """
        let arguments = ["-c", script, path, tree.path + "/good.txt", clearingNonBlocking ? "clear" : "keep"]
        var configuration = WorkerConfiguration.intercepting(program: Self.python, arguments: arguments,
                                                             policy: policy, helper: Self.binDirectory + "/privsep-intercept")
        configuration.caps.connectTimeoutSeconds = 1
        // Without a bound on the connect, the program would be killed here instead.
        configuration.wallClockTimeout = 30
        let started = Date()
        let handle = try await supervisor.spawn(configuration)
        let reason = await handle.exit()
        #expect(reason == .exited(code: 100 + ETIMEDOUT), "\(reason)")
        #expect(Date().timeIntervalSince(started) < 20)
        await supervisor.shutdown()
    }

    @Test func policiesInterceptModeCannotEnforceAsWrittenAreRefusedAtStart() async throws {
        var nested = Policy()
        nested.allow(path: "/usr", .directory, [.read, .execute])
        nested.allow(path: "/usr/share", .directory, [.read])
        #expect(nested.interceptProblem() != nil)
        var root = Policy()
        root.allow(path: "/", .directory, [.read, .execute])
        root.allow(path: "/etc/passwd", .file, [.read])
        #expect(root.interceptProblem() != nil)
        var fine = Policy()
        fine.allow(path: "/usr", .directory, [.read, .execute])
        fine.allow(path: "/usr/bin/tool", .file, [.read, .execute])
        fine.allow(path: "/usrx", .directory, [.read])
        fine.allow(path: "/lib", .directory, [.read])
        fine.allow(path: "/srv/log", .file, [.write, .append])
        #expect(fine.interceptProblem() == nil)
        var appendOnly = Policy()
        appendOnly.allow(path: "/srv/log", .file, [.append, .create])
        #expect(appendOnly.interceptProblem() != nil)

        // End to end: privsep run refuses to start, with the reason.
        let tree = Tree()
        let refused = try await intercepted(tree, ["/bin/true"], policy: tree.policy(extra: """
        ,
            { "path": "/usr/share", "kind": "directory", "allow": ["read"] }
        """))
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("cannot be nested beneath /usr"), "\(refused.stderr)")
        let appendRefused = try await intercepted(tree, ["/bin/true"], policy: tree.policy(extra: """
        ,
            { "path": "\(tree.path)/log.txt", "kind": "file", "allow": ["append", "create"] }
        """))
        #expect(appendRefused.status != 0)
        #expect(appendRefused.stderr.contains("append-only"), "\(appendRefused.stderr)")
    }

    /// execve is checked, then let run (the kernel reads the path again): a path swapped
    /// meanwhile is held to the execute rules by the program's Landlock ruleset, built at
    /// start. A narrowing that changed those rules would leave Landlock wider than the
    /// policy (proved by a racing program in the review), so it is refused; one that
    /// keeps them and narrows the rest is taken.
    @Test func aNarrowingOfAnInterceptedProgramKeepsItsExecuteRules() async throws {
        var started = dynamicProgramPolicy()
        started.allow(path: "/bin", .directory, [.read, .listDirectory, .execute], symlinks: .followBeneath)
        let supervisor = try Supervisor(logger: quietLogger())
        let handle = try await supervisor.spawn(WorkerConfiguration.intercepting(
            program: "/usr/bin/sleep", arguments: ["60"], policy: started, helper: Self.binDirectory + "/privsep-intercept"))
        var fewerExecutables = dynamicProgramPolicy()
        fewerExecutables.allow(path: "/bin", .directory, [.read, .listDirectory], symlinks: .followBeneath)
        #expect(throws: PolicyError.self) { try handle.narrowPolicy(to: fewerExecutables) }
        #expect(fewerExecutables.executeRulesProblem(startedWith: started)?.description.contains("path rule /bin: in intercept mode the execute rules are fixed") == true)
        var narrowerFile = started
        narrowerFile.paths.removeAll { $0.path == "/usr" }
        narrowerFile.allow(path: "/usr/bin/sleep", .file, [.read, .execute])
        #expect(narrowerFile.executeRulesProblem(startedWith: started) != nil, "a file rule in place of its directory")
        var sameExecutables = dynamicProgramPolicy()
        sameExecutables.paths.removeAll { $0.path == "/etc/ld.so.cache" }
        sameExecutables.allow(path: "/bin", .directory, [.read, .listDirectory, .execute], symlinks: .followBeneath)
        try handle.narrowPolicy(to: sameExecutables)
        handle.stop(grace: 0)
        #expect(await handle.exit() == .stoppedBySupervisor)
        await supervisor.shutdown()
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func inodeFlagIoctlsAreRefusedToARootProgram() async throws {
        let tree = Tree()
        tree.scratch.write("flags.txt", "x\n")
        let policy = tree.policy(extra: ",\n    { \"path\": \"\(tree.path)/flags.txt\", \"kind\": \"file\", \"allow\": [\"read\"] }")
        let script = """
        import fcntl, os, struct, sys
        fd = os.open(sys.argv[1], os.O_RDONLY)
        immutable = struct.pack('l', 0x10).ljust(64, b'\\0')
        for name, command in [('setflags', 0x40086602), ('setflags32', 0x40046602), ('fssetxattr', 0x401c5820),
                              ('setversion', 0x40087602)]:
            try:
                fcntl.ioctl(fd, command, immutable); print(name, 'succeeded')
            except OSError as e:
                print(name, e.errno)
        """
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path + "/flags.txt"], policy: policy)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "setflags \(EPERM)\nsetflags32 \(EPERM)\nfssetxattr \(EPERM)\nsetversion \(EPERM)\n")
        // Not immutable: root can still write it.
        let fd = open(tree.path + "/flags.txt", O_WRONLY | O_APPEND | O_CLOEXEC)
        #expect(fd >= 0)
        if fd >= 0 { close(fd) }
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func ipcNewSessionsDatagramPairsPageOffliningAndTerminalTakeoverAreRefused() async throws {
        let tree = Tree()
        let script = """
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        def raw(number, *args):
            r = libc.syscall(number, *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
            return 0 if r >= 0 else ctypes.get_errno()
        print('shmget', raw(29, 0, 4096, 0o1600))
        print('msgget', raw(68, 0, 0o1600))
        print('semget', raw(64, 0, 1, 0o1600))
        print('mq_open', raw(240, ctypes.c_char_p(b'privsep-test'), os.O_CREAT | os.O_RDWR, 0o600, 0))
        pid = os.fork()
        if pid == 0:
            os._exit(raw(112))  # setsid in a child (not a group leader): would leave the process group
        print('setsid', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        pid = os.fork()
        if pid == 0:
            os._exit(raw(109, 0, 0))  # setpgid(0, 0)
        print('setpgid', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        try:
            socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); print('dgram pair made')
        except OSError as e:
            print('dgram pair', e.errno)
        pair = (ctypes.c_int * 2)()
        print('raw pair', raw(53, 1, 3, 0, pair))  # AF_UNIX SOCK_RAW: the kernel makes it SOCK_DGRAM
        r = libc.syscall(56, ctypes.c_long(0x8000 | 17), 0, 0, 0, 0)  # clone(CLONE_PARENT | SIGCHLD)
        if r == 0:
            os._exit(0)
        print('clone_parent', ctypes.get_errno() if r < 0 else 'made')
        a, b = socket.socketpair(); a.send(b'ok'); print('stream pair', b.recv(2).decode())
        # An empty range: harmless whether or not the filter stops it (0 from the kernel).
        print('madvise hwpoison', raw(28, 0, 0, 100), 'soft offline', raw(28, 0, 0, 101),
              'high bits', raw(28, 0, 0, (1 << 32) | 100), 'dontneed', raw(28, 0, 0, 4))
        # Terminal ioctls on a pipe: ENOTTY from the kernel, EPERM from the filter.
        r, w = os.pipe()
        print('tty', [raw(16, r, c) for c in (0x5423, 0x5457, 0x540C, 0x540E, 0x5422, 0x541D, 0x5437)], 'tcgets', raw(16, r, 0x5401))
        """
        let result = try await intercepted(tree, [Self.python, "-c", script])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
        shmget \(EPERM)
        msgget \(EPERM)
        semget \(EPERM)
        mq_open \(EPERM)
        setsid \(EPERM)
        setpgid \(EPERM)
        dgram pair \(EPERM)
        raw pair \(EPERM)
        clone_parent \(EPERM)
        stream pair ok
        madvise hwpoison \(EPERM) soft offline \(EPERM) high bits \(EPERM) dontneed 0
        tty [1, 1, 1, 1, 1, 1, 1] tcgets \(ENOTTY)

        """)
    }

    /// SO_PASSCRED and SO_PASSPIDFD are refused: with either, a failed connect or a send
    /// autobinds a unix socket to an abstract name anyone outside the sandbox could reach; and
    /// an unnamed unix socket may not listen either. A bind at port 0 under a rule for
    /// "0-1023" would get a port from the ephemeral range: refused.
    @Test(.enabled(if: hasPython, "python3 is not installed")) func noListeningAtANameNoBindRuleAllowed() async throws {
        let tree = Tree()
        let stale = tree.path + "/stale.sock"
        close(unixListener(stale, mode: 0o666)) // the path stays, nobody listens: the connect is refused
        defer { unlink(stale) }
        let sockets = """
        ,
          "sockets": [ { "domain": "unix", "type": "stream" }, { "domain": "inet", "type": "stream" } ],
          "connect": [ { "unix": "\(stale)" } ],
          "bind": [ { "address": "127.0.0.1", "ports": "0-1023" } ]
        """
        let script = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except OSError as e:
            print('passcred', e.errno)
        try:
            s.setsockopt(socket.SOL_SOCKET, 76, 1)  # SO_PASSPIDFD
        except OSError as e:
            print('passpidfd', e.errno)
        try:
            s.connect(sys.argv[1])
        except OSError as e:
            print('connect', e.errno)
        print('unnamed', s.getsockname() in ('', b''))
        try:
            s.listen(1); print('listening')
        except OSError as e:
            print('listen', e.errno)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(('127.0.0.1', 0)); print('bound', t.getsockname()[1])
        except OSError as e:
            print('bind 0', e.errno)
        """
        let result = try await privsep(["run", "--intercept", "--policy", tree.policy(sockets: sockets), "--",
                                        Self.python, "-c", script, stale])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "passcred \(EPERM)\npasspidfd \(EPERM)\nconnect \(ECONNREFUSED)\nunnamed True\nlisten \(EACCES)\nbind 0 \(EACCES)\n",
                "\(result.stdout)\(result.stderr)")
    }

    /// A program's output on privsep's terminal goes through a terminal of its own, so stdio
    /// stays line-buffered: a line printed before the program is killed is shown (through a
    /// pipe, Python would have held it in its buffer and lost it).
    @Test(.enabled(if: hasPython && CLITests.hasScript, "python3 and script are needed")) func outputPrintedBeforeAKillIsShown() async throws {
        let tree = Tree()
        let run = "\(CLITests.binDirectory)/privsep run --intercept --timeout 1 --policy \(tree.policy()) -- \(Self.python)"
        let result = try await ExampleTests.run("/usr/bin/script", ["-qec", "\(run) -c 'import time; print(\"started\"); time.sleep(30)'", "/dev/null"])
        #expect(result.stdout.hasPrefix("started\r\n"), "\(result.stdout)")
        #expect(result.stdout.contains("wall-clock limit"), "\(result.stdout)")
    }

    /// Kept as root (no --user), the program holds no capability, and gains none at exec: a
    /// deny-list cannot name every ioctl root's capabilities open (a read-only file's
    /// EXT4_IOC_SHUTDOWN, a socketpair's SIOCSIFFLAGS).
    @Test(.enabled(if: hasPython && getuid() == 0, "python3 and root are needed")) func aProgramKeptAsRootHoldsNoCapability() async throws {
        let tree = Tree()
        let policy = tree.policy(extra: ",\n    { \"path\": \"/proc\", \"kind\": \"directory\", \"allow\": [\"read\"] }")
        let script = """
        import os, socket, fcntl, struct
        print('uid', os.getuid())
        for line in open('/proc/%d/status' % os.getpid()):
            if line.startswith('Cap'): print(line.split()[0], int(line.split()[1], 16))
        a, b = socket.socketpair()
        try:  # lo's flags set to what they are: a change nobody would see, had it been allowed
            flags = fcntl.ioctl(a, 0x8913, struct.pack('16sH', b'lo', 0))
            fcntl.ioctl(a, 0x8914, flags); print('SIOCSIFFLAGS succeeded')
        except OSError as e:
            print('SIOCSIFFLAGS', e.errno)
        """
        let result = try await intercepted(tree, [Self.python, "-c", script], policy: policy)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
        uid 0
        CapInh: 0
        CapPrm: 0
        CapEff: 0
        CapBnd: 0
        CapAmb: 0
        SIOCSIFFLAGS \(EPERM)

        """)
    }

    /// Without CAP_SETPCAP (a container that dropped it) the bounding set and securebits stay
    /// as they are, yet the program still holds no capability: its sets are emptied, and
    /// no_new_privs keeps an exec from raising them.
    @Test(.enabled(if: hasPython && getuid() == 0 && access("/usr/bin/setpriv", X_OK) == 0, "python3, root and setpriv are needed"))
    func aProgramKeptAsRootHoldsNoCapabilityWithoutSetpcapEither() async throws {
        let tree = Tree()
        let policy = tree.policy(extra: ",\n    { \"path\": \"/proc\", \"kind\": \"directory\", \"allow\": [\"read\"] }")
        let script = """
        import os
        for line in open('/proc/%d/status' % os.getpid()):
            if line.split(':')[0] in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb'): print(line.split()[0], int(line.split()[1], 16))
        """
        let result = try await ExampleTests.run("/usr/bin/setpriv", ["--bounding-set=-setpcap", "--", CLITests.binDirectory + "/privsep",
                                                                      "run", "--intercept", "--policy", policy, "--", Self.python, "-c", script])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "CapInh: 0\nCapPrm: 0\nCapEff: 0\nCapAmb: 0\n", "\(result.stderr)")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func procOfAnyOtherProcessIsRefusedEvenUnderAProcRule() async throws {
        let tree = Tree()
        let policy = tree.policy(extra: ",\n    { \"path\": \"/proc\", \"kind\": \"directory\", \"allow\": [\"read\", \"list\"] }")
        let script = """
        import os
        def attempt(path):
            try:
                open(path, 'rb').read(); return 'read'
            except OSError as e:
                return e.errno
        parent = os.getppid()
        print('supervisor environ', attempt('/proc/%d/environ' % parent))
        print('supervisor task', attempt('/proc/%d/task/%d/environ' % (parent, parent)))
        print('init', attempt('/proc/1/cmdline'))
        print('own status', attempt('/proc/%d/status' % os.getpid()))
        print('own task', attempt('/proc/%d/task/%d/stat' % (os.getpid(), os.getpid())))
        print('own pagemap', attempt('/proc/%d/pagemap' % os.getpid()))
        print('own stack', attempt('/proc/%d/task/%d/stack' % (os.getpid(), os.getpid())))
        """
        let result = try await intercepted(tree, [Self.python, "-c", script], policy: policy)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
        supervisor environ \(EACCES)
        supervisor task \(EACCES)
        init \(EACCES)
        own status read
        own task read
        own pagemap \(EACCES)
        own stack \(EACCES)

        """, "\(result.stderr)")
    }
}

extension InterceptTests {
    @Test(.enabled(if: hasPython, "python3 is not installed")) func noMemfdAndNoExecOfADescriptorPath() async throws {
        let tree = Tree()
        let script = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            os.memfd_create('x'); print('memfd made')
        except OSError as e:
            print('memfd', e.errno)
        fd = os.open('/usr/bin/true', os.O_RDONLY)
        for path in ['/proc/self/fd/%d' % fd, '/proc/%d/fd/%d' % (os.getpid(), fd)]:
            pid = os.fork()
            if pid == 0:
                argv = (ctypes.c_char_p * 2)(b'true', None)
                libc.execve(path.encode(), argv, None)
                os._exit(ctypes.get_errno())
            print('exec fd path', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
        let policy = tree.policy(extra: ",\n    { \"path\": \"/proc\", \"kind\": \"directory\", \"allow\": [\"read\", \"list\"] }")
        let result = try await intercepted(tree, [Self.python, "-c", script], policy: policy)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "memfd \(EPERM)\nexec fd path \(EACCES)\nexec fd path \(EACCES)\n", "\(result.stderr)")
    }
}
