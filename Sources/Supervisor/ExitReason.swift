import CSeccomp
import Glibc
import PrivsepIPC
public import Worker

/// Why a worker is gone: a typed result, never a thrown error.
public enum ExitReason: Sendable, Equatable, CustomStringConvertible {
    /// It exited by itself with this status.
    case exited(code: Int32)
    /// A signal ended it (and it was not the supervisor's doing).
    case signaled(signal: Int32, coreDumped: Bool)
    /// Its seccomp filter stopped a system call.
    case seccompViolation(SyscallViolation)
    /// The supervisor killed it for breaking the protocol; says which rule.
    case protocolViolation(String)
    /// The supervisor killed it because the handshake failed (late, wrong pid, wrong version).
    case handshakeFailed(String)
    /// The supervisor killed it for exceeding its wall-clock limit.
    case timedOut(seconds: Double)
    /// The supervisor killed it for exceeding a per-worker cap (flooding, not reading replies...).
    case resourceCapExceeded(String)
    /// A sandbox layer it was required to apply is not in force.
    case sandboxIncomplete(String)
    /// The supervisor stopped it (``WorkerHandle/stop(grace:)`` or shutdown).
    case stoppedBySupervisor
    /// It could not be started.
    case spawnFailed(String)

    /// Whether the worker ended as it meant to: exit status 0.
    public var isSuccess: Bool { self == .exited(code: 0) }

    public var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let signal, let core): "killed by signal \(signalName(signal))\(core ? " (core dumped)" : "")"
        case .seccompViolation(let violation): "seccomp violation: \(violation)"
        case .protocolViolation(let why): "killed for protocol violation: \(why)"
        case .handshakeFailed(let why): "killed: handshake failed: \(why)"
        case .timedOut(let seconds): "killed: exceeded its wall-clock limit of \(seconds) s"
        case .resourceCapExceeded(let why): "killed: \(why)"
        case .sandboxIncomplete(let why): "killed: sandbox incomplete: \(why)"
        case .stoppedBySupervisor: "stopped by the supervisor"
        case .spawnFailed(let why): "could not be started: \(why)"
        }
    }
}

/// A system call a worker's filter refused.
public struct SyscallViolation: Sendable, Equatable, CustomStringConvertible {
    /// The syscall number as the filter saw it (x32 calls carry bit 30).
    public var number: Int32
    /// AUDIT_ARCH_* of the call, 0 if unknown.
    public var architecture: UInt32
    public var instructionPointer: UInt64?
    /// The name, e.g. "openat"; nil if the number is unknown for the architecture.
    public var name: String?
    /// The call's six arguments, where known (a VIOLATION report, learning mode): the groups
    /// that allow a call may depend on them (`rpath` allows openat read-only).
    public var arguments: [UInt64]?

    public init(number: Int32, architecture: UInt32, instructionPointer: UInt64?, arguments: [UInt64]? = nil) {
        self.number = number
        self.architecture = architecture
        self.instructionPointer = instructionPointer
        self.name = syscallName(number, architecture: architecture)
        self.arguments = arguments
    }

    /// The syscall groups that allow this call (with its arguments, where known), the ones
    /// that allow it whatever its arguments first.
    public var allowingGroups: [SyscallGroup] {
        name.map { SyscallGroup.groups(allowing: $0, arguments: arguments) } ?? []
    }

    init(_ report: Violation) {
        self.init(number: report.syscallNumber, architecture: report.architecture, instructionPointer: report.instructionPointer,
                  arguments: report.arguments)
    }

    /// "x86_64", "i386", "x32", "aarch64", or the number in hex.
    public var architectureName: String {
        switch architecture {
        case auditArchX86_64: number & x32SyscallBit != 0 ? "x32" : "x86_64"
        case auditArchI386: "i386"
        case auditArchAArch64: "aarch64"
        case 0: "unknown architecture"
        default: "arch 0x\(String(architecture, radix: 16))"
        }
    }

    public var description: String {
        if architecture == 0 {
            return "a system call the kernel stopped before it could be reported (SIGSYS: another architecture's entry, or a kill-process filter)"
        }
        return "\(name ?? "syscall \(number)") (\(architectureName))"
    }
}

let auditArchX86_64: UInt32 = 0xC000_003E
let auditArchI386: UInt32 = 0x4000_0003
let auditArchAArch64: UInt32 = 0xC000_00B7
let x32SyscallBit: Int32 = 0x4000_0000

/// The name libseccomp knows for `number` on `architecture`.
func syscallName(_ number: Int32, architecture: UInt32) -> String? {
    guard architecture != 0 else { return nil }
    guard let name = seccomp_syscall_resolve_num_arch(architecture, number) else { return nil }
    defer { free(name) }
    return String(cString: name)
}

/// "SIGKILL" for 9, and so on.
public func signalName(_ signal: Int32) -> String {
    let names: [Int32: String] = [
        SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP",
        SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1",
        SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
        SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGSYS: "SIGSYS",
    ]
    return names[signal] ?? "\(signal)"
}
