import CPrivsepShims
import Glibc

/// Where the supervisor's serving threads and its workers run: a scheduling
/// choice for throughput when many workers are busy at once. It is never a
/// security boundary (a worker granted the `proc` group may change its own
/// affinity) and never changes what a worker may do.
///
/// Why it matters: a worker woken by a reply is normally placed on the CPU of
/// the thread that woke it, the serving thread, and preempts it. With several
/// busy workers the serving thread then waits to run on its own CPU while the
/// others idle; and a request or reply that wakes a process on another CPU pays
/// for that CPU's wake-up. BENCHMARKS.md measures each choice, with one serving
/// thread and with one per CPU, beside a C broker placed the same way.
///
/// The raw values are the names the `privsep` tool takes (`--placement`).
public enum Placement: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The kernel's scheduler decides everything (the default).
    ///
    /// Whether a busy worker and its serving thread then share a CPU depends on how they
    /// happened to start, and a pair that ends up on two CPUs stays there: each is woken
    /// on its own idle CPU, so every request and every reply pays a cross-CPU wake-up
    /// (on the project's VM 60–70 µs per brokered open instead of about 7.7).
    /// ``colocated`` rules that out.
    case unmanaged
    /// Workers run under `SCHED_BATCH`: a worker woken by a reply does not preempt
    /// the serving thread on wake-up (the scheduler tick still can), so it keeps
    /// serving what is ready. Workers keep every CPU, and also never preempt other
    /// tasks on wake-up. Needs the serving thread under `SCHED_OTHER` or `SCHED_BATCH`
    /// (a real-time one could not switch back after each spawn).
    case batchWorkers = "batch-workers"
    /// Each serving thread runs on one CPU of its own (the highest-numbered ones the
    /// thread creating the supervisor may use) and every worker on the others. Needs
    /// a CPU more than there are serving threads, and the workers lose those CPUs for
    /// their own work. A worker granted the `proc` group may move itself onto a
    /// serving CPU; the threads serving intercept mode run on every CPU.
    case dedicatedServingCPU = "dedicated-cpu"
    /// Each serving thread runs on one CPU, and every worker it serves is born on
    /// that same CPU: a request and its reply never cross CPUs, so no wake-up pays
    /// for waking another CPU (tens of microseconds on a virtual machine). Serving
    /// threads take the CPUs in turn, so give the supervisor one per CPU
    /// (`servingThreads`) and new workers spread evenly over them. The price: a worker
    /// cannot move to an idle CPU, so one worker much busier than the rest slows the
    /// others on its CPU and the serving of their requests. A ``WorkerPool`` lives on
    /// one serving thread, so here all its workers share one CPU: this placement suits
    /// many workers that mostly ask, not a pool of CPU-bound parsers. Intercept mode's
    /// serving threads run on every CPU.
    case colocated

    public var description: String {
        switch self {
        case .unmanaged: "unmanaged"
        case .batchWorkers: "batch workers"
        case .dedicatedServingCPU: "dedicated serving CPU"
        case .colocated: "colocated"
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

/// What a ``Placement`` means on this machine for one serving thread, worked out
/// once when the supervisor starts from the thread creating it, whose CPUs and
/// scheduling policy the loop threads inherit: where the serving thread runs, where
/// its workers are born, and what it returns to after each spawn.
struct PlacementPlan: Sendable, Equatable {
    /// The one CPU the serving thread runs on, when it has one of its own.
    var servingCPU: Int?
    /// Where every worker starts (its threads inherit it); nil: wherever the
    /// spawning thread may run.
    var workerCPUs: CPUSet?
    /// When workers start under SCHED_BATCH: the serving thread's own policy
    /// (SCHED_OTHER or SCHED_BATCH, with SCHED_RESET_ON_FORK if set), restored after each spawn.
    var servingPolicy: Int32?
    /// Where the supervisor's other threads (those serving intercept mode) run: every
    /// CPU there was to divide, so they crowd neither side. nil: where they start.
    var helperThreadCPUs: CPUSet?

    static let unmanaged = PlacementPlan()

    /// The plan for a supervisor with one serving thread.
    init(_ placement: Placement, allowed: CPUSet, policy: Int32) throws(SupervisorError) {
        self = try Self.plans(placement, servingThreads: 1, allowed: allowed, policy: policy)[0]
    }

    private init() {}

    /// One plan per serving thread for `placement`, given the CPUs and the scheduling
    /// policy the serving threads will have. Fails (rather than quietly doing
    /// nothing) when the placement cannot be had.
    static func plans(_ placement: Placement, servingThreads: Int, allowed: CPUSet, policy: Int32) throws(SupervisorError) -> [PlacementPlan] {
        precondition(servingThreads >= 1, "at least one serving thread")
        let cpus = allowed.members
        switch placement {
        case .unmanaged:
            return Array(repeating: .unmanaged, count: servingThreads)
        case .batchWorkers:
            let base = policy & ~privsep_SCHED_RESET_ON_FORK
            // Switched to SCHED_BATCH for each spawn, a real-time thread could not always switch back.
            guard base == SCHED_OTHER || base == privsep_SCHED_BATCH else {
                throw .systemError("placement \(placement) needs the serving thread under SCHED_OTHER; the thread creating the supervisor runs under policy \(base)")
            }
            var plan = PlacementPlan()
            plan.servingPolicy = policy
            return Array(repeating: plan, count: servingThreads)
        case .dedicatedServingCPU:
            // The serving threads take the highest-numbered CPUs, one each; workers the rest.
            guard cpus.count > servingThreads else {
                throw .systemError("placement \(placement) needs at least \(servingThreads + 1) CPUs (one for each of \(servingThreads) serving threads, one for workers); the thread creating the supervisor may use \(cpus.count)")
            }
            let serving = cpus.suffix(servingThreads)
            var others = allowed
            for cpu in serving { others.remove(cpu) }
            return serving.map { cpu in
                var plan = PlacementPlan()
                plan.servingCPU = cpu
                plan.workerCPUs = others
                plan.helperThreadCPUs = allowed
                return plan
            }
        case .colocated:
            guard !cpus.isEmpty else {
                throw .systemError("placement \(placement) needs at least one CPU; the thread creating the supervisor may use none")
            }
            return (0..<servingThreads).map { index in
                var plan = PlacementPlan()
                plan.servingCPU = cpus[index % cpus.count]
                plan.workerCPUs = CPUSet([cpus[index % cpus.count]])
                plan.helperThreadCPUs = allowed
                return plan
            }
        }
    }
}
