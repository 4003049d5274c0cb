import CPrivsepShims
import Glibc
public import PrivsepIPC

/// What a worker may ask the supervisor for: paths it may open, sockets it may
/// create, addresses it may connect to or bind.
///
/// A policy is plain data, built in Swift or read from a file
/// (``PolicyFile``). Everything not granted is refused: an empty policy
/// grants nothing. A running worker's policy can be narrowed
/// (``WorkerHandle/narrowPolicy(to:)``), never widened.
///
/// ```swift
/// var policy = Policy()
/// policy.allow(path: "/srv/data", .directory, [.read, .listDirectory])
/// policy.allow(path: "/var/log/app.log", .file, [.append, .create])
/// policy.allowConnect(to: AddressRule(network: .ipv4(.loopback, prefixLength: 8), ports: 80...443))
/// policy.allowBind(to: AddressRule(network: .ipv4(.any, prefixLength: 32), ports: 443...443))
/// ```
public struct Policy: Sendable, Equatable {
    public var paths: [PathRule] = []
    /// (domain, type) pairs SOCKET may create.
    public var sockets: [SocketRule] = []
    /// Destinations CONNECT may reach.
    public var connect: [AddressRule] = []
    /// Local addresses BIND may take.
    public var bind: [AddressRule] = []

    public init(paths: [PathRule] = [], sockets: [SocketRule] = [], connect: [AddressRule] = [], bind: [AddressRule] = []) {
        self.paths = paths
        self.sockets = sockets
        self.connect = connect
        self.bind = bind
    }

    /// Grants `permissions` on `path` (an exact file, or a directory and everything beneath it).
    public mutating func allow(path: String, _ kind: PathRule.Kind, _ permissions: PathPermissions,
                               symlinks: PathRule.SymlinkPolicy = .refuse, createMode: UInt32 = 0o600) {
        paths.append(PathRule(path: path, kind: kind, permissions: permissions, symlinks: symlinks, createMode: createMode))
    }

    /// Allows SOCKET(domain, type).
    public mutating func allowSocket(domain: Int32, type: Int32, protocols: Set<Int32> = []) {
        sockets.append(SocketRule(domain: domain, type: type, protocols: protocols))
    }

    /// Allows CONNECT to destinations matching `rule`.
    public mutating func allowConnect(to rule: AddressRule) { connect.append(rule) }

    /// Allows BIND at local addresses matching `rule`.
    public mutating func allowBind(to rule: AddressRule) { bind.append(rule) }

    /// Checks the policy is well formed: absolute canonical paths, no duplicate
    /// rules for one path, sane port ranges and prefixes.
    public func validate() throws(PolicyError) {
        var seen: Set<String> = []
        for rule in paths {
            guard isCanonicalAbsolutePath(rule.path) else { throw .invalidPath(rule.path, "must be absolute and canonical (no '.', '..', '//' or trailing '/')") }
            guard seen.insert(rule.path).inserted else { throw .duplicatePath(rule.path) }
            guard !rule.permissions.isEmpty else { throw .invalidPath(rule.path, "grants no permission") }
            if rule.kind == .file && rule.permissions.contains(.listDirectory) {
                throw .invalidPath(rule.path, "listDirectory applies to directory rules only")
            }
            guard rule.createMode & ~0o777 == 0 else { throw .invalidPath(rule.path, "create mode must be within 0777 (no setuid, setgid or sticky bits)") }
            if rule.kind == .file && rule.symlinks == .followBeneath {
                throw .invalidPath(rule.path, "a file rule cannot follow symlinks: the link could name any file of its directory")
            }
        }
        // A request is decided by the rule its path names, but a symlink followed beneath
        // that rule can land in a narrower rule's territory: its permissions, file types and
        // create mode would be those of the outer rule. So nothing may be nested there.
        for outer in paths where outer.kind == .directory && outer.symlinks == .followBeneath {
            if let inner = paths.first(where: { $0.path != outer.path && outer.matches($0.path) }) {
                throw .invalidPath(inner.path, "cannot be nested beneath \(outer.path), which follows symlinks: a link there "
                                   + "could reach \(inner.path) under \(outer.path)'s permissions; use symlinks \"refuse\" "
                                   + "for \(outer.path) or split it into rules that do not contain \(inner.path)")
            }
        }
        for rule in connect + bind { try rule.validate() }
    }

    /// Whether every grant of `narrower` is also granted by this policy.
    ///
    /// Access to a path is decided by the most specific rule that matches it, so a
    /// candidate rule must be covered by this policy's most specific rule for its
    /// path and, for a directory, by every rule of this policy beneath it: a
    /// narrower rule beneath (say read-only) must not be overridden by the candidate.
    public func contains(_ narrower: Policy) -> Bool {
        func covers(_ rule: PathRule, _ candidate: PathRule) -> Bool {
            candidate.permissions.isSubset(of: rule.permissions)
                && (candidate.symlinks == .refuse || rule.symlinks == candidate.symlinks)
                && candidate.allowedFileTypes.isSubset(of: rule.allowedFileTypes)
                && (!candidate.permissions.contains(.create) || candidate.createMode & ~rule.createMode == 0)
        }
        let pathsCovered = narrower.paths.allSatisfy { candidate in
            let matching = paths.filter { $0.covers(candidate.path, kind: candidate.kind) }
            guard let governing = matching.max(by: { $0.path.utf8.count < $1.path.utf8.count }), covers(governing, candidate) else {
                return false
            }
            guard candidate.kind == .directory else { return true }
            let probe = PathRule(path: candidate.path, kind: .directory, permissions: candidate.permissions)
            return paths.allSatisfy { rule in
                rule.path.utf8.elementsEqual(candidate.path.utf8) || !probe.matches(rule.path) || covers(rule, candidate)
            }
        }
        return pathsCovered
            && narrower.sockets.allSatisfy { candidate in
                sockets.contains { $0.domain == candidate.domain && $0.type == candidate.type && candidate.protocols.isSubset(of: $0.protocols) }
            }
            && narrower.connect.allSatisfy { candidate in connect.contains { $0.contains(candidate) } }
            && narrower.bind.allSatisfy { candidate in bind.contains { $0.contains(candidate) } }
    }
}

/// Permissions on a path, in the spirit of pledge's rpath/wpath/cpath.
public struct PathPermissions: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Open for reading.
    public static let read = PathPermissions(rawValue: 1 << 0)
    /// Open for writing (O_WRONLY, O_RDWR).
    public static let write = PathPermissions(rawValue: 1 << 1)
    /// Create files that do not exist (O_CREAT); the mode comes from the rule.
    public static let create = PathPermissions(rawValue: 1 << 2)
    /// Truncate (O_TRUNC).
    public static let truncate = PathPermissions(rawValue: 1 << 3)
    /// Open for writing with O_APPEND only.
    public static let append = PathPermissions(rawValue: 1 << 4)
    /// Open a directory to list it (O_RDONLY on a directory).
    public static let listDirectory = PathPermissions(rawValue: 1 << 5)
    /// Execute (intercept mode only: `execve` of the file, checked by the supervisor and,
    /// as a second wall, by the program's Landlock ruleset). Grants no open.
    public static let execute = PathPermissions(rawValue: 1 << 6)

    /// Names as the policy file spells them.
    public static let names: [(String, PathPermissions)] = [
        ("read", .read), ("write", .write), ("create", .create),
        ("truncate", .truncate), ("append", .append), ("list", .listDirectory),
        ("execute", .execute),
    ]

    public var names: [String] { Self.names.filter { contains($0.1) }.map(\.0) }
}

/// One path grant.
public struct PathRule: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// Exactly this file.
        case file
        /// This directory and everything beneath it.
        case directory
    }

    /// How symbolic links met while resolving a request are treated.
    public enum SymlinkPolicy: String, Sendable, Equatable {
        /// Any symlink fails the request (RESOLVE_NO_SYMLINKS): the safe default.
        case refuse
        /// Symlinks are followed while they stay beneath the rule's directory (RESOLVE_BENEATH still applies).
        case followBeneath = "follow-beneath"
    }

    /// Absolute, canonical path.
    public var path: String
    public var kind: Kind
    public var permissions: PathPermissions
    public var symlinks: SymlinkPolicy
    /// Mode of files this rule lets the worker create (the request's mode is ignored), less
    /// the supervisor process's umask, as for any open.
    public var createMode: UInt32
    /// File types that may be handed out: regular files and directories unless the rule says more.
    public var allowedFileTypes: Set<FileType>

    public init(path: String, kind: Kind, permissions: PathPermissions, symlinks: SymlinkPolicy = .refuse,
                createMode: UInt32 = 0o600, allowedFileTypes: Set<FileType> = [.regular, .directory]) {
        self.path = path
        self.kind = kind
        self.permissions = permissions
        self.symlinks = symlinks
        self.createMode = createMode
        self.allowedFileTypes = allowedFileTypes
    }

    /// Whether a request for `requested` (a canonical path) falls under this rule.
    /// Compared byte by byte: String's `==` and `hasPrefix` follow Unicode canonical
    /// equivalence (the Kelvin sign equals "K"), which would let a worker match a rule
    /// with a different spelling of a different file.
    public func matches(_ requested: String) -> Bool {
        // Native strings: memcmp on their contiguous bytes (this runs for every rule on every
        // request; the generic UTF8View algorithms cost more than the rest of the lookup).
        if let fast = requested.utf8.withContiguousStorageIfAvailable({ asked in
            path.utf8.withContiguousStorageIfAvailable { rule in Self.matches(asked: asked, rule: rule, kind: kind) }
        }), let result = fast {
            return result
        }
        let rule = path.utf8, asked = requested.utf8
        switch kind {
        case .file:
            return asked.elementsEqual(rule)
        case .directory:
            if asked.elementsEqual(rule) { return true }
            if path == "/" { return asked.first == UInt8(ascii: "/") }
            return asked.count > rule.count && asked.starts(with: rule)
                && asked[asked.index(asked.startIndex, offsetBy: rule.count)] == UInt8(ascii: "/")
        }
    }

    /// ``matches(_:)`` on raw bytes.
    @inline(__always) // on every brokered OPEN: one stretch of code with ActivePolicy.open
    static func matches(asked: UnsafeBufferPointer<UInt8>, rule: UnsafeBufferPointer<UInt8>, kind: Kind) -> Bool {
        // Eight bytes at a time, then the rest one by one.
        func prefixEqual(_ count: Int) -> Bool {
            let askedRaw = UnsafeRawBufferPointer(asked), ruleRaw = UnsafeRawBufferPointer(rule)
            var index = 0
            while index + 8 <= count {
                // In bounds: index + 8 <= count <= both counts.
                if askedRaw.baseAddress!.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                    != ruleRaw.baseAddress!.loadUnaligned(fromByteOffset: index, as: UInt64.self) { return false }
                index += 8
            }
            while index < count {
                if asked[index] != rule[index] { return false }
                index += 1
            }
            return true
        }
        switch kind {
        case .file:
            return asked.count == rule.count && prefixEqual(rule.count)
        case .directory:
            if asked.count == rule.count { return prefixEqual(rule.count) }
            if rule.count == 1 && rule[0] == UInt8(ascii: "/") { return asked.first == UInt8(ascii: "/") }
            return asked.count > rule.count && asked[rule.count] == UInt8(ascii: "/") && prefixEqual(rule.count)
        }
    }

    /// Whether this rule's reach includes that of a rule for `other` of kind `otherKind`.
    func covers(_ other: String, kind otherKind: Kind) -> Bool {
        kind == .directory ? matches(other) : (otherKind == .file && other.utf8.elementsEqual(path.utf8))
    }
}

/// A (domain, type) pair SOCKET may create. `type` excludes SOCK_NONBLOCK and SOCK_CLOEXEC.
public struct SocketRule: Sendable, Hashable {
    public var domain: Int32
    public var type: Int32
    /// Protocols allowed besides 0 and the (domain, type)'s usual one (TCP for inet
    /// streams, UDP for inet datagrams). Anything else (SCTP, which loads a kernel
    /// module; an arbitrary netlink family) must be listed.
    public var protocols: Set<Int32>
    public init(domain: Int32, type: Int32, protocols: Set<Int32> = []) {
        self.domain = domain
        self.type = type
        self.protocols = protocols
    }

    func allows(domain: Int32, type: Int32, protocol: Int32) -> Bool {
        domain == self.domain && type == self.type
            && (protocols.contains(`protocol`) || isDefaultProtocol(`protocol`, domain: domain, type: type))
    }

    /// Whether SOCKET refuses a brokered worker this (domain, type), whatever the rules: an
    /// Internet stream or seqpacket socket (TCP, SCTP), which unbound could listen on every
    /// interface (listen binds it) or connect past the rules. Intercept mode, which serves the
    /// program's connect, bind and listen, still makes them. `type` without SOCK_* flags.
    public static func refusedToBrokeredWorkers(domain: Int32, type: Int32) -> Bool {
        (domain == AF_INET || domain == AF_INET6) && (type == privsep_SOCK_STREAM || type == privsep_SOCK_SEQPACKET)
    }
}

/// Whether `protocol` is what a (domain, type) gets by default: 0 or TCP for inet
/// streams, 0 or UDP for inet datagrams, 0 for unix sockets. Nothing else is a
/// default: for netlink, 0 is NETLINK_ROUTE, which must be listed like any family.
func isDefaultProtocol(_ protocol: Int32, domain: Int32, type: Int32) -> Bool {
    switch domain {
    case 1: return `protocol` == 0 // AF_UNIX
    case 2, 10: // AF_INET, AF_INET6
        return `protocol` == 0 || (type == 1 && `protocol` == 6) || (type == 2 && `protocol` == 17)
    default: return false
    }
}

/// Addresses a CONNECT or BIND may name.
public struct AddressRule: Sendable, Equatable {
    public enum Network: Sendable, Equatable {
        case ipv4(IPv4Address, prefixLength: Int)
        case ipv6(IPv6Address, prefixLength: Int)
        /// Exactly this unix socket path.
        case unix(path: String)
    }

    public var network: Network
    /// Allowed ports (ignored for unix sockets).
    public var ports: ClosedRange<UInt16>
    /// Socket types (SOCK_STREAM, SOCK_DGRAM...) the rule allows; empty means stream only.
    public var types: Set<Int32>

    public init(network: Network, ports: ClosedRange<UInt16> = 0...0, types: Set<Int32> = []) {
        self.network = network
        self.ports = ports
        self.types = types
    }

    func validate() throws(PolicyError) {
        switch network {
        case .ipv4(_, let prefix):
            guard (0...32).contains(prefix) else { throw .invalidAddress("IPv4 prefix length \(prefix) is not 0...32") }
        case .ipv6(_, let prefix):
            guard (0...128).contains(prefix) else { throw .invalidAddress("IPv6 prefix length \(prefix) is not 0...128") }
        case .unix(let path):
            guard isCanonicalAbsolutePath(path), path.utf8.count < WireFormat.maximumUnixPathLength else {
                throw .invalidAddress("unix socket path \(path) must be absolute, canonical and under 108 bytes")
            }
        }
    }

    /// Whether `address` with socket `type` is allowed by this rule. IPv4-mapped
    /// IPv6 addresses are matched as the IPv4 address they carry.
    public func allows(_ address: SocketAddress, type: Int32) -> Bool {
        let allowedTypes = types.isEmpty ? [streamType] : types
        guard allowedTypes.contains(type) else { return false }
        switch (network, address) {
        case (.unix(let path), .unix(let requested)):
            return path.utf8.elementsEqual(requested.utf8)
        case (.ipv4(let network, let prefix), .ipv4(let ip, let port)):
            return ports.contains(port) && Self.prefixMatches(UInt128(network.value), UInt128(ip.value), prefix, width: 32)
        case (.ipv4(let network, let prefix), .ipv6(let ip, let port, _)):
            guard let mapped = ip.mappedIPv4 else { return false }
            return ports.contains(port) && Self.prefixMatches(UInt128(network.value), UInt128(mapped.value), prefix, width: 32)
        case (.ipv6(let network, let prefix), .ipv6(let ip, let port, _)):
            // A mapped address is IPv4 traffic: only IPv4 rules decide it.
            guard ip.mappedIPv4 == nil else { return false }
            return ports.contains(port) && Self.prefixMatches(network.value, ip.value, prefix, width: 128)
        default:
            return false
        }
    }

    /// Whether a socket may be bound at `address`: as ``allows(_:type:)``, but port 0 (the
    /// kernel picks a free port, anywhere in its ephemeral range) only where every port from
    /// 1 up is allowed; a rule for "0-1023" would otherwise bind the socket at 33605.
    public func allowsBinding(_ address: SocketAddress, type: Int32) -> Bool {
        switch address {
        case .ipv4(let ip, 0): ports.lowerBound <= 1 && ports.upperBound == .max && allows(.ipv4(ip, port: 1), type: type)
        case .ipv6(let ip, 0, let scope): ports.lowerBound <= 1 && ports.upperBound == .max && allows(.ipv6(ip, port: 1, scopeID: scope), type: type)
        default: allows(address, type: type)
        }
    }

    /// Whether every address `other` allows, this rule allows too.
    func contains(_ other: AddressRule) -> Bool {
        let otherTypes = other.types.isEmpty ? [streamType] : other.types
        let ownTypes = types.isEmpty ? [streamType] : types
        guard otherTypes.isSubset(of: ownTypes) else { return false }
        switch (network, other.network) {
        case (.unix(let a), .unix(let b)): return a.utf8.elementsEqual(b.utf8)
        case (.ipv4(let a, let p), .ipv4(let b, let q)):
            return p <= q && Self.prefixMatches(UInt128(a.value), UInt128(b.value), p, width: 32) && ports.contains(other.ports)
        case (.ipv6(let a, let p), .ipv6(let b, let q)):
            return p <= q && Self.prefixMatches(a.value, b.value, p, width: 128) && ports.contains(other.ports)
        default: return false
        }
    }

    static func prefixMatches(_ network: UInt128, _ address: UInt128, _ prefix: Int, width: Int) -> Bool {
        if prefix == 0 { return true }
        let shift = UInt128(width - prefix)
        return network >> shift == address >> shift
    }
}

private extension ClosedRange {
    func contains(_ other: ClosedRange) -> Bool { lowerBound <= other.lowerBound && other.upperBound <= upperBound }
}

/// SOCK_STREAM, the default type of an address rule.
let streamType: Int32 = 1

/// Why a policy is not well formed.
public enum PolicyError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidPath(String, String)
    case duplicatePath(String)
    case invalidAddress(String)
    /// A rule's directory (or a file rule's parent) could not be opened when the policy was activated.
    case cannotOpen(String, String)
    /// A narrowed policy would grant something the current one does not.
    case wouldWiden

    public var description: String {
        switch self {
        case .invalidPath(let path, let why): "path rule \(path): \(why)"
        case .duplicatePath(let path): "two rules for \(path): merge their permissions into one"
        case .invalidAddress(let why): "address rule: \(why)"
        case .cannotOpen(let path, let why): "cannot open \(path): \(why)"
        case .wouldWiden: "a policy can only be narrowed: the new policy grants something the current one does not"
        }
    }
}

/// Whether `path` is absolute and canonical: starts with "/", has no empty,
/// "." or ".." component, no trailing "/" (except "/" itself) and no NUL.
public func isCanonicalAbsolutePath(_ path: String) -> Bool {
    // One pass over the bytes, no allocation: it runs on every OPEN. Native strings are
    // scanned in place (the generic UTF8View walk costs several times more).
    if let result = path.utf8.withContiguousStorageIfAvailable({ isCanonicalAbsolutePath(bytes: $0) }) { return result }
    return Array(path.utf8).withUnsafeBufferPointer { isCanonicalAbsolutePath(bytes: $0) }
}

/// ``isCanonicalAbsolutePath(_:)`` on the bytes of a path.
///
/// A path that starts with "/" and does not end with one is canonical when no "/" in it
/// is followed by "/" or "." and it holds no NUL: every component is then non-empty and
/// neither "." nor "..". That is tested eight bytes at a time, each word beside the same
/// word shifted by one byte, with no branch per byte (most paths: a component starting
/// with "." is rare). A path that fails it, or is shorter than 9 bytes, is walked
/// exactly. (Walked byte by byte where a word held a "/", the check was a fifth of the
/// serving thread's instructions per OPEN; BENCHMARKS.md, eighth round.)
@inline(__always) // on every brokered OPEN: one stretch of code with ActivePolicy.open
func isCanonicalAbsolutePath(bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    let count = bytes.count
    let slash = UInt8(ascii: "/")
    guard count > 0, bytes[0] == slash else { return false }
    if count == 1 { return true }
    guard bytes[count - 1] != slash else { return false }
    if count >= 9 && hasNoSlashBeforeSlashOrDotNorNUL(UnsafeRawBufferPointer(bytes)) { return true }
    return isCanonicalAbsolutePathWalked(bytes)
}

/// The word-at-a-time test of ``isCanonicalAbsolutePath(bytes:)``, for 9 bytes or more
/// starting with "/": true when no byte is NUL and no "/" is followed by "/" or ".".
/// Byte k of the word at `offset + 1` sits where byte k of the word at `offset` does, so
/// their masks line up a byte with the one after it. The last pair overlaps the one
/// before it, which only tests some bytes twice.
@inline(__always)
private func hasNoSlashBeforeSlashOrDotNorNUL(_ raw: UnsafeRawBufferPointer) -> Bool {
    let base = raw.baseAddress!, count = raw.count
    // "/" is 0x2f and "." 0x2e: a byte is either exactly when, its low bit set, it is "/".
    let slashes = repeatedByte(UInt8(ascii: "/")), lowBits = repeatedByte(1)
    var flagged: UInt64 = 0
    func test(_ offset: Int) {
        // In bounds: offset + 9 <= count.
        let word = base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        let next = base.loadUnaligned(fromByteOffset: offset + 1, as: UInt64.self)
        // NUL: the words at offset + 1 cover every byte but the first, which is "/".
        flagged |= exactZeroByteMask(next)
            | (exactZeroByteMask(word ^ slashes) & exactZeroByteMask((next | lowBits) ^ slashes))
    }
    var offset = 0
    while offset + 9 <= count {
        test(offset)
        offset += 8
    }
    if offset + 1 < count { test(count - 9) }
    return flagged == 0
}

/// The high bit of each of `word`'s bytes that is zero, and no other bit: unlike
/// `zeroByteMask`, no borrow crosses from one byte into the next, so the masks of two
/// words can be combined byte by byte.
@inline(__always)
private func exactZeroByteMask(_ word: UInt64) -> UInt64 {
    let low7: UInt64 = 0x7f7f_7f7f_7f7f_7f7f
    return ~(((word & low7) &+ low7) | word | low7)
}

/// ``isCanonicalAbsolutePath(bytes:)`` walked, for a path that starts with "/", is longer
/// than "/" and does not end with one.
///
/// Eight bytes at a time where none of them is "/" or NUL: such a run only lengthens the
/// current component, to 8 bytes or more, which is never "." or ".." (so its dots need no
/// counting). The eight bytes of any other word are looked at one by one.
private func isCanonicalAbsolutePathWalked(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    let count = bytes.count
    let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
    let raw = UnsafeRawBufferPointer(bytes)
    var componentLength = 0
    var dots = 0
    var index = 1
    while index < count {
        var end = count
        if index + 8 <= count {
            let word = raw.baseAddress!.loadUnaligned(fromByteOffset: index, as: UInt64.self) // in bounds: index + 8 <= count
            if !hasZeroByte(word) && !hasZeroByte(word ^ repeatedByte(slash)) {
                componentLength += 8
                index += 8
                continue
            }
            end = index + 8
        }
        while index < end {
            let byte = bytes[index]
            if byte == 0 { return false }
            if byte == slash {
                // An empty, "." or ".." component.
                if componentLength == 0 || componentLength == dots && dots <= 2 { return false }
                componentLength = 0
                dots = 0
            } else {
                componentLength += 1
                if byte == dot { dots += 1 }
            }
            index += 1
        }
    }
    return !(componentLength == dots && dots <= 2)
}
