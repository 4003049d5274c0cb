import CPrivsepShims
import Foundation
import Testing
@testable import Supervisor

/// Examples 2 to 5 run as their run.sh scripts run them (example 1 is in CLITests).
@Suite struct ExampleTests {
    static let bin = CLITests.binDirectory
    static let examples = String(CLITests.exampleDirectory.dropLast("/untrusted-parser".count))

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a program to its end on a thread of its own: waiting for it on the cooperative
    /// pool (two threads here) would stall every async test meanwhile.
    static func run(_ executable: String, _ arguments: [String]) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detach { continuation.resume(with: Result { try runBlocking(executable, arguments) }) }
        }
    }

    /// posix_spawn, not Foundation's Process: on Linux with Swift 6.3.1 its run() reads past
    /// a readdir buffer while it lists /proc/self/fd (swift-corelibs-foundation #5472), and
    /// crashed a fresh-clone run of this suite. stdin is /dev/null; the status is the exit
    /// code, or the signal's number for a program a signal ended, as Process's terminationStatus is.
    private static func runBlocking(_ executable: String, _ arguments: [String]) throws -> Output {
        func closeOnExecPipe() throws -> (read: Int32, write: Int32) {
            var fds: [Int32] = [-1, -1]
            guard pipe(&fds) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return (fds[0], fds[1])
        }
        let out = try closeOnExecPipe(), err = try closeOnExecPipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out.write, 1)
        posix_spawn_file_actions_adddup2(&actions, err.write, 2)
        _ = privsep_spawn_addclosefrom(&actions, 3)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        close(out.write)
        close(err.write)
        guard rc == 0 else {
            close(out.read)
            close(err.read)
            throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO)
        }
        // Both at once: a child that fills one pipe while we wait on the other would stall.
        var collected: [Int32: [UInt8]] = [out.read: [], err.read: []]
        var open = [out.read, err.read]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            var polled = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if poll(&polled, nfds_t(polled.count), -1) < 0 && errno != EINTR { break }
            for entry in polled where entry.revents != 0 {
                let count = read(entry.fd, &chunk, chunk.count)
                if count > 0 {
                    collected[entry.fd]! += chunk[..<count]
                } else if count == 0 || errno != EINTR {
                    close(entry.fd)
                    open.removeAll { $0 == entry.fd }
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
        return Output(status: code, stdout: String(decoding: collected[out.read]!, as: UTF8.self),
                      stderr: String(decoding: collected[err.read]!, as: UTF8.self))
    }

    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "privsep-example-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func fileBrokerRefusesTricksAndAuditsEachDecision() async throws {
        let tree = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: tree) }
        let files = FileManager.default
        try files.createDirectory(atPath: tree + "/public", withIntermediateDirectories: true)
        try files.createDirectory(atPath: tree + "/private", withIntermediateDirectories: true)
        try "hello from public\n".write(toFile: tree + "/public/hello.txt", atomically: true, encoding: .utf8)
        try "notes\n".write(toFile: tree + "/notes.txt", atomically: true, encoding: .utf8)
        try "the secret\n".write(toFile: tree + "/private/secret.txt", atomically: true, encoding: .utf8)
        try files.createSymbolicLink(atPath: tree + "/public/shortcut", withDestinationPath: "../private/secret.txt")
        let policy = try String(contentsOfFile: Self.examples + "/file-broker/policy.json", encoding: .utf8)
            .replacingOccurrences(of: "@ROOT@", with: tree)
        try policy.write(toFile: tree + "/policy.json", atomically: true, encoding: .utf8)
        let result = try await Self.run(Self.bin + "/privsep", ["run", "--policy", tree + "/policy.json", "--audit-log", tree + "/audit.jsonl", "--",
                                                          Self.bin + "/reader", tree + "/public/hello.txt", tree + "/notes.txt",
                                                          tree + "/public/../private/secret.txt", tree + "/public/shortcut", tree + "/private/secret.txt"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.split(separator: "\n").map(String.init) == [
            "read    \(tree)/public/hello.txt: hello from public",
            "read    \(tree)/notes.txt: notes",
            "refused \(tree)/public/../private/secret.txt: Permission denied",
            "refused \(tree)/public/shortcut: Permission denied",
            "refused \(tree)/private/secret.txt: Permission denied",
        ])
        let audit = try String(contentsOfFile: tree + "/audit.jsonl", encoding: .utf8).split(separator: "\n").filter { $0.contains("\"event\":\"OPEN\"") }
        #expect(audit.count == 5)
        #expect(audit.filter { $0.contains("\"decision\":\"granted\"") }.count == 2)
        // Each grant names the rule that granted it (read from the rule only when a record is written).
        #expect(audit.contains { $0.contains("hello.txt") && $0.contains("\"reason\":\"rule \(tree)/public\"") })
        #expect(audit.contains { $0.contains("notes.txt") && $0.contains("\"reason\":\"rule \(tree)/notes.txt\"") })
    }

    @Test func privilegedPortIsBoundByTheSupervisorAndServed() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Port 81, so this test never races the broker test that binds 80.
        try "{ \"bind\": [ { \"address\": \"127.0.0.1\", \"ports\": \"81\" } ], \"require\": [\"seccomp\", \"landlock\"], \"timeout\": 20 }"
            .write(toFile: directory + "/policy.json", atomically: true, encoding: .utf8)
        let server = Task { try await Self.run(Self.bin + "/privsep", ["run", "--policy", directory + "/policy.json", "--", Self.bin + "/hello-server", "81"]) }
        var answer = ""
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let response = try? httpGet(port: 81) { answer = response; break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(answer.hasPrefix("HTTP/1.0 200 OK"))
        #expect(answer.hasSuffix("hello from a sandboxed worker on port 81\n"))
        let output = try await server.value
        #expect(output.status == 0, "\(output.stderr)")
    }

    @Test func aWorkerInCUsesOnlyTheProtocolHeader() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let repository = String(Self.examples.dropLast("/examples".count))
        let compile = try await Self.run("/usr/bin/cc", ["-O2", "-Wall", "-Werror", "-I", repository + "/Sources/CPrivsepProtocol/include",
                                                   Self.examples + "/c-worker/worker.c", "-lseccomp", "-o", directory + "/c-worker"])
        #expect(compile.status == 0, "\(compile.stderr)")
        let result = try await Self.run(Self.bin + "/privsep", ["run", "--policy", Self.examples + "/c-worker/policy.json", "--",
                                                          directory + "/c-worker", "/etc/hostname", "/etc/passwd"])
        #expect(result.status == 0, "\(result.stderr)")
        let hostname = try String(contentsOfFile: "/etc/hostname", encoding: .utf8).split(separator: "\n").first.map(String.init) ?? ""
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("c-worker: welcomed as worker 1 by supervisor") == true)
        #expect(Array(lines.dropFirst()) == ["c-worker: /etc/hostname: \(hostname)", "c-worker: /etc/passwd: refused: Permission denied"])
    }

    @Test func embeddingTheSupervisorLibrary() async throws {
        let result = try await Self.run(Self.bin + "/embedding-example", [Self.bin + "/csv-parser", CLITests.exampleDirectory + "/data/sales.csv"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("4 rows, 3 columns"))
        #expect(result.stdout.contains("embedding-example: worker "))
        #expect(result.stdout.contains(" exited with status 0\n"))
        #expect(result.stdout.contains("embedding-example: granted \(CLITests.exampleDirectory)/data/sales.csv O_RDONLY"))
    }

    /// Example 6: `privsep pool` over valid, malformed and malicious inputs; each
    /// malicious kind fails with its own reason and the rest are parsed.
    @Test func parserPoolContainsEachBugAndParsesTheRest() async throws {
        let tree = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: tree) }
        var inputs: [String: String] = [
            "include.rec": "!include /etc/shadow\n",
            "deep.rec": "x = " + String(repeating: "{a=", count: 300_000) + "\n",
            "bomb.rec": "!reserve 1000000000\n",
            "loop.rec": "[s]\nkey = value \\",
            "malformed.rec": "[ok]\nkey value\n",
        ]
        for index in 0..<40 { inputs["valid-\(index).rec"] = "[server]\nname = host\(index)\nlimits = {cpu = 2, memory = {hard = 1}}\n" }
        for (name, text) in inputs { try text.write(toFile: tree + "/" + name, atomically: true, encoding: .utf8) }
        let arguments = ["pool", "--policy", Self.examples + "/parser-pool/policy.json", "--workers", "2", "--jobs-per-worker", "10",
                         "--timeout", "3", "--memory", "64M", "--json"]
            + inputs.keys.sorted().flatMap { ["--input", tree + "/" + $0] } + ["--", Self.bin + "/record-parser"]
        let result = try await Self.run(Self.bin + "/privsep", arguments)
        #expect(result.status == 1, "\(result.stderr)")
        var statuses: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
            statuses[(object["input"]! as NSString).lastPathComponent] = object["status"]
            if object["input"]!.hasSuffix("valid-0.rec") { #expect(object["output"] == "1 sections, 2 keys, nesting 2") }
        }
        #expect(statuses["include.rec"] == "seccompViolation")
        #expect(statuses["deep.rec"] == "crashed")
        #expect(statuses["bomb.rec"] == "outOfMemory")
        #expect(statuses["loop.rec"] == "timedOut")
        #expect(statuses["malformed.rec"] == "rejected")
        #expect(statuses.filter { $0.key.hasPrefix("valid-") && $0.value == "ok" }.count == 40)
        #expect(result.stderr.contains("45 jobs"), "\(result.stderr)")
        #expect(result.stderr.contains("succeeded: 40"), "\(result.stderr)")
    }

    /// `privsep pool` opens its inputs with its own authority, so only regular files, by a
    /// path with no symlink in it (a directory swapped for a link after the listing would
    /// lead anywhere); a FIFO or a device is refused before it is opened.
    @Test func poolInputsAreRegularFilesReachedWithoutSymlinks() async throws {
        let tree = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: tree) }
        try FileManager.default.createDirectory(atPath: tree + "/real", withIntermediateDirectories: false)
        try "[s]\nk = v\n".write(toFile: tree + "/real/in.rec", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: tree + "/linked", withDestinationPath: tree + "/real")
        try FileManager.default.createSymbolicLink(atPath: tree + "/link.rec", withDestinationPath: tree + "/real/in.rec")
        #expect(mkfifo(tree + "/fifo", 0o600) == 0)
        let inputs = [tree + "/real/in.rec", tree + "/linked/in.rec", tree + "/link.rec", tree + "/fifo", "/dev/zero"]
        let result = try await Self.run(Self.bin + "/privsep", ["pool", "--policy", Self.examples + "/parser-pool/policy.json", "--json"]
            + inputs.flatMap { ["--input", $0] } + ["--", Self.bin + "/record-parser"])
        var details: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
            details[object["input"]!] = object["status"] == "ok" ? "ok" : object["detail"] ?? object["status"]
        }
        #expect(details == [
            tree + "/real/in.rec": "ok",
            tree + "/linked/in.rec": "the path has a symlink in it (give the resolved path)",
            tree + "/link.rec": "the path has a symlink in it (give the resolved path)",
            tree + "/fifo": "not a regular file",
            "/dev/zero": "not a regular file",
        ], "\(result.stdout)")
    }

    /// A path read from stdin is its bytes: a name that is not UTF-8 is opened as it is (not
    /// with U+FFFD in place of its byte), and shown with that byte as \xff. A line longer
    /// than any path is one input that cannot be opened, not a buffer that grows with it.
    @Test func poolInputsFromStandardInputAreTheirBytes() async throws {
        let tree = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: tree) }
        let name = Array((tree + "/bad").utf8) + [0xFF] + Array(".rec".utf8)
        let fd = (name + [0]).withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) } }
        #expect(fd >= 0)
        _ = write(fd, "[s]\nk = v\n", 10)
        close(fd)
        let script = "{ printf '%0100000d' 0; printf '\\n\(tree)/bad\\377.rec\\n\\n'; } | \"$0\" pool --policy \"$1\" --json -- \"$2\""
        let result = try await Self.run("/bin/sh", ["-c", script,
                                                   Self.bin + "/privsep", Self.examples + "/parser-pool/policy.json", Self.bin + "/record-parser"])
        var statuses: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String], "\(result.stdout) \(result.stderr)")
            statuses[object["input"]!] = object["status"] == "ok" ? "ok" : object["detail"]
        }
        #expect(statuses.count == 2, "\(statuses)")
        #expect(statuses[tree + "/bad\\xff.rec"] == "ok", "\(statuses)")
        #expect(statuses[String(repeating: "0", count: 4097)] == "cannot open: File name too long", "\(statuses.values)")
    }

    /// `privsep pool --placement`: every placement serves the same jobs; a dedicated
    /// CPU on a one-CPU machine, or an unknown name, is refused before anything runs.
    @Test func poolRunsUnderEveryPlacement() async throws {
        let tree = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: tree) }
        for index in 0..<6 { try "[s]\nk = v\(index)\n".write(toFile: tree + "/in-\(index).rec", atomically: true, encoding: .utf8) }
        func pool(_ placement: String) async throws -> Output {
            try await Self.run(Self.bin + "/privsep", ["pool", "--policy", Self.examples + "/parser-pool/policy.json", "--workers", "3",
                                                       "--placement", placement]
                + (0..<6).flatMap { ["--input", tree + "/in-\($0).rec"] } + ["--", Self.bin + "/record-parser"])
        }
        // The CPUs this thread may use, as the supervisor counts them (a container may allow fewer than the machine has).
        let cpus = try system_sched_getaffinity().get().members.count
        for placement in ["unmanaged", "batch-workers", "dedicated-cpu"] {
            let result = try await pool(placement)
            if placement == "dedicated-cpu" && cpus < 2 {
                #expect(result.status == 1 && result.stderr.contains("needs at least 2 CPUs"), "\(result.stderr)")
                continue
            }
            #expect(result.status == 0, "\(placement): \(result.stderr)")
            #expect(result.stderr.contains("succeeded: 6"), "\(placement): \(result.stderr)")
        }
        let unknown = try await pool("fastest")
        #expect(unknown.status == 64, "\(unknown.stderr)")
        let colocated = try await pool("colocated")
        #expect(colocated.status == 64 && colocated.stderr.contains("on one CPU"), "\(colocated.stderr)")
    }
}

/// A TCP socket connected to 127.0.0.1:port, or nil (the socket closed) if the connect failed.
func connectedToLoopback(port: UInt16) -> Int32? {
    let fd = socket(AF_INET, privsep_SOCK_STREAM | privsep_SOCK_CLOEXEC, 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// One HTTP/1.0 GET to 127.0.0.1:port, the whole response.
func httpGet(port: UInt16) throws -> String {
    guard let fd = connectedToLoopback(port: port) else { throw POSIXError(.ECONNREFUSED) }
    defer { close(fd) }
    let request = "GET / HTTP/1.0\r\n\r\n"
    _ = write(fd, request, request.utf8.count)
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
