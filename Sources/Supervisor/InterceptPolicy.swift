import CPrivsepShims
import Glibc
public import PrivsepIPC
public import SystemPackage

/// What intercept mode asks of a policy beyond OPEN: a path looked up (not opened) for
/// stat, access, readlink and execve, and a connect or bind of a socket the program
/// already holds. Every lookup uses the broker's resolver: `openat2` beneath the O_PATH
/// anchor of the most specific rule, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
/// [| RESOLVE_NO_SYMLINKS], never a path the program spelled from the root.
public enum LookupResult: ~Copyable, Sendable {
    /// An O_PATH descriptor of what the path names, and the rule that grants it.
    case found(OwnedFileDescriptor, PathRule)
    case denied(Errno, String)
}

extension ActivePolicy {
    /// Resolves `path` (absolute, canonical) beneath its rule, as an O_PATH descriptor.
    /// Any permission on a path lets its metadata be seen; a path outside every rule is
    /// EACCES whether or not it exists, like OPEN.
    public func lookUp(_ path: String, followTrailingSymlink: Bool) -> LookupResult {
        guard isCanonicalAbsolutePath(path) else { return .denied(.permissionDenied, "path is not absolute and canonical") }
        guard let index = mostSpecificRule(for: path) else { return .denied(.permissionDenied, "no rule grants this path") }
        let rule = policy.paths[index]
        let anchor = anchors[index]
        let relative = relativePath(of: path, beneath: index)
        let resolve = resolveFlags(rule.symlinks)
        let flags = privsep_O_PATH | O_CLOEXEC | (followTrailingSymlink ? 0 : O_NOFOLLOW)
        let raw: Int32
        switch system_openat2(anchor.directory, relative, flags: flags, mode: 0, resolve: resolve) {
        case .success(let opened): raw = opened
        case .failure(.tooManySymbolicLinkLevels), .failure(.improperLink):
            return .denied(.permissionDenied, "resolution left the rule's directory or met a symlink")
        case .failure(let errno):
            return .denied(errno, "lookup failed")
        }
        let fd = OwnedFileDescriptor(adoptingRawValue: raw)
        guard case .success(let info) = system_fstat(raw) else { return .denied(.badFileDescriptor, "fstat failed") }
        let sameFilesystem = UInt64(info.st_dev) == anchor.device && !anchor.onProcfs
        if !anchor.ruleInsideProc && !sameFilesystem && isProcFilesystem(raw) {
            return .denied(.permissionDenied, "procfs files are handed out only by rules inside /proc")
        }
        return .found(fd, rule)
    }

    /// Whether `address` may be connected to (or bound at, `binding`) by a socket of this
    /// domain, type (SOCK_* without flags) and protocol.
    func allowsAddress(_ address: SocketAddress, domain: Int32, type: Int32, protocol: Int32, binding: Bool) -> String? {
        guard domain == family(of: address) else { return "the socket's domain is not the address's family" }
        let rules = binding ? policy.bind : policy.connect
        guard rules.contains(where: { binding ? $0.allowsBinding(address, type: type) : $0.allows(address, type: type) }) else {
            return "no rule allows \(binding ? "binding" : "connecting to") \(address)"
        }
        guard isDefaultProtocol(`protocol`, domain: domain, type: type) else {
            return "protocol \(`protocol`) is not the default for this socket type"
        }
        return nil
    }

    /// Connects (or binds) `socket`, a duplicate of the program's own socket, to `address`
    /// here in the supervisor: the address the policy checked is the one used, whatever the
    /// program writes into its memory meanwhile. A unix path is pinned like CONNECT's.
    func connectOrBind(_ raw: Int32, to address: SocketAddress, binding: Bool) -> Result<Void, Errno> {
        withSocketAddress(address, binding: binding) { pointer, length in
            binding ? system_bind(raw, pointer, length) : system_connect(raw, pointer, length)
        }
    }
}

extension Policy {
    /// Why intercept mode cannot enforce this policy as written, or nil. Checked when an
    /// intercepted worker is spawned (and when its policy is narrowed), so the program never
    /// starts under a policy its lockdown would enforce more loosely:
    ///
    /// - A rule without `execute` nested beneath a directory rule with `execute`: the
    ///   program's Landlock ruleset grants EXECUTE beneath the whole outer directory (Landlock
    ///   has no "except beneath"), so a script's `#!` interpreter, which the kernel opens
    ///   itself, or an execve path swapped after the supervisor's check, could run a file the
    ///   inner rule does not let execute. Without such nesting Landlock's set is the policy's.
    /// - `append` without `write`: the supervisor opens the file O_APPEND, but the program
    ///   holds the descriptor and can clear O_APPEND with fcntl(F_SETFL) or truncate it
    ///   (ftruncate, fallocate); the seccomp filter cannot tell that descriptor from others.
    public func interceptProblem() -> PolicyError? {
        for inner in paths where !inner.permissions.contains(.execute) {
            for outer in paths where outer.kind == .directory && outer.permissions.contains(.execute) && outer.path != inner.path {
                let beneath = outer.path == "/" || inner.path.utf8.starts(with: (outer.path + "/").utf8)
                if beneath {
                    return .invalidPath(inner.path, "in intercept mode a rule without execute cannot be nested beneath \(outer.path), "
                                        + "which has execute (the program's Landlock ruleset would let it execute there too); "
                                        + "add execute to it or split \(outer.path) into rules that do not contain it")
                }
            }
        }
        for rule in paths where rule.permissions.contains(.append) && !rule.permissions.contains(.write) {
            return .invalidPath(rule.path, "in intercept mode append-only rules are refused: the program can clear O_APPEND "
                                + "(fcntl F_SETFL) or truncate the descriptor it is given; grant write, or run it as a brokered worker")
        }
        return nil
    }

    /// Intercept mode: why `self` cannot replace `started`, the policy the program started
    /// with, when it executes elsewhere. execve is the one call checked and then let run,
    /// so the kernel reads its path again; what keeps a path swapped after the check
    /// within the execute rules is the program's Landlock ruleset, which was built from
    /// `started`'s rules and cannot be narrowed later. Only a restart changes them.
    public func executeRulesProblem(startedWith started: Policy) -> PolicyError? {
        // By path: a valid policy has one rule per path.
        func executable(_ policy: Policy) -> [String: PathRule.Kind] {
            Dictionary(policy.paths.filter { $0.permissions.contains(.execute) }.map { ($0.path, $0.kind) }) { first, _ in first }
        }
        let before = executable(started), after = executable(self)
        guard let changed = Set(before.keys).union(after.keys).sorted().first(where: { before[$0] != after[$0] }) else { return nil }
        return .invalidPath(changed,
                            "in intercept mode the execute rules are fixed when the program starts (its Landlock ruleset "
                            + "cannot be narrowed): keep them as they are, or restart the program with the new policy")
    }
}
