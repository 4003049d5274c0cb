public import ArgumentParser
import CPrivsepShims
import Dispatch
import Glibc
import Logging
import PrivsepIPC
public import Supervisor
import Synchronization
import SystemPackage
import Worker

/// The entry point. `privsep _attack`, the hostile worker of `privsep selftest`, runs first,
/// on the main thread, before anything starts the async runtime: a runtime thread started
/// after its lockdown would meet the filter itself (a new thread calls setpriority) and be
/// killed for that call instead of the one attacked. Every other command runs async.
@main
enum Entry {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == AttackWorker.configuration.commandName {
            AttackWorker.main(Array(arguments.dropFirst())) // exits itself on an error
            return
        }
        // Inherited dispositions and closed stdio are the parent's choices, not ours: workers
        // must stay our children until we reap them, and no file of ours (an audit log) may
        // take fd 0, 1 or 2 and receive what is meant for stdio.
        _ = privsep_default_sigchld()
        // A write to a pipe whose reader is gone (stderr into `| head`, with a worker's LOG
        // line) or past RLIMIT_FSIZE (the audit log) fails with EPIPE or EFBIG, which its
        // writer reports, rather than end the supervisor and leave its workers' children
        // running. Workers get every signal's default back (POSIX_SPAWN_SETSIGDEF).
        signal(SIGPIPE, SIG_IGN)
        signal(SIGXFSZ, SIG_IGN)
        for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) == -1 {
            _ = open("/dev/null", O_RDWR) // takes the lowest free number: fd
        }
        Task {
            await Privsep.main(arguments)
            exit(0)
        }
        dispatchMain()
    }
}

/// The signals whose default action ends a process (SIGPIPE and SIGXFSZ aside, which are
/// ignored). Each is taken as a request to stop: ended by one, this process would leave
/// its workers to their PR_SET_PDEATHSIG, which what they forked does not have.
/// The signals of a crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS) are
/// left as they are: ignoring one the kernel raises would fault again for ever.
let stopSignals: [Int32] = [SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGSTKFLT,
                            SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU]
    + Array(__libc_current_sigrtmin()...__libc_current_sigrtmax())

/// Until the returned sources are released, each of `stopSignals` runs `handler` with its
/// number (on a Dispatch queue) instead of ending this process.
func onStopSignals(_ handler: @escaping @Sendable (Int32) -> Void) -> [any DispatchSourceSignal] {
    stopSignals.map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number)
        source.setEventHandler { handler(number) }
        source.resume()
        return source
    }
}

/// Until the returned sources are released, a stop signal (`stopSignals`) shuts `supervisor`
/// down (its workers stopped, what they forked killed), lets `relay` copy what they wrote,
/// and exits with 128 + the signal.
func shutDownOnTerminationSignals(_ supervisor: Supervisor, relay: TerminalRelay? = nil) -> [any DispatchSourceSignal] {
    onStopSignals { number in
        Task {
            await supervisor.shutdown()
            await relay?.finish(writersGone: true)
            exit(128 + number)
        }
    }
}

struct Privsep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "privsep",
        abstract: "Run programs as sandboxed workers that must ask a supervisor for every file and socket.",
        discussion: """
        A worker is spawned with one inherited channel (fd 3) and nothing else. It locks \
        itself down (seccomp, Landlock) and asks this supervisor for what it may not take \
        itself; each request is checked against the policy file and answered with a file \
        descriptor or an errno. Every decision can be audited.

        PROGRAM is a privsep worker: it uses the Swift Worker library, or speaks the \
        protocol of privsep_protocol.h (a C worker needs nothing else). With --intercept, \
        PROGRAM is any program: the privsep-intercept helper installed next to privsep \
        runs it under a seccomp filter whose file, socket and exec calls this supervisor serves.

        Examples:
          privsep check policy.json
          privsep run --policy policy.json -- ./parser input.csv
          privsep run -p policy.json --timeout 10 --audit-log a.jsonl -- ./parser in.csv
          privsep run --intercept -p policy.json -- /usr/bin/file /srv/input/a.bin
          privsep learn -- ./parser sample.csv
          find in/ -type f | privsep pool --policy policy.json --workers 4 -- ./parser
          privsep selftest --policy policy.json
        """,
        subcommands: [Run.self, Pool.self, Check.self, Learn.self, Selftest.self, AttackWorker.self]
    )
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run PROGRAM as a worker under a policy and exit with its exit status.",
        discussion: """
        The worker's stdin, stdout and stderr are this command's, except a terminal: \
        it reads /dev/null instead, and what it writes to one is copied by privsep \
        (--terminal gives it the terminal). Its environment is only what the policy file \
        and --env/--pass-env give it, plus PRIVSEP_FD=3.

        Exit status: the worker's own, or 128+N if signal N ended it, 159 after a seccomp \
        violation, 124 after a timeout, 125 when the supervisor killed it for another reason \
        (protocol violation, handshake, caps), 127 if it could not be started, 2 for a bad policy.
        """
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("The policy file (JSON); see 'privsep check'.", valueName: "file"))
    var policy: String

    @Option(help: ArgumentHelp("Kill the worker after this many seconds (overrides the policy's \"timeout\").", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .customLong("env"), help: ArgumentHelp("Set NAME=VALUE in the worker's environment. Repeatable.", valueName: "name=value"))
    var environment: [String] = []

    @Option(name: .customLong("pass-env"), help: ArgumentHelp("Pass this variable of ours to the worker. Repeatable.", valueName: "name"))
    var passEnvironment: [String] = []

    @Option(help: ArgumentHelp("Address-space limit, such as 512M.", valueName: "size"))
    var memory: String?

    @Option(help: ArgumentHelp("Open-file limit.", valueName: "count"))
    var openFiles: UInt64?

    @Option(help: ArgumentHelp("CPU-time limit.", valueName: "seconds"))
    var cpuSeconds: UInt64?

    @Option(help: ArgumentHelp("Start the worker again after it ends: never, on-failure or always.", valueName: "when"))
    var restart: RestartPolicy.Mode = .never

    @Option(help: ArgumentHelp("How many restarts at most.", valueName: "count"))
    var maxRestarts: Int = 5

    @OptionGroup var audit: AuditOptions

    @Flag(name: .shortAndLong, help: "Log decisions (grants and denials) to stderr (see --audit-rate).")
    var verbose = false

    @Flag(help: "Intercept mode: run an unmodified PROGRAM; its file, socket and exec calls are served under the policy (seccomp user notification).")
    var intercept = false

    @Option(help: ArgumentHelp("With --intercept: run PROGRAM as this user (and group; default: the user's number).", valueName: "uid[:gid]"))
    var user: String?

    @Flag(help: "Give PROGRAM this terminal itself (an interactive program). Without it, a worker never holds the terminal: stdin is /dev/null and output is copied. With it, PROGRAM can read what is typed even while privsep runs in the background, and change the terminal's settings.")
    var terminal = false

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The program and its arguments, after --.", valueName: "program"))
    var command: [String] = []

    mutating func validate() throws {
        if let timeout, !(timeout > 0 && timeout.isFinite) { throw ValidationError("--timeout must be a positive number of seconds") }
        if let bad = passEnvironment.first(where: { !isEnvironmentName($0) }) {
            throw ValidationError("--pass-env takes a variable's name (not empty, no '=' or NUL), not \"\(bad)\"")
        }
        if let bad = environment.first(where: { pair in pair.firstIndex(of: "=").map { !isEnvironmentName(String(pair[..<$0])) } ?? true }) {
            throw ValidationError("--env takes NAME=VALUE, not \(bad)")
        }
    }

    mutating func run() async throws {
        let file = try loadPolicy(policy)

        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .trace
            return handler
        }
        var logger = Logger(label: "privsep")
        logger.logLevel = verbose ? .debug : .warning
        let auditLog = try audit.open()

        var configuration = try workerConfiguration(command: command, file: file)
        if user != nil && !intercept { throw ValidationError("--user is for --intercept (a worker drops its own identity: set Lockdown.identity before apply)") }
        if intercept { configuration = try interceptConfiguration(configuration, user: user) }
        audit.apply(to: &configuration.caps)
        configuration.inheritedEnvironment += passEnvironment
        for pair in environment {
            let equals = pair.firstIndex(of: "=")! // validate() checked
            configuration.environment[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        configuration.resourceLimits = file.resourceLimits
        if let memory { configuration.resourceLimits.addressSpace = try parseSize(memory) }
        if let openFiles { configuration.resourceLimits.openFiles = openFiles }
        if let cpuSeconds { configuration.resourceLimits.cpuSeconds = cpuSeconds }
        configuration.wallClockTimeout = timeout ?? file.timeout
        configuration.requiredLayers = file.requiredLayers
        let relay = terminal ? nil : try TerminalRelay(guarding: &configuration)

        let supervisor: Supervisor
        do { supervisor = try Supervisor(logger: logger, auditLog: auditLog) } catch {
            printError("privsep: \(error)")
            throw ExitCode(1)
        }
        let current = Mutex<WorkerHandle?>(nil)
        let stopping = Mutex(false)
        let running = Mutex<Task<Result<ExitReason, SupervisorError>, Never>?>(nil)
        // Ctrl-C and friends stop the worker (it runs in a session of its own, so the
        // terminal's signals reach only us), and cancel the run, so that a restart's back-off
        // ends at once and starts no other worker.
        let sources = onStopSignals { _ in
            stopping.withLock { $0 = true }
            current.withLock { $0 }?.stop(grace: 2)
            running.withLock { $0 }?.cancel()
        }
        let restartPolicy = RestartPolicy(mode: restart, maximumRestarts: maxRestarts)
        let task = Task { [configuration] () -> Result<ExitReason, SupervisorError> in
            do throws(SupervisorError) {
                return .success(try await supervisor.run(configuration, restart: restartPolicy, onStart: { handle in
                    current.withLock { $0 = handle }
                    if stopping.withLock({ $0 }) { handle.stop(grace: 2) }
                }))
            } catch {
                return .failure(error)
            }
        }
        running.withLock { $0 = task }
        if stopping.withLock({ $0 }) { task.cancel() } // a signal came before the task was known
        let reason: ExitReason
        switch await task.value {
        case .success(let ended): reason = ended
        case .failure(let error):
            printError("privsep: \(error)")
            throw ExitCode(127)
        }
        running.withLock { $0 = nil }
        // Stopped between two runs of --restart: the last worker's own status would read as
        // the run's (0, say), yet the run was interrupted, as a stop while a worker runs is.
        let stoppedBetweenRuns = stopping.withLock { $0 } && reason != .stoppedBySupervisor
        // Our references to the worker's ends of the relay go, so its copies can end.
        configuration.standardOutput = .null
        configuration.standardError = .null
        await supervisor.shutdown()
        await relay?.finish()
        let pid = current.withLock { $0?.pid } ?? 0
        if stoppedBetweenRuns {
            printError("privsep: stopped between runs (worker \(pid), the last, \(reason))")
            throw ExitCode(128 + SIGTERM)
        }
        throw ExitCode(report(reason, pid: pid))
    }

    /// Says why the worker ended (unless it simply exited) and picks our exit status.
    func report(_ reason: ExitReason, pid: Int32) -> Int32 {
        switch reason {
        case .exited(let code):
            return code
        case .signaled(let signal, _):
            printError("privsep: worker \(pid) \(reason)")
            return 128 + signal
        case .seccompViolation(let violation):
            var message = "privsep: worker \(pid) killed: seccomp violation: \(violation)"
            if violation.name != nil {
                // The groups that allow the call with the arguments its report carries.
                let groups = violation.allowingGroups.map { "\"\($0.name)\"" }
                if groups.isEmpty {
                    message += "; no syscall group allows it"
                } else {
                    message += groups.count == 1 ? "; the \(groups[0]) group would allow it" : "; the groups \(groups.joined(separator: ", ")) would allow it"
                }
            }
            printError(message)
            return 128 + SIGSYS
        case .timedOut:
            printError("privsep: worker \(pid) \(reason)")
            return 124
        case .stoppedBySupervisor:
            printError("privsep: worker \(pid) stopped")
            return 128 + SIGTERM
        case .spawnFailed:
            printError("privsep: \(reason)")
            return 127
        case .protocolViolation, .handshakeFailed, .resourceCapExceeded, .sandboxIncomplete:
            printError("privsep: worker \(pid) \(reason)")
            return 125
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a policy file and say what it grants in plain words.",
        discussion: "Errors name the line and column and say what to write instead. Exit status 0 if valid, 2 if not."
    )

    @Argument(help: ArgumentHelp("The policy file (JSON).", valueName: "policy"))
    var policy: String

    func run() throws {
        let file = try loadPolicy(policy)
        do { _ = try ActivePolicy(file.policy) } catch {
            printError("\(policy): \(error)")
            throw ExitCode(2)
        }
        print("\(policy): valid. A worker under it may:")
        for line in file.summary { print("  - \(line)") }
    }
}

struct Learn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run PROGRAM in learning mode and print what it used, as a starting policy.",
        discussion: """
        The worker's seccomp filter sends every system call it does not allow to the \
        supervisor, which records it and lets it run; every request to the supervisor is \
        recorded too (and decided by --policy, or refused if there is none). At the end \
        come the syscall groups to grant in the worker's Lockdown and a policy file that \
        grants the paths and addresses it asked for. Run it on trusted input only: in \
        learning mode the filter stops nothing.
        """
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("A policy to serve requests with (default: refuse them all, but record them).", valueName: "file"))
    var policy: String?

    @Option(help: ArgumentHelp("Kill the worker after this many seconds.", valueName: "seconds"))
    var timeout: Double = 60

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The program and its arguments, after --.", valueName: "program"))
    var command: [String] = []

    mutating func validate() throws {
        guard timeout > 0 && timeout.isFinite else { throw ValidationError("--timeout must be a positive number of seconds") }
    }

    mutating func run() async throws {
        let file = try policy.map(loadPolicy) ?? PolicyFile()
        var configuration = try workerConfiguration(command: command, file: file)
        let program = configuration.argv0 ?? configuration.executable
        var logger = Logger(label: "privsep")
        logger.logLevel = .critical
        let audit = AuditLog(collectingUpTo: 1_000_000)
        let supervisor = try Supervisor(logger: logger, auditLog: audit)
        let relay = try TerminalRelay(guarding: &configuration)
        let signals = shutDownOnTerminationSignals(supervisor, relay: relay)
        defer { _ = signals }
        configuration.wallClockTimeout = timeout
        configuration.learning = true
        let handle = try await supervisor.spawn(configuration)
        configuration.standardOutput = .null
        configuration.standardError = .null
        let reason = await handle.exit()
        await supervisor.shutdown()
        await relay.finish()

        print("")
        print("privsep learn: \(program) \(reason)")
        let calls = handle.learnedSyscalls
        if calls.isEmpty {
            print("No system call beyond the baseline was made (or the program never locked down: it must call Lockdown.apply).")
        } else {
            print("System calls beyond the baseline:")
            for call in calls {
                let allowing = call.allowingGroups.map(\.name)
                print("  \(call)\(allowing.isEmpty ? ": no group allows it; it cannot be granted" : ": groups \(allowing.joined(separator: ", "))")")
            }
            // The calls with the fewest choices pick first, so a group one of them needs (cpath
            // for a creating openat) also covers the calls it allows (a read-only openat); each
            // picks the group that reaches least (serve, not inet, for a listen).
            let reach = Dictionary(uniqueKeysWithValues: SyscallGroup.leastReachFirst.enumerated().map { ($1.name, $0) })
            var groups: [String] = []
            for allowing in calls.map({ $0.allowingGroups.map(\.name) }).sorted(by: { $0.count < $1.count })
            where !allowing.isEmpty && !allowing.contains(where: groups.contains) {
                groups.append(allowing.min { reach[$0, default: .max] < reach[$1, default: .max] }!)
            }
            print("Lockdown groups to grant: \(groups.isEmpty ? "none" : groups.joined(separator: ", "))")
        }
        let requests = audit.records.filter { $0.request != nil }
        if !requests.isEmpty {
            print("Requests to the supervisor:")
            for record in requests {
                print("  \(record.event) \(record.detail): \(record.decision)\(record.reason.isEmpty ? "" : " (\(record.reason))")")
            }
        }
        print("A starting policy:")
        print(startingPolicy(from: requests.compactMap(\.request)))
    }

    /// A policy file granting exactly what the worker asked for.
    func startingPolicy(from requests: [Message]) -> String {
        var paths: [(String, Set<String>)] = []
        var sockets: [String] = []
        var connects: [String] = []
        var binds: [String] = []
        func add(_ path: String, _ permissions: Set<String>) {
            if let index = paths.firstIndex(where: { $0.0 == path }) { paths[index].1.formUnion(permissions) } else { paths.append((path, permissions)) }
        }
        func addressRule(_ request: AddressRequest) -> String {
            let type = socketTypeName(request.type & 0xf)
            switch request.address {
            case .unix(let path): return "{ \"unix\": \(jsonString(path)), \"types\": [\"\(type)\"] }"
            case .ipv4(let ip, let port): return "{ \"address\": \"\(ip)\", \"ports\": \"\(port)\", \"types\": [\"\(type)\"] }"
            case .ipv6(let ip, let port, _): return "{ \"address\": \"\(ip)\", \"ports\": \"\(port)\", \"types\": [\"\(type)\"] }"
            }
        }
        for request in requests {
            switch request {
            case .open(let open):
                var permissions: Set<String> = []
                switch open.flags & O_ACCMODE {
                case O_WRONLY: permissions.insert(open.flags & O_APPEND != 0 ? "append" : "write")
                case O_RDWR: permissions.formUnion(["read", open.flags & O_APPEND != 0 ? "append" : "write"])
                default: permissions.insert(open.flags & O_DIRECTORY != 0 ? "list" : "read")
                }
                if open.flags & O_CREAT != 0 { permissions.insert("create") }
                if open.flags & O_TRUNC != 0 { permissions.insert("truncate") }
                add(open.path, permissions)
            case .socket(let socket):
                // No rule would make such a request work (the worker needs CONNECT or BIND).
                let type = socket.type & 0xf
                if SocketRule.refusedToBrokeredWorkers(domain: socket.domain, type: type) { continue }
                let rule = "{ \"domain\": \"\(socketDomainName(socket.domain))\", \"type\": \"\(socketTypeName(type))\" }"
                if !sockets.contains(rule) { sockets.append(rule) }
            case .connect(let request):
                let rule = addressRule(request)
                if !connects.contains(rule) { connects.append(rule) }
            case .bind(let request):
                let rule = addressRule(request)
                if !binds.contains(rule) { binds.append(rule) }
            default:
                break
            }
        }
        let order = ["read", "write", "create", "truncate", "append", "list"]
        var sections: [String] = []
        if !paths.isEmpty {
            let rules = paths.map { path, permissions in
                let kind = permissions == ["list"] ? "directory" : "file"
                let allow = order.filter(permissions.contains).map { "\"\($0)\"" }.joined(separator: ", ")
                return "    { \"path\": \(jsonString(path)), \"kind\": \"\(kind)\", \"allow\": [\(allow)] }"
            }
            sections.append("  \"paths\": [\n" + rules.joined(separator: ",\n") + "\n  ]")
        }
        for (key, rules) in [("sockets", sockets), ("connect", connects), ("bind", binds)] where !rules.isEmpty {
            sections.append("  \"\(key)\": [\n" + rules.map { "    " + $0 }.joined(separator: ",\n") + "\n  ]")
        }
        return "{\n" + sections.joined(separator: ",\n") + (sections.isEmpty ? "}" : "\n}")
    }
}

/// The worker for the command line after `--`, with the policy file's environment and stdin inherited.
func workerConfiguration(command: [String], file: PolicyFile) throws -> WorkerConfiguration {
    var command = command
    if command.first == "--" { command.removeFirst() }
    guard let program = command.first else {
        throw ValidationError("Name the program after --, for example: privsep run --policy policy.json -- ./parser input.csv")
    }
    guard let executable = resolveProgram(program) else {
        // With a slash, the file was named: say why it cannot be run (not there, or not executable).
        let why = program.contains("/") ? "\(Errno(rawValue: access(program, X_OK) == 0 ? 0 : errno))" : "not found (give a path, or a name on PATH)"
        printError("privsep: \(program): \(why)")
        throw ExitCode(127)
    }
    var configuration = WorkerConfiguration(executable: executable, arguments: Array(command.dropFirst()), policy: file.policy)
    configuration.argv0 = program
    configuration.standardInput = .inherit
    configuration.environment = file.environment
    configuration.inheritedEnvironment = file.inheritedEnvironment
    return configuration
}

extension RestartPolicy.Mode: ExpressibleByArgument {}
extension Placement: ExpressibleByArgument {}

func loadPolicy(_ path: String) throws -> PolicyFile {
    let text: String
    switch readTextFile(path) {
    case .success(let read): text = read
    case .failure(let problem):
        printError("privsep: cannot read the policy file \(path): \(problem)")
        throw ExitCode(2)
    }
    do {
        return try PolicyFile.parse(text, name: path)
    } catch {
        printError("\(error)")
        throw ExitCode(2)
    }
}

/// Why a text file could not be read.
enum TextFileProblem: Error, CustomStringConvertible {
    case unreadable(Errno)
    case tooLarge
    /// Not UTF-8 at this line: decoding it anyway would put U+FFFD in place of its bytes, and
    /// a rule would name another path than the one written.
    case notUTF8(line: Int)

    var description: String {
        switch self {
        case .unreadable(let errno): "\(errno)"
        case .tooLarge: "larger than 16 MiB"
        case .notUTF8(let line): "line \(line) is not valid UTF-8"
        }
    }
}

/// The whole file as UTF-8 text, refused if it is not (see ``TextFileProblem/notUTF8(line:)``).
func readTextFile(_ path: String) -> Result<String, TextFileProblem> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(.unreadable(Errno(rawValue: errno))) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count < 0 && errno == EINTR { continue }
        if count < 0 { return .failure(.unreadable(Errno(rawValue: errno))) }
        if count == 0 { break }
        bytes += chunk[..<count]
        if bytes.count > 16 << 20 { return .failure(.tooLarge) }
    }
    if let text = String(validating: bytes, as: UTF8.self) { return .success(text) }
    let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
    let bad = lines.firstIndex { String(validating: $0, as: UTF8.self) == nil } ?? 0
    return .failure(.notUTF8(line: bad + 1))
}

func parseSize(_ text: String) throws -> UInt64 {
    guard let bytes = parseByteSize(text) else { throw ValidationError("\(text) is not a size such as 64K, 512M or 2G") }
    return bytes
}

/// A size option (64K, 512M...) that fits an Int, for the settings counted in Int.
func parseIntSize(_ text: String, _ option: String) throws -> Int {
    guard let bytes = Int(exactly: try parseSize(text)) else { throw ValidationError("\(option) \(text) is too large") }
    return bytes
}

/// An absolute path for `program`: as given if it has a slash, else found on PATH.
func resolveProgram(_ program: String) -> String? {
    func executable(_ path: String) -> Bool { access(path, X_OK) == 0 }
    if program.contains("/") {
        guard executable(program) else { return nil }
        if program.hasPrefix("/") { return program }
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, 4096) != nil else { return nil }
        let cwd = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return cwd + "/" + program
    }
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") where directory.hasPrefix("/") {
        let candidate = "\(directory)/\(program)"
        if executable(candidate) { return candidate }
    }
    return nil
}

func printError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}
