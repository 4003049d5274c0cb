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
/// for stdin, and for stdout and stderr a pipe that a thread of ours copies to the terminal.
/// What it writes still appears; it is no longer written by a holder of the terminal.
final class TerminalRelay: Sendable {
    /// Copying threads that have not yet reached their pipe's end.
    private let running = Atomic<Int>(0)

    /// Replaces each stream of `configuration` that would inherit a terminal.
    init(guarding configuration: inout WorkerConfiguration) throws {
        if case .inherit = configuration.standardInput, isatty(0) == 1 { configuration.standardInput = .null }
        if case .inherit = configuration.standardOutput, isatty(1) == 1 {
            configuration.standardOutput = .descriptor(try startCopy(to: 1))
        }
        if case .inherit = configuration.standardError, isatty(2) == 1 {
            configuration.standardError = .descriptor(try startCopy(to: 2))
        }
    }

    /// Waits until every copy has reached its pipe's end, at most `seconds`: each ends once
    /// the last holder of the pipe's write end is gone (configurations that held it
    /// dropped, workers and what they forked ended). Past that, what a stray holder keeps
    /// open is left, so that privsep still exits.
    func finish(within seconds: Double = 2) async {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while running.load(ordering: .acquiring) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// A pipe whose read end a thread copies to `target` until the pipe's end; returns the
    /// write end, for the worker.
    private func startCopy(to target: Int32) throws -> SharedFileDescriptor {
        var ends: [Int32] = [-1, -1]
        guard privsep_pipe_cloexec(&ends) == 0 else {
            throw RelayError(message: "privsep: cannot make a pipe for the worker's output: \(Errno(rawValue: errno))")
        }
        let copy = Copy(source: ends[0], target: target, running: self)
        running.add(1, ordering: .relaxed)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(copy)
        let rc = pthread_create(&thread, nil, { context in
            Unmanaged<Copy>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            running.subtract(1, ordering: .relaxed)
            close(ends[1])
            throw RelayError(message: "privsep: cannot start the thread that copies the worker's output: \(Errno(rawValue: rc))")
        }
        pthread_detach(thread)
        return SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: ends[1]))
    }

    fileprivate func copyEnded() { running.subtract(1, ordering: .releasing) }

    struct RelayError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}

/// One pipe copied to one of our descriptors, on its own thread.
private final class Copy: @unchecked Sendable { // touched by its thread only, after init
    private let source: Int32
    private let target: Int32
    private let relay: TerminalRelay

    init(source: Int32, target: Int32, running relay: TerminalRelay) {
        self.source = source
        self.target = target
        self.relay = relay
    }

    func run() {
        defer {
            // Closed here, so a worker writing after our side failed gets EPIPE, as it would
            // writing to the terminal's closed pipe itself.
            close(source)
            relay.copyEnded()
        }
        let capacity = 65_536
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(source, buffer, capacity)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            guard writeAll(buffer, count) else { return }
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
