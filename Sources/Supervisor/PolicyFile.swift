public import PrivsepIPC

/// A policy file: what a worker may ask for, and how it must be confined.
///
/// JSON, read strictly: unknown keys, wrong types, duplicate keys and bad
/// values are errors that name the line and column and say what to write.
///
/// ```json
/// {
///   "paths": [
///     { "path": "/srv/input", "kind": "directory", "allow": ["read", "list"] },
///     { "path": "/var/log/parser.log", "kind": "file", "allow": ["append", "create"], "create_mode": "0640" }
///   ],
///   "sockets": [ { "domain": "inet", "type": "dgram" } ],
///   "connect": [ { "address": "127.0.0.0/8", "ports": "8000-8080" }, { "unix": "/run/app.sock" } ],
///   "bind": [ { "address": "127.0.0.1", "ports": "80" } ],
///   "require": ["seccomp", "landlock"],
///   "limits": { "memory": "512M", "open_files": 64, "cpu_seconds": 10, "file_size": "10M" },
///   "timeout": 30,
///   "environment": { "LANG": "C.UTF-8" }
/// }
/// ```
public struct PolicyFile: Sendable, Equatable {
    public var policy = Policy()
    /// Sandbox layers the worker must report before its first request.
    public var requiredLayers: SandboxLayers = []
    public var resourceLimits = ResourceLimits()
    /// Wall-clock limit in seconds.
    public var timeout: Double?
    public var environment: [String: String] = [:]
    public var inheritedEnvironment: [String] = []

    public init() {}

    /// Parses the text of a policy file; `name` prefixes error locations.
    public static func parse(_ text: String, name: String = "policy") throws(PolicyFileError) -> PolicyFile {
        let root: JSONValue
        do { root = try JSONReader.parse(text) } catch {
            throw PolicyFileError(file: name, location: error.location, message: error.message)
        }
        var parser = Parser(file: name)
        return try parser.file(root)
    }

    /// The policy in plain words, one grant per line.
    public var summary: [String] {
        var lines: [String] = []
        for rule in policy.paths {
            let what = rule.kind == .directory ? "everything beneath \(rule.path)" : rule.path
            var line = "\(what): \(rule.permissions.names.joined(separator: ", "))"
            if rule.permissions.contains(.create) { line += " (new files get mode 0\(String(rule.createMode, radix: 8)))" }
            if rule.symlinks == .followBeneath { line += "; symlinks followed while they stay beneath" }
            let extra = rule.allowedFileTypes.subtracting([.regular, .directory])
            if !extra.isEmpty { line += "; also hands out \(extra.map(\.description).sorted().joined(separator: ", "))" }
            lines.append(line)
        }
        for rule in policy.sockets {
            let interceptOnly = SocketRule.refusedToBrokeredWorkers(domain: rule.domain, type: rule.type)
            lines.append("create sockets of domain \(socketDomainName(rule.domain)), type \(socketTypeName(rule.type))"
                         + (interceptOnly ? " (in intercept mode only: a brokered worker gets TCP sockets from connect and bind rules)" : ""))
        }
        for (verb, rules) in [("connect to", policy.connect), ("bind", policy.bind)] {
            for rule in rules { lines.append("\(verb) \(describe(rule))") }
        }
        if lines.isEmpty { lines.append("nothing: every request is refused") }
        if !requiredLayers.isEmpty { lines.append("the worker must report these sandbox layers first: \(layerNames(requiredLayers))") }
        if let timeout { lines.append("the worker is killed after \(timeout) s") }
        let limits = resourceLimits
        let described: [(String, UInt64?)] = [
            ("address space", limits.addressSpace), ("open files", limits.openFiles), ("CPU seconds", limits.cpuSeconds),
            ("file size", limits.fileSize), ("processes", limits.processes),
        ]
        for (name, value) in described { if let value { lines.append("limit: \(name) \(value)") } }
        return lines
    }

    private func describe(_ rule: AddressRule) -> String {
        let types = (rule.types.isEmpty ? [streamType] : Array(rule.types)).map(socketTypeName).sorted().joined(separator: "/")
        switch rule.network {
        case .unix(let path): return "the unix socket \(path) (\(types))"
        case .ipv4(let address, let prefix):
            return "\(address)/\(prefix) ports \(rule.ports.lowerBound)-\(rule.ports.upperBound) (\(types))"
        case .ipv6(let address, let prefix):
            return "[\(address)]/\(prefix) ports \(rule.ports.lowerBound)-\(rule.ports.upperBound) (\(types))"
        }
    }
}

/// A policy file error, with where it is and what to write instead.
public struct PolicyFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var location: SourceLocation
    public var message: String
    public var description: String { "\(file):\(location): \(message)" }
}

private let domains: [(String, Int32)] = [("unix", 1), ("inet", 2), ("inet6", 10), ("netlink", 16), ("packet", 17)]
private let socketTypes: [(String, Int32)] = [("stream", 1), ("dgram", 2), ("raw", 3), ("seqpacket", 5)]
private let layerTable: [(String, SandboxLayers)] = [
    ("no_new_privs", .noNewPrivileges), ("seccomp", .seccomp), ("landlock", .landlock),
    ("user-namespace", .userNamespace), ("network-namespace", .networkNamespace), ("rlimits", .resourceLimits),
    ("landlock-scopes", .landlockScopes),
]

/// The policy-file name of a socket domain ("inet", "unix"...), or its number.
public func socketDomainName(_ domain: Int32) -> String { domains.first { $0.1 == domain }?.0 ?? "\(domain)" }
/// The policy-file name of a socket type ("stream", "dgram"...), or its number.
public func socketTypeName(_ type: Int32) -> String { socketTypes.first { $0.1 == type }?.0 ?? "\(type)" }

private struct Parser {
    let file: String

    func fail(_ location: SourceLocation, _ message: String) -> PolicyFileError {
        PolicyFileError(file: file, location: location, message: message)
    }

    /// The members of an object, refusing keys outside `allowed`.
    func members(_ value: JSONValue, _ what: String, allowed: [String]) throws(PolicyFileError) -> [String: JSONValue] {
        guard case .object(let members) = value.kind else { throw fail(value.location, "\(what) must be an object, not \(value.typeName)") }
        var result: [String: JSONValue] = [:]
        for member in members {
            guard allowed.contains(member.key) else {
                let suggestion = allowed.min { editDistance($0, member.key) < editDistance($1, member.key) }
                let hint = suggestion.map { editDistance($0, member.key) <= 2 ? " (did you mean \"\($0)\"?)" : "" } ?? ""
                throw fail(member.keyLocation, "unknown key \"\(member.key)\" in \(what)\(hint); expected one of: \(allowed.joined(separator: ", "))")
            }
            result[member.key] = member.value
        }
        return result
    }

    func string(_ value: JSONValue, _ what: String) throws(PolicyFileError) -> String {
        guard case .string(let text) = value.kind else { throw fail(value.location, "\(what) must be a string, not \(value.typeName)") }
        return text
    }

    func strings(_ value: JSONValue, _ what: String) throws(PolicyFileError) -> [(String, SourceLocation)] {
        guard case .array(let elements) = value.kind else { throw fail(value.location, "\(what) must be an array of strings, not \(value.typeName)") }
        var result: [(String, SourceLocation)] = []
        for element in elements { result.append((try string(element, "each entry of \(what)"), element.location)) }
        return result
    }

    func array(_ value: JSONValue, _ what: String) throws(PolicyFileError) -> [JSONValue] {
        guard case .array(let elements) = value.kind else { throw fail(value.location, "\(what) must be an array, not \(value.typeName)") }
        return elements
    }

    func wholeNumber(_ value: JSONValue, _ what: String) throws(PolicyFileError) -> UInt64 {
        guard case .number(let number, _) = value.kind, number >= 0, number == number.rounded(), number < 1.8e19 else {
            throw fail(value.location, "\(what) must be a whole number of zero or more")
        }
        return UInt64(number)
    }

    /// A size: a whole number of bytes, or a string such as "512M".
    func size(_ value: JSONValue, _ what: String) throws(PolicyFileError) -> UInt64 {
        if case .number = value.kind { return try wholeNumber(value, what) }
        let text = try string(value, what)
        if let bytes = parseByteSize(text) { return bytes }
        throw fail(value.location, "\(what) must be a number of bytes or a size such as \"64K\", \"512M\" or \"2G\" (below 16 EiB)")
    }

    mutating func file(_ root: JSONValue) throws(PolicyFileError) -> PolicyFile {
        let top = try members(root, "the policy", allowed: ["paths", "sockets", "connect", "bind", "require", "limits",
                                                            "timeout", "environment", "inherit_environment"])
        var result = PolicyFile()
        for element in try top["paths"].map({ v throws(PolicyFileError) in try array(v, "\"paths\"") }) ?? [] {
            result.policy.paths.append(try pathRule(element))
        }
        for element in try top["sockets"].map({ v throws(PolicyFileError) in try array(v, "\"sockets\"") }) ?? [] {
            let fields = try members(element, "a socket rule", allowed: ["domain", "type", "protocols"])
            var protocols: Set<Int32> = []
            if let list = fields["protocols"] {
                for value in try array(list, "\"protocols\"") {
                    let number = try wholeNumber(value, "each protocol number")
                    guard number <= 255 else { throw fail(value.location, "a protocol number is 0...255") }
                    protocols.insert(Int32(number))
                }
            }
            result.policy.sockets.append(SocketRule(domain: try named(fields["domain"], in: domains, "domain", element),
                                                    type: try named(fields["type"], in: socketTypes, "type", element),
                                                    protocols: protocols))
        }
        for (key, isConnect) in [("connect", true), ("bind", false)] {
            for element in try top[key].map({ v throws(PolicyFileError) in try array(v, "\"\(key)\"") }) ?? [] {
                let rule = try addressRule(element, key)
                if isConnect { result.policy.connect.append(rule) } else { result.policy.bind.append(rule) }
            }
        }
        for (name, location) in try top["require"].map({ v throws(PolicyFileError) in try strings(v, "\"require\"") }) ?? [] {
            guard let layer = layerTable.first(where: { $0.0 == name })?.1 else {
                throw fail(location, "unknown sandbox layer \"\(name)\"; expected one of: \(layerTable.map(\.0).joined(separator: ", "))")
            }
            result.requiredLayers.insert(layer)
        }
        if let limits = top["limits"] {
            let fields = try members(limits, "\"limits\"", allowed: ["memory", "open_files", "cpu_seconds", "file_size", "processes", "core_size"])
            if let v = fields["memory"] { result.resourceLimits.addressSpace = try size(v, "\"memory\"") }
            if let v = fields["open_files"] { result.resourceLimits.openFiles = try wholeNumber(v, "\"open_files\"") }
            if let v = fields["cpu_seconds"] { result.resourceLimits.cpuSeconds = try wholeNumber(v, "\"cpu_seconds\"") }
            if let v = fields["file_size"] { result.resourceLimits.fileSize = try size(v, "\"file_size\"") }
            if let v = fields["processes"] { result.resourceLimits.processes = try wholeNumber(v, "\"processes\"") }
            if let v = fields["core_size"] { result.resourceLimits.coreSize = try size(v, "\"core_size\"") }
        }
        if let timeout = top["timeout"] {
            guard case .number(let seconds, _) = timeout.kind, seconds > 0, seconds.isFinite else {
                throw fail(timeout.location, "\"timeout\" must be a finite number of seconds greater than 0")
            }
            result.timeout = seconds
        }
        if let environment = top["environment"] {
            guard case .object(let pairs) = environment.kind else {
                throw fail(environment.location, "\"environment\" must be an object of names to strings")
            }
            for pair in pairs {
                guard isEnvironmentName(pair.key) else {
                    throw fail(pair.keyLocation, "environment variable names may not be empty or contain '=' or NUL")
                }
                result.environment[pair.key] = try string(pair.value, "environment variable \(pair.key)")
            }
        }
        if let inherited = top["inherit_environment"] {
            for (name, location) in try strings(inherited, "\"inherit_environment\"") {
                guard isEnvironmentName(name) else {
                    throw fail(location, "environment variable names may not be empty or contain '=' or NUL")
                }
                result.inheritedEnvironment.append(name)
            }
        }
        do { try result.policy.validate() } catch {
            throw fail(root.location, "\(error)")
        }
        return result
    }

    func named(_ value: JSONValue?, in table: [(String, Int32)], _ key: String, _ owner: JSONValue) throws(PolicyFileError) -> Int32 {
        guard let value else { throw fail(owner.location, "missing \"\(key)\"; expected one of: \(table.map(\.0).joined(separator: ", "))") }
        let name = try string(value, "\"\(key)\"")
        guard let number = table.first(where: { $0.0 == name })?.1 else {
            throw fail(value.location, "unknown \(key) \"\(name)\"; expected one of: \(table.map(\.0).joined(separator: ", "))")
        }
        return number
    }

    func pathRule(_ value: JSONValue) throws(PolicyFileError) -> PathRule {
        let fields = try members(value, "a path rule", allowed: ["path", "kind", "allow", "symlinks", "create_mode", "file_types"])
        guard let pathValue = fields["path"] else { throw fail(value.location, "a path rule needs \"path\": an absolute path") }
        let path = try string(pathValue, "\"path\"")
        guard isCanonicalAbsolutePath(path) else {
            throw fail(pathValue.location, "\"path\" must be absolute and canonical (no '.', '..', '//' or trailing '/'): \(path)")
        }
        guard let kindValue = fields["kind"] else {
            throw fail(value.location, "a path rule needs \"kind\": \"file\" (exactly this file) or \"directory\" (it and everything beneath)")
        }
        guard let kind = PathRule.Kind(rawValue: try string(kindValue, "\"kind\"")) else {
            throw fail(kindValue.location, "\"kind\" must be \"file\" or \"directory\"")
        }
        guard let allowValue = fields["allow"] else {
            throw fail(value.location, "a path rule needs \"allow\": a list of \(PathPermissions.names.map(\.0).joined(separator: ", "))")
        }
        var permissions: PathPermissions = []
        for (name, location) in try strings(allowValue, "\"allow\"") {
            guard let permission = PathPermissions.names.first(where: { $0.0 == name })?.1 else {
                throw fail(location, "unknown permission \"\(name)\"; expected one of: \(PathPermissions.names.map(\.0).joined(separator: ", "))")
            }
            permissions.insert(permission)
        }
        var rule = PathRule(path: path, kind: kind, permissions: permissions)
        if let symlinks = fields["symlinks"] {
            guard let policy = PathRule.SymlinkPolicy(rawValue: try string(symlinks, "\"symlinks\"")) else {
                throw fail(symlinks.location, "\"symlinks\" must be \"refuse\" or \"follow-beneath\"")
            }
            rule.symlinks = policy
        }
        if let mode = fields["create_mode"] {
            let text = try string(mode, "\"create_mode\" (an octal string such as \"0640\")")
            guard let value = UInt32(text, radix: 8), value & ~0o777 == 0 else {
                throw fail(mode.location, "\"create_mode\" must be octal permission bits within \"0777\", such as \"0640\"")
            }
            rule.createMode = value
        }
        if let types = fields["file_types"] {
            let table: [(String, FileType)] = [("regular", .regular), ("directory", .directory), ("fifo", .fifo),
                                               ("socket", .socket), ("character-device", .characterDevice), ("block-device", .blockDevice)]
            var allowed: Set<FileType> = []
            for (name, location) in try strings(types, "\"file_types\"") {
                guard let type = table.first(where: { $0.0 == name })?.1 else {
                    throw fail(location, "unknown file type \"\(name)\"; expected one of: \(table.map(\.0).joined(separator: ", "))")
                }
                allowed.insert(type)
            }
            rule.allowedFileTypes = allowed
        }
        do { try Policy(paths: [rule]).validate() } catch { throw fail(value.location, "\(error)") }
        return rule
    }

    func addressRule(_ value: JSONValue, _ key: String) throws(PolicyFileError) -> AddressRule {
        let fields = try members(value, "a \"\(key)\" rule", allowed: ["address", "ports", "unix", "types"])
        var types: Set<Int32> = []
        if let list = fields["types"] {
            for (name, location) in try strings(list, "\"types\"") {
                guard let type = socketTypes.first(where: { $0.0 == name })?.1 else {
                    throw fail(location, "unknown socket type \"\(name)\"; expected one of: \(socketTypes.map(\.0).joined(separator: ", "))")
                }
                types.insert(type)
            }
        }
        if let unix = fields["unix"] {
            guard fields["address"] == nil, fields["ports"] == nil else {
                throw fail(value.location, "a rule names either \"unix\" (a socket path) or \"address\" and \"ports\", not both")
            }
            let path = try string(unix, "\"unix\"")
            let rule = AddressRule(network: .unix(path: path), types: types)
            do { try rule.validate() } catch { throw fail(unix.location, "\(error)") }
            return rule
        }
        guard let addressValue = fields["address"] else {
            throw fail(value.location, "a \"\(key)\" rule needs \"address\" (such as \"127.0.0.1\", \"10.0.0.0/8\" or \"::1\") or \"unix\"")
        }
        let text = try string(addressValue, "\"address\"")
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        let network: AddressRule.Network
        let badAddress = fail(addressValue.location, "\"\(text)\" is not an IPv4 or IPv6 address with an optional /prefix")
        guard parts.count <= 2 else { throw badAddress }
        if let v4 = IPv4Address(String(parts[0])) {
            let prefix = parts.count == 2 ? Int(parts[1]) : 32
            guard let prefix, (0...32).contains(prefix) else { throw badAddress }
            network = .ipv4(v4, prefixLength: prefix)
        } else if let v6 = IPv6Address(String(parts[0])) {
            let prefix = parts.count == 2 ? Int(parts[1]) : 128
            guard let prefix, (0...128).contains(prefix) else { throw badAddress }
            network = .ipv6(v6, prefixLength: prefix)
        } else {
            throw badAddress
        }
        guard let portsValue = fields["ports"] else {
            throw fail(value.location, "a \"\(key)\" rule with an address needs \"ports\": a port such as \"443\" or a range such as \"8000-8080\"")
        }
        let portText: String
        if case .number(_, let text) = portsValue.kind { portText = text } else { portText = try string(portsValue, "\"ports\"") }
        let bounds = portText.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0) }
        guard (1...2).contains(bounds.count), let low = bounds.first ?? nil, let high = bounds.last ?? nil, low <= high else {
            throw fail(portsValue.location, "\"ports\" must be a port such as \"443\" or a range such as \"8000-8080\"")
        }
        return AddressRule(network: network, ports: low...high, types: types)
    }
}

private func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in stride(from: 1, through: b.count, by: 1) {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}

/// "4096", "64K", "512M", "2G" as bytes; nil if malformed or past UInt64 (found by
/// fuzzing: a huge count times its unit used to overflow and trap).
public func parseByteSize(_ text: String) -> UInt64? {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    if let last = text.last, let unit = units[last] {
        guard let number = UInt64(text.dropLast()) else { return nil }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: unit)
        return overflow ? nil : bytes
    }
    return UInt64(text)
}

/// Whether `name` can name an environment variable: not empty, and no '=' or NUL byte. Bytes,
/// not Characters: "=" followed by a combining accent is one Character that is not "=", yet
/// its bytes still end the name where execve's reader sees them.
package func isEnvironmentName(_ name: String) -> Bool {
    !name.isEmpty && !name.utf8.contains(UInt8(ascii: "=")) && !name.utf8.contains(0)
}
