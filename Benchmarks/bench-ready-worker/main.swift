// bench-ready-worker: the smallest real worker, for privsep-bench's start-up row.
// It links only Worker and PrivsepIPC, as a production worker would: handshake,
// brokered lockdown (seccomp + Landlock), report, exit. Prints how long
// Lockdown.apply took, in microseconds.
import Glibc
import Worker

func nowNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

do {
    let connection = try SupervisorConnection.connect()
    let start = nowNanoseconds()
    try Lockdown.brokered().apply(reportingTo: connection)
    let line = "\(Double(nowNanoseconds() - start) / 1000)\n"
    _ = line.withCString { write(1, $0, strlen($0)) }
} catch {
    let line = "bench-ready-worker: \(error)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(1)
}
exit(0)
