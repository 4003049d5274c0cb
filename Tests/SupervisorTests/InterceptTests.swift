import Foundation
import Glibc
import PrivsepTestSupport
import Supervisor
import Synchronization
import Testing

/// Intercept mode end to end: unmodified Debian programs (cat, head, sh, file, python3)
/// run by `privsep run --intercept`, their opens, stats, execs and sockets served under
/// the policy. Every case spawns real processes; nothing here loads a filter in the runner.
@Suite(.serialized) struct InterceptTests {
    static let binDirectory = CLITests.binDirectory
    static let python = "/usr/bin/python3"
    /// Most hostile cases are Python scripts; without python3 (not in a minimal Debian) they
    /// are skipped, and CI installs it.
    static let hasPython = access(python, X_OK) == 0

    /// A scratch directory with good.txt (readable), evil.txt (same length, outside the policy).
    final class Tree: Sendable {
        let scratch = ScratchDirectory()
        var path: String { scratch.path }
        init() {
            scratch.write("good.txt", "hello from an allowed file\nsecond line\n")
            scratch.write("evil.txt", "SECRET\n")
            scratch.mkdir("data")
            scratch.write("data/a.txt", "a\n")
            scratch.write("data/b.txt", "b\n")
        }

        /// The system's libraries and programs (read, list, execute), plus `extra` rules.
        func policy(extra: String = "", sockets: String = "") -> String {
            let text = """
            {
              "paths": [
                { "path": "/usr", "kind": "directory", "allow": ["read", "list", "execute"], "symlinks": "follow-beneath" },
                { "path": "/bin", "kind": "directory", "allow": ["read", "list", "execute"], "symlinks": "follow-beneath" },
                { "path": "/lib", "kind": "directory", "allow": ["read", "list"], "symlinks": "follow-beneath" },
                { "path": "/lib64", "kind": "directory", "allow": ["read", "list"], "symlinks": "follow-beneath" },
                { "path": "/etc/ld.so.cache", "kind": "file", "allow": ["read"] },
                { "path": "\(path)/good.txt", "kind": "file", "allow": ["read"] },
                { "path": "\(path)/data", "kind": "directory", "allow": ["read", "list"] }\(extra)
              ]\(sockets)
            }
            """
            scratch.write("policy.json", text)
            return path + "/policy.json"
        }
    }

    func privsep(_ arguments: [String]) async throws -> ExampleTests.Output {
        try await ExampleTests.run(Self.binDirectory + "/privsep", arguments)
    }

    func intercepted(_ tree: Tree, _ command: [String], policy: String? = nil, audit: String? = nil) async throws -> ExampleTests.Output {
        var arguments = ["run", "--intercept", "--policy", policy ?? tree.policy()]
        if let audit { arguments += ["--audit-log", audit] }
        return try await privsep(arguments + ["--"] + command)
    }

    func auditRecords(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    // MARK: Real programs

    @Test func catOfAnAllowedFileIsIdenticalToADirectRun() async throws {
        let tree = Tree()
        let direct = try await ExampleTests.run("/bin/cat", [tree.path + "/good.txt", tree.path + "/data/a.txt"])
        let sandboxed = try await intercepted(tree, ["/bin/cat", tree.path + "/good.txt", tree.path + "/data/a.txt"])
        #expect(sandboxed.status == 0, "\(sandboxed.stderr)")
        #expect(sandboxed.stdout == direct.stdout)
        #expect(sandboxed.stderr == "")
    }

    @Test func aDeniedFileFailsWithPermissionDeniedAndTheAuditLogListsEachDecision() async throws {
        let tree = Tree()
        let audit = tree.path + "/audit.jsonl"
        let result = try await intercepted(tree, ["/bin/cat", tree.path + "/good.txt", tree.path + "/evil.txt", tree.path + "/data/missing.txt"], audit: audit)
        #expect(result.status == 1)
        #expect(result.stdout == "hello from an allowed file\nsecond line\n")
        #expect(result.stderr.contains("\(tree.path)/evil.txt: Permission denied"), "\(result.stderr)")
        #expect(result.stderr.contains("\(tree.path)/data/missing.txt: No such file or directory"), "\(result.stderr)")
        let records = try auditRecords(audit)
        func decision(_ event: String, _ fragment: String) -> [String: Any]? {
            records.first { ($0["event"] as? String) == event && (($0["detail"] as? String)?.contains(fragment) ?? false) }
        }
        #expect(decision("EXEC", "execve /bin/cat")?["decision"] as? String == "granted")
        #expect(decision("OPEN", "/lib/x86_64-linux-gnu/libc.so.6")?["decision"] as? String == "granted")
        #expect(decision("OPEN", "\(tree.path)/good.txt")?["decision"] as? String == "granted")
        let evil = decision("OPEN", "\(tree.path)/evil.txt")
        #expect(evil?["decision"] as? String == "denied")
        #expect(evil?["errno"] as? Int == Int(EACCES))
        #expect(decision("OPEN", "\(tree.path)/data/missing.txt")?["errno"] as? Int == Int(ENOENT))
        #expect(records.contains { ($0["event"] as? String) == "INTERCEPT" })
        #expect(records.last?["event"] as? String == "EXIT")
    }

    /// An intercepted program looping on refused calls is held to its audit budget
    /// (--audit-rate): past it its records are counted, not written, every one accounted for.
    @Test func aProgramLoopingOnRefusedCallsIsAuditedWithinItsBudget() async throws {
        let tree = Tree()
        let audit = tree.path + "/audit.jsonl"
        let evil = Array(repeating: tree.path + "/evil.txt", count: 300)
        let result = try await privsep(["run", "--intercept", "--policy", tree.policy(), "--audit-log", audit, "--audit-rate", "5",
                                        "--", "/bin/cat"] + evil)
        #expect(result.status == 1)
        // cat writes each message in four writes, and privsep's own lines may fall between
        // them: its ": Permission denied" is one write, so it is what is counted.
        #expect(result.stderr.components(separatedBy: ": Permission denied").count == 301, "\(result.stderr.prefix(500))")
        let records = try auditRecords(audit)
        let deniedEvil = records.filter {
            ($0["decision"] as? String) == "denied" && (($0["detail"] as? String)?.contains("/evil.txt") ?? false)
        }
        let reports = records.filter { ($0["event"] as? String) == "AUDIT" }
        let deniedLeftOut = reports.compactMap { $0["denials_left_out"] as? Int }.reduce(0, +)
        let allDenied = records.filter { ($0["decision"] as? String) == "denied" }.count
        // Every refused call is written or counted, once: the 300 opens of evil.txt and the
        // loader's access to /etc/ld.so.preload, made before the flood (so written).
        #expect(allDenied - deniedEvil.count == 1)
        #expect(allDenied + deniedLeftOut == 301)
        let decided = records.filter { !(($0["decision"] as? String) ?? "").isEmpty }
        let times = decided.compactMap { $0["time"] as? Double }
        let span = (times.max() ?? 0) - (times.min() ?? 0)
        #expect(Double(decided.count) <= 50 + 5 * span + 1, "\(decided.count) decisions over \(span) s")
        #expect(!reports.isEmpty)
        #expect(records.last?["event"] as? String == "EXIT")
    }

    @Test func relativePathsAreResolvedAgainstTheProgramsDirectory() async throws {
        let tree = Tree()
        // --intercept runs the program in our working directory; sh changes it and opens relative paths.
        let result = try await intercepted(tree, ["/bin/sh", "-c", "cd \(tree.path)/data && cat a.txt ./b.txt ../good.txt && cat ../evil.txt"])
        #expect(result.stdout == "a\nb\nhello from an allowed file\nsecond line\n", "\(result.stderr)")
        #expect(result.stderr.contains("../evil.txt: Permission denied"), "\(result.stderr)")
        #expect(result.status != 0)
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func everySpellingOfAPathIsJudgedAsTheFileItNames() async throws {
        // Canonical ASCII paths are judged where they lie in the serving thread's buffer;
        // every other spelling is made canonical (or refused) first. Both must agree.
        let tree = Tree()
        tree.scratch.write("data/\u{e9}t\u{e9}.txt", "accented\n")
        let audit = tree.path + "/audit.jsonl"
        let script = """
        import os, sys
        root = sys.argv[1].encode()
        for name in [b'/good.txt', b'//good.txt', b'/./good.txt', b'/data/../good.txt', b'/data/a.txt',
                     b'/data/\\xc3\\xa9t\\xc3\\xa9.txt', b'/evil.txt', b'/data/../evil.txt', b'/data/\\xff.txt',
                     b'/data/missing.txt']:
            try:
                fd = os.open(root + name, os.O_RDONLY)
                print(name.decode('utf-8', 'replace'), os.read(fd, 100).decode().splitlines()[0])
                os.close(fd)
            except OSError as error:
                print(name.decode('utf-8', 'replace'), -error.errno)
        """
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path], audit: audit)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
        /good.txt hello from an allowed file
        //good.txt hello from an allowed file
        /./good.txt hello from an allowed file
        /data/../good.txt hello from an allowed file
        /data/a.txt a
        /data/\u{e9}t\u{e9}.txt accented
        /evil.txt -\(EACCES)
        /data/../evil.txt -\(EACCES)
        /data/\u{fffd}.txt -\(EACCES)
        /data/missing.txt -\(ENOENT)

        """, "\(result.stderr)")
        // The records name what was judged, whichever way it was read.
        let records = try auditRecords(audit).filter { ($0["event"] as? String) == "OPEN" }
        func decisions(_ path: String) -> [String] {
            records.filter { ($0["detail"] as? String)?.hasPrefix("openat \(path) ") == true }.compactMap { $0["decision"] as? String }
        }
        #expect(decisions(tree.path + "/good.txt") == ["granted", "granted", "granted", "granted"])
        #expect(decisions(tree.path + "/data/a.txt") == ["granted"])
        #expect(decisions(tree.path + "/data/\u{e9}t\u{e9}.txt") == ["granted"])
        #expect(decisions(tree.path + "/evil.txt") == ["denied", "denied"])
        #expect(decisions(tree.path + "/data/missing.txt") == ["denied"])
        // A grant names its rule, whichever way the path was read.
        #expect(records.contains { ($0["detail"] as? String)?.hasPrefix("openat \(tree.path)/data/a.txt ") == true
            && ($0["reason"] as? String) == "rule \(tree.path)/data" })
        #expect(records.filter { ($0["detail"] as? String)?.hasPrefix("openat \(tree.path)/good.txt ") == true }
            .allSatisfy { ($0["reason"] as? String) == "rule \(tree.path)/good.txt" })
    }

    @Test func fileAndHeadGiveTheSameOutputAsUnsandboxed() async throws {
        let tree = Tree()
        let head = try await intercepted(tree, ["/usr/bin/head", "-n", "1", tree.path + "/good.txt"])
        #expect(head.status == 0)
        #expect(head.stdout == (try await ExampleTests.run("/usr/bin/head", ["-n", "1", tree.path + "/good.txt"])).stdout)
        guard access("/usr/bin/file", X_OK) == 0 else { return } // `file` is optional on a Debian system
        let magic = access("/usr/share/misc/magic.mgc", R_OK) == 0
        let policy = tree.policy(extra: ",\n    { \"path\": \"/etc/magic\", \"kind\": \"file\", \"allow\": [\"read\"] }")
        let sandboxed = try await intercepted(tree, ["/usr/bin/file", tree.path + "/good.txt", tree.path + "/data"], policy: policy)
        let direct = try await ExampleTests.run("/usr/bin/file", [tree.path + "/good.txt", tree.path + "/data"])
        #expect(sandboxed.status == direct.status)
        #expect(sandboxed.stdout == direct.stdout, "magic database present: \(magic); \(sandboxed.stderr)")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func pythonReadsListsAndStatsUnderThePolicy() async throws {
        let tree = Tree()
        let script = """
        import os, sys
        print(open(sys.argv[1] + '/good.txt').read(), end='')
        print(sorted(os.listdir(sys.argv[1] + '/data')))
        print(os.path.exists(sys.argv[1] + '/data/a.txt'), os.path.exists(sys.argv[1] + '/data/zzz'))
        print(os.access(sys.argv[1] + '/good.txt', os.R_OK), os.access(sys.argv[1] + '/good.txt', os.W_OK))
        try:
            open(sys.argv[1] + '/evil.txt')
        except PermissionError as e:
            print('denied', e.errno)
        try:
            os.stat(sys.argv[1] + '/evil.txt')
        except PermissionError as e:
            print('stat denied', e.errno)
        """
        let direct = try await ExampleTests.run(Self.python, ["-c", script, tree.path])
        let sandboxed = try await intercepted(tree, [Self.python, "-c", script, tree.path])
        #expect(sandboxed.status == 0, "\(sandboxed.stderr)")
        let expected = "hello from an allowed file\nsecond line\n['a.txt', 'b.txt']\nTrue False\nTrue False\ndenied 13\nstat denied 13\n"
        #expect(sandboxed.stdout == expected)
        // Unsandboxed, root reads everything: the lines that differ are exactly the policy's.
        #expect(direct.stdout.hasPrefix("hello from an allowed file\nsecond line\n['a.txt', 'b.txt']\nTrue False\n"))
    }

    // MARK: Processes, threads, signals

    @Test(.enabled(if: hasPython, "python3 is not installed")) func childrenThatForkAndExecStayUnderThePolicy() async throws {
        let tree = Tree()
        let audit = tree.path + "/audit.jsonl"
        let result = try await intercepted(tree, ["/bin/sh", "-c", "cat \(tree.path)/good.txt; /usr/bin/head -n 1 \(tree.path)/evil.txt; \(Self.python) -c 'open(\"\(tree.path)/evil.txt\")'"], audit: audit)
        #expect(result.stdout == "hello from an allowed file\nsecond line\n")
        #expect(result.stderr.contains("head: cannot open '\(tree.path)/evil.txt' for reading: Permission denied"), "\(result.stderr)")
        #expect(result.stderr.contains("PermissionError"), "\(result.stderr)")
        let records = try auditRecords(audit)
        let workerPID = records.first { ($0["event"] as? String) == "SPAWN" }?["pid"] as? Int
        let execs = records.filter { ($0["event"] as? String) == "EXEC" && ($0["decision"] as? String) == "granted" }
        #expect(execs.count >= 4, "sh, cat, head and python3 are each checked")
        let deniedByChildren = records.filter {
            ($0["event"] as? String) == "OPEN" && ($0["decision"] as? String) == "denied"
                && (($0["detail"] as? String)?.contains("evil.txt") ?? false) && ($0["pid"] as? Int) != workerPID
        }
        #expect(deniedByChildren.count == 2, "head's and python's opens, each from its own pid")
    }

    @Test func whatTheProgramLeavesRunningEndsWithIt() async throws {
        let tree = Tree()
        let result = try await intercepted(tree, ["/bin/sh", "-c", "/usr/bin/sleep 30 & echo $!"])
        #expect(result.status == 0, "\(result.stderr)")
        let orphan = pid_t(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(orphan > 0)
        var gone = false
        for _ in 0..<100 where !gone {
            gone = kill(orphan, 0) != 0 || (try? String(contentsOfFile: "/proc/\(orphan)/stat", encoding: .utf8))?.contains(") Z ") == true
            if !gone { usleep(20_000) }
        }
        #expect(gone, "the background sleep \(orphan) outlived the intercepted shell")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func theProgramCanRunAsAnotherUser() async throws {
        let tree = Tree()
        let policy = tree.policy()
        let result = try await privsep(["run", "--intercept", "--user", "65534:65534", "--policy", policy, "--",
                                  Self.python, "-c", "import os, sys; print(os.getuid(), os.getgid(), os.getgroups()); print(open(sys.argv[1]).read(), end='')",
                                  tree.path + "/good.txt"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "65534 65534 []\nhello from an allowed file\nsecond line\n")
        let misuse = try await privsep(["run", "--user", "65534", "--policy", policy, "--", "/bin/true"])
        #expect(misuse.status != 0)
        // Digits only, never root's 0, never 4294967295 (which set*id reads as "no change").
        for user in ["0", "0:0", "65534:0", "+5", "4294967295", "5:4294967295", "abc", "5:", ":5", "1:2:3"] {
            let refused = try await privsep(["run", "--intercept", "--user", user, "--policy", policy, "--", "/bin/true"])
            #expect(refused.status == 64, "--user \(user): \(refused.stderr)")
            #expect(refused.stderr.contains("--user takes UID or UID:GID"), "--user \(user): \(refused.stderr)")
        }
    }

    @Test func anExecOutsideTheExecuteRulesIsRefused() async throws {
        let tree = Tree()
        tree.scratch.write("data/tool.sh", "#!/bin/sh\necho ran\n")
        chmod(tree.path + "/data/tool.sh", 0o755)
        let result = try await intercepted(tree, ["/bin/sh", "-c", "\(tree.path)/data/tool.sh; echo status $?"])
        #expect(result.stdout == "status 126\n", "\(result.stderr)")
        #expect(result.stderr.contains("Permission denied"))
        let direct = try await intercepted(tree, [tree.path + "/data/tool.sh"])
        #expect(direct.status == 126)
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func aMultiThreadedProgramIsServedOnEveryThread() async throws {
        let tree = Tree()
        let script = """
        import threading, sys
        good, evil, errors = 0, 0, []
        lock = threading.Lock()
        def work():
            global good, evil
            for _ in range(100):
                with open(sys.argv[1] + '/good.txt') as f:
                    data = f.read()
                try:
                    open(sys.argv[1] + '/evil.txt')
                except PermissionError:
                    with lock: evil += 1
                with lock:
                    if data.startswith('hello'): good += 1
                    else: errors.append(data)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(good, evil, len(errors))
        """
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "800 800 0\n")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func signalsDuringServedCallsNeitherFailNorRepeatThem() async throws {
        let tree = Tree()
        // A timer interrupts the program every 200 µs while it opens and creates files; with
        // WAIT_KILLABLE_RECV a received notification is never interrupted, so nothing fails
        // with EINTR and no O_EXCL create is done twice (which would fail with EEXIST).
        let script = """
        import os, signal, sys
        hits = 0
        def tick(signum, frame):
            global hits
            hits += 1
        signal.signal(signal.SIGALRM, tick)
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        for i in range(1500):
            with open(sys.argv[1] + '/good.txt') as f: f.read()
        for i in range(300):
            fd = os.open(sys.argv[1] + '/out/f%d' % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        signal.setitimer(signal.ITIMER_REAL, 0)
        print('ok', hits > 100)
        """
        tree.scratch.mkdir("out")
        let policy = tree.policy(extra: ",\n    { \"path\": \"\(tree.path)/out\", \"kind\": \"directory\", \"allow\": [\"write\", \"create\"] }")
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path], policy: policy)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "ok True\n")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func socketsConnectAndBindFollowThePolicy() async throws {
        let tree = Tree()
        let port = 20000 + Int(getpid() % 20000)
        let sockets = """
        ,
          "sockets": [ { "domain": "inet", "type": "stream" } ],
          "connect": [ { "address": "127.0.0.1", "ports": "\(port)" } ],
          "bind": [ { "address": "127.0.0.1", "ports": "\(port)" } ]
        """
        let script = """
        import socket, sys
        port = int(sys.argv[1])
        server = socket.socket(); server.bind(('127.0.0.1', port)); server.listen(1)
        client = socket.socket(); client.connect(('127.0.0.1', port))
        peer, _ = server.accept(); peer.sendall(b'pong'); print(client.recv(4).decode())
        for address in [('127.0.0.1', port + 1), ('127.0.0.2', port)]:
            try:
                socket.socket().connect(address)
            except PermissionError as e:
                print('connect denied', e.errno)
        try:
            socket.socket().bind(('127.0.0.1', port + 1))
        except PermissionError as e:
            print('bind denied', e.errno)
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except PermissionError as e:
            print('udp denied', e.errno)
        try:
            socket.socket().listen(1)  # unbound: would bind every interface at an ephemeral port
        except PermissionError as e:
            print('unbound listen denied', e.errno)
        """
        let result = try await intercepted(tree, [Self.python, "-c", script, "\(port)"], policy: tree.policy(sockets: sockets))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "pong\nconnect denied 13\nconnect denied 13\nbind denied 13\nudp denied 13\nunbound listen denied 13\n")
    }

    // MARK: Hostile programs

    @Test(.enabled(if: hasPython, "python3 is not installed")) func theLockdownRefusesWaysOutAndDirectFilesystemChanges() async throws {
        let tree = Tree()
        let script = """
        import ctypes, os, resource, sys
        libc = ctypes.CDLL(None, use_errno=True)
        def raw(number, *args):
            r = libc.syscall(number, *[ctypes.c_long(a) for a in args])
            return 0 if r >= 0 else ctypes.get_errno()
        print('ptrace', raw(101, 16, 1, 0, 0))               # PTRACE_ATTACH to init
        print('unshare', raw(272, 0x10000000))               # CLONE_NEWUSER
        print('io_uring_setup', raw(425, 1, 0))
        print('seccomp', raw(317, 1, 0, 0))
        print('open_by_handle_at', raw(304, -100, 0, 0))
        print('mount', raw(165, 0, 0, 0, 0, 0))
        try:
            resource.prlimit(1, resource.RLIMIT_NOFILE)
        except PermissionError as e:
            print('prlimit other', e.errno)
        for name, call in [('chmod', lambda: os.chmod(sys.argv[1] + '/good.txt', 0o777)),
                           ('mkdir', lambda: os.mkdir(sys.argv[1] + '/data/new')),
                           ('unlink', lambda: os.unlink(sys.argv[1] + '/data/a.txt')),
                           ('rename', lambda: os.rename(sys.argv[1] + '/data/a.txt', sys.argv[1] + '/data/c.txt'))]:
            try:
                call(); print(name, 'succeeded')
            except OSError as e:
                print(name, e.errno)
        """
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
        ptrace \(EPERM)
        unshare \(EPERM)
        io_uring_setup \(EPERM)
        seccomp \(EPERM)
        open_by_handle_at \(EPERM)
        mount \(EPERM)
        prlimit other \(EPERM)
        chmod \(EPERM)
        mkdir \(EACCES)
        unlink \(EACCES)
        rename \(EACCES)

        """)
        #expect(tree.scratch.contents("data/a.txt") == "a\n")
        #expect(tree.scratch.mode("good.txt") & 0o777 == 0o644)
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func badPointersAndUnterminatedPathsAreRefusedLikeTheKernelWould() async throws {
        let tree = Tree()
        let script = """
        import ctypes, mmap, os
        libc = ctypes.CDLL(None, use_errno=True)
        def openat(address):
            r = libc.syscall(257, -100, ctypes.c_void_p(address), 0, 0)
            return r if r >= 0 else -ctypes.get_errno()
        print('null', openat(0))
        print('wild', openat(0x10))
        print('kernel', openat(0xffffffffff600000))
        # 4096 bytes of 'a' with no NUL, then an unmapped page: EFAULT; then a mapped one: ENAMETOOLONG.
        area = mmap.mmap(-1, 3 * 4096)
        base = ctypes.addressof(ctypes.c_char.from_buffer(area))
        ctypes.memset(base, ord('a'), 3 * 4096)
        libc.mprotect(ctypes.c_void_p(base + 4096), 4096, 0)
        print('unterminated before a hole', openat(base + 100))
        print('exactly PATH_MAX without a NUL', openat(base))
        area2 = mmap.mmap(-1, 2 * 4096)
        base2 = ctypes.addressof(ctypes.c_char.from_buffer(area2))
        ctypes.memset(base2, ord('/'), 2 * 4096)
        print('too long 2', openat(base2))
        """
        let result = try await intercepted(tree, [Self.python, "-c", script])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
        null -\(EFAULT)
        wild -\(EFAULT)
        kernel -\(EFAULT)
        unterminated before a hole -\(EFAULT)
        exactly PATH_MAX without a NUL -\(ENAMETOOLONG)
        too long 2 -\(ENAMETOOLONG)

        """)
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func aPathSwappedByAnotherThreadNeverReachesAFileOutsideThePolicy() async throws {
        let tree = Tree()
        // One thread flips a buffer between good.txt and evil.txt (same length) as fast as it
        // can while the other opens it with a raw openat and reads what it got. The supervisor
        // opens what it checked: a read of evil.txt's contents would be an escape.
        let script = """
        import ctypes, os, sys, threading
        libc = ctypes.CDLL(None, use_errno=True)
        good = (sys.argv[1] + '/good.txt').encode() + b'\\0'
        evil = (sys.argv[1] + '/evil.txt').encode() + b'\\0'
        buffer = ctypes.create_string_buffer(good, len(good))
        stop = False
        def flip():
            while not stop:
                ctypes.memmove(buffer, evil, len(evil))
                ctypes.memmove(buffer, good, len(good))
        t = threading.Thread(target=flip); t.start()
        opened = denied = leaked = 0
        for _ in range(3000):
            fd = libc.syscall(257, -100, buffer, 0, 0)
            if fd < 0:
                denied += 1
                continue
            data = os.read(fd, 100); os.close(fd)
            opened += 1
            if b'SECRET' in data: leaked += 1
        stop = True; t.join()
        print('leaked', leaked, 'both seen', opened > 0 and denied > 0)
        """
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("leaked 0 "), "\(result.stdout)")
    }

    @Test(.enabled(if: hasPython, "python3 is not installed")) func anExecPathSwappedAfterTheCheckStillRunsOnlyWhatThePolicyLetsExecute() async throws {
        let tree = Tree()
        tree.scratch.write("data/tool.sh", "#!/bin/sh\necho PWNED\n")
        chmod(tree.path + "/data/tool.sh", 0o755)
        // execve is the one call let run after its check, and the kernel reads the path again.
        // A thread flips a shared page between /usr/bin/true (executable under the policy) and
        // tool.sh (readable, not executable) while forked children execve that page. The
        // supervisor refuses the tool.sh spellings it sees; Landlock (EXECUTE only beneath the
        // execute rules) refuses the ones swapped in after a granted check.
        let script = """
        import ctypes, mmap, os, sys, threading
        libc = ctypes.CDLL(None, use_errno=True)
        area = mmap.mmap(-1, 4096)
        address = ctypes.addressof(ctypes.c_char.from_buffer(area))
        good = b'/usr/bin/true'.ljust(128, b'\\0')
        evil = (sys.argv[1] + '/data/tool.sh').encode().ljust(128, b'\\0')
        stop = False
        def flip():
            while not stop:
                area[0:128] = evil
                area[0:128] = good
        t = threading.Thread(target=flip); t.start()
        argv = (ctypes.c_char_p * 2)(b'x', None)
        ran = refused = 0
        other = set()
        for _ in range(300):
            pid = os.fork()
            if pid == 0:
                libc.execve(ctypes.c_void_p(address), argv, None)
                os._exit(100 + ctypes.get_errno())
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if code == 0: ran += 1
            elif code == 100 + 13: refused += 1
            else: other.add(code)
        stop = True; t.join()
        # A path torn mid-flip names nothing: ENOENT (102) or ENOTDIR (120).
        print('ran', ran > 0, 'refused', refused > 0, 'other', sorted(other - {102, 120}))
        """
        let audit = tree.path + "/audit.jsonl"
        let result = try await intercepted(tree, [Self.python, "-c", script, tree.path], audit: audit)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stdout.contains("PWNED"), "tool.sh ran")
        #expect(result.stdout.hasSuffix("other []\n"), "\(result.stdout)")
        let records = try auditRecords(audit)
        #expect(!records.contains { ($0["event"] as? String) == "EXEC" && ($0["decision"] as? String) == "granted"
            && (($0["detail"] as? String)?.contains("tool.sh") ?? false) })
    }

    /// Both ways a serving thread waits: receiving straight away (Linux 6.11 and later, where
    /// a receive returns once the filter is unused) and polling first (older kernels).
    static let receiveModes = [false] + (receiveReturnsWhenFilterUnused ? [true] : [])

    @Test(.enabled(if: hasPython, "python3 is not installed")) func aProgramThatExitsMidNotificationLeavesTheSupervisorClean() async throws {
        // One mode after the other, not as arguments: the mode is the process's.
        for receiveWaits in Self.receiveModes {
            interceptReceiveWaits.store(receiveWaits, ordering: .relaxed)
            defer { interceptReceiveWaits.store(receiveReturnsWhenFilterUnused, ordering: .relaxed) }
            try await exitMidNotification()
        }
    }

    func exitMidNotification() async throws {
        let tree = Tree()
        let listenersBefore = seccompListenerCount()
        let supervisor = try Supervisor(logger: quietLogger())
        var policy = dynamicProgramPolicy()
        policy.allow(path: tree.path, .directory, [.read, .listDirectory])
        // Eight threads open and stat in a loop; the main thread exits the process under them.
        let script = """
        import os, threading, sys, time
        def spin():
            while True:
                os.stat(sys.argv[1] + '/good.txt'); open(sys.argv[1] + '/good.txt').close()
        for _ in range(8): threading.Thread(target=spin, daemon=True).start()
        time.sleep(0.2)
        os._exit(3)
        """
        for _ in 0..<3 {
            let configuration = WorkerConfiguration.intercepting(program: Self.python, arguments: ["-c", script, tree.path],
                                                                 policy: policy, helper: Self.binDirectory + "/privsep-intercept")
            let handle = try await supervisor.spawn(configuration)
            #expect(await handle.exit() == .exited(code: 3))
        }
        // A killed program too, with calls in flight.
        let configuration = WorkerConfiguration.intercepting(program: Self.python, arguments: ["-c", script.replacingOccurrences(of: "os._exit(3)", with: "time.sleep(30)"), tree.path],
                                                             policy: policy, helper: Self.binDirectory + "/privsep-intercept")
        let handle = try await supervisor.spawn(configuration)
        try await Task.sleep(for: .milliseconds(400))
        handle.stop(grace: 0.1)
        #expect(await handle.exit() == .stoppedBySupervisor)
        // Each serving thread ends (and closes its listener) once no process uses its filter.
        var listeners = seccompListenerCount()
        let deadline = ContinuousClock.now + .seconds(30)
        while listeners > listenersBefore && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            listeners = seccompListenerCount()
        }
        #expect(listeners == listenersBefore)
        await supervisor.shutdown()
    }

    @Test func aListenerForTheWrongModeKillsTheWorker() async throws {
        // The fixture worker in learning mode sends a learning LISTENER; a supervisor that spawned
        // it for intercept mode refuses it. (Learning mode itself is covered by the learn tests.)
        let supervisor = try Supervisor(logger: quietLogger())
        var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "lockdown"])
        configuration.learning = true
        configuration.intercept = true
        let handle = try await supervisor.spawn(configuration)
        let reason = await handle.exit()
        #expect(reason == .protocolViolation("a learning-mode LISTENER from a worker in intercept mode"))
        await supervisor.shutdown()
    }
}

/// Open seccomp listeners in this process (the supervisor's copies).
func seccompListenerCount() -> Int {
    directoryEntries("/proc/self/fd").filter { Int32($0).flatMap(descriptorTarget) == "anon_inode:seccomp notify" }.count
}

/// What a dynamically linked program under /usr needs to start: its binaries and
/// libraries (executable under /usr only) and the loader's cache.
func dynamicProgramPolicy() -> Policy {
    var policy = Policy()
    policy.allow(path: "/usr", .directory, [.read, .listDirectory, .execute], symlinks: .followBeneath)
    policy.allow(path: "/lib", .directory, [.read, .listDirectory], symlinks: .followBeneath)
    policy.allow(path: "/lib64", .directory, [.read, .listDirectory], symlinks: .followBeneath)
    policy.allow(path: "/etc/ld.so.cache", .file, [.read])
    return policy
}
