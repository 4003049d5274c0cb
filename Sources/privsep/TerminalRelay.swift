import CPrivsepShims
import Glibc
import PrivsepIPC
import Supervisor
import Synchronization
import SystemPackage

/// Keeps workers off the operator's terminal.
///
/// A worker runs in a session of its own, where the terminal's job control does not reach
/// it. Holding the terminal, it could read what is typed at the shell while privsep runs in
/// the background (no SIGTTIN stops it), and change the terminal's settings for the shell
/// too: a line discipline that leaves the shell deaf, ISIG off so that Ctrl-C does nothing.
/// So where a worker would inherit a standard stream that is a terminal, it gets /dev/null
/// for stdin, and for stdout and stderr a pseudo-terminal of its own, which a thread of ours
/// copies to the real one. Being a terminal, it keeps the worker's output line-buffered (so
/// a worker killed mid-run has shown what it printed) and its colours and columns; stdout and
/// stderr on one terminal share one, so their lines keep their order.
final class TerminalRelay: Sendable {
    private let copies: [Copy]

    /// Replaces each stream of `configuration` that would inherit a terminal.
    init(guarding configuration: inout WorkerConfiguration) throws {
        if case .inherit = configuration.standardInput, isatty(0) == 1 { configuration.standardInput = .null }
        func inheritsTerminal(_ stream: StandardStream, _ fd: Int32) -> Bool {
            if case .inherit = stream { return isatty(fd) == 1 }
            return false
        }
        var copies: [Copy] = []
        let output = inheritsTerminal(configuration.standardOutput, 1)
        let error = inheritsTerminal(configuration.standardError, 2)
        if output && error && Self.sameTerminal(1, 2) {
            let (copy, slave) = try Copy.start(to: 1)
            copies.append(copy)
            configuration.standardOutput = .descriptor(slave)
            configuration.standardError = .descriptor(slave)
        } else {
            if output {
                let (copy, slave) = try Copy.start(to: 1)
                copies.append(copy)
                configuration.standardOutput = .descriptor(slave)
            }
            if error {
                let (copy, slave) = try Copy.start(to: 2)
                copies.append(copy)
                configuration.standardError = .descriptor(slave)
            }
        }
        self.copies = copies
    }

    /// Waits, at most `seconds`, until every copy has reached its terminal's end (the last
    /// holder of its slave gone: configurations that held it dropped, workers and what they
    /// forked ended), or, with `writersGone` (no process can write any more, though a
    /// configuration still holds the slave), until nothing is left to copy. Past the bound,
    /// what a stray holder keeps open is left, so that privsep still exits.
    func finish(within seconds: Double = 2, writersGone: Bool = false) async {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline && !copies.allSatisfy({ $0.isDone(writersGone: writersGone) }) {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    private static func sameTerminal(_ a: Int32, _ b: Int32) -> Bool {
        var first = stat(), second = stat()
        return fstat(a, &first) == 0 && fstat(b, &second) == 0 && first.st_rdev == second.st_rdev
    }

    struct RelayError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}

/// One pseudo-terminal's output copied to one of our descriptors, on a thread of its own.
private final class Copy: Sendable {
    private let master: Int32
    private let target: Int32
    /// Set once the thread is done with the master (which it then closes).
    private let ended = Atomic<Bool>(false)
    /// Even while the thread waits in poll for the master (holding no bytes), odd from
    /// when poll returns until it waits again: one more on each change.
    private let phase = Atomic<Int>(1)

    private init(master: Int32, target: Int32) {
        self.master = master
        self.target = target
    }

    /// A pseudo-terminal whose output a new thread copies to `target`; returns the copy and
    /// the slave, for the worker.
    static func start(to target: Int32) throws -> (Copy, SharedFileDescriptor) {
        var master: Int32 = -1, slave: Int32 = -1
        guard privsep_open_output_pty(&master, &slave, target) == 0 else {
            throw TerminalRelay.RelayError(message: "privsep: cannot open a pseudo-terminal for the worker's output: \(Errno(rawValue: errno))")
        }
        let slaveEnd = SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: slave))
        let copy = Copy(master: master, target: target)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(copy)
        let rc = pthread_create(&thread, nil, { context in
            Unmanaged<Copy>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            close(master)
            throw TerminalRelay.RelayError(message: "privsep: cannot start the thread that copies the worker's output: \(Errno(rawValue: rc))")
        }
        pthread_detach(thread)
        return (copy, slaveEnd)
    }

    func isDone(writersGone: Bool) -> Bool {
        if ended.load(ordering: .acquiring) { return true }
        guard writersGone else { return false }
        // Nothing waiting, seen while the thread waited in poll, not leaving it meanwhile: it
        // carries nothing, and no writer is left to give it more.
        let before = phase.load(ordering: .acquiring)
        guard before % 2 == 0, privsep_bytes_waiting(master) == 0 else { return false }
        return phase.load(ordering: .acquiring) == before
    }

    private func run() {
        let capacity = 65_536
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer {
            buffer.deallocate()
            // Closed here, so a worker writing after our side failed gets EIO, as from a
            // terminal that hung up.
            close(master)
            ended.store(true, ordering: .releasing)
        }
        while true {
            phase.add(1, ordering: .releasing)
            var ready = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            let polled = poll(&ready, 1, -1)
            phase.add(1, ordering: .acquiringAndReleasing)
            if polled < 0 && errno == EINTR { continue }
            let count = read(master, buffer, capacity)
            if count < 0 && errno == EINTR { continue }
            // EIO: the last holder of the slave closed it (a master's end of input).
            guard count > 0, writeAll(buffer, count) else { return }
        }
    }

    /// False once `target` fails (its reader gone, say).
    private func writeAll(_ bytes: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var written = 0
        while written < count {
            let n = write(target, bytes + written, count - written)
            if n > 0 {
                written += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && errno == EAGAIN {
                // A terminal someone left non-blocking: wait until it takes more.
                var wanted = pollfd(fd: target, events: Int16(POLLOUT), revents: 0)
                _ = poll(&wanted, 1, -1)
            } else {
                return false
            }
        }
        return true
    }
}
