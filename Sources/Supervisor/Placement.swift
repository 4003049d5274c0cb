import CPrivsepShims
import Glibc

/// Where the supervisor's serving thread and its workers run: a scheduling
/// choice for throughput when many workers are busy at once. It is never a
/// security boundary (a worker granted the `proc` group may change its own
/// affinity) and never changes what a worker may do.
///
/// Why it matters: a worker woken by a reply is normally placed on the CPU of
/// the thread that woke it, the serving thread, and preempts it. With several
/// busy workers the serving thread then waits to run on its own CPU while the
/// others idle. BENCHMARKS.md measures each choice beside a C broker.
///
/// The raw values are the names the `privsep` tool takes (`--placement`).
public enum Placement: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The kernel's scheduler decides everything (the default).
    case unmanaged
    /// Workers run under `SCHED_BATCH`: a worker woken by a reply does not preempt
    /// the serving thread on wake-up (the scheduler tick still can), so it keeps
    /// serving what is ready. Workers keep every CPU, and also never preempt other
    /// tasks on wake-up. Needs the serving thread under `SCHED_OTHER` or `SCHED_BATCH`
    /// (a real-time one could not switch back after each spawn).
    case batchWorkers = "batch-workers"
    /// The serving thread runs on one CPU of its own (the highest-numbered one the
    /// thread creating the supervisor may use) and every worker on the others. Needs
    /// at least two CPUs, and the workers lose one CPU for their own work. A worker
    /// granted the `proc` group may move itself onto the serving CPU; the threads
    /// serving intercept mode run on every CPU.
    case dedicatedServingCPU = "dedicated-cpu"

    public var description: String {
        switch self {
        case .unmanaged: "unmanaged"
        case .batchWorkers: "batch workers"
        case .dedicatedServingCPU: "dedicated serving CPU"
        }
    }
}

/// A set of CPUs, as the kernel's affinity mask (1024 CPUs, like glibc's cpu_set_t;
/// on a kernel built for more, reading an affinity fails with EINVAL).
struct CPUSet: Equatable, Sendable {
    static let capacity = 1024
    private(set) var words = [UInt64](repeating: 0, count: capacity / 64)

    init() {}

    init(_ cpus: some Sequence<Int>) {
        for cpu in cpus { insert(cpu) }
    }

    func contains(_ cpu: Int) -> Bool {
        (0..<Self.capacity).contains(cpu) && words[cpu / 64] & (1 << UInt64(cpu % 64)) != 0
    }

    mutating func insert(_ cpu: Int) {
        precondition((0..<Self.capacity).contains(cpu), "CPU \(cpu) is beyond the mask")
        words[cpu / 64] |= 1 << UInt64(cpu % 64)
    }

    mutating func remove(_ cpu: Int) {
        guard (0..<Self.capacity).contains(cpu) else { return }
        words[cpu / 64] &= ~(1 << UInt64(cpu % 64))
    }

    /// The CPUs in the set, lowest first.
    var members: [Int] { (0..<Self.capacity).filter(contains) }

    /// Reads or writes the mask as the raw bytes the affinity syscalls take.
    mutating func withUnsafeMutableWords<T>(_ body: (UnsafeMutableBufferPointer<UInt64>) -> T) -> T {
        words.withUnsafeMutableBufferPointer { body($0) }
    }

    func withUnsafeWords<T>(_ body: (UnsafeBufferPointer<UInt64>) -> T) -> T {
        words.withUnsafeBufferPointer(body)
    }
}

/// What a ``Placement`` means on this machine, worked out once when the
/// supervisor starts from the thread creating it, whose CPUs and scheduling policy
/// the loop thread inherits: where the serving thread runs, where workers are born,
/// and what the serving thread returns to after each spawn.
struct PlacementPlan: Sendable, Equatable {
    /// The one CPU the serving thread runs on, when it has one of its own.
    var servingCPU: Int?
    /// Where every worker starts (its threads inherit it); nil: wherever the
    /// spawning thread may run.
    var workerCPUs: CPUSet?
    /// When workers start under SCHED_BATCH: the serving thread's own policy
    /// (SCHED_OTHER or SCHED_BATCH, with SCHED_RESET_ON_FORK if set), restored after each spawn.
    var servingPolicy: Int32?

    static let unmanaged = PlacementPlan()

    /// The plan for `placement` given the CPUs and the scheduling policy the
    /// serving thread will have. Fails (rather than quietly doing nothing) when the
    /// placement cannot be had.
    init(_ placement: Placement, allowed: CPUSet, policy: Int32) throws(SupervisorError) {
        switch placement {
        case .unmanaged:
            break
        case .batchWorkers:
            let base = policy & ~privsep_SCHED_RESET_ON_FORK
            // Switched to SCHED_BATCH for each spawn, a real-time thread could not always switch back.
            guard base == SCHED_OTHER || base == privsep_SCHED_BATCH else {
                throw .systemError("placement \(placement) needs the serving thread under SCHED_OTHER; the thread creating the supervisor runs under policy \(base)")
            }
            servingPolicy = policy
        case .dedicatedServingCPU:
            let cpus = allowed.members
            guard let serving = cpus.last, cpus.count >= 2 else {
                throw .systemError("placement \(placement) needs at least two CPUs; the thread creating the supervisor may use \(cpus.count)")
            }
            var others = allowed
            others.remove(serving)
            servingCPU = serving
            workerCPUs = others
        }
    }

    private init() {}

    /// Where the supervisor's other threads (those serving intercept mode) run: every
    /// CPU there was to divide, so they crowd neither side. nil: where they start.
    var helperThreadCPUs: CPUSet? {
        guard let servingCPU, var all = workerCPUs else { return nil }
        all.insert(servingCPU)
        return all
    }
}
