// Intercept mode: an open made by an unmodified program under `privsep run --intercept`
// (seccomp user notification, served by the supervisor's policy and resolver, fd installed
// with ADDFD), beside a direct open, a minimal C user-notification broker measured in the
// same run, and the brokered open of a privsep worker.

import CBenchReference
import Glibc
import Logging
import PrivsepIPC
import Supervisor

/// Builds Benchmarks/c-unotify/c_unotify.c (the timed open loop and the C reference broker).
func buildUnotifyProgram() -> String? {
    let repository = String(#filePath.dropLast("Benchmarks/privsep-bench/Intercept.swift".count))
    let output = "/tmp/privsep-bench-unotify-\(getpid())"
    let command = "cc -O2 '\(repository)Benchmarks/c-unotify/c_unotify.c' -o '\(output)' 2>/dev/null"
    return system(command) == 0 ? output : nil
}

/// Runs `program ARGS` as a plain child with stdout to a file; its "MEDIAN P99" line.
func runForSummary(_ program: String, _ arguments: [String]) -> Summary? {
    let output = "/tmp/privsep-bench-unotify-out-\(getpid())"
    defer { unlink(output) }
    let quoted = ([program] + arguments).map { "'\($0)'" }.joined(separator: " ")
    guard system("\(quoted) > '\(output)'") == 0, let text = try? readProcFile(output) else { return nil }
    return parseSummary(text)
}

/// The open loop run intercepted by a supervisor in this process.
@MainActor func measureInterceptedOpens(program: String, helper: String, directory: String, runs: Int) async -> Summary? {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    guard let supervisor = try? Supervisor(logger: logger) else { return nil }
    var policy = Policy()
    // execve maps the ELF interpreter too: Landlock wants it executable (it lives under /usr).
    policy.allow(path: "/usr", .directory, [.read, .listDirectory, .execute], symlinks: .followBeneath)
    for system in ["/lib", "/lib64"] {
        policy.allow(path: system, .directory, [.read, .listDirectory], symlinks: .followBeneath)
    }
    policy.allow(path: "/etc/ld.so.cache", .file, [.read])
    policy.allow(path: program, .file, [.read, .execute])
    policy.allow(path: directory, .directory, [.read])
    let output = "/tmp/privsep-bench-intercept-out-\(getpid())"
    defer { unlink(output) }
    let outputFD = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    var configuration = WorkerConfiguration.intercepting(program: program, arguments: ["loop", "\(runs)", directory + "/file.txt"],
                                                         policy: policy, helper: helper)
    configuration.standardOutput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: outputFD)))
    guard let handle = try? await supervisor.spawn(configuration) else { return nil }
    let reason = await handle.exit()
    await supervisor.shutdown()
    guard reason == .exited(code: 0), let text = try? readProcFile(output) else {
        print("| intercepted open: failed (\(reason)) | | | | |")
        return nil
    }
    return parseSummary(text)
}

/// The same open asked for by a brokered privsep worker (OPEN → REPLY with the fd), for comparison.
@MainActor func measureBrokeredOpens(directory: String, runs: Int) async -> Summary? {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    guard let supervisor = try? Supervisor(logger: logger) else { return nil }
    var policy = Policy()
    policy.allow(path: directory, .directory, [.read])
    let output = "/tmp/privsep-bench-brokered-out-\(getpid())"
    defer { unlink(output) }
    let outputFD = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    let gate = StartGate()
    defer { gate.close() }
    var configuration = WorkerConfiguration(executable: selfPath(), arguments: ["--child", "swift-open-worker", "\(runs)", directory + "/file.txt"], policy: policy)
    configuration.standardInput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: dup(gate.read))))
    configuration.standardOutput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: outputFD)))
    configuration.caps.messagesPerSecond = 10_000_000
    configuration.caps.messageBurst = 1_000_000
    guard let handle = try? await supervisor.spawn(configuration) else { return nil }
    while supervisor.workers().filter({ $0.sandbox != nil }).isEmpty { usleep(1000) }
    usleep(200_000) // quiet before the gate: see measureSwiftOpens
    gate.open(1)
    let reason = await handle.exit()
    await supervisor.shutdown()
    guard reason == .exited(code: 0), let text = try? readProcFile(output) else { return nil }
    return parseSummary(text)
}

@MainActor func interceptSection(runs: Int) async {
    let directory = "/tmp/privsep-bench-intercept-\(getpid())"
    mkdir(directory, 0o755)
    let file = open(directory + "/file.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    _ = write(file, "x", 1)
    close(file)
    defer {
        unlink(directory + "/file.txt")
        rmdir(directory)
    }
    print("")
    print("| open (openat + close) | placement | median µs | p99 µs | vs minimal C user-notification broker / vs C doing privsep's kernel work, receiving as privsep |")
    print("|---|---|---:|---:|---:|")
    guard let program = buildUnotifyProgram() else {
        print("| intercepted open: not measured (needs cc) | | | | |")
        return
    }
    defer { unlink(program) }
    let bench = selfPath()
    let helper = String(bench[..<bench.lastIndex(of: "/")!]) + "/privsep-intercept" // built beside the benchmark
    let helperBuilt = access(helper, X_OK) == 0
    // Interleaved rounds, the opens split between them, as for the brokered rows (see `rounds`).
    let perRound = max(runs / rounds, 1_000)
    for pinned in [true, false] {
        check(cbench_pin(pinned ? 0 : -1) == 0, "sched_setaffinity")
        let placement = pinned ? "pinned (CPU 0)" : "unpinned"
        var direct: [Summary] = [], reference: [Summary] = [], resolved: [Summary] = [], waiting: [Summary] = []
        var intercepted: [Summary] = [], brokered: [Summary] = []
        for _ in 0..<rounds {
            let path = directory + "/file.txt"
            if let summary = runForSummary(program, ["loop", "\(perRound)", path]) { direct.append(summary) }
            guard let summary = runForSummary(program, ["reference", "\(perRound)", path]) else { break }
            reference.append(summary)
            if let summary = runForSummary(program, ["resolved", "\(perRound)", path]) { resolved.append(summary) }
            if let summary = runForSummary(program, ["waiting", "\(perRound)", path]) { waiting.append(summary) }
            if helperBuilt, let summary = await measureInterceptedOpens(program: program, helper: helper, directory: directory, runs: perRound) {
                intercepted.append(summary)
            }
            if let summary = await measureBrokeredOpens(directory: directory, runs: perRound) { brokered.append(summary) }
        }
        if !direct.isEmpty {
            let row = Summary(medianOf: direct)
            print("| direct, no sandbox | \(placement) | \(format(row.median)) | \(format(row.p99)) | |")
        }
        guard reference.count == rounds else {
            print("| C user-notification broker: failed | \(placement) | | | |")
            continue
        }
        let base = Summary(medianOf: reference)
        // Paired round by round when every round of the row was measured (see pairedRatio).
        func ratio(_ rounds: [Summary], _ row: Summary) -> Double {
            rounds.count == reference.count ? pairedRatio(rounds, reference) : row.median / base.median
        }
        print("| minimal C user-notification broker (reference) | \(placement) | \(format(base.median)) | \(format(base.p99)) | 1.00x |")
        if !resolved.isEmpty {
            let row = Summary(medianOf: resolved)
            print("| the same C broker with openat2 RESOLVE_BENEATH + fstat (privsep's kernel work) | \(placement) | \(format(row.median)) | \(format(row.p99)) | \(format(ratio(resolved, row)))x |")
        }
        // The like-for-like reference: on Linux 6.11 and later privsep's serving thread
        // receives without polling first (InterceptServer.run).
        let likeForLike = receiveReturnsWhenFilterUnused && !waiting.isEmpty ? waiting : resolved
        if !waiting.isEmpty {
            let row = Summary(medianOf: waiting)
            print("| … receiving without a poll before each RECV (as privsep does on Linux 6.11 and later) | \(placement) | \(format(row.median)) | \(format(row.p99)) | \(format(ratio(waiting, row)))x |")
        }
        if !helperBuilt {
            print("| privsep intercepted: not measured (build privsep-intercept: swift build -c release) | \(placement) | | | |")
        } else if !intercepted.isEmpty {
            let row = Summary(medianOf: intercepted)
            let versusLikeForLike = intercepted.count == likeForLike.count && !likeForLike.isEmpty
                ? " / \(format(pairedRatio(intercepted, likeForLike)))x" : ""
            print("| privsep --intercept (policy, openat2, fstat, ADDFD, audit) | \(placement) | \(format(row.median)) | \(format(row.p99)) | \(format(ratio(intercepted, row)))x\(versusLikeForLike) |")
        }
        if !brokered.isEmpty {
            let row = Summary(medianOf: brokered)
            print("| privsep brokered worker asking OPEN (for comparison) | \(placement) | \(format(row.median)) | \(format(row.p99)) | |")
        }
    }
    check(cbench_pin(-1) == 0, "sched_setaffinity")
}


