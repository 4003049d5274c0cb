import CPrivsepShims
import Glibc
import PrivsepIPC
import Synchronization
import SystemPackage

/// Starts a detached thread named `name` that runs `body`, on `cpus` when given (a thread
/// starts on its creator's CPUs, which for a loop thread may be the one it keeps to itself;
/// placement is a scheduling choice, so a thread that cannot move runs where it is).
func startDetachedThread(named name: String, on cpus: CPUSet?, _ body: @escaping () -> Void) -> Bool {
    final class Start {
        let name: String, cpus: CPUSet?, body: () -> Void
        init(_ name: String, _ cpus: CPUSet?, _ body: @escaping () -> Void) { (self.name, self.cpus, self.body) = (name, cpus, body) }
    }
    let box = Unmanaged.passRetained(Start(name, cpus, body))
    var thread = pthread_t()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    let rc = pthread_create(&thread, &attributes, { context in
        let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
        system_set_thread_name(start.name)
        if let cpus = start.cpus { _ = system_sched_setaffinity(cpus) }
        start.body()
        return nil
    }, box.toOpaque())
    if rc != 0 {
        box.release()
        return false
    }
    return true
}

/// Receives the notifications of seccomp listener `fd`, on the calling thread (its only
/// reader), and hands each to `serve`, until no process uses the filter any more, `stopped`
/// says so, or (when given) `wakeup` becomes readable.
///
/// Not on an event loop: SECCOMP_IOCTL_NOTIF_RECV can block even after poll said a
/// notification was ready (its caller died meanwhile, or another holder of the listener
/// took it), and it would block the loop's every worker with it.
func receiveNotifications(_ fd: Int32, wakeup: Int32? = nil, stopped: () -> Bool, _ serve: (Notification) -> Void) {
    // From Linux 6.11 a receive that blocks returns (ENOENT) once no process uses the
    // filter, so it can wait by itself: a poll before each receive was one more system
    // call per notification (BENCHMARKS.md, intercept mode). Before 6.11 such a receive
    // would wait forever, and only poll sees the filter go unused (POLLHUP). A wake-up fd
    // is seen only by poll, so with one every receive waits there first.
    let receiveWaits = interceptReceiveWaits.load(ordering: .relaxed) && wakeup == nil
    var pending = false // poll has said a notification is waiting
    while !stopped() {
        if !receiveWaits && !pending {
            guard waitForNotification(fd, wakeup: wakeup) else { return }
        }
        pending = false
        switch system_notif_receive_full(fd) {
        case .success(let notification):
            serve(notification)
        case .failure:
            // ENOENT: the caller died (or took a fatal signal) before its notification was
            // received, or no process uses the filter any more; poll tells which. Any
            // other failure waits for poll too, so that it cannot spin.
            guard waitForNotification(fd, wakeup: wakeup) else { return }
            pending = true
        }
    }
}

/// Waits until a notification is pending (true), or no process uses the filter any more
/// (POLLHUP), the listener cannot be polled, or `wakeup` is readable (false).
private func waitForNotification(_ fd: Int32, wakeup: Int32?) -> Bool {
    while true {
        var pollers = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeup ?? -1, events: Int16(POLLIN), revents: 0)]
        if poll(&pollers, 2, -1) < 0 {
            if currentErrno() == .interrupted { continue }
            return false
        }
        if pollers[1].revents != 0 { return false }
        if pollers[0].revents & Int16(POLLIN) != 0 { return true }
        if pollers[0].revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return false }
    }
}

/// Serves a learning-mode worker's seccomp listener on a thread of its own: each call the
/// worker's filter does not allow is recorded (``WorkerHandle/learnedSyscalls``, an audit
/// record the first time) and let run. The worker may keep a copy of the listener, so
/// receiving can block: on the event loop that would stall every worker it serves.
final class LearningServer: @unchecked Sendable {
    private let listener: OwnedFileDescriptor
    /// Written by ``stop()``: wakes the thread from its wait for a notification.
    private let wakeup: OwnedFileDescriptor
    private let handle: WorkerHandle
    private let auditor: Auditor
    /// Set when the worker is reaped, under the lock a notification is recorded under: once
    /// ``stop()`` returns nothing more is learned. A process the worker left outside its
    /// process group (learning mode lets setsid through) is then answered ENOSYS; the
    /// thread ends, closing the listener (later calls fail ENOSYS in the kernel).
    private let stopped = Mutex(false)

    init(listener: consuming OwnedFileDescriptor, handle: WorkerHandle, auditor: Auditor) throws(Errno) {
        self.wakeup = OwnedFileDescriptor(adoptingRawValue: try system_eventfd().get())
        self.listener = listener
        self.handle = handle
        self.auditor = auditor
    }

    /// Starts the thread (detached; it ends, closing the listener, when no process uses the
    /// filter, or once ``stop()`` is called).
    func start(on cpus: CPUSet?) -> Bool {
        handle.isLearningListenerServed = true
        guard startDetachedThread(named: "privsep-learn", on: cpus, { self.run() }) else {
            handle.isLearningListenerServed = false
            return false
        }
        return true
    }

    func stop() {
        stopped.withLock { $0 = true }
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { system_write(wakeup.unsafeRawValue, $0) }
    }

    private func run() {
        defer { handle.isLearningListenerServed = false }
        let fd = listener.unsafeRawValue
        var full = false
        receiveNotifications(fd, wakeup: wakeup.unsafeRawValue, stopped: { stopped.withLock { $0 } }) { n in
            let a = n.args
            let call = SyscallViolation(number: n.nr, architecture: n.arch, instructionPointer: nil, arguments: [a.0, a.1, a.2, a.3, a.4, a.5])
            let learned = stopped.withLock { (stopped) -> Bool in
                guard !stopped else { return false }
                switch handle.recordLearned(call) {
                case .recorded:
                    audit(detail: call.description, reason: "")
                case .full where !full:
                    full = true
                    audit(detail: call.description, reason: "more than \(WorkerHandle.maximumLearnedSyscalls) distinct calls: no more are recorded")
                case .known, .full:
                    break
                }
                return true
            }
            if learned {
                _ = system_notif_continue(fd, n.id) // ENOENT: the caller is gone
            } else {
                _ = system_notif_respond(fd, n.id, value: 0, error: .noFunction)
            }
        }
    }

    private func audit(detail: String, reason: String) {
        auditor.record(AuditRecord(time: wallClockSeconds(), workerID: handle.id, workerName: handle.name, pid: handle.pid,
                                   event: "LEARN", detail: detail, decision: "", errno: 0, reason: reason))
    }
}
