import Glibc
import PrivsepIPC
@testable import Supervisor
import Testing

@Suite struct ServingThreadsTests {
    @Test func workersAreSpreadOverTheServingThreadsAndEachIsServed() async throws {
        let scratch = ScratchDirectory()
        scratch.mkdir("granted")
        scratch.write("granted/data.txt", "hello\n")
        var policy = Policy()
        policy.allow(path: scratch.path + "/granted", .directory, [.read])
        let supervisor = try Supervisor(logger: quietLogger(), servingThreads: 3)
        #expect(supervisor.loops.count == 3)
        let pipe = Pipe()
        let writeEnd = SharedFileDescriptor(pipe.write)
        let drain = PipeDrain(pipe.read)
        // Every worker waits for the go file, so all six are alive when the loads are read.
        var configuration = WorkerConfiguration(executable: testWorkerPath, policy: policy, name: "spread")
        configuration.arguments = ["handshake", "waitfile:\(scratch.path)/go", "read:\(scratch.path)/granted/data.txt"]
        configuration.standardOutput = .descriptor(writeEnd)
        var handles: [WorkerHandle] = []
        for _ in 0..<6 { handles.append(try await supervisor.spawn(configuration)) }
        configuration = WorkerConfiguration(executable: "/")
        // Spawned one after another, each onto the least loaded loop: two each.
        let perLoop = supervisor.loops.map { $0.call { $0.workerSnapshots().count } ?? -1 }
        #expect(perLoop == [2, 2, 2])
        #expect(supervisor.loops.map { $0.load.load(ordering: .relaxed) } == [2, 2, 2])
        let ids = supervisor.workers().map(\.id)
        #expect(ids.count == 6 && Set(ids).count == 6, "worker ids are unique across serving threads: \(ids)")
        scratch.write("go", "")
        for handle in handles { #expect(await handle.exit() == .exited(code: 0)) }
        _ = consume writeEnd
        let output = await withCheckedContinuation { continuation in
            Thread.detach { continuation.resume(returning: drain.text()) }
        }
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0 == "read \(scratch.path)/granted/data.txt hello" }.count == 6, "\(lines)")
        #expect(Set(lines.filter { $0.hasPrefix("welcome ") }).count == 6, "\(lines)")
        // Reaped workers leave their loop: nothing is counted against it any more.
        #expect(supervisor.loops.map { $0.load.load(ordering: .relaxed) } == [0, 0, 0])
        await supervisor.shutdown()
        await #expect(throws: SupervisorError.shuttingDown) { try await supervisor.spawn(WorkerConfiguration(executable: testWorkerPath)) }
    }

    @Test func aFailedSpawnGivesItsPlaceBack() async throws {
        let supervisor = try Supervisor(logger: quietLogger(), servingThreads: 2)
        for _ in 0..<3 {
            await #expect(throws: SupervisorError.self) {
                _ = try await supervisor.spawn(WorkerConfiguration(executable: "/nonexistent/program"))
            }
        }
        #expect(supervisor.loops.map { $0.load.load(ordering: .relaxed) } == [0, 0])
        #expect(throws: SupervisorError.self) { try supervisor.spawnBlocking(WorkerConfiguration(executable: "/nonexistent/program")) }
        #expect(supervisor.loops.map { $0.load.load(ordering: .relaxed) } == [0, 0])
        await supervisor.shutdown()
    }

    @Test func shutdownStopsTheWorkersOfEveryServingThreadTogether() async throws {
        let supervisor = try Supervisor(logger: quietLogger(), servingThreads: 2)
        var handles: [WorkerHandle] = []
        for _ in 0..<4 {
            var configuration = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "sleep:30"])
            configuration.standardOutput = .null
            handles.append(try await supervisor.spawn(configuration))
        }
        await supervisor.shutdown(grace: 5)
        for handle in handles { #expect(await handle.exit() == .stoppedBySupervisor) }
        #expect(supervisor.workers().isEmpty)
    }

    // A thread that ends leaves its pthread_t to the next one created (glibc reuses the
    // stack and the descriptor in it), so after shutdown another thread can carry an ended
    // serving thread's pthread_t; it must not be taken for that thread.
    @Test func aSupervisorThatHasShutDownCanBeAskedFromAnyThread() async {
        await #expect(processExitsWith: .success) {
            let supervisor = try! Supervisor(logger: quietLogger())
            await supervisor.shutdown()
            usleep(200_000) // the serving thread ends just after shutdown returns
            for _ in 0..<8 {
                pthread_join(Thread.start { precondition(supervisor.workers().isEmpty) }, nil)
            }
        }
    }

    @Test func servingThreadsAreBounded() {
        #expect(throws: SupervisorError.self) { try Supervisor(logger: quietLogger(), servingThreads: 0) }
        #expect(throws: SupervisorError.self) { try Supervisor(logger: quietLogger(), servingThreads: 257) }
    }

    @Test func poolsCreatedAtTheSameMomentSpreadOverTheServingThreads() async throws {
        let supervisor = try Supervisor(logger: quietLogger(), servingThreads: 2)
        var lone = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "sleep:30"])
        lone.standardOutput = .null
        let handle = try await supervisor.spawn(lone)
        var worker = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "serve"], name: "pool-worker")
        worker.standardOutput = .null
        // Loads 1 and 0: each pool, choosing before the other's workers exist, would take the
        // empty thread were the first pool's places not reserved as it chose.
        async let first = WorkerPool(supervisor: supervisor, configuration: WorkerPoolConfiguration(worker: worker, size: 2))
        async let second = WorkerPool(supervisor: supervisor, configuration: WorkerPoolConfiguration(worker: worker, size: 2))
        let pools = try await [first, second]
        let perLoop = supervisor.loops.map { $0.call { $0.workerSnapshots().count } ?? -1 }
        #expect(perLoop.sorted() == [2, 3], "\(perLoop)")
        #expect(supervisor.loops.map { $0.load.load(ordering: .relaxed) }.sorted() == [2, 3])
        for pool in pools { await pool.shutdown() }
        handle.stop(grace: 0)
        _ = await handle.exit()
        await supervisor.shutdown()
    }

    @Test func aPoolOnASupervisorWithSeveralServingThreadsRunsItsJobs() async throws {
        let supervisor = try Supervisor(logger: quietLogger(), servingThreads: 2)
        var worker = WorkerConfiguration(executable: testWorkerPath, arguments: ["handshake", "serve"], name: "pool-worker")
        worker.standardOutput = .null
        let pool = try await WorkerPool(supervisor: supervisor, configuration: WorkerPoolConfiguration(worker: worker, size: 2))
        for index in 0..<6 {
            let output = try await pool.run(input: Array("echo:job \(index)".utf8))
            #expect(String(decoding: output.bytes, as: UTF8.self) == "job \(index)")
        }
        await pool.shutdown()
        await supervisor.shutdown()
    }
}
