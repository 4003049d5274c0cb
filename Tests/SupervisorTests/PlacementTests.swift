import Foundation
import Glibc
@testable import Supervisor
import Testing

@Suite struct PlacementTests {
    // MARK: The plan

    @Test func aDedicatedCPUIsTheHighestAllowedOneAndWorkersGetTheRest() throws {
        let plan = try PlacementPlan(.dedicatedServingCPU, allowed: CPUSet([0, 2, 5, 7]), policy: SCHED_OTHER)
        #expect(plan.servingCPU == 7)
        #expect(plan.workerCPUs?.members == [0, 2, 5])
        #expect(plan.helperThreadCPUs?.members == [0, 2, 5, 7])
        #expect(plan.servingPolicy == nil)
    }

    @Test func aDedicatedCPUNeedsTwoCPUs() {
        #expect(throws: SupervisorError.self) { try PlacementPlan(.dedicatedServingCPU, allowed: CPUSet([3]), policy: SCHED_OTHER) }
        #expect(throws: SupervisorError.self) { try PlacementPlan(.dedicatedServingCPU, allowed: CPUSet(), policy: SCHED_OTHER) }
    }

    @Test func batchPlansKeepTheServingPolicyToReturnTo() throws {
        let batch = try PlacementPlan(.batchWorkers, allowed: CPUSet([0, 1]), policy: SCHED_OTHER)
        #expect(batch.servingPolicy == SCHED_OTHER && batch.servingCPU == nil && batch.workerCPUs == nil && batch.helperThreadCPUs == nil)
        let resetOnFork = SCHED_OTHER | privsepSchedResetOnFork
        #expect(try PlacementPlan(.batchWorkers, allowed: CPUSet([0]), policy: resetOnFork).servingPolicy == resetOnFork)
        #expect(try PlacementPlan(.batchWorkers, allowed: CPUSet([0]), policy: privsepSchedBatch).servingPolicy == privsepSchedBatch)
        // A real-time serving thread could not always switch back after each spawn.
        for realTime in [SCHED_FIFO, SCHED_RR, SCHED_FIFO | privsepSchedResetOnFork] {
            #expect(throws: SupervisorError.self) { try PlacementPlan(.batchWorkers, allowed: CPUSet([0]), policy: realTime) }
        }
        #expect(try PlacementPlan(.unmanaged, allowed: CPUSet([0, 1]), policy: SCHED_FIFO) == .unmanaged)
    }

    @Test func severalServingThreadsGetAPlanEach() throws {
        let allowed = CPUSet([0, 2, 5, 7])
        #expect(try PlacementPlan.plans(.unmanaged, servingThreads: 3, allowed: allowed, policy: SCHED_OTHER) == Array(repeating: .unmanaged, count: 3))
        let batch = try PlacementPlan.plans(.batchWorkers, servingThreads: 2, allowed: allowed, policy: SCHED_OTHER)
        #expect(batch.count == 2 && batch.allSatisfy { $0.servingPolicy == SCHED_OTHER && $0.workerCPUs == nil })
        // Dedicated: the serving threads take the highest CPUs, one each; workers the rest.
        let dedicated = try PlacementPlan.plans(.dedicatedServingCPU, servingThreads: 2, allowed: allowed, policy: SCHED_OTHER)
        #expect(dedicated.map(\.servingCPU) == [5, 7])
        #expect(dedicated.allSatisfy { $0.workerCPUs?.members == [0, 2] && $0.helperThreadCPUs?.members == [0, 2, 5, 7] })
        #expect(throws: SupervisorError.self) {
            try PlacementPlan.plans(.dedicatedServingCPU, servingThreads: 4, allowed: allowed, policy: SCHED_OTHER)
        }
        // Colocated: thread i on the i-th CPU (in turn), its workers born on that CPU alone.
        let colocated = try PlacementPlan.plans(.colocated, servingThreads: 5, allowed: allowed, policy: SCHED_OTHER)
        #expect(colocated.map(\.servingCPU) == [0, 2, 5, 7, 0])
        #expect(colocated.map { $0.workerCPUs?.members ?? [] } == [[0], [2], [5], [7], [0]])
        #expect(colocated.allSatisfy { $0.helperThreadCPUs == allowed && $0.servingPolicy == nil })
        #expect(throws: SupervisorError.self) { try PlacementPlan.plans(.colocated, servingThreads: 1, allowed: CPUSet(), policy: SCHED_OTHER) }
    }

    @Test func cpuSetKeepsToItsMask() {
        var set = CPUSet([0, 63, 64, CPUSet.capacity - 1])
        #expect(set.members == [0, 63, 64, CPUSet.capacity - 1])
        #expect(!set.contains(CPUSet.capacity) && !set.contains(-1))
        set.remove(63)
        set.remove(-1)
        set.remove(CPUSet.capacity)
        #expect(set.members == [0, 64, CPUSet.capacity - 1])
    }

    // MARK: Real workers

    @Test func dedicatedServingCPUSeparatesTheLoopThreadFromEveryWorker() async throws {
        let allowed = try system_sched_getaffinity().get().members
        guard allowed.count >= 2 else {
            #expect(throws: SupervisorError.self) { try Supervisor(logger: quietLogger(), placement: .dedicatedServingCPU) }
            return
        }
        let supervisor = try Supervisor(logger: quietLogger(), placement: .dedicatedServingCPU)
        #expect(loopThreadCPUs(supervisor) == [allowed.last!])
        let run = try await runWorker(["handshake", "placement"], supervisor: supervisor)
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "placement cpus \(cpuList(allowed.dropLast())) policy \(SCHED_OTHER)")
        // Spawning moved the loop thread onto the workers' CPUs for a moment; it is back.
        #expect(loopThreadCPUs(supervisor) == [allowed.last!])
        await supervisor.shutdown()
    }

    @Test func batchWorkersAreBornUnderSchedBatchAndTheLoopThreadIsNot() async throws {
        let allowed = try system_sched_getaffinity().get().members
        let supervisor = try Supervisor(logger: quietLogger(), placement: .batchWorkers)
        let run = try await runWorker(["handshake", "placement"], supervisor: supervisor)
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "placement cpus \(cpuList(allowed)) policy \(privsepSchedBatch)")
        let loopPolicy = supervisor.loops[0].call { _ in try? system_sched_getscheduler().get().policy }
        #expect(loopPolicy == SCHED_OTHER)
        #expect(loopThreadCPUs(supervisor) == allowed)
        await supervisor.shutdown()
    }

    @Test func aFailedSpawnStillPutsTheLoopThreadBack() async throws {
        let allowed = try system_sched_getaffinity().get().members
        let placement: Placement = allowed.count >= 2 ? .dedicatedServingCPU : .batchWorkers
        let supervisor = try Supervisor(logger: quietLogger(), placement: placement)
        let before = loopThreadCPUs(supervisor)
        await #expect(throws: SupervisorError.self) {
            _ = try await supervisor.spawn(WorkerConfiguration(executable: "/nonexistent/program"))
        }
        #expect(loopThreadCPUs(supervisor) == before)
        let loopPolicy = supervisor.loops[0].call { _ in try? system_sched_getscheduler().get().policy }
        #expect(loopPolicy == SCHED_OTHER)
        await supervisor.shutdown()
    }

    @Test func batchWorkersAreRefusedForARealTimeServingThread() async throws {
        // Created on a SCHED_FIFO thread, the loop thread is SCHED_FIFO too: switched to
        // SCHED_BATCH for each spawn, it could not always switch back, so it is refused.
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            Thread.detach {
                var parameters = sched_param(sched_priority: 1)
                guard sched_setscheduler(0, SCHED_FIFO, &parameters) == 0 else {
                    continuation.resume(returning: "no SCHED_FIFO here: \(errno)")
                    return
                }
                do {
                    _ = try Supervisor(logger: quietLogger(), placement: .batchWorkers)
                    continuation.resume(returning: "accepted")
                } catch {
                    continuation.resume(returning: "\(error)")
                }
            }
        }
        if outcome.hasPrefix("no SCHED_FIFO") { return } // needs CAP_SYS_NICE
        #expect(outcome.contains("needs the serving thread under SCHED_OTHER"), "\(outcome)")
    }

    @Test func underADedicatedServingCPUTheNotificationThreadRunsOnEveryCPU() async throws {
        let allowed = try system_sched_getaffinity().get().members
        guard allowed.count >= 2 else { return } // a dedicated CPU needs two (above)
        let supervisor = try Supervisor(logger: quietLogger(), placement: .dedicatedServingCPU)
        // The program runs until the test has looked (then it is stopped): a program with
        // a time of its own could end before a loaded machine lets the test look at all.
        let configuration = WorkerConfiguration.intercepting(program: "/usr/bin/sleep", arguments: ["60"], policy: dynamicProgramPolicy(),
                                                             helper: InterceptTests.binDirectory + "/privsep-intercept")
        let handle = try await supervisor.spawn(configuration)
        // The thread starts on the loop thread's one CPU and moves itself to all of them.
        // Other tests' serving threads start on every CPU; one on the loop's CPU alone
        // would be one that did not move.
        var placements: [String] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let now = notificationThreadCPUs()
            if !now.isEmpty { placements = now }
            if !now.isEmpty && now.allSatisfy({ $0 == cpuList(allowed) }) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!placements.isEmpty, "no privsep-notify thread while an intercepted program runs")
        #expect(placements.allSatisfy { $0 == cpuList(allowed) }, "\(placements), expected \(cpuList(allowed))")
        #expect(loopThreadCPUs(supervisor) == [allowed.last!])
        handle.stop(grace: 1)
        #expect(await handle.exit() == .stoppedBySupervisor)
        await supervisor.shutdown()
    }

    @Test func colocatedWorkersAreBornOnTheCPUOfTheThreadServingThem() async throws {
        // One serving thread per CPU (at most 256, the supervisor's limit).
        let allowed = Array(try system_sched_getaffinity().get().members.prefix(256))
        let supervisor = try Supervisor(logger: quietLogger(), placement: .colocated, servingThreads: allowed.count)
        #expect(supervisor.loops.map { loopThreadCPUs($0) } == allowed.map { [$0] })
        // Spawned one after another, each once the last has exited: every loop is as
        // loaded as the others, so each gets one in turn.
        var workerCPUs: [String] = []
        for _ in allowed {
            let run = try await runWorker(["handshake", "placement"], supervisor: supervisor)
            #expect(run.reason == .exited(code: 0))
            workerCPUs.append(run.lines.last ?? "")
        }
        #expect(workerCPUs.sorted() == allowed.map { "placement cpus \($0) policy \(SCHED_OTHER)" }.sorted())
        // Each spawn moved its loop thread onto the worker's CPU, which is its own.
        #expect(supervisor.loops.map { loopThreadCPUs($0) } == allowed.map { [$0] })
        await supervisor.shutdown()
    }

    @Test func aDedicatedCPUForEachServingThreadNeedsCPUsLeftForWorkers() throws {
        let allowed = try system_sched_getaffinity().get().members
        #expect(throws: SupervisorError.self) {
            try Supervisor(logger: quietLogger(), placement: .dedicatedServingCPU, servingThreads: allowed.count)
        }
    }

    @Test func unmanagedWorkersRunWhereTheSupervisorMay() async throws {
        let allowed = try system_sched_getaffinity().get().members
        let run = try await runWorker(["handshake", "placement"])
        #expect(run.reason == .exited(code: 0))
        #expect(run.lines.last == "placement cpus \(cpuList(allowed)) policy \(SCHED_OTHER)")
    }
}

private let privsepSchedBatch: Int32 = 3
private let privsepSchedResetOnFork: Int32 = 0x4000_0000

private func loopThreadCPUs(_ supervisor: Supervisor) -> [Int]? {
    loopThreadCPUs(supervisor.loops[0])
}

private func loopThreadCPUs(_ loop: EventLoop) -> [Int]? {
    loop.call { _ in try? system_sched_getaffinity().get().members } ?? nil
}

/// Cpus_allowed_list of every thread of this process named privsep-notify (intercept mode's serving threads).
private func notificationThreadCPUs() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { tid in
        guard let name = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8),
              name.trimmingCharacters(in: .whitespacesAndNewlines) == "privsep-notify",
              let status = try? String(contentsOfFile: "/proc/self/task/\(tid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return nil }
        return line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
    }
}

/// CPUs as the kernel lists them in /proc (Cpus_allowed_list): "0-3,5".
private func cpuList(_ cpus: some Collection<Int>) -> String {
    var ranges: [String] = []
    var start: Int? = nil, previous = -2
    for cpu in cpus.sorted() + [Int.min] {
        if cpu == previous + 1 { previous = cpu; continue }
        if let start { ranges.append(start == previous ? "\(start)" : "\(start)-\(previous)") }
        start = cpu
        previous = cpu
    }
    return ranges.joined(separator: ",")
}
