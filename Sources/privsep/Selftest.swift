import ArgumentParser
import CPrivsepAttacks
import CPrivsepShims
import Glibc
import Logging
import PrivsepIPC
import Supervisor
import SystemPackage
import Worker

/// `privsep selftest`: runs a hostile worker against a policy, one attack per
/// worker, and checks the supervisor answers each as it must.
struct Selftest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attack a policy with a hostile worker and print what held.",
        discussion: """
        Each attack runs in a worker of its own under the policy: malformed protocol \\
        messages (the worker must be killed with the rule it broke), paths that try to \\
        leave the policy's rules and open flags its rules do not grant (refused with \\
        EACCES), sockets and addresses no rule grants (refused), requests before the \\
        sandbox layers the policy requires (killed), and, after a lockdown, system calls \\
        the filter must stop (killed, the call named) and calls only Landlock stops \\
        (refused). The symlink attacks plant a link named privsep-selftest-PID-link at \\
        the top of each directory rule, and remove it after; where one cannot be planted \\
        (a directory of /proc or /sys, say), its attack is skipped. Exit status 0 if every \\
        attack that ran was stopped (with --strict, only if none was skipped either), \\
        1 otherwise, 2 for a bad policy.
        """
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("The policy to attack (JSON).", valueName: "file"))
    var policy: String

    @Flag(help: "Count a skipped attack as a failure (for a check that must have tried every attack).")
    var strict = false

    mutating func run() async throws {
        let file = try loadPolicy(policy)
        do { _ = try ActivePolicy(file.policy) } catch {
            printError("\(policy): \(error)")
            throw ExitCode(2)
        }
        var logger = Logger(label: "privsep")
        logger.logLevel = .critical
        let supervisor = try Supervisor(logger: logger)
        let me = try selfExecutable()
        var failures = 0, skipped = 0
        let attacks = Attack.catalogue(for: file)
        print("privsep selftest: \(attacks.count) attacks against \(policy)")
        print("")
        // What landlock-abstract aims at: without Landlock's scoping its connect would succeed.
        let abstractListener = privsep_selftest_listen_abstract(Attack.uniqueName)
        defer { if abstractListener >= 0 { close(abstractListener) } }
        for attack in attacks {
            func report(_ verdict: String, _ what: String) {
                print("\(verdict)  \(attack.name.padding(22))  \(attack.summary.padding(44))  \(what)")
            }
            if let link = attack.plantedLink {
                guard symlink(link.target, link.path) == 0 else {
                    skipped += 1
                    report("SKIP", "cannot plant \(link.path): \(Errno(rawValue: errno))")
                    continue
                }
                PlantedLink.set(link.path)
            }
            defer {
                if let link = attack.plantedLink {
                    unlink(link.path)
                    PlantedLink.set(nil)
                }
            }
            var configuration = WorkerConfiguration(executable: me, arguments: ["_attack", attack.workerAction ?? attack.name] + attack.arguments,
                                                    policy: file.policy, name: "attack-\(attack.name)")
            configuration.requiredLayers = attack.enforcesRequiredLayers ? file.requiredLayers : []
            configuration.handshakeTimeout = 10
            configuration.wallClockTimeout = 20
            let output = OutputPipe()
            configuration.standardOutput = .descriptor(output.writeEnd)
            let handle = try await supervisor.spawn(configuration)
            let reason = await handle.exit()
            configuration.standardOutput = .null
            var answer = output.read()
            var passed = attack.expectation.isMet(by: reason, output: answer)
            // The call killed must be the one attacked (i386/x32 die unreported, by the kernel).
            if case .seccompViolation(let call) = reason, let expected = attack.syscall, call.name != nil, call.name != expected {
                passed = false
            }
            // A defence that let a create through left a file behind: a failure. A name of the
            // selftest's own is removed; a file rule's file may have been made by its owner
            // meanwhile, so it is left where it is.
            if let path = attack.mustNotExistAfter {
                var status = stat()
                if lstat(path, &status) == 0 {
                    passed = false
                    let ours = path.hasSuffix("/" + Attack.uniqueName)
                    answer = "created \(path)\(ours ? " (removed)" : "")" + (answer.isEmpty ? "" : "; \(answer)")
                    if ours { unlink(path) }
                }
            }
            if !passed { failures += 1 }
            let shown = answer.isEmpty || answer.hasPrefix("survived") ? "\(reason)" : answer
            report(passed ? "PASS" : "FAIL", passed ? shown : "\(shown) (expected \(attack.expectation))")
        }
        await supervisor.shutdown()
        print("")
        print("\(attacks.count - failures - skipped) passed, \(failures) failed" + (skipped > 0 ? ", \(skipped) skipped" : ""))
        if failures > 0 || (strict && skipped > 0) { throw ExitCode(1) }
    }
}

/// The hostile worker: `privsep _attack NAME [ARGUMENT]`. Prints one line, `errno N`
/// or `ok`, for attacks the supervisor answers; dies for the ones it must kill.
struct AttackWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_attack", shouldDisplay: false)

    @Argument var name: String
    @Argument var arguments: [String] = []
    var argument: String { arguments.first ?? "" }

    func run() throws {
        if name.hasPrefix("protocol-before-hello") {
            try sendRaw(WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hostname", flags: 0)))))
            sleep(20)
            return
        }
        let supervisor = try SupervisorConnection.connect()
        func answer(_ body: () throws(WorkerError) -> OwnedFileDescriptor) {
            do throws(WorkerError) {
                let granted = try body()
                _ = consume granted
                say("ok")
            } catch {
                say(error.errno.map { "errno \($0.rawValue)" } ?? "error \(error)")
            }
        }
        switch name {
        case let protocolAttack where protocolAttack.hasPrefix("protocol-"):
            let open = try WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hostname", flags: 0))))
            var bytes = open
            var fdCount = 0
            switch protocolAttack {
            case "protocol-truncated": bytes = Array(open[..<10])
            case "protocol-length": bytes[8] = 0xff
            case "protocol-type": bytes[4] = 0x63
            case "protocol-version": bytes[2] = 2
            case "protocol-reserved": bytes[12] = 1
            case "protocol-unterminated": bytes[bytes.count - 1] = 0x41
            case "protocol-nul": bytes[26 + 8] = 0
            case "protocol-fds": fdCount = 3
            case "protocol-hello": bytes = try WireCodec.encode(Envelope(requestID: 0, .hello(Hello(processID: getpid()))))
            default: fatalError("unknown attack \(protocolAttack)")
            }
            do {
                try sendRaw(bytes, fileDescriptors: fdCount)
            } catch ChannelError.system(.notPermitted) where fdCount > 0 {
                say("fds refused") // by the kernel: the supervisor's end takes none (SO_PASSRIGHTS)
                return
            }
            sleep(20)
        case "path":
            answer { () throws(WorkerError) in try supervisor.open(argument, .readOnly) }
        case "open": // PATH FLAGS (decimal)
            let flags = OpenFlags(rawValue: Int32(arguments[1])!)
            answer { () throws(WorkerError) in try supervisor.open(argument, flags) }
        case "require-skipped":
            answer { () throws(WorkerError) in try supervisor.open(argument, .readOnly) }
        case "require-partial": // LAYERS (the raw value reported as in force, none applied) PATH
            try supervisor.reportSandbox(SandboxStatus(requested: [], active: SandboxLayers(rawValue: UInt32(argument)!)))
            answer { () throws(WorkerError) in try supervisor.open(arguments[1], .readOnly) }
        case "flag-path":
            answer { () throws(WorkerError) in try supervisor.open(argument, OpenFlags(rawValue: 0o10000000)) } // O_PATH
        case "flag-tmpfile":
            answer { () throws(WorkerError) in try supervisor.open(argument, OpenFlags(rawValue: 0o20200000 | O_RDWR)) } // O_TMPFILE
        case "flag-unknown":
            answer { () throws(WorkerError) in try supervisor.open(argument, OpenFlags(rawValue: 0x4000_0000)) }
        case "socket-raw":
            answer { () throws(WorkerError) in try supervisor.socket(domain: AF_INET, type: 3, protocol: 1) }
        case "socket-packet":
            answer { () throws(WorkerError) in try supervisor.socket(domain: AF_PACKET, type: 3) }
        case "socket-tcp":
            answer { () throws(WorkerError) in try supervisor.socket(domain: AF_INET, type: 1) }
        case "connect":
            let address = parseAddress(argument)
            answer { () throws(WorkerError) in try supervisor.connect(to: address) }
        case "bind":
            let address = parseAddress(argument)
            answer { () throws(WorkerError) in try supervisor.bind(to: address) }
        case let wall where wall.hasPrefix("landlock-"):
            // Landlock alone is under test: the group lets the call past seccomp, and the worker
            // keeps the selftest's user, so nothing but Landlock stands in its way.
            let (group, scopes): (SyscallGroup, Lockdown.Scoping) = switch wall {
            case "landlock-openat": (.rpath, .off)
            case "landlock-connect": (.inet, .off)
            case "landlock-signal": (.proc, .required)
            case "landlock-abstract": (.unix, .required)
            default: fatalError("unknown attack \(wall)")
            }
            try Lockdown(groups: [group], landlock: Lockdown.FilesystemAccess.none, landlockScopes: scopes).apply(reportingTo: supervisor)
            let result: Int = switch wall {
            case "landlock-openat": attack_openat("/etc/hostname")
            case "landlock-connect": attack_connect_tcp_loopback(9)
            case "landlock-signal": attack_kill_parent()
            default: attack_connect_abstract(argument)
            }
            say(result < 0 ? "errno \(-result)" : "survived \(result)")
        case let syscall where syscall.hasPrefix("seccomp-"):
            // The filter alone is under test. The attack runs on the only thread there is
            // (see Entry): a thread the filter met first would hide whether it stops the attack.
            try Lockdown(groups: [], landlock: nil).apply(reportingTo: supervisor)
            let result: Int = switch syscall {
            case "seccomp-openat": attack_openat("/etc/hostname")
            case "seccomp-openat2": attack_openat2("/etc/hostname")
            case "seccomp-execve": attack_execve("/bin/sh")
            case "seccomp-socket": attack_socket_inet()
            case "seccomp-ptrace": attack_ptrace_attach(getppid())
            case "seccomp-i386": attack_i386_getpid()
            case "seccomp-x32": attack_x32_getpid()
            case "seccomp-io_uring": attack_io_uring_setup()
            case "seccomp-memfd_exec": attack_memfd_execveat()
            case "seccomp-seccomp": attack_seccomp_new_filter()
            case "seccomp-unshare": attack_unshare_user()
            case "seccomp-fork": attack_fork()
            case "seccomp-fcntl_setown": attack_fcntl_setown()
            case "seccomp-fcntl_async": attack_fcntl_async()
            case "seccomp-madvise_hwpoison": attack_madvise_hwpoison()
            default: fatalError("unknown attack \(syscall)")
            }
            say("survived \(result)")
        default:
            fatalError("unknown attack \(name)")
        }
    }

    func sendRaw(_ bytes: [UInt8], fileDescriptors count: Int = 0) throws {
        let socket = SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: dup(WireFormat.channelFileDescriptor)))
        let fds = [Int32](repeating: 0, count: count)
        try bytes.withUnsafeBytes { try socket.unsafeSend($0, passingRawValues: fds) }
    }

    func parseAddress(_ text: String) -> SocketAddress {
        if text.hasPrefix("/") { return .unix(path: text) }
        let colon = text.lastIndex(of: ":")!
        let host = String(text[..<colon]), port = UInt16(text[text.index(after: colon)...])!
        if let v4 = IPv4Address(host) { return .ipv4(v4, port: port) }
        return .ipv6(IPv6Address(host)!, port: port)
    }

    func say(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = write(1, bytes, bytes.count)
    }
}

/// One attack of the catalogue and what the supervisor must do about it.
struct Attack {
    enum Expectation: CustomStringConvertible {
        /// Killed for a protocol violation or a failed handshake.
        case killedForProtocol
        /// Fds the kernel refused to send, where it can refuse them (a supervisor's end
        /// takes none); where it cannot, killed for a protocol violation.
        case fdsRefused
        /// Killed by the filter.
        case killedBySeccomp
        /// Killed for asking before it reported the required sandbox layers, or reporting fewer.
        case killedForIncompleteSandbox
        /// Refused with this errno.
        case refused(Int32)

        var description: String {
            switch self {
            case .killedForProtocol: "killed for a protocol violation"
            case .fdsRefused: SeqpacketSocket.kernelCanRefuseFileDescriptors
                ? "fds refused by the kernel" : "killed for a protocol violation"
            case .killedBySeccomp: "killed by seccomp"
            case .killedForIncompleteSandbox: "killed: sandbox incomplete"
            case .refused(let errno): "refused with \(Errno(rawValue: errno))"
            }
        }

        /// Whether the worker's end (and its one line of output) is what this expects.
        func isMet(by reason: ExitReason, output: String) -> Bool {
            switch (self, reason) {
            case (.killedForProtocol, .protocolViolation): true
            // A HELLO refused is a handshake failure; a handshake that timed out is not the
            // attack being stopped (the attack worker would have been ignored, not caught).
            case (.killedForProtocol, .handshakeFailed(let why)): !why.hasPrefix("no HELLO within")
            case (.fdsRefused, .protocolViolation): !SeqpacketSocket.kernelCanRefuseFileDescriptors
            case (.fdsRefused, .exited(code: 0)): SeqpacketSocket.kernelCanRefuseFileDescriptors && output == "fds refused"
            case (.killedBySeccomp, .seccompViolation): !output.hasPrefix("survived")
            case (.killedForIncompleteSandbox, .sandboxIncomplete): true
            case (.refused(let errno), _): output == "errno \(errno)"
            default: false
            }
        }
    }

    var name: String
    var arguments: [String]
    var summary: String
    var expectation: Expectation
    /// For a seccomp attack, the name the violation must carry.
    var syscall: String? = nil
    /// What the attack worker does, when not named by `name` (`open PATH FLAGS`).
    var workerAction: String? = nil
    /// Whether the worker is spawned with the policy's required layers (the others are not,
    /// so that they test the rules, not the report).
    var enforcesRequiredLayers = false
    /// A symlink the selftest plants before the attack and removes after.
    var plantedLink: (path: String, target: String)? = nil
    /// A path the attack must not have created.
    var mustNotExistAfter: String? = nil

    /// The attacks that apply to `file`: path, flag and address attacks aim at what its
    /// policy does not grant; the sandbox attacks at the layers it requires.
    static func catalogue(for file: PolicyFile) -> [Attack] {
        let policy = file.policy
        var attacks: [Attack] = [
            Attack(name: "protocol-before-hello", arguments: [], summary: "OPEN before HELLO", expectation: .killedForProtocol),
            Attack(name: "protocol-truncated", arguments: [], summary: "10-byte datagram", expectation: .killedForProtocol),
            Attack(name: "protocol-length", arguments: [], summary: "length field larger than the datagram", expectation: .killedForProtocol),
            Attack(name: "protocol-type", arguments: [], summary: "unknown message type", expectation: .killedForProtocol),
            Attack(name: "protocol-version", arguments: [], summary: "wrong protocol version", expectation: .killedForProtocol),
            Attack(name: "protocol-reserved", arguments: [], summary: "non-zero reserved field", expectation: .killedForProtocol),
            Attack(name: "protocol-unterminated", arguments: [], summary: "path without its NUL", expectation: .killedForProtocol),
            Attack(name: "protocol-nul", arguments: [], summary: "NUL inside a path", expectation: .killedForProtocol),
            Attack(name: "protocol-fds", arguments: [], summary: "3 fds attached to an OPEN", expectation: .fdsRefused),
            Attack(name: "protocol-hello", arguments: [], summary: "a second HELLO", expectation: .killedForProtocol),
        ]
        let eacces = EACCES
        func granted(_ path: String) -> Bool { policy.paths.contains { $0.matches(path) } }
        // The magic link tests the magic-link defence only under a rule that grants /proc;
        // otherwise it is refused as a path outside every rule, and says so.
        let grantsProc = policy.paths.contains { $0.path == "/proc" || $0.path.hasPrefix("/proc/") }
        var paths: [(String, String)] = [("relative/path", "a relative path"),
                                         ("/proc/self/root/etc/shadow", grantsProc ? "a magic link to /" : "a magic link to / (outside every rule)")]
        // Where planted links point: a file and a directory no rule grants.
        let outsideFile = ["/etc/shadow", "/etc/passwd", "/etc/hostname"].first { !granted($0) }
        let outsideDirectory = ["/root", "/etc", "/var"].first { !granted($0) }
        for rule in policy.paths {
            let (parent, _) = splitLast(rule.path)
            let isDirectory = rule.kind == .directory
            if isDirectory {
                paths.append(("\(rule.path)/../\(uniqueName)", "'..' out of \(rule.path)"))
                paths.append(("\(rule.path)/./x", "a non-canonical path in \(rule.path)"))
            }
            let sibling = (parent == "/" ? "" : parent) + "/" + uniqueName
            if !granted(sibling) { paths.append((sibling, "a sibling of \(rule.path)")) }
            // Flag attacks open a name that does not exist beneath a directory rule (so a
            // check that let the flags through would answer ENOENT, or create it), or the
            // file rule's own file, with flags that change nothing should they get through.
            let target = isDirectory ? joined(rule.path, uniqueName) : rule.path
            var targetStatus = stat()
            let targetExists = lstat(target, &targetStatus) == 0
            for (name, flags, summary) in flagAttacks(rule.permissions, isDirectory: isDirectory, targetExists: targetExists) {
                attacks.append(Attack(name: name, arguments: [target, String(flags)], summary: "\(summary) (\(rule.path))",
                                      expectation: .refused(eacces), workerAction: "open", mustNotExistAfter: targetExists ? nil : target))
            }
            if isDirectory && rule.permissions.contains(.listDirectory) && !rule.permissions.contains(.read),
               let file = firstRegularFile(in: rule.path) {
                attacks.append(Attack(name: "flag-list-only", arguments: [file, String(O_RDONLY)],
                                      summary: "reading a file under a list-only rule (\(rule.path))", expectation: .refused(eacces),
                                      workerAction: "open"))
            }
            // A link planted beneath a directory rule by someone else, pointing out of it.
            if isDirectory, let flags = harmlessOpenFlags(rule.permissions) {
                let wantsDirectory = !rule.permissions.contains(.read) && rule.permissions.contains(.listDirectory)
                if let outside = wantsDirectory ? outsideDirectory : outsideFile {
                    let link = joined(rule.path, uniqueName + "-link")
                    attacks.append(Attack(name: "symlink", arguments: [link, String(flags)], summary: "a link in \(rule.path) to \(outside)",
                                          expectation: .refused(eacces), workerAction: "open", plantedLink: (link, outside)))
                    if rule.symlinks == .followBeneath {
                        let depth = rule.path.split(separator: "/").count
                        let climbing = String(repeating: "../", count: depth + 1) + outside.dropFirst()
                        attacks.append(Attack(name: "symlink-relative", arguments: [link, String(flags)],
                                              summary: "a link in \(rule.path) climbing out to \(outside)",
                                              expectation: .refused(eacces), workerAction: "open", plantedLink: (link, climbing)))
                    }
                }
            }
        }
        for outside in ["/etc/shadow", "/root/.ssh/id_ed25519", "/proc/1/environ"] where !granted(outside) {
            paths.append((outside, "outside every rule"))
        }
        for (path, summary) in paths {
            attacks.append(Attack(name: "path", arguments: [path], summary: summary, expectation: .refused(eacces)))
        }
        if let somewhere = policy.paths.first?.path {
            attacks.append(Attack(name: "flag-path", arguments: [somewhere], summary: "O_PATH", expectation: .refused(eacces)))
            attacks.append(Attack(name: "flag-tmpfile", arguments: [somewhere], summary: "O_TMPFILE", expectation: .refused(eacces)))
            attacks.append(Attack(name: "flag-unknown", arguments: [somewhere], summary: "an unknown open flag bit", expectation: .refused(EINVAL)))
        }
        if !policy.sockets.contains(where: { $0.type == 3 }) {
            attacks.append(Attack(name: "socket-raw", arguments: [], summary: "a raw socket", expectation: .refused(eacces)))
        }
        if !policy.sockets.contains(where: { $0.domain == AF_PACKET }) {
            attacks.append(Attack(name: "socket-packet", arguments: [], summary: "a packet socket", expectation: .refused(eacces)))
        }
        // Whatever the rules: an unbound TCP socket could listen on every interface.
        attacks.append(Attack(name: "socket-tcp", arguments: [], summary: "an unbound TCP socket", expectation: .refused(eacces)))
        let testNet = IPv4Address(192, 0, 2, 1)
        if !policy.connect.contains(where: { $0.allows(.ipv4(testNet, port: 9), type: 1) }) {
            attacks.append(Attack(name: "connect", arguments: ["192.0.2.1:9"], summary: "connect to a denied address", expectation: .refused(eacces)))
            attacks.append(Attack(name: "connect", arguments: ["::ffff:192.0.2.1:9"], summary: "the same, IPv4-mapped IPv6", expectation: .refused(eacces)))
        }
        let unixSocket = "/run/\(uniqueName).sock"
        if !policy.connect.contains(where: { $0.allows(.unix(path: unixSocket), type: 1) }) {
            attacks.append(Attack(name: "connect", arguments: [unixSocket], summary: "connect to a unix socket no rule names", expectation: .refused(eacces)))
        }
        if !policy.bind.contains(where: { $0.allows(.ipv4(.loopback, port: 1), type: 1) }) {
            attacks.append(Attack(name: "bind", arguments: ["127.0.0.1:1"], summary: "bind a denied port", expectation: .refused(eacces)))
        }
        // The policy's `require`: a worker that asks before its lockdown, or reports less.
        let required = file.requiredLayers
        if !required.isEmpty {
            let anyPath = policy.paths.first?.path ?? "/etc/hostname"
            attacks.append(Attack(name: "require-skipped", arguments: [anyPath], summary: "a request before any sandbox report",
                                  expectation: .killedForIncompleteSandbox, enforcesRequiredLayers: true))
            let lowestLayer = required.rawValue & (~required.rawValue &+ 1)
            attacks.append(Attack(name: "require-partial", arguments: [String(required.rawValue & ~lowestLayer), anyPath],
                                  summary: "a report with a required layer left out", expectation: .killedForIncompleteSandbox,
                                  enforcesRequiredLayers: true))
            if !required.isDisjoint(with: .visibleToTheKernel) {
                attacks.append(Attack(name: "require-unapplied", arguments: [String(required.rawValue), anyPath],
                                      summary: "a report of every required layer, none applied", expectation: .killedForIncompleteSandbox,
                                      workerAction: "require-partial", enforcesRequiredLayers: true))
            }
        }
        let calls: [(String, String?)] = [
            ("openat", "openat"), ("openat2", "openat2"), ("execve", "execve"), ("socket", "socket"), ("ptrace", "ptrace"),
            ("i386", nil), ("x32", nil), ("io_uring", "io_uring_setup"), ("memfd_exec", "memfd_create"), ("seccomp", "seccomp"),
            ("unshare", "unshare"), ("fork", "clone"), ("fcntl_setown", "fcntl"), ("fcntl_async", "fcntl"),
            ("madvise_hwpoison", "madvise"),
        ]
        for (call, name) in calls {
            attacks.append(Attack(name: "seccomp-\(call)", arguments: [], summary: "\(call) after a brokered lockdown",
                                  expectation: .killedBySeccomp, syscall: name))
        }
        // Landlock behind a filter that lets the call through: what stops a worker whose groups allow it.
        let landlockABI = privsep_landlock_create_ruleset(nil, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */)
        if landlockABI >= 1 {
            attacks.append(Attack(name: "landlock-openat", arguments: [], summary: "openat of /etc/hostname, rpath granted",
                                  expectation: .refused(eacces)))
        }
        if landlockABI >= 4 {
            attacks.append(Attack(name: "landlock-connect", arguments: [], summary: "a TCP connect to 127.0.0.1:9, inet granted",
                                  expectation: .refused(eacces)))
        }
        if landlockABI >= 6 {
            attacks.append(Attack(name: "landlock-signal", arguments: [], summary: "a signal to the supervisor, proc granted",
                                  expectation: .refused(EPERM)))
            attacks.append(Attack(name: "landlock-abstract", arguments: [uniqueName],
                                  summary: "connect to the supervisor's abstract socket, unix granted", expectation: .refused(EPERM)))
        }
        return attacks
    }

    /// Flag attacks on a rule granting `permissions`: (name, open flags, summary), each
    /// asking for one thing the rule does not grant.
    static func flagAttacks(_ permissions: PathPermissions, isDirectory: Bool, targetExists: Bool) -> [(String, Int32, String)] {
        var attacks: [(String, Int32, String)] = []
        let read = permissions.contains(.read), write = permissions.contains(.write), append = permissions.contains(.append)
        if !read && !permissions.contains(.listDirectory) {
            attacks.append(("flag-read", O_RDONLY, "reading where no read is granted"))
        }
        if !write && !append {
            attacks.append(("flag-write", O_WRONLY, "writing where no write is granted"))
        }
        if append && !write {
            attacks.append(("flag-append-only", O_WRONLY, "writing without O_APPEND, append only"))
            if read { attacks.append(("flag-append-rdwr", O_RDWR | O_APPEND, "O_RDWR | O_APPEND, read and append only")) }
        }
        if write && !read {
            attacks.append(("flag-rdwr", O_RDWR, "O_RDWR where read is not granted"))
        }
        if !permissions.contains(.create), let mode = harmlessOpenFlags(permissions) {
            attacks.append(("flag-create", mode | O_CREAT, "O_CREAT where create is not granted"))
        }
        // Never O_TRUNC on a file that exists: were the check wrong, it would be emptied.
        if write && !permissions.contains(.truncate) && !targetExists {
            attacks.append(("flag-truncate", O_WRONLY | O_TRUNC, "O_TRUNC where truncate is not granted"))
        }
        return attacks
    }

    /// Open flags a rule with `permissions` grants and that change nothing on their own
    /// (no create, no truncation); nil if it grants none.
    static func harmlessOpenFlags(_ permissions: PathPermissions) -> Int32? {
        if permissions.contains(.read) || permissions.contains(.listDirectory) { return O_RDONLY }
        if permissions.contains(.write) { return O_WRONLY }
        if permissions.contains(.append) { return O_WRONLY | O_APPEND }
        return nil
    }

    /// A regular file directly in `directory`, if it has one.
    static func firstRegularFile(in directory: String) -> String? {
        guard let stream = opendir(directory) else { return nil }
        defer { closedir(stream) }
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let path = joined(directory, name)
            var status = stat()
            if name != "." && name != "..", lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG { return path }
        }
        return nil
    }

    static func joined(_ directory: String, _ name: String) -> String { directory == "/" ? "/" + name : directory + "/" + name }

    static let uniqueName = "privsep-selftest-\(getpid())"

    static func splitLast(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/"), path != "/" else { return ("/", "") }
        let parent = String(path[..<slash])
        return (parent.isEmpty ? "/" : parent, String(path[path.index(after: slash)...]))
    }
}

/// The link a symlink attack has planted, removed by a stop signal too (`stopSignals`; the
/// selftest then exits 128 + the signal's number): an interrupted selftest leaves nothing behind.
enum PlantedLink {
    nonisolated(unsafe) private static var path: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) private static var handlersInstalled = false

    /// Called from the selftest's one task; the handler reads the pointer only.
    static func set(_ newPath: String?) {
        if !handlersInstalled {
            handlersInstalled = true
            for signal in stopSignals {
                _ = Glibc.signal(signal) { number in
                    if let planted = PlantedLink.path { unlink(planted) }
                    _exit(128 + number)
                }
            }
        }
        // Never freed: a handler on another thread may be reading the old one (a few bytes
        // per symlink attack).
        path = newPath.map { strdup($0) }
    }
}

/// A pipe for a worker's stdout, read once the worker is gone.
final class OutputPipe: @unchecked Sendable {
    let writeEnd: SharedFileDescriptor
    private let readEnd: Int32

    init() {
        var fds: [Int32] = [-1, -1]
        precondition(privsep_pipe_cloexec(&fds) == 0, "pipe")
        readEnd = fds[0]
        writeEnd = SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: fds[1]))
    }

    deinit { close(readEnd) }

    /// What the worker wrote (it printed at most a line, well under a pipe's capacity).
    func read() -> String {
        _ = fcntl(readEnd, F_SETFL, O_NONBLOCK)
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = Glibc.read(readEnd, &bytes, bytes.count)
        return String(decoding: bytes[..<max(count, 0)], as: UTF8.self).trimmingNewlines()
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    func trimmingNewlines() -> String {
        var text = self
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }
}

/// This executable's path (the attack worker is this binary again).
func selfExecutable() throws -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, 4095)
    guard count > 0 else { throw ValidationError("cannot find this executable: \(Errno(rawValue: errno))") }
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
