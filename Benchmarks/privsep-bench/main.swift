// privsep-bench: every hot path of privsep beside its reference, measured in the
// same run, pinned to one core and unpinned, median and p99. See BENCHMARKS.md.
//   swift build -c release --static-swift-stdlib --product privsep-bench
//   .build/release/privsep-bench [--iterations N] [--startup-runs N] [--workers N]
//       [--open-runs N] [--connect-runs N] [--pool-jobs N] [--ready-worker PATH]
//       [--throughput-workers 1,4,16,64] [--placements unmanaged,batch-workers,dedicated-cpu,colocated]
//       [--serving-threads 1,2] [--rounds N]
// (0 skips a section.)
//
// Sections:
// Every section but start-up and memory runs in interleaved rounds (--rounds).
//   channel      raw N fds: a 16-byte request carrying N fds, 16 bytes back; OPEN->REPLY:
//                the protocol's codec on both sides, one fd back. C sendmsg/recvmsg reference.
//   start-up     spawn -> HELLO -> Lockdown -> SANDBOX_STATUS -> reaped, for this binary and
//                for bench-ready-worker (the Worker library only), beside a static C worker.
//   memory       supervisor RSS per idle locked-down worker.
//   open         brokered opens beside a direct openat, a minimal C broker, and a C broker
//                making privsep's checks for locked-down clients (CPU per request on each
//                side); the worker's side alone, its reply queued beforehand (no scheduling),
//                beside the same syscalls in C; opens/s by worker count, Placement and
//                serving threads, the C brokers placed the same way.
//   connect      brokered CONNECTs to a loopback listener beside a direct connect and a
//                minimal C broker.
//   pool         WorkerPool per-job round trip beside an in-process call and, round by
//                round, a brokered open; jobs/s by pool size, warm and with a fresh
//                process per job.

import CBenchReference
import Glibc
import Logging
import PrivsepIPC
import Supervisor
import Worker

/// A worker's connection to a canned supervisor, for the worker's side alone (the
/// "worker-path" and "footprint-worker" children): each reply, with an fd of /dev/null, is
/// queued by hand before its request, so nothing sleeps. C's requests use a pair of their own.
final class CannedOpens {
    let path = "/privsep-bench/file.txt" // never opened: the reply is canned
    let held = Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC)
    var reply = try! WireCodec.encode(Envelope(requestID: 1, .reply(.success(fileDescriptorCount: 1))))
    let request: [UInt8]
    let c = try! SeqpacketSocket.pair()
    let supervisorEnd: SeqpacketSocket
    let connection: SupervisorConnection
    private var nextID: UInt64 = 1 // the connection numbers its requests from 1

    init() {
        request = try! WireCodec.encode(Envelope(requestID: 1, .open(OpenRequest(path: path, flags: O_RDONLY))))
        let pair = try! SeqpacketSocket.pair()
        supervisorEnd = pair.first
        // Our parent is who WELCOME must name (the handshake checks getppid()).
        try! supervisorEnd.send(Envelope(requestID: 0, .welcome(Welcome(supervisorProcessID: getppid(), workerID: 1))))
        connection = try! SupervisorConnection(handshakeOver: pair.second)
        _ = try! supervisorEnd.receiveMessage() // HELLO
    }

    /// `count` requests by the C loop, each finding its reply queued: the nanoseconds they
    /// took (`evicting`: caches evicted before each, only the requests timed), or, with
    /// `marking`, one request between marks at its offsets 0 and 64.
    func cRequests(_ count: Int, evicting evict: UnsafeMutableRawBufferPointer? = nil,
                   marking marker: UnsafeMutableRawBufferPointer? = nil) -> UInt64 {
        let mine = c.second.unsafeRawValue, peer = c.first.unsafeRawValue, held = held
        let nanoseconds = request.withUnsafeBytes { request in
            reply.withUnsafeMutableBytes { reply -> UInt64 in
                if let marker {
                    guard cbench_queue_reply(peer, held, reply.baseAddress!, reply.count, 1) == 0,
                          cbench_marked_request(mine, request.baseAddress!, request.count, marker.baseAddress!) == 0,
                          cbench_drain_request(peer) == 0 else { return 0 }
                    return 1
                }
                if let evict {
                    return cbench_prequeued_cold_requests(mine, peer, held, request.baseAddress!, request.count, reply.baseAddress!,
                                                          reply.count, Int32(count), evict.baseAddress!, evict.count)
                }
                return cbench_prequeued_requests(mine, peer, held, request.baseAddress!, request.count, reply.baseAddress!,
                                                 reply.count, Int32(count))
            }
        }
        check(nanoseconds > 0, "C requests")
        return nanoseconds
    }

    /// One SupervisorConnection.open, its reply queued first; `before` runs just before it
    /// and `after` just after.
    func brokeredOpen(before: () -> Void = {}, after: () -> Void = {}) {
        let queued = reply.withUnsafeMutableBytes { reply in
            cbench_queue_reply(supervisorEnd.unsafeRawValue, held, reply.baseAddress!, reply.count, nextID)
        }
        check(queued == 0, "queue reply")
        nextID += 1
        before()
        _ = try! connection.open(path, .readOnly) // closed at once
        after()
        check(cbench_drain_request(supervisorEnd.unsafeRawValue) == 0, "drain request")
    }
}

// MARK: Children (entered when argv[1] == "--child")

func childMain(_ mode: String) -> Never {
    // Only the Swift children adopt fd 3: an owned value is closed after its last
    // use, which for the C children would be before the C loop starts.
    func adoptChannel() -> SeqpacketSocket {
        SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: WireFormat.channelFileDescriptor))
    }
    switch mode {
    case "worker-path":
        // The worker's side of a brokered open with no scheduling in it: the reply (and its
        // fd) is queued before each request is sent, so the request finds it at once and
        // nothing sleeps. The same syscalls in C first, then SupervisorConnection.open;
        // the difference is the library's own cost per request on the worker's side.
        // Arguments N OUTFILE; writes "C_NS SWIFT_NS COLD_C_NS COLD_SWIFT_NS" (per request).
        let count = Int(CommandLine.arguments[3])!, output = CommandLine.arguments[4]
        let canned = CannedOpens()
        // C and Swift in alternating slices, so a slower spell of the machine falls on both.
        let slices = 20, perSlice = max(count / slices, 1)
        var cNanoseconds: UInt64 = 0, swiftNanoseconds: UInt64 = 0
        for _ in 0..<slices {
            cNanoseconds += canned.cRequests(perSlice)
            let start = cbench_now_ns()
            for _ in 0..<perSlice { canned.brokeredOpen() }
            swiftNanoseconds += cbench_now_ns() - start
        }
        let total = Double(slices * perSlice)
        // Then cold: before each request, 8 MiB of data and 2048 pages of code are run
        // through (cbench_evict), so the request finds its caches and TLB as a worker does
        // when many take turns on a CPU. Only the request is timed. A tenth as many.
        let evict = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 << 20, alignment: 4096)
        memset(evict.baseAddress!, 1, evict.count)
        let coldPerSlice = max(perSlice / 10, 1)
        var coldC: UInt64 = 0, coldSwift: UInt64 = 0
        for _ in 0..<slices {
            coldC += canned.cRequests(coldPerSlice, evicting: evict)
            for _ in 0..<coldPerSlice {
                var start: UInt64 = 0
                canned.brokeredOpen {
                    cbench_evict(evict.baseAddress!, evict.count)
                    start = cbench_now_ns()
                } after: {
                    coldSwift += cbench_now_ns() - start
                }
            }
        }
        let coldTotal = Double(slices * coldPerSlice)
        let line = "\(Double(cNanoseconds) / total) \(Double(swiftNanoseconds) / total) \(Double(coldC) / coldTotal) \(Double(coldSwift) / coldTotal)\n"
        let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        exit(0)
    case "footprint-worker":
        // For Benchmarks/footprint: three opens whose replies are queued beforehand, each
        // first by the C loop, then by SupervisorConnection.open, every request between two
        // writes to a marker page whose address goes to stderr ("MARKER N"), so a memory
        // trace (valgrind's lackey) can cut out one request of each. Marker offsets: 0 and
        // 64 around C's, 128 and 192 around privsep's.
        let canned = CannedOpens()
        let marker = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        let line = "MARKER \(UInt(bitPattern: marker.baseAddress!))\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        for _ in 0..<3 {
            _ = canned.cRequests(1, marking: marker)
            canned.brokeredOpen { cbench_touch(marker.baseAddress! + 128) } after: { cbench_touch(marker.baseAddress! + 192) }
        }
        exit(0)
    case "c-echo":
        exit(cbench_echo_loop(WireFormat.channelFileDescriptor) == 0 ? 0 : 1)
    case "c-broker":
        exit(cbench_reply_fd_loop(WireFormat.channelFileDescriptor, open("/dev/null", O_RDONLY | O_CLOEXEC)) == 0 ? 0 : 1)
    case "swift-echo":
        let channel = adoptChannel()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: WireFormat.maximumMessageSize, alignment: 8)
        let reply = [UInt8](repeating: 0, count: 16)
        while true {
            do {
                _ = try channel.receive(into: buffer, maximumFileDescriptors: 253) // fds close when dropped
                try reply.withUnsafeBytes { try channel.send($0) }
            } catch ChannelError.peerClosed {
                exit(0)
            } catch {
                fatalError("swift-echo: \(error)")
            }
        }
    case "swift-broker":
        let channel = adoptChannel()
        var held = OwnedFileDescriptors()
        held.append(OwnedFileDescriptor(adoptingRawValue: open("/dev/null", O_RDONLY | O_CLOEXEC)))
        while true {
            do {
                let request = try channel.receiveMessage()
                guard case .open = request.envelope.message else { fatalError("expected OPEN") }
                try channel.send(Envelope(requestID: request.envelope.requestID, .reply(.success(fileDescriptorCount: 1))),
                                 passing: held)
            } catch .peerClosed {
                exit(0)
            } catch {
                fatalError("swift-broker: \(error)")
            }
        }
    case "swift-open-worker":
        // Brokered opens: arguments N PATH; waits for one byte on stdin before starting.
        let path = CommandLine.arguments[4]
        timedBrokeredRequests(mode) { connection in _ = try connection.open(path, .readOnly) }
    case "swift-batch-worker":
        // The serving side's row (and, with BATCH 1, the opens/s rows' C-code clients):
        // arguments N PATH BATCH; locks down, waits for stdin, then sends BATCH OPENs at a
        // time (one id for all: an OPEN is answered before the next is read) and reads
        // their replies, N in all.
        let count = Int(CommandLine.arguments[3])!, path = CommandLine.arguments[4], batch = Int(CommandLine.arguments[5])!
        do {
            let connection = try SupervisorConnection.connect()
            try Lockdown.brokered().apply(reportingTo: connection)
            let request = try WireCodec.encode(Envelope(requestID: 1 << 48, .open(OpenRequest(path: path, flags: O_RDONLY))))
            var go: UInt8 = 0
            _ = read(0, &go, 1)
            let result = request.withUnsafeBytes {
                cbench_batched_requests(connection.unsafeChannelFileDescriptor, $0.baseAddress!, $0.count, Int32(batch), Int32(count / batch))
            }
            exit(result == 0 ? 0 : 1)
        } catch {
            fatalError("\(mode): \(error)")
        }
    case "c-batch-client":
        // The same for the C broker: arguments N NAME BATCH, under the worker's lockdown.
        let count = Int(CommandLine.arguments[3])!, name = CommandLine.arguments[4], batch = Int(CommandLine.arguments[5])!
        do { try Lockdown.brokered().apply() } catch { fatalError("\(mode): \(error)") }
        var go: UInt8 = 0
        _ = read(0, &go, 1)
        exit(cbench_batched_requests(WireFormat.channelFileDescriptor, name, name.utf8.count, Int32(batch), Int32(count / batch)) == 0 ? 0 : 1)
    case "swift-connect-worker":
        // Brokered connects: arguments N PORT; waits for one byte on stdin before starting.
        let port = UInt16(CommandLine.arguments[4])!
        timedBrokeredRequests(mode) { connection in _ = try connection.connect(to: .ipv4(.loopback, port: port)) }
    case "c-connect-client":
        // The C client of the C connect broker: arguments N PORT OUTFILE.
        let port = Int32(CommandLine.arguments[4])!
        timedCClient(mode) { count, samples in cbench_connect_client(WireFormat.channelFileDescriptor, port, count, samples) }
    case "c-open-client", "c-locked-open-client":
        // The C client of the C broker: arguments N NAME OUTFILE; waits for stdin like the Swift one.
        let name = CommandLine.arguments[4]
        timedCClient(mode, lockedDown: mode == "c-locked-open-client") { count, samples in
            cbench_open_client(WireFormat.channelFileDescriptor, name, count, samples)
        }
    case "ready-worker":
        // Start-up: handshake, brokered lockdown (seccomp + Landlock), report, exit.
        // Prints how long the lockdown itself took (µs), for the share of start-up it is.
        do {
            let connection = try SupervisorConnection.connect()
            let start = cbench_now_ns()
            try Lockdown.brokered().apply(reportingTo: connection)
            let line = "\(Double(cbench_now_ns() - start) / 1000)\n"
            _ = line.withCString { write(1, $0, strlen($0)) }
        } catch {
            fatalError("ready-worker: \(error)")
        }
        exit(0)
    case "pool-worker":
        // A pool worker whose job is trivial: the input comes back as the output.
        do throws(WorkerError) {
            let connection = try SupervisorConnection.connect()
            try Lockdown.brokered().apply(reportingTo: connection)
            try connection.serveJobs { (job: consuming Job) -> [UInt8] in job.input }
        } catch .supervisorGone {
            exit(0) // retired while starting: the pool is shutting down
        } catch {
            fatalError("pool-worker: \(error)")
        }
        exit(0)
    case "flood-worker":
        // Asks for a file no policy grants, as fast as it is answered, until its channel
        // goes: a worker kept throttled by its message cap.
        do {
            let connection = try SupervisorConnection.connect()
            try Lockdown.brokered().apply(reportingTo: connection)
            while true {
                do { _ = try connection.open("/nonexistent", .readOnly) } catch .denied { continue } catch { break }
            }
        } catch {
            fatalError("flood-worker: \(error)")
        }
        exit(0)
    case "idle-worker":
        // A real worker: handshake, brokered lockdown, then idle until the supervisor goes.
        do {
            let connection = try SupervisorConnection.connect()
            try Lockdown.brokered().apply(reportingTo: connection)
            var byte: UInt8 = 0
            _ = read(connection.unsafeChannelFileDescriptor, &byte, 1)
        } catch {
            fatalError("idle-worker: \(error)")
        }
        exit(0)
    default:
        fatalError("unknown child mode \(mode)")
    }
}

/// A brokered worker's timed loop: argument 3 is the count. Locks down, waits for one
/// byte on stdin (the start gate), times `count` calls of `request` (each closes
/// what it got), prints "MEDIAN P99" in µs and exits.
func timedBrokeredRequests(_ mode: String, _ request: (SupervisorConnection) throws -> Void) -> Never {
    let count = Int(CommandLine.arguments[3])!
    do {
        let connection = try SupervisorConnection.connect()
        try Lockdown.brokered().apply(reportingTo: connection)
        var go: UInt8 = 0
        _ = read(0, &go, 1)
        var samples = [UInt64](repeating: 0, count: count)
        let cpuBefore = cbench_thread_cpu_ns()
        for index in 0..<count {
            let start = cbench_now_ns()
            try request(connection)
            samples[index] = cbench_now_ns() - start
        }
        let cpuPerRequest = Double(cbench_thread_cpu_ns() - cpuBefore) / Double(count) / 1000
        let summary = Summary(samples)
        let line = "\(summary.median) \(summary.p99) \(cpuPerRequest)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
    } catch {
        fatalError("\(mode): \(error)")
    }
    exit(0)
}

/// A C client's timed loop: argument 3 is the count, argument 5 the file for "MEDIAN P99".
/// With `lockedDown`, the client first locks itself down as a brokered Swift worker
/// does (the same seccomp filter and Landlock ruleset), so its system calls pay what
/// the worker's pay; the output file is opened before, as nothing can be opened after.
func timedCClient(_ mode: String, lockedDown: Bool = false, _ run: (Int32, UnsafeMutablePointer<UInt64>) -> Int32) -> Never {
    let count = Int(CommandLine.arguments[3])!, output = CommandLine.arguments[5]
    let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    if lockedDown {
        do { try Lockdown.brokered().apply() } catch { fatalError("\(mode): \(error)") }
    }
    var go: UInt8 = 0
    _ = read(0, &go, 1)
    var samples = [UInt64](repeating: 0, count: count)
    let cpuBefore = cbench_thread_cpu_ns()
    guard run(Int32(count), &samples) == 0 else { fatalError("\(mode): \(errno)") }
    let cpuPerRequest = Double(cbench_thread_cpu_ns() - cpuBefore) / Double(count) / 1000
    let summary = Summary(samples)
    let line = "\(summary.median) \(summary.p99) \(cpuPerRequest)\n"
    _ = line.withCString { write(fd, $0, strlen($0)) }
    close(fd)
    exit(0)
}

/// precondition's message is dropped in release builds; this one is printed.
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        let text = "privsep-bench: \(message()) (errno \(errno))\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(1)
    }
}

if CommandLine.arguments.count >= 3 && CommandLine.arguments[1] == "--child" {
    childMain(CommandLine.arguments[2])
}

// MARK: Parent

var iterations = 20_000
var idleWorkers = 1_000
var startupRuns = 200
var openRuns = 20_000
var poolJobs = 5_000
var connectRuns = 5_000
if let index = CommandLine.arguments.firstIndex(of: "--connect-runs"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value >= 0 {
    connectRuns = value
}
if let index = CommandLine.arguments.firstIndex(of: "--pool-jobs"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value >= 0 {
    poolJobs = value
}
if let index = CommandLine.arguments.firstIndex(of: "--open-runs"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value >= 0 {
    openRuns = value
}
/// The worker counts of the opens/s rows.
var throughputWorkers = [1, 4, 16, 64]
if let index = CommandLine.arguments.firstIndex(of: "--throughput-workers"), index + 1 < CommandLine.arguments.count {
    let counts = CommandLine.arguments[index + 1].split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
    check(!counts.isEmpty, "--throughput-workers takes a list like 1,4,16,64")
    throughputWorkers = counts
}
/// The placements of the opens/s rows (more than one CPU needed for all but unmanaged).
var throughputPlacements: [Placement] = sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1 ? [.unmanaged, .batchWorkers, .dedicatedServingCPU, .colocated] : [.unmanaged]
if let index = CommandLine.arguments.firstIndex(of: "--placements"), index + 1 < CommandLine.arguments.count {
    let chosen = CommandLine.arguments[index + 1].split(separator: ",").map { Placement(rawValue: String($0)) }
    check(!chosen.isEmpty && !chosen.contains(nil), "--placements takes a list of unmanaged, batch-workers, dedicated-cpu, colocated")
    throughputPlacements = chosen.compactMap { $0 }
}
/// The CPUs this process may use, lowest first: colocated serving threads take them in turn.
let allowedCPUs: [Int] = {
    var cpus = [Int32](repeating: 0, count: 1024)
    let count = cbench_allowed_cpus(&cpus, 1024)
    check(count > 0, "sched_getaffinity")
    return cpus.prefix(Int(count)).map(Int.init)
}()
/// The serving-thread counts of the opens/s rows: one, and one per CPU.
var throughputServingThreads = Array(Set([1, allowedCPUs.count])).sorted()
if let index = CommandLine.arguments.firstIndex(of: "--serving-threads"), index + 1 < CommandLine.arguments.count {
    let counts = CommandLine.arguments[index + 1].split(separator: ",").compactMap { Int($0) }.filter { (1...256).contains($0) }
    check(!counts.isEmpty, "--serving-threads takes a list like 1,2")
    throughputServingThreads = counts
}
if let index = CommandLine.arguments.firstIndex(of: "--startup-runs"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value >= 0 {
    startupRuns = value
}

/// Whether the executable at `path` names a program interpreter (ld.so): the
/// .interp string sits in the first page of any dynamically linked ELF file.
func hasProgramInterpreter(_ path: String) -> Bool {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return true }
    defer { close(fd) }
    var page = [UInt8](repeating: 0, count: 4096)
    let count = read(fd, &page, page.count)
    guard count > 0 else { return true }
    let needle = Array("/ld-linux".utf8)
    return (0...(count - needle.count)).contains { start in page[start..<(start + needle.count)].elementsEqual(needle) }
}

/// Whether the Swift runtime is linked in (no libswiftCore.so mapped).
func isStaticallyLinked() -> Bool {
    guard let maps = try? readProcFile("/proc/self/maps") else { return false }
    return !maps.contains("libswiftCore.so")
}
if let index = CommandLine.arguments.firstIndex(of: "--workers"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value >= 0 {
    idleWorkers = value
}
if let index = CommandLine.arguments.firstIndex(of: "--iterations"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value > 0 {
    iterations = value
}
let warmup = max(iterations / 10, 100)
/// Where the C loops write their warm-up round trips' times, which nobody reads: a
/// buffer of its own, as the warm-up may be longer than the measured run.
var warmupSamples = [UInt64](repeating: 0, count: warmup)
/// Rounds of the channel, open, opens/s, connect and intercept rows, each round measuring
/// a row and its references once, in turn: this VM has faster and slower spells of a
/// second or so (the same C broker measured 5.9 µs in one run and 9.1 µs in the next), so
/// a row measured once can land in another spell than its reference. A row reports the
/// median of its rounds, and its ratio the median of its rounds' ratios (pairedRatio);
/// the round trips, opens or connects of a row are split between its rounds.
var rounds = 5
if let index = CommandLine.arguments.firstIndex(of: "--rounds"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value > 0 {
    rounds = value
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

/// A row against its reference: the median over rounds of the row's median divided by
/// the reference's in the same round. A slower spell of the machine falls on both halves
/// of a pair, where the medians of all rounds, taken apart, can each land in another.
func pairedRatio(_ row: [Summary], _ reference: [Summary]) -> Double {
    precondition(row.count == reference.count && !row.isEmpty, "a paired ratio needs a reference for every round")
    return median(zip(row, reference).map { $0.median / $1.median })
}
var interceptRuns = 20_000
if let index = CommandLine.arguments.firstIndex(of: "--intercept-runs"), index + 1 < CommandLine.arguments.count,
   let value = Int(CommandLine.arguments[index + 1]), value >= 0 {
    interceptRuns = value
}
/// The file every open row opens (beneath a directory the policies grant). The pid is
/// padded to pid_max's 7 digits, so the path's length, and so the work of checking it
/// (eight bytes at a time), is the same in every run (Benchmarks/footprint).
let openDirectory = "/tmp/privsep-bench-" + String(repeating: "0", count: max(0, 7 - String(getpid()).count)) + String(getpid())
let openName = "file.txt"

/// For Benchmarks/footprint: `--serve-for-tracing swift|c` serves one C-code client's
/// opens (one request at a time) by privsep's serving thread or by the C broker on
/// privsep's loop, long enough for a debugger to follow one request through, then exits.
if let index = CommandLine.arguments.firstIndex(of: "--serve-for-tracing"), index + 1 < CommandLine.arguments.count {
    prepareOpenTarget()
    let opens = 900_000 // under the default cap of fds a worker is handed
    if CommandLine.arguments[index + 1] == "c" {
        _ = measureCOpens(workers: 1, opens: opens, checked: true, onEpoll: true, batch: 1)
    } else {
        _ = await measureSwiftOpens(workers: 1, opens: opens, batch: 1)
    }
    removeOpenTarget()
    exit(0)
}

// Intercept mode's table comes first in a full run (and alone with --intercept-only).
if CommandLine.arguments.contains("--intercept-only") || interceptRuns > 0 {
    await interceptSection(runs: max(interceptRuns, 100))
    if CommandLine.arguments.contains("--intercept-only") { exit(0) }
}

func selfPath() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, 4095)
    check(length > 0, "readlink /proc/self/exe")
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A spawned child and the parent's end of its channel.
struct Child: ~Copyable {
    var channel: SeqpacketSocket
    var pid: pid_t

    /// Closes the channel (the child sees end-of-file and exits) and reaps the child.
    consuming func finish() {
        let pid = self.pid
        _ = consume channel
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        check(status == 0, "child \(pid) exited with status \(status)")
    }
}

/// Spawns this binary in `mode` with the child end of a fresh pair at fd 3.
func spawnChild(_ mode: String, arguments: [String] = []) -> Child {
    let pair = try! SeqpacketSocket.pair()
    let parent = pair.first, child = pair.second
    let path = selfPath()
    var argv: [UnsafeMutablePointer<CChar>?] = ([path, "--child", mode] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    let pid = argv.withUnsafeMutableBufferPointer { cbench_spawn(path, $0.baseAddress!, child.unsafeRawValue, -1, 0) }
    check(pid > 0, "spawn failed: \(errno)")
    _ = consume child
    return Child(channel: parent, pid: pid)
}

struct Summary {
    var median: Double
    var p99: Double
    /// CPU time of the timed thread per request (µs), when the child measured it.
    var cpuPerRequest: Double? = nil
    init(medianMicroseconds: Double, p99Microseconds: Double) {
        median = medianMicroseconds
        p99 = p99Microseconds
    }
    /// The median of each figure over `rounds`.
    init(medianOf rounds: [Summary]) {
        median = privsep_bench.median(rounds.map(\.median))
        p99 = privsep_bench.median(rounds.map(\.p99))
        let cpu = rounds.compactMap(\.cpuPerRequest)
        cpuPerRequest = cpu.count == rounds.count ? privsep_bench.median(cpu) : nil
    }
    init(_ samples: [UInt64]) {
        let sorted = samples.sorted()
        median = Double(sorted[sorted.count / 2]) / 1000
        p99 = Double(sorted[min(sorted.count - 1, sorted.count * 99 / 100)]) / 1000
    }
}

let devNull = OwnedFileDescriptor(adoptingRawValue: open("/dev/null", O_RDONLY | O_CLOEXEC))

@MainActor func measureC(fdCount: Int, count: Int) -> Summary {
    let child = spawnChild("c-echo")
    var samples = [UInt64](repeating: 0, count: count)
    check(cbench_round_trips(child.channel.unsafeRawValue, Int32(fdCount), devNull.unsafeRawValue, Int32(warmup), &warmupSamples) == 0, "C round trips")
    check(cbench_round_trips(child.channel.unsafeRawValue, Int32(fdCount), devNull.unsafeRawValue, Int32(count), &samples) == 0, "C call failed")
    child.finish()
    return Summary(samples)
}

@MainActor func measureSwift(fdCount: Int, count: Int) -> Summary {
    let child = spawnChild("swift-echo")
    var fds = OwnedFileDescriptors()
    for _ in 0..<fdCount { fds.append(try! devNull.duplicate()) }
    var samples = [UInt64](repeating: 0, count: count)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    defer { buffer.deallocate() }
    let request = [UInt8](repeating: 1, count: 16)
    request.withUnsafeBytes { request in
        for i in 0..<(warmup + count) {
            let start = cbench_now_ns()
            try! child.channel.send(request, passing: fds)
            _ = try! child.channel.receive(into: buffer, maximumFileDescriptors: 0)
            if i >= warmup { samples[i - warmup] = cbench_now_ns() - start }
        }
    }
    child.finish()
    return Summary(samples)
}

@MainActor func measureCBroker(count: Int) -> Summary {
    let child = spawnChild("c-broker")
    var samples = [UInt64](repeating: 0, count: count)
    check(cbench_request_fd_round_trips(child.channel.unsafeRawValue, Int32(warmup), &warmupSamples) == 0, "C call failed")
    check(cbench_request_fd_round_trips(child.channel.unsafeRawValue, Int32(count), &samples) == 0, "C call failed")
    child.finish()
    return Summary(samples)
}

@MainActor func measureSwiftBroker(count: Int) -> Summary {
    let child = spawnChild("swift-broker")
    var samples = [UInt64](repeating: 0, count: count)
    for i in 0..<(warmup + count) {
        let start = cbench_now_ns()
        try! child.channel.send(Envelope(requestID: UInt64(i), .open(OpenRequest(path: "/dev/null", flags: O_RDONLY))))
        var reply = try! child.channel.receiveMessage(maximumFileDescriptors: 1)
        check(reply.envelope.requestID == UInt64(i), "reply id mismatch")
        _ = reply.fileDescriptors.take(at: 0) // closed here
        if i >= warmup { samples[i - warmup] = cbench_now_ns() - start }
    }
    child.finish()
    return Summary(samples)
}

func format(_ value: Double) -> String {
    let rounded = (value * 100).rounded() / 100
    var text = "\(rounded)"
    if let dot = text.firstIndex(of: ".") {
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        if decimals < 2 { text += String(repeating: "0", count: 2 - decimals) }
    }
    return text
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

var uts = utsname()
uname(&uts)
let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
// Autogroup puts every session in a scheduling group of its own, so each worker (and each
// client of the C brokers making privsep's checks) is one: waking it costs more (BENCHMARKS.md, ninth round).
let autogroup = ((try? readProcFile("/proc/sys/kernel/sched_autogroup_enabled")) ?? "").hasPrefix("1") ? "on" : "off"
print("privsep-bench: \(iterations) round trips per row in \(rounds) rounds (each after \(warmup) warm-up), Linux \(release), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs, scheduler autogroup \(autogroup)")
print("times in microseconds (medians of the rounds); ratio = the median over rounds of Swift median / C median, each pair measured back to back")
print("")
print("| row | placement | C median | C p99 | Swift median | Swift p99 | ratio |")
print("|---|---|---:|---:|---:|---:|---:|")
for pinned in [true, false] {
    check(cbench_pin(pinned ? 0 : -1) == 0, "sched_setaffinity")
    let placement = pinned ? "pinned (CPU 0)" : "unpinned"
    let perRound = max(iterations / rounds, 100)
    var rows: [(name: String, c: [Summary], swift: [Summary])] = []
    for fdCount in [0, 1, 16, 253] {
        rows.append(("raw, \(fdCount) fd\(fdCount == 1 ? "" : "s")", [], []))
    }
    rows.append(("OPEN -> REPLY + 1 fd", [], []))
    // Round by round, every row and its reference in turn (see `rounds`).
    for _ in 0..<rounds {
        for (index, fdCount) in [0, 1, 16, 253].enumerated() {
            rows[index].c.append(measureC(fdCount: fdCount, count: perRound))
            rows[index].swift.append(measureSwift(fdCount: fdCount, count: perRound))
        }
        rows[4].c.append(measureCBroker(count: perRound))
        rows[4].swift.append(measureSwiftBroker(count: perRound))
    }
    for row in rows {
        let c = Summary(medianOf: row.c), swift = Summary(medianOf: row.swift)
        print("| \(row.name) | \(placement) | \(pad(format(c.median), 7)) | \(pad(format(c.p99), 7)) | \(pad(format(swift.median), 7)) | \(pad(format(swift.p99), 7)) | \(format(pairedRatio(row.swift, row.c)))x |")
    }
}

// MARK: Supervisor memory per idle worker

func residentKiB() -> Int {
    guard let text = try? readProcFile("/proc/self/status") else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
    return 0
}

func readProcFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The serving threads' CPU, in ms per second of a one-second window, while one worker
/// floods the supervisor and is kept throttled at 1,000 messages a second (its deadline,
/// the end of its pause, comes round about every millisecond). What the other workers of
/// the loop add to it is the cost of finding the due deadlines among them.
@MainActor func servingCPUWithAThrottledWorker(_ supervisor: Supervisor) async -> Double {
    var configuration = WorkerConfiguration(executable: selfPath(), arguments: ["--child", "flood-worker"])
    configuration.caps.messagesPerSecond = 1_000
    configuration.caps.messageBurst = 10
    configuration.caps.floodKillSeconds = 60
    let flood = try! await supervisor.spawn(configuration)
    usleep(300_000) // locked down, its burst spent, throttled
    let before = cbench_named_threads_cpu_ns("privsep-loop"), start = cbench_now_ns()
    usleep(1_000_000)
    let cpu = Double(cbench_named_threads_cpu_ns("privsep-loop") - before) / Double(cbench_now_ns() - start) * 1000
    flood.stop(grace: 0)
    let reason = await flood.exit()
    check(reason == .stoppedBySupervisor, "flood-worker: \(reason)")
    return cpu
}

@MainActor func measureIdleWorkers(_ count: Int) async -> (perWorkerKiB: Double, totalMiB: Double, seconds: Double, throttledCPU: (alone: Double, amongIdle: Double)) {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    let supervisor = try! Supervisor(logger: logger)
    // Warm the supervisor up with one worker so its own start-up is not counted.
    let warm = try! await supervisor.spawn(WorkerConfiguration(executable: selfPath(), arguments: ["--child", "idle-worker"]))
    while supervisor.workers().first?.sandbox == nil { usleep(1000) }
    let alone = await servingCPUWithAThrottledWorker(supervisor)
    let before = residentKiB()
    let start = cbench_now_ns()
    var configuration = WorkerConfiguration(executable: selfPath(), arguments: ["--child", "idle-worker"])
    configuration.resourceLimits = ResourceLimits(openFiles: 64)
    for _ in 0..<count { _ = try! await supervisor.spawn(configuration) }
    while supervisor.workers().filter({ $0.sandbox != nil }).count < count + 1 { usleep(10_000) }
    let seconds = Double(cbench_now_ns() - start) / 1e9
    let after = residentKiB()
    let amongIdle = await servingCPUWithAThrottledWorker(supervisor)
    warm.stop(grace: 0)
    await supervisor.shutdown(grace: 1)
    return (Double(after - before) / Double(count), Double(after - before) / 1024, seconds, (alone, amongIdle))
}

// MARK: Spawn to locked down

/// Compiles the C reference worker statically with cc (it is not a SwiftPM target,
/// which would link the Swift runtime into it). nil if cc or static libseccomp is missing.
func buildStaticCWorker() -> String? {
    let repository = String(#filePath.dropLast("Benchmarks/privsep-bench/main.swift".count))
    let output = "/tmp/privsep-bench-c-worker-\(getpid())"
    let command = "cc -O2 -static -I '\(repository)Sources/CPrivsepProtocol/include' '\(repository)Benchmarks/c-worker/c_worker.c' -lseccomp -o '\(output)' 2>/dev/null"
    return system(command) == 0 ? output : nil
}

@MainActor func measureStartup(executable: String, arguments: [String], runs: Int) async -> Summary {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    let supervisor = try! Supervisor(logger: logger)
    var samples: [UInt64] = []
    var configuration = WorkerConfiguration(executable: executable, arguments: arguments)
    configuration.requiredLayers = [.seccomp]
    let lockdownLog = "/tmp/privsep-bench-lockdown-\(getpid())"
    let logFD = open(lockdownLog, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o600)
    configuration.standardOutput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: logFD)))
    defer {
        let values = ((try? readProcFile(lockdownLog)) ?? "").split(separator: "\n").compactMap { Double($0) }.sorted()
        if !values.isEmpty { lastLockdownMicroseconds = values[values.count / 2] }
        unlink(lockdownLog)
    }
    for _ in 0..<(runs + runs / 10) {
        let start = cbench_now_ns()
        let handle = try! await supervisor.spawn(configuration)
        let reason = await handle.exit()
        check(reason == .exited(code: 0), "start-up worker: \(reason)")
        samples.append(cbench_now_ns() - start)
    }
    await supervisor.shutdown()
    return Summary(Array(samples.dropFirst(runs / 10)))
}

@MainActor func measureCommand(_ path: String, _ arguments: [String], runs: Int) -> Summary? {
    guard access(path, X_OK) == 0 else { return nil }
    var samples: [UInt64] = []
    for _ in 0..<runs {
        let start = cbench_now_ns()
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, path, nil, nil, argv, nil) == 0 else { return nil }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else { return nil }
        samples.append(cbench_now_ns() - start)
    }
    return Summary(samples)
}

/// The median time the Swift worker spent in Lockdown.apply in the last start-up row.
var lastLockdownMicroseconds: Double? = nil

if startupRuns > 0 {
    check(cbench_pin(-1) == 0, "sched_setaffinity")
    print("")
    print("| spawn → HELLO → lockdown → SANDBOX_STATUS → exit reaped | median ms | p99 ms |")
    print("|---|---:|---:|")
    let swift = await measureStartup(executable: selfPath(), arguments: ["--child", "ready-worker"], runs: startupRuns)
    print("| Swift worker (this binary: \(isStaticallyLinked() ? "static" : "dynamic") Swift runtime), seccomp + Landlock | \(format(swift.median / 1000)) | \(format(swift.p99 / 1000)) |")
    if let lockdown = lastLockdownMicroseconds {
        print("| … of which Lockdown.apply (libseccomp build + load, Landlock, report) | \(format(lockdown / 1000)) | |")
    }
    // The smallest real worker (Worker + PrivsepIPC only): --ready-worker PATH, else beside this binary.
    var small = String(selfPath().dropLast("privsep-bench".count)) + "bench-ready-worker"
    if let index = CommandLine.arguments.firstIndex(of: "--ready-worker"), index + 1 < CommandLine.arguments.count {
        // Absolute: the supervisor spawns with its own working directory rules.
        let given = CommandLine.arguments[index + 1]
        small = realpath(given, nil).map { pointer in defer { free(pointer) }; return String(cString: pointer) } ?? given
    }
    if access(small, X_OK) == 0 {
        let worker = await measureStartup(executable: small, arguments: [], runs: startupRuns)
        let linkage = hasProgramInterpreter(small) ? "dynamically linked (ld.so, libc, libstdc++)" : "one static executable"
        print("| Swift worker (bench-ready-worker: Worker library only, \(linkage)), seccomp + Landlock | \(format(worker.median / 1000)) | \(format(worker.p99 / 1000)) |")
        if let lockdown = lastLockdownMicroseconds {
            print("| … of which Lockdown.apply | \(format(lockdown / 1000)) | |")
        }
    } else {
        print("| bench-ready-worker: not built (swift build --product bench-ready-worker) | | |")
    }
    if let cWorker = buildStaticCWorker() {
        let c = await measureStartup(executable: cWorker, arguments: [], runs: startupRuns)
        print("| static C worker, same protocol, seccomp only (reference) | \(format(c.median / 1000)) | \(format(c.p99 / 1000)) |")
        unlink(cWorker)
    } else {
        print("| static C worker: not measured (needs cc and libseccomp.a) | | |")
    }
    if let bwrap = measureCommand("/usr/bin/bwrap", ["--unshare-all", "--ro-bind", "/", "/", "/bin/true"], runs: 50) {
        print("| bwrap --unshare-all /bin/true (reference) | \(format(bwrap.median / 1000)) | \(format(bwrap.p99 / 1000)) |")
    }
}

if idleWorkers > 0 {
    check(cbench_pin(-1) == 0, "sched_setaffinity")
    let result = await measureIdleWorkers(idleWorkers)
    print("")
    print("| supervisor memory | workers | RSS growth | per idle worker | spawn to locked down, all |")
    print("|---|---:|---:|---:|---:|")
    print("| one supervisor thread serving locked-down Swift workers | \(idleWorkers) | \(format(result.totalMiB)) MiB | \(format(result.perWorkerKiB)) KiB | \(format(result.seconds)) s |")
    print("")
    print("| one worker throttled at 1,000 messages/s | other workers on the loop | serving CPU, ms per s |")
    print("|---|---:|---:|")
    print("| beside one idle worker | 1 | \(format(result.throttledCPU.alone)) |")
    print("| beside the idle workers above | \(idleWorkers + 1) | \(format(result.throttledCPU.amongIdle)) |")
}

// MARK: Brokered opens

func prepareOpenTarget() {
    mkdir(openDirectory, 0o755)
    let fd = open(openDirectory + "/" + openName, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    _ = write(fd, "x", 1)
    close(fd)
}

func removeOpenTarget() {
    unlink(openDirectory + "/" + openName)
    rmdir(openDirectory)
}

/// A child's "MEDIAN P99 [CPU]" line (microseconds, as Summary prints them; CPU per request).
func parseSummary(_ text: String) -> Summary {
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
    check(fields.count == 2 || fields.count == 3, "bad summary line: \(text)")
    var summary = Summary(medianMicroseconds: fields[0], p99Microseconds: fields[1])
    summary.cpuPerRequest = fields.count == 3 ? fields[2] : nil
    return summary
}

/// The opens of one row: worker 0's latency (and its CPU per request), the rate
/// overall, and the serving side's CPU per request (µs; every serving thread).
struct OpenRun {
    var latency: Summary
    var rate: Double
    var servingCPUPerRequest: Double
}

extension OpenRun {
    /// The median of each figure over `rounds`.
    init(medianOf rounds: [OpenRun]) {
        self.init(latency: Summary(medianOf: rounds.map(\.latency)), rate: median(rounds.map(\.rate)),
                  servingCPUPerRequest: median(rounds.map(\.servingCPUPerRequest)))
    }
}

/// A pipe: workers wait on its read end (their stdin) until the parent writes.
struct StartGate {
    let read: Int32
    let write: Int32
    init() {
        var fds: [Int32] = [-1, -1]
        check(pipe(&fds) == 0, "pipe")
        read = fds[0]
        write = fds[1]
        _ = fcntl(read, F_SETFD, FD_CLOEXEC)
        _ = fcntl(write, F_SETFD, FD_CLOEXEC)
    }
    func open(_ count: Int) {
        let bytes = [UInt8](repeating: 1, count: count)
        _ = Glibc.write(write, bytes, count)
    }
    func close() {
        Glibc.close(read)
        Glibc.close(write)
    }
}

/// Swift: `workers` brokered workers on one supervisor with `servingThreads`, each
/// doing `opens` opens once all are locked down. Returns (per-open latency of
/// worker 0, opens per second overall).
/// `batch`: the worker sends that many requests at a time from C ("swift-batch-worker")
/// and reports no latency; the run's figures are then the serving CPU per request and,
/// with a batch of 1, the rate of privsep's serving side with C-code clients.
@MainActor func measureSwiftOpens(workers: Int, opens: Int, placement: Placement = .unmanaged, servingThreads: Int = 1,
                                  batch: Int? = nil) async -> OpenRun {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    let supervisor = try! Supervisor(logger: logger, placement: placement, servingThreads: servingThreads)
    var policy = Policy()
    policy.allow(path: openDirectory, .directory, [.read])
    let gate = StartGate()
    let output = "/tmp/privsep-bench-out-\(getpid())"
    let outputFD = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    var handles: [WorkerHandle] = []
    for index in 0..<workers {
        let arguments = batch.map { ["--child", "swift-batch-worker", "\(opens)", openDirectory + "/" + openName, "\($0)"] }
            ?? ["--child", "swift-open-worker", "\(opens)", openDirectory + "/" + openName]
        var configuration = WorkerConfiguration(executable: selfPath(), arguments: arguments, policy: policy)
        configuration.standardInput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: dup(gate.read))))
        configuration.standardOutput = index == 0 ? .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: dup(outputFD)))) : .null
        configuration.caps.messagesPerSecond = 10_000_000
        configuration.caps.messageBurst = 1_000_000
        handles.append(try! await supervisor.spawn(configuration))
    }
    close(outputFD)
    while supervisor.workers().filter({ $0.sandbox != nil }).count < workers { usleep(1000) }
    // Quiet before the gate, as the C rows are (measureCOpens): a pair that starts on two CPUs
    // stays there, each woken on its own idle CPU (a cross-CPU wake-up per message), so both
    // sides must start from the same calm. Without it, the spawn's last activity split
    // privsep's pair in every run: 67–72 µs unpinned against 7.6 after a 20 ms pause.
    usleep(200_000)
    let servingCPUBefore = cbench_named_threads_cpu_ns("privsep-loop")
    let start = cbench_now_ns()
    gate.open(workers)
    for handle in handles {
        let reason = await handle.exit()
        check(reason == .exited(code: 0), "open worker: \(reason)")
    }
    let seconds = Double(cbench_now_ns() - start) / 1e9
    let servingCPU = Double(cbench_named_threads_cpu_ns("privsep-loop") - servingCPUBefore) / Double(workers * opens) / 1000
    gate.close()
    await supervisor.shutdown()
    let summary = batch == nil ? parseSummary((try? readProcFile(output)) ?? "") : Summary(medianMicroseconds: 0, p99Microseconds: 0)
    unlink(output)
    return OpenRun(latency: summary, rate: Double(workers * opens) / seconds, servingCPUPerRequest: servingCPU)
}

/// C: the same with a minimal C broker (poll over every client) in this process,
/// with `placement` done by hand as the supervisor does it: clients spawned
/// SCHED_BATCH, or the broker on the last CPU and its clients on the others, or
/// (colocated) one broker thread per CPU of `colocatedOn`, each serving the
/// clients born on its CPU.
/// `checked`: the broker makes privsep's checks (openat2 beneath, fstat) and the
/// clients run under the brokered worker's lockdown, so what is left between this
/// and privsep is privsep's own code, not the price of the checks. `onEpoll` (with
/// `checked`): served as privsep's loop serves, from an epoll set, a client alone
/// ready read on until EAGAIN, so what is left is privsep's code, not its design.
/// Threads take the CPUs of the thread that creates them (C brokers, privsep's serving
/// threads), and Supervisor's placement divides the CPUs of the thread that creates it. A
/// thread missed while every thread was unpinned (started meanwhile by a thread pinned then)
/// keeps CPU 0 alone, and where the main actor ran on it, a colocated supervisor put both its
/// serving threads on CPU 0 (seen once under perf: 0.44x). So the opens/s rows give the
/// measuring thread every CPU before each measurement.
func giveMeasuringThreadEveryCPU() {
    check(cbench_pin_thread(-1) == 0, "sched_setaffinity")
}

@MainActor func measureCOpens(workers: Int, opens: Int, placement: Placement = .unmanaged, checked: Bool = false,
                              onEpoll: Bool = false, batch: Int? = nil, colocatedOn colocatedCPUs: [Int] = []) -> OpenRun {
    precondition(placement != .colocated || !colocatedCPUs.isEmpty, "colocated brokers need their CPUs")
    let servingCPU = Int32(allowedCPUs.last!) // the one Placement.dedicatedServingCPU picks
    switch placement {
    case .unmanaged, .colocated: break
    case .batchWorkers: check(cbench_sched_batch(1) == 0, "SCHED_BATCH")
    case .dedicatedServingCPU: check(cbench_pin_except(servingCPU) == 0, "sched_setaffinity")
    }
    let directory = open(openDirectory, O_PATH_DIRECTORY)
    let gate = StartGate()
    let output = "/tmp/privsep-bench-cout-\(getpid())"
    var parentEnds: [Int32] = []
    var pids: [pid_t] = []
    for index in 0..<workers {
        let pair = try! SeqpacketSocket.pair()
        let parent = pair.first, child = pair.second
        let arguments = batch.map { ["--child", "c-batch-client", "\(opens)", openName, "\($0)"] }
            ?? ["--child", checked || onEpoll ? "c-locked-open-client" : "c-open-client", "\(opens)", openName, index == 0 ? output : "/dev/null"]
        let path = selfPath()
        var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        // Colocated: client i is born on the CPU of the broker thread that serves it.
        if placement == .colocated { check(cbench_pin_thread(Int32(colocatedCPUs[index % colocatedCPUs.count])) == 0, "sched_setaffinity") }
        // The clients of the brokers making privsep's checks are privsep's workers in C:
        // under their lockdown, and in a session of their own.
        let pid = argv.withUnsafeMutableBufferPointer {
            cbench_spawn(path, $0.baseAddress!, child.unsafeRawValue, gate.read, checked || onEpoll ? 1 : 0)
        }
        for pointer in argv { free(pointer) }
        check(pid > 0, "spawn")
        pids.append(pid)
        _ = consume child
        parentEnds.append(parent.intoFileDescriptor().releaseUnsafeRawValue())
    }
    switch placement {
    case .unmanaged: break
    case .colocated: check(cbench_pin_thread(-1) == 0, "sched_setaffinity")
    case .batchWorkers: check(cbench_sched_batch(0) == 0, "SCHED_OTHER")
    case .dedicatedServingCPU: check(cbench_pin(servingCPU) == 0, "sched_setaffinity")
    }
    usleep(200_000) // the C clients start in well under this
    // The brokers run on threads of their own, started before the clients are let go,
    // as privsep's serving threads are: the thread that opens the gate (whose CPU the
    // woken clients start on) never serves them. Colocated: one per CPU, pinned.
    let brokerCPUs = placement == .colocated ? colocatedCPUs.map(Int32.init) : [-1]
    let kind = onEpoll ? CBENCH_EPOLL_CHECKED_OPEN_BROKER : checked ? CBENCH_CHECKED_OPEN_BROKER : CBENCH_OPEN_BROKER
    let brokers = cbench_start_brokers(kind, parentEnds, Int32(workers),
                                       directory, brokerCPUs, Int32(brokerCPUs.count))
    check(brokers != nil, "C broker threads")
    let start = cbench_now_ns()
    gate.open(workers)
    var brokerNanoseconds: UInt64 = 0
    check(cbench_join_brokers(brokers!, &brokerNanoseconds) == 0, "C broker")
    let seconds = Double(cbench_now_ns() - start) / 1e9
    let brokerCPU = Double(brokerNanoseconds) / Double(workers * opens) / 1000
    // Only the dedicated placement moved threads; the other rows keep the caller's pinning.
    if placement == .dedicatedServingCPU { check(cbench_pin(-1) == 0, "sched_setaffinity") }
    for fd in parentEnds { close(fd) }
    for pid in pids {
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        check(status == 0, "C client exited with \(status)")
    }
    gate.close()
    close(directory)
    let summary = batch == nil ? parseSummary((try? readProcFile(output)) ?? "") : Summary(medianMicroseconds: 0, p99Microseconds: 0)
    unlink(output)
    return OpenRun(latency: summary, rate: Double(workers * opens) / seconds, servingCPUPerRequest: brokerCPU)
}

let O_PATH_DIRECTORY: Int32 = 0o10000000 | O_DIRECTORY | O_CLOEXEC

@MainActor func measureDirectOpens(_ count: Int) -> Summary {
    let directory = open(openDirectory, O_PATH_DIRECTORY)
    defer { close(directory) }
    var samples = [UInt64](repeating: 0, count: count)
    check(cbench_direct_opens(directory, openName, Int32(count), &samples) == 0, "direct opens")
    return Summary(samples)
}

if openRuns > 0 {
    prepareOpenTarget()
    print("")
    // CPU per request: the serving thread's and the client's (worker's) own CPU time over
    // the row, divided by its requests (schedstat and CLOCK_THREAD_CPUTIME_ID): what each
    // side costs, free of how the two are scheduled.
    print("| open | placement | median µs | p99 µs | opens/s | serving CPU µs/req | client CPU µs/req | vs minimal C / vs C with checks / vs C on privsep's loop |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for pinned in [true, false] {
        check(cbench_pin(pinned ? 0 : -1) == 0, "sched_setaffinity")
        let placement = pinned ? "pinned (CPU 0)" : "unpinned"
        // Interleaved rounds (see `rounds`), the opens split between them.
        let perRound = max(openRuns / rounds, 1_000)
        var directRounds: [Summary] = [], cRounds: [OpenRun] = [], checkedRounds: [OpenRun] = [], epollRounds: [OpenRun] = []
        var swiftRounds: [OpenRun] = [], colocatedRounds: [OpenRun] = []
        for _ in 0..<rounds {
            directRounds.append(measureDirectOpens(perRound))
            cRounds.append(measureCOpens(workers: 1, opens: perRound))
            checkedRounds.append(measureCOpens(workers: 1, opens: perRound, checked: true))
            epollRounds.append(measureCOpens(workers: 1, opens: perRound, checked: true, onEpoll: true))
            swiftRounds.append(await measureSwiftOpens(workers: 1, opens: perRound))
            // Pinned, every placement puts both on CPU 0: the row is the one above.
            if !pinned { colocatedRounds.append(await measureSwiftOpens(workers: 1, opens: perRound, placement: .colocated)) }
        }
        let direct = Summary(medianOf: directRounds)
        print("| direct openat + close, in process | \(placement) | \(format(direct.median)) | \(format(direct.p99)) | | | | |")
        func row(_ name: String, _ run: OpenRun, _ ratios: String = "") {
            print("| \(name) | \(placement) | \(format(run.latency.median)) | \(format(run.latency.p99)) | \(Int(run.rate)) | \(format(run.servingCPUPerRequest)) | \(run.latency.cpuPerRequest.map(format) ?? "") | \(ratios) |")
        }
        let c = OpenRun(medianOf: cRounds)
        row("minimal C broker, 1 client", c)
        let checked = OpenRun(medianOf: checkedRounds)
        row("C broker with privsep's checks, 1 locked-down client", checked)
        row("C broker with privsep's checks on privsep's loop (epoll, read on), 1 locked-down client", OpenRun(medianOf: epollRounds))
        let swift = OpenRun(medianOf: swiftRounds)
        let ratios = [cRounds, checkedRounds, epollRounds].map { "\(format(pairedRatio(swiftRounds.map(\.latency), $0.map(\.latency))))x" }
        row("privsep brokered open (policy, openat2, audit), 1 worker", swift, ratios.joined(separator: " / "))
        if !colocatedRounds.isEmpty {
            let colocatedRatios = [cRounds, checkedRounds, epollRounds].map { "\(format(pairedRatio(colocatedRounds.map(\.latency), $0.map(\.latency))))x" }
            row("privsep brokered open, placement colocated (worker born on its serving thread's CPU)", OpenRun(medianOf: colocatedRounds),
                colocatedRatios.joined(separator: " / "))
        }
    }
    print("")
    // The worker's side alone, pinned, in rounds (see the "worker-path" child).
    check(cbench_pin(0) == 0, "sched_setaffinity")
    print("| worker side of an open, its reply already queued (no scheduling) | placement | C ns/request | privsep ns/request | privsep's own cost | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    var workerPathRounds: [(c: Double, swift: Double, coldC: Double, coldSwift: Double)] = []
    for _ in 0..<rounds {
        let output = "/tmp/privsep-bench-worker-path-\(getpid())"
        let child = spawnChild("worker-path", arguments: ["\(max(openRuns / rounds, 1_000))", output])
        child.finish()
        let fields = ((try? readProcFile(output)) ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
        unlink(output)
        check(fields.count == 4, "worker-path child wrote no result")
        workerPathRounds.append((fields[0], fields[1], fields[2], fields[3]))
    }
    let cPath = median(workerPathRounds.map(\.c)), swiftPath = median(workerPathRounds.map(\.swift))
    let pathRatio = median(workerPathRounds.map { $0.swift / $0.c })
    print("| SupervisorConnection.open vs send + recvmsg + close in C | pinned (CPU 0) | \(Int(cPath)) | \(Int(swiftPath)) | \(Int(swiftPath - cPath)) ns | \(format(pathRatio))x |")
    let coldCPath = median(workerPathRounds.map(\.coldC)), coldSwiftPath = median(workerPathRounds.map(\.coldSwift))
    let coldRatio = median(workerPathRounds.map { $0.coldSwift / $0.coldC })
    print("| … caches and TLB evicted before each request (as when many workers take turns on a CPU) | pinned (CPU 0) | \(Int(coldCPath)) | \(Int(coldSwiftPath)) | \(Int(coldSwiftPath - coldCPath)) ns | \(format(coldRatio))x |")
    print("")
    // The serving side's own cost: requests already queued, 8 at a time, the client asleep
    // while they are served (cbench_batched_requests), so a serving thread handles them one
    // after another with few context switches (0.25 per request instead of 2), beside the C
    // broker on privsep's loop fed alike. Serving CPU (schedstat) per request, in rounds.
    let batch = 8
    print("| serving side of an open, \(batch) requests queued at a time (few context switches) | placement | C on privsep's loop ns/request | privsep ns/request | privsep's own cost | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    var servingRounds: [(c: Double, swift: Double)] = []
    for _ in 0..<rounds {
        let perRound = max(openRuns / rounds / batch, 100) * batch
        let c = measureCOpens(workers: 1, opens: perRound, checked: true, onEpoll: true, batch: batch)
        let swift = await measureSwiftOpens(workers: 1, opens: perRound, batch: batch)
        servingRounds.append((c.servingCPUPerRequest * 1000, swift.servingCPUPerRequest * 1000))
    }
    let cServing = median(servingRounds.map(\.c)), swiftServing = median(servingRounds.map(\.swift))
    print("| privsep's serving thread vs the C broker's, serving CPU | pinned (CPU 0) | \(Int(cServing)) | \(Int(swiftServing)) | \(Int(swiftServing - cServing)) ns | \(format(median(servingRounds.map { $0.swift / $0.c })))x |")
    check(cbench_pin(-1) == 0, "sched_setaffinity")
    print("")
    // Placement (see Placement) and serving threads: the C brokers get the same placement
    // done by hand, so "vs C placed alike" compares like with like. A C broker is one
    // thread except under colocated, where it gets one thread per serving thread of
    // privsep's, each on its CPU (cbench_start_brokers). "vs C unmanaged"
    // compares with the one-thread minimal C broker left to the kernel, the reference as
    // the issue states it. "C with checks": the C pair making privsep's checks (see
    // measureCOpens), placed the same way.
    // "C on privsep's loop": that C pair again, the broker serving from an epoll set and
    // reading a lone ready client on until EAGAIN, as privsep's loop does (the open rows'
    // third C reference): what is left between it and privsep is privsep's code, not its design.
    // "privsep serving C clients": the same supervisor serving clients whose request loop is
    // C (the serving-side row's client, one request at a time) under the worker's lockdown:
    // privsep's serving side alone, beside the C broker placed alike.
    print("| opens/s | workers | placement | serving threads | minimal C broker | C with checks | C with checks on privsep's loop | privsep | vs C placed alike | vs C unmanaged | vs C with checks | vs C on privsep's loop | privsep serving C clients | … vs C placed alike |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    // CPU per open by side, for the rows where both were measured: what the like-for-like
    // gap is made of (BENCHMARKS.md, seventh round).
    var cpuBySide: [String] = []
    for workers in throughputWorkers {
        // Split between interleaved rounds (see `rounds`); each row is the median.
        let opens = max(openRuns * 2 / workers / rounds, 200)
        var unmanagedCRate: Double? = nil
        for placement in throughputPlacements {
            // One-thread C brokers are the same for every thread count of privsep's: measured once.
            var oneThreadC: (Double, Double, Double)? = nil
            for threads in throughputServingThreads {
                if placement == .dedicatedServingCPU && threads >= allowedCPUs.count { continue }
                // Colocated C brokers take the CPUs in turn, as colocated serving threads do.
                let brokerCPUs = placement == .colocated ? (0..<threads).map { allowedCPUs[$0 % allowedCPUs.count] } : []
                let measureC = placement == .colocated || oneThreadC == nil
                var cRates: [Double] = [], checkedRates: [Double] = [], swiftRates: [Double] = [], cClientRates: [Double] = []
                var loopRates: [Double] = []
                var cRuns: [OpenRun] = [], loopRuns: [OpenRun] = [], swiftRuns: [OpenRun] = []
                for _ in 0..<rounds {
                    giveMeasuringThreadEveryCPU()
                    if measureC {
                        cRuns.append(measureCOpens(workers: workers, opens: opens, placement: placement, colocatedOn: brokerCPUs))
                        cRates.append(cRuns.last!.rate)
                        checkedRates.append(measureCOpens(workers: workers, opens: opens, placement: placement, checked: true,
                                                          colocatedOn: brokerCPUs).rate)
                        giveMeasuringThreadEveryCPU()
                        loopRuns.append(measureCOpens(workers: workers, opens: opens, placement: placement, checked: true, onEpoll: true,
                                                      colocatedOn: brokerCPUs))
                        loopRates.append(loopRuns.last!.rate)
                    }
                    giveMeasuringThreadEveryCPU()
                    swiftRuns.append(await measureSwiftOpens(workers: workers, opens: opens, placement: placement, servingThreads: threads))
                    swiftRates.append(swiftRuns.last!.rate)
                    giveMeasuringThreadEveryCPU()
                    cClientRates.append(await measureSwiftOpens(workers: workers, opens: opens, placement: placement, servingThreads: threads,
                                                                batch: 1).rate)
                }
                let (cRate, checkedRate, loopRate) = measureC ? (median(cRates), median(checkedRates), median(loopRates)) : oneThreadC!
                if placement != .colocated { oneThreadC = (cRate, checkedRate, loopRate) }
                let swiftRate = median(swiftRates)
                if placement == .unmanaged && unmanagedCRate == nil { unmanagedCRate = cRate }
                let versusUnmanaged = unmanagedCRate.map { format(swiftRate / $0) + "x" } ?? "–"
                let cClientRate = median(cClientRates)
                print("| one supervisor, \(workers) workers | \(workers) | \(placement) | \(threads) | \(Int(cRate)) | \(Int(checkedRate)) | \(Int(loopRate)) | \(Int(swiftRate)) | \(format(swiftRate / cRate))x | \(versusUnmanaged) | \(format(swiftRate / checkedRate))x | \(format(swiftRate / loopRate))x | \(Int(cClientRate)) | \(format(cClientRate / cRate))x |")
                if !cRuns.isEmpty {
                    let c = OpenRun(medianOf: cRuns), loop = OpenRun(medianOf: loopRuns), swift = OpenRun(medianOf: swiftRuns)
                    let cClient = c.latency.cpuPerRequest ?? .nan, loopClient = loop.latency.cpuPerRequest ?? .nan
                    let swiftClient = swift.latency.cpuPerRequest ?? .nan
                    cpuBySide.append("| one supervisor, \(workers) workers | \(workers) | \(placement) | \(threads) | \(format(c.servingCPUPerRequest)) | \(format(loop.servingCPUPerRequest)) | \(format(swift.servingCPUPerRequest)) | \(format(swift.servingCPUPerRequest - c.servingCPUPerRequest)) | \(format(cClient)) | \(format(loopClient)) | \(format(swiftClient)) | \(format(swiftClient - cClient)) |")
                }
            }
        }
    }
    print("")
    print("| CPU µs per open, by side (medians of the rounds) | workers | placement | serving threads | minimal C broker, serving | C with checks on privsep's loop, serving | privsep, serving | privsep − minimal C | C client 0 | … of C on privsep's loop | privsep worker 0 | privsep − minimal C |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in cpuBySide { print(row) }
    removeOpenTarget()
}

// MARK: Brokered connects

/// One brokered worker doing `count` CONNECTs to 127.0.0.1:port; per-connect latency.
@MainActor func measureSwiftConnects(port: Int32, count: Int, placement: Placement = .unmanaged) async -> Summary {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    let supervisor = try! Supervisor(logger: logger, placement: placement)
    var policy = Policy()
    policy.allowConnect(to: AddressRule(network: .ipv4(.loopback, prefixLength: 32), ports: UInt16(port)...UInt16(port)))
    let gate = StartGate()
    let output = "/tmp/privsep-bench-cc-\(getpid())"
    let outputFD = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    var configuration = WorkerConfiguration(executable: selfPath(), arguments: ["--child", "swift-connect-worker", "\(count)", "\(port)"], policy: policy)
    configuration.standardInput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: dup(gate.read))))
    configuration.standardOutput = .descriptor(SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: outputFD)))
    configuration.caps.messagesPerSecond = 10_000_000
    configuration.caps.messageBurst = 1_000_000
    let handle = try! await supervisor.spawn(configuration)
    configuration = WorkerConfiguration(executable: "/")
    while supervisor.workers().filter({ $0.sandbox != nil }).count < 1 { usleep(1000) }
    usleep(100_000) // as measureCConnects: see measureSwiftOpens
    gate.open(1)
    let reason = await handle.exit()
    check(reason == .exited(code: 0), "connect worker: \(reason)")
    gate.close()
    await supervisor.shutdown()
    let summary = parseSummary((try? readProcFile(output)) ?? "")
    unlink(output)
    return summary
}

/// The same with the minimal C connect broker in this process and a C client.
@MainActor func measureCConnects(port: Int32, count: Int) -> Summary {
    let gate = StartGate()
    let output = "/tmp/privsep-bench-ccout-\(getpid())"
    let pair = try! SeqpacketSocket.pair()
    let parent = pair.first, child = pair.second
    let path = selfPath()
    let arguments = [path, "--child", "c-connect-client", "\(count)", "\(port)", output]
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    let pid = argv.withUnsafeMutableBufferPointer { cbench_spawn(path, $0.baseAddress!, child.unsafeRawValue, gate.read, 0) }
    for pointer in argv { free(pointer) }
    check(pid > 0, "spawn")
    _ = consume child
    let parentEnd = parent.intoFileDescriptor().releaseUnsafeRawValue()
    usleep(100_000)
    // On a thread of its own, as in measureCOpens.
    let ends = [parentEnd], anyCPU: [Int32] = [-1]
    let brokers = cbench_start_brokers(CBENCH_CONNECT_BROKER, ends, 1, -1, anyCPU, 1)
    check(brokers != nil, "C broker thread")
    gate.open(1)
    check(cbench_join_brokers(brokers!, nil) == 0, "C connect broker")
    close(parentEnd)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    check(status == 0, "C connect client exited with \(status)")
    gate.close()
    let summary = parseSummary((try? readProcFile(output)) ?? "")
    unlink(output)
    return summary
}

if connectRuns > 0 {
    let port = cbench_loopback_listener()
    check(port > 0, "loopback listener")
    print("")
    print("| connect to a loopback listener | placement | median µs | p99 µs | vs C broker |")
    print("|---|---|---:|---:|---:|")
    for pinned in [true, false] {
        check(cbench_pin(pinned ? 0 : -1) == 0, "sched_setaffinity")
        let placement = pinned ? "pinned (CPU 0)" : "unpinned"
        // Interleaved rounds (see `rounds`), the connects split between them.
        let perRound = max(connectRuns / rounds, 500)
        var directRounds: [Summary] = [], cRounds: [Summary] = [], swiftRounds: [Summary] = [], colocatedRounds: [Summary] = []
        for _ in 0..<rounds {
            var samples = [UInt64](repeating: 0, count: perRound)
            check(cbench_direct_connects(port, Int32(perRound), &samples) == 0, "direct connects")
            directRounds.append(Summary(samples))
            cRounds.append(measureCConnects(port: port, count: perRound))
            swiftRounds.append(await measureSwiftConnects(port: port, count: perRound))
            if !pinned { colocatedRounds.append(await measureSwiftConnects(port: port, count: perRound, placement: .colocated)) }
        }
        let direct = Summary(medianOf: directRounds)
        print("| direct socket + connect + close, in process | \(placement) | \(format(direct.median)) | \(format(direct.p99)) | |")
        let c = Summary(medianOf: cRounds)
        print("| minimal C broker (blocking connect), 1 client | \(placement) | \(format(c.median)) | \(format(c.p99)) | |")
        let swift = Summary(medianOf: swiftRounds)
        print("| privsep brokered CONNECT (policy, non-blocking connect, audit), 1 worker | \(placement) | \(format(swift.median)) | \(format(swift.p99)) | \(format(pairedRatio(swiftRounds, cRounds)))x |")
        if !colocatedRounds.isEmpty {
            let colocated = Summary(medianOf: colocatedRounds)
            print("| privsep brokered CONNECT, placement colocated (worker born on its serving thread's CPU) | \(placement) | \(format(colocated.median)) | \(format(colocated.p99)) | \(format(pairedRatio(colocatedRounds, cRounds)))x |")
        }
    }
    check(cbench_pin(-1) == 0, "sched_setaffinity")
}

// MARK: Worker pool

/// A pool of `size` bench pool workers, ready.
@MainActor func makeBenchPool(size: Int, jobsPerWorker: Int, placement: Placement = .unmanaged) async -> (Supervisor, WorkerPool) {
    var logger = Logger(label: "bench")
    logger.logLevel = .critical
    let supervisor = try! Supervisor(logger: logger, placement: placement)
    var worker = WorkerConfiguration(executable: selfPath(), arguments: ["--child", "pool-worker"])
    worker.requiredLayers = [.seccomp]
    worker.caps.messagesPerSecond = 10_000_000
    worker.caps.messageBurst = 1_000_000
    let configuration = WorkerPoolConfiguration(worker: worker, size: size, jobsPerWorker: jobsPerWorker, queueCapacity: 4 * size)
    let pool: WorkerPool
    do { pool = try await WorkerPool(supervisor: supervisor, configuration: configuration) } catch {
        check(false, "pool: \(error)")
        fatalError()
    }
    return (supervisor, pool)
}

let poolInput = [UInt8](repeating: 7, count: 16)

/// One warm worker, jobs one after another: the time of each `run`. `onPoolExecutor`: the
/// caller is a task on the pool's executor, its serving thread, rather than one on Swift's
/// cooperative pool.
@MainActor func measurePoolRoundTrips(_ count: Int, placement: Placement = .unmanaged, onPoolExecutor: Bool = false) async -> Summary {
    let (supervisor, pool) = await makeBenchPool(size: 1, jobsPerWorker: Int.max, placement: placement)
    usleep(200_000) // quiet first, as before the brokered opens it is paired with (see measureSwiftOpens)
    let samples = onPoolExecutor
        ? await withTaskExecutorPreference(pool.executor) { await timePoolJobs(pool, count) }
        : await timePoolJobs(pool, count)
    await pool.shutdown()
    await supervisor.shutdown()
    return Summary(samples)
}

/// Not isolated to the main actor, so it runs where the calling task prefers.
nonisolated func timePoolJobs(_ pool: WorkerPool, _ count: Int) async -> [UInt64] {
    var samples: [UInt64] = []
    samples.reserveCapacity(count)
    for index in 0..<(count + count / 10) {
        let start = cbench_now_ns()
        let output = try! await pool.run(input: poolInput)
        if index >= count / 10 { samples.append(cbench_now_ns() - start) }
        check(output.bytes == poolInput, "pool output")
    }
    return samples
}

/// The same job as a function call in this process.
@MainActor func measureInProcessJobs(_ count: Int) -> Summary {
    let handler: @Sendable ([UInt8]) -> [UInt8] = { $0 }
    var samples = [UInt64](repeating: 0, count: count)
    var total = 0
    for index in 0..<count {
        let start = cbench_now_ns()
        total &+= handler(poolInput).count
        samples[index] = cbench_now_ns() - start
    }
    check(total == 16 * count, "in-process jobs")
    return Summary(samples)
}

/// Jobs per second through a pool of `size`, with 2 × size jobs in flight; `onPoolExecutor`:
/// submitted by tasks on the pool's executor rather than the cooperative pool's.
@MainActor func measurePoolThroughput(size: Int, jobsPerWorker: Int, jobs: Int, placement: Placement = .unmanaged,
                                      onPoolExecutor: Bool = false) async -> Double {
    let (supervisor, pool) = await makeBenchPool(size: size, jobsPerWorker: jobsPerWorker, placement: placement)
    let start = cbench_now_ns()
    await withTaskExecutorPreference(onPoolExecutor ? pool.executor : nil) { await runPoolJobs(pool, jobs, inFlight: 2 * size) }
    let seconds = Double(cbench_now_ns() - start) / 1e9
    await pool.shutdown()
    await supervisor.shutdown()
    return Double(jobs) / seconds
}

/// Not isolated to the main actor, so it and its child tasks run where the calling task prefers.
nonisolated func runPoolJobs(_ pool: WorkerPool, _ jobs: Int, inFlight window: Int) async {
    await withTaskGroup(of: Void.self) { group in
        var submitted = 0, inFlight = 0
        while submitted < jobs || inFlight > 0 {
            while inFlight < window && submitted < jobs {
                group.addTask { _ = try! await pool.run(input: poolInput) }
                submitted += 1
                inFlight += 1
            }
            await group.next()
            inFlight -= 1
        }
    }
}

if poolJobs > 0 {
    print("")
    print("| pool job (16 bytes in, echoed back) | placement | median µs | p99 µs | vs brokered open |")
    print("|---|---|---:|---:|---:|")
    for pinned in [true, false] {
        check(cbench_pin(pinned ? 0 : -1) == 0, "sched_setaffinity")
        let pinning = pinned ? "pinned (CPU 0)" : "unpinned"
        let local = measureInProcessJobs(poolJobs)
        print("| the handler called in process (reference) | \(pinning) | \(format(local.median)) | \(format(local.p99)) | |")
        // In rounds, each beside a brokered open on the same placement (see `rounds`).
        if openRuns > 0 { prepareOpenTarget() }
        defer { if openRuns > 0 { removeOpenTarget() } }
        let perRound = max(poolJobs / rounds, 500)
        // Unpinned, also with the worker born on its serving thread's CPU, beside a brokered
        // open placed the same way: what the supervisor can do about cross-CPU wake-ups.
        // Then the caller on the pool's executor (its serving thread), under each placement.
        let choices: [(Placement, Bool)] = pinned ? [(.unmanaged, false), (.unmanaged, true)]
            : [(.unmanaged, false), (.colocated, false), (.unmanaged, true), (.colocated, true)]
        for (choice, onPoolExecutor) in choices {
            var poolRounds: [Summary] = [], openRounds: [Summary] = []
            for _ in 0..<rounds {
                poolRounds.append(await measurePoolRoundTrips(perRound, placement: choice, onPoolExecutor: onPoolExecutor))
                if openRuns > 0 { openRounds.append(await measureSwiftOpens(workers: 1, opens: perRound, placement: choice).latency) }
            }
            let pooled = Summary(medianOf: poolRounds)
            let ratio = openRuns > 0 ? format(pairedRatio(poolRounds, openRounds)) + "x" : "(open rows not run)"
            let label = switch (choice == .colocated, onPoolExecutor) {
            case (false, false): "pool.run on 1 warm worker, one job at a time"
            case (true, false): "pool.run, placement colocated (worker born on its serving thread's CPU)"
            case (false, true): "pool.run from a task on pool.executor (the serving thread)"
            case (true, true): "pool.run from a task on pool.executor, placement colocated"
            }
            print("| \(label) | \(pinning) | \(format(pooled.median)) | \(format(pooled.p99)) | \(ratio) |")
        }
    }
    check(cbench_pin(-1) == 0, "sched_setaffinity")
    let fresh = await measureStartup(executable: selfPath(), arguments: ["--child", "ready-worker"], runs: 100)
    print("")
    print("| jobs/s, unpinned | pool size | warm workers (never recycled) | warm, tasks on pool.executor | a fresh process per job (jobsPerWorker 1) |")
    print("|---|---:|---:|---:|---:|")
    for size in [1, 2, 4] {
        let warm = await measurePoolThroughput(size: size, jobsPerWorker: Int.max, jobs: poolJobs)
        let onExecutor = await measurePoolThroughput(size: size, jobsPerWorker: Int.max, jobs: poolJobs, onPoolExecutor: true)
        let recycled = await measurePoolThroughput(size: size, jobsPerWorker: 1, jobs: max(poolJobs / 10, 100))
        print("| WorkerPool | \(size) | \(Int(warm)) | \(Int(onExecutor)) | \(Int(recycled)) |")
    }
    print("| no pool: spawn → lockdown → exit per job, one at a time | 1 | | | \(Int(1e6 / fresh.median)) |")
    if throughputPlacements.count > 1 {
        print("")
        print("| warm jobs/s by placement, unpinned | pool size | jobs/s |")
        print("|---|---:|---:|")
        for size in [4, 16] {
            for placement in throughputPlacements {
                let rate = await measurePoolThroughput(size: size, jobsPerWorker: Int.max, jobs: poolJobs * 2, placement: placement)
                print("| WorkerPool, \(placement) | \(size) | \(Int(rate)) |")
            }
        }
    }
}
