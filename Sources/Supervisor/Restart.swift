/// When a worker that ended is started again.
public struct RestartPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Never: the first exit is final.
        case never
        /// After anything but a clean exit (status 0) or a stop by the supervisor.
        case onFailure = "on-failure"
        /// After every exit except a stop by the supervisor.
        case always
    }

    public var mode: Mode
    /// Restarts allowed in all; past it the last exit is final.
    public var maximumRestarts: Int
    /// Wait before the first restart, in seconds; doubled after each restart up to ``maximumBackoff``.
    public var initialBackoff: Double
    public var maximumBackoff: Double
    /// A run that lasted this long resets the back-off to ``initialBackoff``.
    public var resetAfter: Double

    public init(mode: Mode = .never, maximumRestarts: Int = 5, initialBackoff: Double = 0.1,
                maximumBackoff: Double = 30, resetAfter: Double = 60) {
        self.mode = mode
        self.maximumRestarts = maximumRestarts
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
        self.resetAfter = resetAfter
    }

    public static let never = RestartPolicy(mode: .never)

    /// Whether a worker that ended with `reason` is started again (budget aside).
    public func restarts(after reason: ExitReason) -> Bool {
        switch (mode, reason) {
        case (.never, _), (_, .stoppedBySupervisor), (_, .spawnFailed): false
        case (.onFailure, let reason): !reason.isSuccess
        case (.always, _): true
        }
    }
}

extension Supervisor {
    /// Runs a worker under `restart`: spawns it, waits for it to end, and starts
    /// it again while the policy and the budget allow, with exponential back-off.
    /// Returns how the last run ended: a worker stopped (``WorkerHandle/stop(grace:)``) or a
    /// task cancelled is not started again. `onStart` sees each new worker (to stop it, say).
    /// Throws if a spawn fails, `.shuttingDown` included when the supervisor shuts down
    /// during a back-off.
    public func run(_ configuration: WorkerConfiguration, restart: RestartPolicy = .never,
                    onStart: @Sendable (WorkerHandle) -> Void = { _ in }) async throws(SupervisorError) -> ExitReason {
        var restarts = 0
        var backoff = restart.initialBackoff
        while true {
            let started = ContinuousClock.now
            let handle = try await spawn(configuration)
            onStart(handle)
            let reason = await handle.exit()
            // A worker asked to stop is not started again, whatever its exit reason says.
            guard !handle.wasStopped, restart.restarts(after: reason), restarts < restart.maximumRestarts, !Task.isCancelled else {
                return reason
            }
            if ContinuousClock.now - started >= clampedDuration(restart.resetAfter) { backoff = restart.initialBackoff }
            // Cancelled during the back-off: no new worker.
            do { try await Task.sleep(for: clampedDuration(backoff)) } catch { return reason }
            backoff = min(backoff * 2, restart.maximumBackoff)
            restarts += 1
        }
    }
}

/// `seconds` as a Duration, as the event loop reads its timeouts (``nanoseconds(_:)``): NaN
/// or not positive is zero, and anything past 10^9 s (infinity included) is 10^9 s. `Duration.seconds`
/// traps on a value it cannot represent, and these are the embedder's numbers.
func clampedDuration(_ seconds: Double) -> Duration {
    .nanoseconds(Int64(nanoseconds(seconds)))
}
