// A worker for the integration tests. Each argument is one step; each step
// prints one line to stdout, which the tests read:
//
//   handshake            connect to the supervisor (HELLO/WELCOME)      -> "welcome <worker id>"
//   fds                  list this process's open fds                   -> "fds 0,1,2,3"
//   env                  print PRIVSEP_FD                               -> "env PRIVSEP_FD=3"
//   open:PATH:FLAGS      open through the supervisor; FLAGS letters:
//                        r w (rw) c(reat) t(runc) a(ppend) x(excl) d(irectory) n(onblock)
//                                                                       -> "open PATH ok" / "open PATH errno N"
//   read:PATH            open read-only through the supervisor, print the contents' first line
//   write:PATH:TEXT      open O_WRONLY|O_CREAT|O_TRUNC through the supervisor and write TEXT
//   socket:DOMAIN:TYPE   -> "socket ok" / "socket errno N"
//   connect:HOST:PORT    connect (IPv4 or IPv6 literal) and read one line from the peer
//   bind:HOST:PORT       bind, listen, accept one connection, send "hello\n"
//   log:TEXT             send a LOG line
//   raw:HEX              send raw bytes on the channel (no fds)
//   rawfds:N:HEX         send raw bytes with N fds (dups of stdin)
//   nohello              sleep without ever saying HELLO
//   diemidrequest        send an OPEN and exit at once, before the reply
//   sleep:SECONDS        sleep
//   waitfile:PATH        wait (up to 60 s) until PATH exists
//   exit:CODE            exit with CODE
//   flood:N              send N OPEN requests without reading replies
//   hoard:N:PATH         send N OPEN requests for PATH without reading replies (fds left in flight)
//   drain:N              read N replies left unread -> "drain fds K errnos E:COUNT,..."
//   pdeathsig            print the parent-death signal
//   ttys                 whether stdin, stdout and stderr are terminals -> "ttys 0 1 1 [shared] [NAME]"
//                        ("shared": stdout and stderr are one terminal; NAME: stdout's)
//   threads:N:PATH       N threads each open and read PATH 50 times through one connection
//                                                                       -> "threads ok N*50" / "threads failed ..."
//   limits               print RLIMIT_NOFILE, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE soft limits
//   lockdown[:MODE]      Lockdown.brokered(); MODE: kill, errno, enosys, rpath (no Landlock), threads (+thread group), proc / tty (+that
//                        group, refusals EACCES), procnolandlock (proc, no filesystem rules), ro=PATH
//                        (Landlock read-only PATH), ns (new namespaces)   -> "lockdown <active layer bits>"
//   attack:NAME[:ARG]    a raw syscall a hostile worker would try      -> "attack NAME <result>"
//                        (leave_group: "attack leave_group CHILD setsid R setpgid R clone_parent R")
//   serve                serve pool jobs until retired                  -> "serve done N" (jobs served)
//                        Each job's input is a command: echo:TEXT, readfd (contents of its fd), fdcount,
//                        reject:CODE:TEXT, crash (SIGSEGV), spin (busy loop), sleep:S, alloc:MIB (touch
//                        and hold), syscall (openat: a seccomp violation), exit:CODE, big:BYTES (output of
//                        that size), wrongid (a RESULT for another job), twice (two RESULTs), pid,
//                        open:PATH (mid-job request), hangup / empty (answers, then closes its channel /
//                        sends an empty datagram, and stays alive), hangupafter:S (closes it S s after
//                        answering), hangupmidjob (closes it unanswered)
import CPrivsepShims
import CPrivsepAttacks
import Glibc
import PrivsepIPC
import SystemPackage
import Worker

var connection: SupervisorConnection?

/// One write(2) per line: unbuffered, so a line is out before the process can be killed.
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = write(1, bytes, bytes.count)
}

func errnoText(_ error: WorkerError) -> String {
    if let errno = error.errno { return "errno \(errno.rawValue)" }
    return "error \(error)"
}

func flags(_ letters: Substring) -> OpenFlags {
    var result: OpenFlags = []
    if letters.contains("r") && letters.contains("w") { result.insert(.readWrite) } else if letters.contains("w") { result.insert(.writeOnly) }
    if letters.contains("c") { result.insert(.create) }
    if letters.contains("t") { result.insert(.truncate) }
    if letters.contains("a") { result.insert(.append) }
    if letters.contains("x") { result.insert(.exclusive) }
    if letters.contains("d") { result.insert(.directory) }
    if letters.contains("n") { result.insert(.nonBlocking) }
    return result
}

func hexBytes(_ text: Substring) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex, let next = text.index(index, offsetBy: 2, limitedBy: text.endIndex) {
        bytes.append(UInt8(text[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

func address(_ host: Substring, _ port: Substring) -> SocketAddress {
    if let v4 = IPv4Address(String(host)) { return .ipv4(v4, port: UInt16(port)!) }
    if let v6 = IPv6Address(String(host)) { return .ipv6(v6, port: UInt16(port)!) }
    if host.hasPrefix("/") { return .unix(path: String(host)) }
    fatalError("bad address \(host)")
}

func requireConnection() -> SupervisorConnection {
    guard let connection else { fatalError("step needs a handshake first") }
    return connection
}

func readLine(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var byte: UInt8 = 0
    while read(fd, &byte, 1) == 1 {
        if byte == UInt8(ascii: "\n") { break }
        bytes.append(byte)
    }
    return String(decoding: bytes, as: UTF8.self)
}

@inline(never)
func crash(_ address: Int) {
    UnsafeMutablePointer<Int>(bitPattern: address)!.pointee = 1
}

var held: [UnsafeMutableRawPointer] = []

func serveJob(_ job: consuming Job) throws(JobRejection) -> [UInt8] {
    let command = String(decoding: job.input, as: UTF8.self)
    let parts = command.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
    switch parts[0] {
    case "echo":
        return Array(command.utf8.dropFirst(5))
    case "readfd":
        guard let fd = job.fileDescriptors.take(at: 0) else { throw JobRejection(code: 2, "no fd") }
        var contents: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd.unsafeRawValue, &buffer, buffer.count)
            if n <= 0 { break }
            contents += buffer[..<n]
        }
        return contents
    case "fdcount":
        return Array("\(job.fileDescriptors.count)".utf8)
    case "reject":
        throw JobRejection(code: Int32(parts[1])!, String(parts[2]))
    case "crash":
        crash(16 + (job.input.count & 0))
    case "spin":
        var x: UInt64 = 1
        while x != 0 { x = x &* 6364136223846793005 &+ 1442695040888963407 | 1 }
    case "sleep":
        usleep(UInt32(Double(parts[1])! * 1e6))
        return []
    case "alloc":
        let bytes = Int(parts[1])! << 20
        let memory = malloc(bytes)!
        memset(memory, 1, bytes)
        held.append(memory)
        while true { usleep(100_000) }
    case "syscall":
        _ = attack_openat("/etc/passwd")
    case "exit":
        exit(Int32(parts[1])!)
    case "big":
        return [UInt8](repeating: UInt8(ascii: "x"), count: Int(parts[1])!)
    case "wrongid":
        try? requireConnection().finish(job.id + 1000, output: [])
        while true { usleep(100_000) }
    case "pid":
        return Array("\(getpid())".utf8)
    case "violationthenresult":
        // N LOG lines (so the exit may be handled before the rest is read), a VIOLATION
        // report (as a thread's SIGSYS handler would send it), the job's RESULT (as another
        // thread would), and the exit: the answer must not be believed.
        for index in 0..<Int(parts[1])! { try? requireConnection().log("line \(index)") }
        let report = try! WireCodec.encode(Envelope(requestID: 0, .violation(Violation(syscallNumber: 257, architecture: 0xC000_003E, instructionPointer: 0))))
        _ = report.withUnsafeBytes { send(WireFormat.channelFileDescriptor, $0.baseAddress, $0.count, 0) }
        try? requireConnection().finish(job.id, output: Array("done".utf8))
        _exit(0)
    case "logthenexit":
        // A one-shot worker's end: N LOG lines, the RESULT, and exit at once, leaving more
        // in its channel than the loop reads from a worker in one turn.
        for index in 0..<Int(parts[1])! { try? requireConnection().log("line \(index)") }
        try? requireConnection().finish(job.id, output: Array("done".utf8))
        _exit(0)
    case "hangup", "empty", "hangupafter":
        // Answers, then leaves the channel (closes it, or sends an empty datagram, which
        // reads the same) and stays alive: a worker that would hold its pool slot idle.
        // hangupafter:S closes it S seconds after answering.
        try? requireConnection().finish(job.id, output: Array("bye".utf8))
        if parts[0] == "hangupafter" { usleep(UInt32(Double(parts[1])! * 1e6)) }
        if parts[0] != "empty" {
            close(WireFormat.channelFileDescriptor)
        } else {
            _ = send(WireFormat.channelFileDescriptor, nil, 0, 0)
        }
        while true { usleep(100_000) }
    case "hangupmidjob":
        // Leaves the channel without answering, and stays alive.
        close(WireFormat.channelFileDescriptor)
        while true { usleep(100_000) }
    case "twice":
        // Answers, then serveJobs answers again: a RESULT for a job it no longer runs.
        try? requireConnection().finish(job.id, output: Array("first".utf8))
        return Array("second".utf8)
    case "open":
        do {
            let fd = try requireConnection().open(String(parts[1]), .readOnly)
            return Array(readLine(fd.unsafeRawValue).utf8)
        } catch {
            throw JobRejection(code: 3, "open: \(error)")
        }
    default:
        break
    }
    throw JobRejection(code: 99, "unknown command \(command)")
}

for step in CommandLine.arguments.dropFirst() {
    var parts = step.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
    if parts[0] == "connect" || parts[0] == "bind" || parts[0] == "listen" {
        // HOST may be an IPv6 literal: the port is after the last colon.
        let rest = step[step.index(after: step.firstIndex(of: ":")!)...]
        let colon = rest.lastIndex(of: ":")!
        parts = [parts[0], rest[..<colon], rest[rest.index(after: colon)...]]
    }
    switch parts[0] {
    case "handshake":
        do {
            connection = try SupervisorConnection.connect()
            say("welcome \(connection!.workerID)")
        } catch {
            say("handshake failed: \(error)")
            exit(3)
        }
    case "connectagain":
        // A second connect() in one process: refused, and the first connection unharmed.
        do {
            _ = try SupervisorConnection.connect()
            say("connectagain connected")
        } catch {
            say("connectagain \(error)")
        }
    case "fds":
        var fds: [Int32] = []
        let directory = opendir("/proc/self/fd")!
        let own = dirfd(directory)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = Int32(name), fd != own { fds.append(fd) }
        }
        closedir(directory)
        say("fds " + fds.sorted().map(String.init).joined(separator: ","))
    case "env":
        say("env PRIVSEP_FD=\(getenv("PRIVSEP_FD").map { String(cString: $0) } ?? "")")
    case "open":
        let path = String(parts[1])
        do {
            let fd = try requireConnection().open(path, flags(parts.count > 2 ? parts[2] : "r"))
            let cloexec = (fcntl(fd.unsafeRawValue, F_GETFD) & FD_CLOEXEC) != 0
            say("open \(path) ok\(cloexec ? "" : " not-cloexec")")
        } catch {
            say("open \(path) \(errnoText(error))")
        }
    case "opens":
        // N opens of PATH in a row, each reply read: a worker looping on its requests.
        var granted = 0, refused = 0
        for _ in 0..<Int(parts[1])! {
            do { _ = try requireConnection().open(String(parts[2]), .readOnly); granted += 1 } catch { refused += 1 }
        }
        say("opens granted \(granted) refused \(refused)")
    case "stalereporter":
        // The connection freed after the lockdown, its fd number reused (dup of stdout, a
        // socket in the test), then a refused call: the report must not go to the reuser.
        do {
            let own = try SupervisorConnection.connect()
            _ = try Lockdown.brokered().apply(reportingTo: own)
        } catch {
            say("stalereporter \(error)")
            exit(4)
        }
        say("stalereporter reused \(dup(1))")
        _ = attack_openat("/etc/passwd")
        say("stalereporter survived")
    case "keep":
        // N opens of PATH whose fds are all kept (a worker reaching its fd limit), then all
        // closed and one more open: whether the connection outlived the limit.
        var kept: [Int32] = [], errors: [String: Int] = [:]
        for _ in 0..<Int(parts[1])! {
            do {
                let fd = try requireConnection().open(String(parts[2]), .readOnly)
                kept.append(fd.releaseUnsafeRawValue())
            } catch {
                errors[errnoText(error), default: 0] += 1
            }
        }
        let count = kept.count
        for fd in kept { close(fd) }
        let after: String
        do { _ = try requireConnection().open(String(parts[2]), .readOnly); after = "ok" } catch { after = errnoText(error) }
        say("keep \(count) " + errors.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",") + " then \(after)")
    case "read":
        let path = String(parts[1])
        do {
            let fd = try requireConnection().open(path, .readOnly)
            say("read \(path) \(readLine(fd.unsafeRawValue))")
        } catch {
            say("read \(path) \(errnoText(error))")
        }
    case "write":
        let path = String(parts[1])
        do {
            let fd = try requireConnection().open(path, [.writeOnly, .create, .truncate])
            let text = Array(parts[2].utf8)
            _ = write(fd.unsafeRawValue, text, text.count)
            say("write \(path) ok")
        } catch {
            say("write \(path) \(errnoText(error))")
        }
    case "socket":
        do {
            _ = try requireConnection().socket(domain: Int32(parts[1])!, type: Int32(parts[2])!)
            say("socket ok")
        } catch {
            say("socket \(errnoText(error))")
        }
    case "connect":
        do {
            let socket = try requireConnection().connect(to: address(parts[1], parts[2]))
            say("connect ok \(readLine(socket.unsafeRawValue))")
        } catch {
            say("connect \(errnoText(error))")
        }
    case "bind", "listen":
        // bind: listen, then accept one client and greet it; listen: only listen.
        do {
            let listener = try requireConnection().listen(at: address(parts[1], parts[2]))
            say("bind ok")
            // (An early `break` here, with the move-only listener in scope, hangs Swift 6.3's compiler.)
            if parts[0] == "bind" {
                let client = accept(listener.unsafeRawValue, nil, nil)
                _ = write(client, "hello\n", 6)
                close(client)
            }
        } catch {
            say("bind \(errnoText(error))")
        }
    case "log":
        try! requireConnection().log(String(parts[1]))
        say("log ok")
    case "raw", "rawfds":
        let bytes = hexBytes(parts.last!)
        let count = parts[0] == "rawfds" ? Int(parts[1])! : 0
        let fds = [Int32](repeating: 0, count: count)
        let socket = SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: dup(3)))
        do {
            try bytes.withUnsafeBytes { try socket.unsafeSend($0, passingRawValues: fds) }
            say("raw sent")
        } catch {
            say("raw failed \(error)")
        }
    case "diemidrequest":
        let socket = SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: dup(3)))
        let request = try! WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: "/etc/hostname", flags: 0))))
        try! request.withUnsafeBytes { try socket.send($0) }
        _exit(0)
    case "nohello":
        sleep(60)
    case "waitfile":
        var info = stat()
        for _ in 0..<6000 where stat(String(parts[1]), &info) != 0 { usleep(10_000) }
    case "sleep":
        usleep(UInt32(Double(parts[1])! * 1_000_000))
    case "exit":
        exit(Int32(parts[1])!)
    case "drain":
        // Reads N replies left unread (by flood or hoard): how many carried an fd, and each errno's count.
        let socket = SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: dup(3)))
        var withFd = 0, errnos: [Int32: Int] = [:]
        for _ in 0..<Int(parts[1])! {
            guard let received = try? socket.receive(maximumBytes: 8192, maximumFileDescriptors: 1),
                  case .reply(let reply)? = try? WireCodec.decode(received.bytes, fileDescriptorCount: received.fileDescriptors.count).message
            else { break }
            if let error = reply.error { errnos[error.rawValue, default: 0] += 1 } else { withFd += 1 }
        }
        say("drain fds \(withFd) errnos " + errnos.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","))
    case "flood", "hoard":
        // N OPENs whose replies are never read: of a path no policy grants, or (hoard) of PATH,
        // whose replies then each leave an fd in flight.
        let socket = SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: dup(3)))
        let path = parts[0] == "hoard" ? String(parts[2]) : "/nonexistent"
        let request = try! WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: path, flags: 0))))
        var sent = 0
        for index in 0..<Int(parts[1])! {
            var message = request
            withUnsafeBytes(of: UInt64(index + 1)) { for (i, byte) in $0.enumerated() { message[16 + i] = byte } }
            do { try message.withUnsafeBytes { try socket.send($0) }; sent += 1 } catch { break }
        }
        say("\(parts[0]) sent \(sent)")
    case "lingerfd", "lingerfdqueued", "lingerfdempty":
        // lingerfd:SECONDS:PORT. A TCP socket whose last close would wait SECONDS (SO_LINGER,
        // data unsent, a peer at 127.0.0.1:PORT that never accepts), sent to the supervisor with
        // bytes that are no message (behind another bad datagram, for "queued"; behind two
        // empty ones, which read like the channel's end, for "empty"); our copy is closed
        // first, so the supervisor's is the last.
        let seconds = Int32(parts[1])!
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(parts[2])!.bigEndian
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { say("lingerfd connect failed \(errno)"); exit(4) }
        _ = fcntl(client, F_SETFL, O_NONBLOCK)
        var chunk = [UInt8](repeating: 0x41, count: 65536)
        // Filled twice: the second time the peer's window has closed.
        for _ in 0..<2 {
            while write(client, &chunk, chunk.count) > 0 {}
            usleep(100_000)
        }
        var lingering = linger(l_onoff: 1, l_linger: seconds)
        _ = setsockopt(client, SOL_SOCKET, SO_LINGER, &lingering, socklen_t(MemoryLayout<linger>.size))
        let channel = SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: dup(WireFormat.channelFileDescriptor)))
        // Sent from a copy, so that ours is closed before the supervisor can read it.
        let sent = dup(client)
        close(client)
        do {
            if parts[0] == "lingerfdqueued" { try [UInt8(0)].withUnsafeBytes { try channel.unsafeSend($0, passingRawValues: []) } }
            if parts[0] == "lingerfdempty" {
                for _ in 0..<2 { try [UInt8]().withUnsafeBytes { try channel.unsafeSend($0, passingRawValues: []) } }
            }
            try [UInt8](repeating: 0xde, count: 4).withUnsafeBytes { try channel.unsafeSend($0, passingRawValues: [sent]) }
            close(sent)
            say("lingerfd sent")
        } catch {
            say("lingerfd failed \(error)")
        }
    case "claim":
        // Reports layers as in force without applying any.
        do { try requireConnection().reportSandbox(SandboxStatus(requested: [], active: SandboxLayers(rawValue: UInt32(parts[1])!))) }
        catch { say("claim failed: \(error)") }
    case "halffilter":
        // A filter on this thread only, a second thread without: then reports both layers.
        let result = attack_filter_one_thread_of_two()
        guard result == 0 else { say("halffilter failed \(result)"); exit(4) }
        do { try requireConnection().reportSandbox(SandboxStatus(requested: [], active: [.noNewPrivileges, .seccomp])) }
        catch { say("claim failed: \(error)") }
    case "ttys":
        var out = stat(), err = stat()
        let shared = fstat(1, &out) == 0 && fstat(2, &err) == 0 && out.st_rdev == err.st_rdev
        let name = ttyname(1).map { " " + String(cString: $0) } ?? ""
        say("ttys \(isatty(0)) \(isatty(1)) \(isatty(2))" + (shared ? " shared" : "") + name)
    case "pdeathsig":
        var signal: Int32 = 0
        _ = withUnsafeMutablePointer(to: &signal) { privsep_prctl(2 /* PR_GET_PDEATHSIG */, UInt(bitPattern: $0), 0, 0, 0) }
        say("pdeathsig \(signal)")
    case "threads":
        let count = Int(parts[1])!
        let path = String(parts[2])
        let shared = requireConnection()
        final class Tally: @unchecked Sendable {
            var lock = pthread_mutex_t()
            var good = 0
            var bad: [String] = []
        }
        let tally = Tally()
        pthread_mutex_init(&tally.lock, nil)
        var threads: [pthread_t] = []
        final class Job { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
        for _ in 0..<count {
            let job = Job {
                for _ in 0..<50 {
                    var outcome = ""
                    do {
                        let fd = try shared.open(path, .readOnly)
                        outcome = readLine(fd.unsafeRawValue)
                    } catch {
                        outcome = "error \(error)"
                    }
                    pthread_mutex_lock(&tally.lock)
                    if outcome.hasPrefix("error") { tally.bad.append(outcome) } else { tally.good += 1 }
                    pthread_mutex_unlock(&tally.lock)
                }
            }
            var thread = pthread_t()
            pthread_create(&thread, nil, { context in
                Unmanaged<Job>.fromOpaque(context!).takeRetainedValue().body()
                return nil
            }, Unmanaged.passRetained(job).toOpaque())
            threads.append(thread)
        }
        for thread in threads { pthread_join(thread, nil) }
        say(tally.bad.isEmpty ? "threads ok \(tally.good)" : "threads failed \(tally.bad.prefix(3))")
    case "placement":
        // Where the supervisor placed this process: its CPUs and scheduling policy.
        let status = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        var cpus = "?"
        while true {
            let line = readLine(status)
            if line.isEmpty { break }
            if line.hasPrefix("Cpus_allowed_list:") { cpus = line.split(separator: "\t").last.map(String.init) ?? "?" }
        }
        close(status)
        say("placement cpus \(cpus) policy \(sched_getscheduler(0))")
    case "ids":
        say("ids uid \(getuid()) euid \(geteuid()) gid \(getgid()) groups \(getgroups(0, nil))")
    case "limits":
        var values: [String] = []
        for resource in [RLIMIT_NOFILE, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE] {
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(resource.rawValue), &limit)
            values.append(limit.rlim_cur == rlim_t.max ? "unlimited" : "\(limit.rlim_cur)")
        }
        say("limits " + values.joined(separator: " "))
    case "lockdown":
        var lockdown = Lockdown.brokered()
        let mode = parts.count > 1 ? parts[1] : ""
        // The tests' files are the runner's (root's, in 0700 directories): the fixture keeps the
        // runner's user unless a mode says otherwise ("brokered": the profile's own default).
        if mode != "brokered" { lockdown.identity = nil }
        if mode == "kill" { lockdown.onViolation = .killProcess }
        if mode == "errno" { lockdown.onViolation = .fail(.permissionDenied) }
        if mode == "enosys" { lockdown.onViolation = .fail(.noFunction) }
        if mode.hasPrefix("errno=") { lockdown.onViolation = .fail(Errno(rawValue: Int32(mode.dropFirst(6))!)) }
        if mode == "rpath" {
            // The filter alone decides: no Landlock filesystem rules.
            lockdown.groups.insert(.rpath)
            lockdown.landlock = nil
            lockdown.onViolation = .fail(.permissionDenied)
        }
        if mode == "threads" { lockdown.groups.insert(.thread) }
        if mode == "proc" || mode == "tty" || mode == "procnolandlock" {
            lockdown.groups.insert(mode == "tty" ? .tty : .proc)
            lockdown.onViolation = .fail(.permissionDenied)
            if mode == "procnolandlock" { lockdown.landlock = nil }
        }
        if mode == "ns" { lockdown.newNamespaces = true }
        if mode.hasPrefix("ro=") {
            // Landlock alone decides: the filter lets openat through.
            lockdown.groups.insert(.rpath)
            lockdown.landlock = .readOnly([String(mode.dropFirst(3))])
        }
        if mode == "nolandlock" { lockdown.landlock = nil }
        if mode == "nobody" { lockdown.identity = (65534, 65534) }
        do {
            let status = try lockdown.apply(reportingTo: connection)
            say("lockdown \(status.active.rawValue) abi \(status.landlockABI)")
        } catch {
            say("lockdown failed: \(error)")
            exit(4)
        }
    case "serve":
        var served = 0
        do {
            try requireConnection().serveJobs { (job: consuming Job) throws(JobRejection) -> [UInt8] in
                served += 1
                return try serveJob(job)
            }
            say("serve done \(served)")
        } catch {
            say("serve failed: \(error)")
            exit(5)
        }
    case "attack":
        let name = String(parts[1])
        let argument = parts.count > 2 ? String(parts[2]) : "/etc/hostname"
        if name == "leave_group" {
            // The child, and what its three tries returned.
            var tried = [Int](repeating: 0, count: 3)
            let child = attack_leave_process_group(&tried)
            say("attack leave_group \(child) setsid \(tried[0]) setpgid \(tried[1]) clone_parent \(tried[2])")
            continue
        }
        let result: Int = switch name {
        case "openat": attack_openat(argument)
        case "openat2": attack_openat2(argument)
        case "openat_write": attack_openat_write(argument)
        case "execve": attack_execve(argument)
        case "socket": attack_socket_inet()
        case "ptrace": attack_ptrace_attach(getppid())
        case "i386": attack_i386_getpid()
        case "x32": attack_x32_getpid()
        case "clone3": attack_clone3()
        case "thread": Int(attack_start_thread())
        case "unshare": attack_unshare_user()
        case "seccomp": attack_seccomp_new_filter()
        case "io_uring": attack_io_uring_setup()
        case "memfd_exec": attack_memfd_execveat()
        case "prctl": attack_prctl_set_dumpable()
        case "fork": attack_fork()
        case "fcntl_clear_append": attack_fcntl_clear_append()
        case "fcntl_keep_append": attack_fcntl_keep_append()
        case "fcntl_setown": attack_fcntl_setown()
        case "fcntl_async": attack_fcntl_async()
        case "madvise_hwpoison": attack_madvise_hwpoison()
        case "madvise_guard": attack_madvise_guard()
        case "sendto_address": attack_sendto_address()
        case "sendto_fastopen": attack_sendto_fastopen()
        case "prlimit_other": attack_prlimit_other()
        case "kill_parent": attack_kill_parent()
        case "renice_parent": attack_renice_parent()
        case "renice_user": attack_renice_user()
        case "renice_self": attack_renice_self()
        case "pin_parent": attack_pin_parent()
        case "pin_self": attack_pin_self()
        case "fiosetown": attack_fiosetown()
        case "tcgets": attack_tcgets()
        case "tcgets2": attack_tcgets2()
        case "unknown_syscalls": attack_unknown_syscalls(Int(argument)!)
        case "escape_and_call": attack_escape_and_call(Int(argument)!)
        default: fatalError("unknown attack \(name)")
        }
        say("attack \(name) \(result)")
    default:
        say("unknown step \(step)")
        exit(2)
    }
}
exit(0)
