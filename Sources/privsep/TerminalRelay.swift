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
/// for stdin, and for stdout and stderr a pseudo-terminal of its own (a pipe where many
/// workers share it), which a thread of ours copies to the real one. Being a terminal, it
/// keeps the worker's output line-buffered (so a worker killed mid-run has shown what it
/// printed) and its colours and columns; stdout and stderr on one terminal share one, so
/// their lines keep their order.
final class TerminalRelay: Sendable {
    private let copies: [Copy]

    /// Replaces each stream of `configuration` that would inherit a terminal. `shared`: many
    /// workers are started with it (a pool); they get a pipe, not a terminal one could stop
    /// (TCXONC) or reconfigure under the others.
    init(guarding configuration: inout WorkerConfiguration, shared: Bool = false) throws {
        if case .inherit = configuration.standardInput, isatty(0) == 1 { configuration.standardInput = .null }
        func inheritsTerminal(_ stream: StandardStream, _ fd: Int32) -> Bool {
            if case .inherit = stream { return isatty(fd) == 1 }
            return false
        }
        var copies: [Copy] = []
        let output = inheritsTerminal(configuration.standardOutput, 1)
        let error = inheritsTerminal(configuration.standardError, 2)
        if output && error && Self.sameTerminal(1, 2) {
            let (copy, writerEnd) = try Copy.start(to: 1, pipe: shared)
            copies.append(copy)
            configuration.standardOutput = .descriptor(writerEnd)
            configuration.standardError = .descriptor(writerEnd)
        } else {
            if output {
                let (copy, writerEnd) = try Copy.start(to: 1, pipe: shared)
                copies.append(copy)
                configuration.standardOutput = .descriptor(writerEnd)
            }
            if error {
                let (copy, writerEnd) = try Copy.start(to: 2, pipe: shared)
                copies.append(copy)
                configuration.standardError = .descriptor(writerEnd)
            }
        }
        self.copies = copies
    }

    /// Waits, at most `seconds`, until every copy has ended: at the end of its terminal or
    /// pipe (the last holder of the worker's end gone: configurations that held it dropped,
    /// workers and what they forked ended), or, with `writersGone` (no process can write any
    /// more, though a configuration may still hold the worker's end), once it has copied
    /// what is left. Past the bound, what a stray holder keeps open is left, so that privsep
    /// still exits.
    func finish(within seconds: Double = 2, writersGone: Bool = false) async {
        if writersGone { for copy in copies { copy.drainAndEnd() } }
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline && !copies.allSatisfy(\.isDone) {
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

/// One pseudo-terminal's (or pipe's) output copied to one of our descriptors, on a thread of
/// its own.
private final class Copy: Sendable {
    /// The master of the worker's terminal, or the read end of its pipe.
    private let source: Int32
    private let target: Int32
    /// A pipe whose write end asks the thread to drain what is left and end (`finish` with
    /// the writers gone): it waits in poll for this and the source.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    /// Set once the thread is done with the source (which it then closes).
    private let ended = Atomic<Bool>(false)

    private init(source: Int32, target: Int32, wakeRead: Int32, wakeWrite: Int32) {
        self.source = source
        self.target = target
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Starts copying to `target` what the worker writes into the returned descriptor: the
    /// slave of a pseudo-terminal of its own, or (`pipe`) a pipe's write end.
    static func start(to target: Int32, pipe: Bool) throws -> (Copy, SharedFileDescriptor) {
        var ends: [Int32] = [-1, -1]
        let opened = ends.withUnsafeMutableBufferPointer { ends in
            pipe ? privsep_pipe_cloexec(ends.baseAddress!) : privsep_open_output_pty(ends.baseAddress!, ends.baseAddress! + 1, target)
        }
        guard opened == 0 else {
            throw TerminalRelay.RelayError(message: "privsep: cannot open a \(pipe ? "pipe" : "pseudo-terminal") for the worker's output: \(Errno(rawValue: errno))")
        }
        let writerEnd = SharedFileDescriptor(OwnedFileDescriptor(adoptingRawValue: ends[1]))
        var wake: [Int32] = [-1, -1]
        guard privsep_pipe_cloexec(&wake) == 0 else {
            close(ends[0])
            throw TerminalRelay.RelayError(message: "privsep: cannot make a pipe: \(Errno(rawValue: errno))")
        }
        let copy = Copy(source: ends[0], target: target, wakeRead: wake[0], wakeWrite: wake[1])
        let rc = startDetachedThread { copy.run() }
        guard rc == 0 else {
            close(ends[0])
            throw TerminalRelay.RelayError(message: "privsep: cannot start the thread that copies the worker's output: \(Errno(rawValue: rc))")
        }
        return (copy, writerEnd)
    }

    var isDone: Bool { ended.load(ordering: .acquiring) }

    /// No process can write any more: the thread copies what is left and ends.
    func drainAndEnd() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    private func run() {
        let capacity = 65_536
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer {
            buffer.deallocate()
            // Closed here, so a worker writing after our side failed gets EIO (or EPIPE), as
            // from a terminal that hung up.
            close(source)
            ended.store(true, ordering: .releasing)
        }
        while true {
            var ready = [pollfd(fd: source, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            if poll(&ready, 2, -1) < 0 && errno == EINTR { continue }
            if ready[1].revents != 0 {
                // Read until the source is empty: a terminal's read first moves what its
                // writers left in the kernel's buffers into view, so EAGAIN means nothing is
                // left, not "not yet". (Data poll has not seen may be there.)
                _ = fcntl(source, F_SETFL, fcntl(source, F_GETFL) | O_NONBLOCK)
                while true {
                    let count = read(source, buffer, capacity)
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0, writeAll(buffer, count) else { return }
                }
            }
            let count = read(source, buffer, capacity)
            if count < 0 && errno == EINTR { continue }
            // 0 (a pipe) or EIO (a terminal): the last writer closed its end.
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

/// Runs `body` on a detached thread of its own (a blocking loop that must not hold a thread
/// of the cooperative pool); returns pthread_create's error, 0 once started.
func startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Int32 {
    final class Body: @unchecked Sendable { // handed to the new thread once
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Body(body))
    let rc = pthread_create(&thread, nil, { context in
        Unmanaged<Body>.fromOpaque(context!).takeRetainedValue().run()
        return nil
    }, box.toOpaque())
    if rc == 0 { pthread_detach(thread) } else { box.release() }
    return rc
}
