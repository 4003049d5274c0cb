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
/// supervisor starts: the serving thread's CPU and where workers are born.
struct PlacementPlan: Sendable, Equatable {
    /// The one CPU the serving thread runs on, when it has one of its own.
    var servingCPU: Int?
    /// Where every worker starts (its threads inherit it); nil: wherever the
    /// spawning thread may run.
    var workerCPUs: CPUSet?
    /// Workers start under SCHED_BATCH.
    var batchWorkers = false
    /// Where the supervisor's other threads (those serving intercept mode) run:
    /// every CPU there was to divide, so they crowd neither side.
    var helperThreadCPUs: CPUSet?

    static let unmanaged = PlacementPlan()

    /// The plan for `placement` given the CPUs the serving thread may use.
    /// Fails (rather than quietly doing nothing) when the placement cannot be had.
    init(_ placement: Placement, allowed: CPUSet) throws(SupervisorError) {
        switch placement {
        case .unmanaged:
            break
        case .batchWorkers:
            batchWorkers = true
        case .dedicatedServingCPU:
            let cpus = allowed.members
            guard let serving = cpus.last, cpus.count >= 2 else {
                throw .systemError("placement \(placement) needs at least two CPUs; the thread creating the supervisor may use \(cpus.count)")
            }
            var others = allowed
            others.remove(serving)
            servingCPU = serving
            workerCPUs = others
            helperThreadCPUs = allowed
        }
    }

    private init() {}
}

/// What the serving thread returns to after each placed spawn, recorded on it once
/// when the supervisor starts. Restoring to this fixed state rather than to the state
/// of a moment before means a restore that fails once is not carried into every
/// later spawn.
struct SpawningThreadBaseline: Sendable {
    /// The thread's policy (SCHED_RESET_ON_FORK included) and priority, when spawns switch it to SCHED_BATCH.
    var scheduler: (policy: Int32, priority: Int32)?
    /// The thread's own CPU, when spawns move it onto the workers' CPUs.
    var affinity: CPUSet?
}
