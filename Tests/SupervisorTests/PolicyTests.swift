import CPrivsepShims
import Glibc
import PrivsepIPC
@testable import Supervisor
import Worker
import Testing

@Suite struct PolicyFileTests {
    static let example = """
    {
      "paths": [
        { "path": "/srv/input", "kind": "directory", "allow": ["read", "list"] },
        { "path": "/var/log/parser.log", "kind": "file", "allow": ["append", "create"], "create_mode": "0640" }
      ],
      "sockets": [ { "domain": "inet", "type": "dgram" } ],
      "connect": [ { "address": "127.0.0.0/8", "ports": "8000-8080" }, { "unix": "/run/app.sock", "types": ["seqpacket"] } ],
      "bind": [ { "address": "::1", "ports": 443 } ],
      "require": ["seccomp", "landlock"],
      "limits": { "memory": "512M", "open_files": 64, "cpu_seconds": 10, "file_size": "10M" },
      "timeout": 30,
      "environment": { "LANG": "C.UTF-8" },
      "inherit_environment": ["TZ"]
    }
    """

    @Test func parsesEveryKey() throws {
        let file = try PolicyFile.parse(Self.example)
        #expect(file.policy.paths == [
            PathRule(path: "/srv/input", kind: .directory, permissions: [.read, .listDirectory]),
            PathRule(path: "/var/log/parser.log", kind: .file, permissions: [.append, .create], createMode: 0o640),
        ])
        #expect(file.policy.sockets == [SocketRule(domain: 2, type: 2)])
        #expect(file.policy.connect == [
            AddressRule(network: .ipv4(IPv4Address(127, 0, 0, 0), prefixLength: 8), ports: 8000...8080),
            AddressRule(network: .unix(path: "/run/app.sock"), types: [5]),
        ])
        #expect(file.policy.bind == [AddressRule(network: .ipv6(.loopback, prefixLength: 128), ports: 443...443)])
        #expect(file.requiredLayers == [.seccomp, .landlock])
        #expect(file.resourceLimits == ResourceLimits(addressSpace: 512 << 20, openFiles: 64, cpuSeconds: 10, fileSize: 10 << 20))
        #expect(file.timeout == 30)
        #expect(file.environment == ["LANG": "C.UTF-8"])
        #expect(file.inheritedEnvironment == ["TZ"])
        #expect(file.summary.first == "everything beneath /srv/input: read, list")
        #expect(file.summary.contains("connect to 127.0.0.0/8 ports 8000-8080 (stream)"))
    }

    @Test(arguments: [
        ("{\"pathz\": []}", "policy:1:2: unknown key \"pathz\" in the policy (did you mean \"paths\"?); expected one of: paths, sockets, connect, bind, require, limits, timeout, environment, inherit_environment"),
        ("{\"paths\": [{\"path\": \"/srv\", \"kind\": \"directory\", \"allow\": [\"raed\"]}]}", "policy:1:60: unknown permission \"raed\"; expected one of: read, write, create, truncate, append, list, execute"),
        ("{\"paths\": [{\"path\": \"srv\", \"kind\": \"file\", \"allow\": [\"read\"]}]}", "policy:1:21: \"path\" must be absolute and canonical (no '.', '..', '//' or trailing '/'): srv"),
        ("{\"paths\": [{\"path\": \"/a/../b\", \"kind\": \"file\", \"allow\": [\"read\"]}]}", "policy:1:21: \"path\" must be absolute and canonical (no '.', '..', '//' or trailing '/'): /a/../b"),
        ("{\"paths\": [{\"path\": \"/srv\", \"allow\": [\"read\"]}]}", "policy:1:12: a path rule needs \"kind\": \"file\" (exactly this file) or \"directory\" (it and everything beneath)"),
        ("{\n  \"timeout\": -1\n}", "policy:2:14: \"timeout\" must be a finite number of seconds greater than 0"),
        ("{\"timeout\": 1e999}", "policy:1:13: \"timeout\" must be a finite number of seconds greater than 0"),
        ("{\"connect\": [{\"address\": \"10.0.0.0/33\", \"ports\": \"1\"}]}", "policy:1:26: \"10.0.0.0/33\" is not an IPv4 or IPv6 address with an optional /prefix"),
        ("{\"connect\": [{\"address\": \"10.0.0.1\", \"ports\": \"90-80\"}]}", "policy:1:47: \"ports\" must be a port such as \"443\" or a range such as \"8000-8080\""),
        ("{\"require\": [\"selinux\"]}", "policy:1:14: unknown sandbox layer \"selinux\"; expected one of: no_new_privs, seccomp, landlock, user-namespace, network-namespace, rlimits, landlock-scopes"),
        ("{\"paths\": [], \"paths\": []}", "policy:1:15: duplicate key \"paths\""),
        // "=" and a combining accent are one Character that is not "=": the bytes are checked.
        ("{\"environment\": {\"LD_PRELOAD=\u{301}\": \"/tmp/x.so\"}}", "policy:1:18: environment variable names may not be empty or contain '=' or NUL"),
        ("{\"inherit_environment\": [\"HOME\", \"A=B\"]}", "policy:1:34: environment variable names may not be empty or contain '=' or NUL"),
        ("{\"paths\": [],}", "policy:1:14: expected a key in double quotes"),
        ("[1, 2]", "policy:1:1: the policy must be an object, not an array"),
        ("{\"paths\": [{\"path\": \"/x\", \"kind\": \"file\", \"allow\": [\"read\"], \"create_mode\": \"4755\"}]}", "policy:1:77: \"create_mode\" must be octal permission bits within \"0777\", such as \"0640\""),
        ("{\"paths\": [{\"path\": \"/x\", \"kind\": \"file\", \"allow\": [\"read\"]}, {\"path\": \"/x\", \"kind\": \"file\", \"allow\": [\"write\"]}]}", "policy:1:1: two rules for /x: merge their permissions into one"),
    ])
    func errorsPointAtTheLineAndSayWhatToWrite(text: String, message: String) {
        #expect(throws: PolicyFileError.self) { try PolicyFile.parse(text) }
        do {
            _ = try PolicyFile.parse(text)
        } catch {
            #expect(error.description == message)
        }
    }

    /// Duplicate keys are found with a set: an object of many keys parses in linear time (a
    /// search per key took 2.5 s for 40,000 keys, in a release build), and a duplicate at the
    /// end is still found.
    @Test func anObjectOfManyKeysParsesAndItsDuplicateIsFound() throws {
        let keys = (0..<100_000).map { "\"K\($0)\": \"v\"" }
        let text = "{\"environment\": {" + keys.joined(separator: ", ") + "}}"
        #expect(try PolicyFile.parse(text).environment.count == 100_000)
        #expect(throws: PolicyFileError.self) { try PolicyFile.parse("{\"environment\": {" + keys.joined(separator: ", ") + ", \"K0\": \"w\"}}") }
        // Canonically equivalent spellings are still one key, as before.
        #expect(throws: PolicyFileError.self) { try PolicyFile.parse("{\"environment\": {\"\u{e9}\": \"a\", \"e\u{301}\": \"b\"}}") }
    }

    /// Found by the policy fuzzer: a size whose count times its unit passes 2^64 trapped.
    @Test func hugeSizesAreErrorsNotOverflows() {
        #expect(throws: PolicyFileError.self) { try PolicyFile.parse("{ \"limits\": { \"memory\": \"7172141347101707757M\" } }") }
        #expect(parseByteSize("16383G") == 16383 << 30)
        #expect(parseByteSize("17179869184G") == nil)
        #expect(parseByteSize("18446744073709551615") == .max)
        #expect(parseByteSize("18446744073709551616") == nil)
        #expect(parseByteSize("12X") == nil)
    }

    /// RFC 8259: `\u` and exactly four hex digits; a sign is not a digit.
    @Test func unicodeEscapesTakeFourHexDigits() throws {
        #expect(try PolicyFile.parse(#"{"environment": {"A": "\u0041\u00e9"}}"#).environment == ["A": "Aé"])
        for bad in [#"\u+041"#, #"\u-041"#, #"\u 041"#, #"\u41"#, #"\u0x41"#] {
            #expect(throws: PolicyFileError.self, "\(bad)") { try PolicyFile.parse(#"{"environment": {"A": ""# + bad + #""}}"#) }
        }
    }

    /// `privsep check` says that an Internet stream socket rule serves intercept mode only.
    @Test func theSummarySaysWhereATCPSocketRuleApplies() throws {
        let summary = try PolicyFile.parse(#"{"sockets": [{"domain": "inet", "type": "stream"}, {"domain": "inet", "type": "dgram"}]}"#).summary
        #expect(summary.contains("create sockets of domain inet, type stream (in intercept mode only: a brokered worker gets TCP sockets from connect and bind rules)"))
        #expect(summary.contains("create sockets of domain inet, type dgram"))
    }

    @Test func emptyPolicyGrantsNothing() throws {
        #expect(try PolicyFile.parse("{}").summary == ["nothing: every request is refused"])
    }
}

@Suite struct PolicyTests {
    @Test func rulesMatchOnComponentBoundaries() {
        let rule = PathRule(path: "/srv/data", kind: .directory, permissions: [.read])
        #expect(rule.permissions.contains(.read))
        var policy = Policy(paths: [rule])
        #expect(policy.contains(Policy(paths: [PathRule(path: "/srv/data/x", kind: .file, permissions: [.read])])))
        #expect(!policy.contains(Policy(paths: [PathRule(path: "/srv/database", kind: .file, permissions: [.read])])))
        #expect(!policy.contains(Policy(paths: [PathRule(path: "/srv/data/x", kind: .file, permissions: [.write])])))
        policy.allow(path: "/", .directory, [.listDirectory])
        #expect(policy.contains(Policy(paths: [PathRule(path: "/etc", kind: .directory, permissions: [.listDirectory])])))
    }

    @Test func narrowingCannotWidenThroughAMoreSpecificRule() {
        let current = Policy(paths: [
            PathRule(path: "/srv", kind: .directory, permissions: [.read, .write]),
            PathRule(path: "/srv/ro", kind: .directory, permissions: [.read]),
        ])
        #expect(!current.contains(Policy(paths: [PathRule(path: "/srv/ro", kind: .directory, permissions: [.read, .write])])))
        #expect(!current.contains(Policy(paths: [PathRule(path: "/srv/ro/x", kind: .file, permissions: [.write])])))
        #expect(!current.contains(Policy(paths: [PathRule(path: "/srv", kind: .directory, permissions: [.write])])), "would widen /srv/ro")
        #expect(current.contains(Policy(paths: [PathRule(path: "/srv", kind: .directory, permissions: [.read])])))
        #expect(current.contains(Policy(paths: [PathRule(path: "/srv/rw", kind: .directory, permissions: [.write])])))
    }

    /// A symlink beneath a rule that follows them could name a file under a narrower rule
    /// nested there, and the request would be decided by the outer rule: refused outright.
    @Test func nothingMayBeNestedBeneathARuleThatFollowsSymlinks() throws {
        for inner in [PathRule(path: "/srv/data/locked", kind: .directory, permissions: [.read]),
                      PathRule(path: "/srv/data/app.log", kind: .file, permissions: [.append])] {
            let policy = Policy(paths: [PathRule(path: "/srv/data", kind: .directory, permissions: [.read, .write, .create],
                                                 symlinks: .followBeneath), inner])
            #expect(throws: PolicyError.self) { try policy.validate() }
        }
        for root in ["/", "/srv"] {
            let policy = Policy(paths: [PathRule(path: root, kind: .directory, permissions: [.read], symlinks: .followBeneath),
                                        PathRule(path: "/srv/data", kind: .directory, permissions: [.read])])
            #expect(throws: PolicyError.self) { try policy.validate() }
        }
        // Siblings, rules above it, and nesting beneath a rule that refuses symlinks are fine.
        try Policy(paths: [
            PathRule(path: "/srv", kind: .directory, permissions: [.read]),
            PathRule(path: "/srv/data", kind: .directory, permissions: [.read, .write], symlinks: .followBeneath),
            PathRule(path: "/srv/database", kind: .directory, permissions: [.read], symlinks: .followBeneath),
            PathRule(path: "/srv/other/x", kind: .file, permissions: [.read]),
        ]).validate()
        #expect(throws: PolicyFileError.self) {
            try PolicyFile.parse("""
                {"paths": [{"path": "/srv", "kind": "directory", "allow": ["read"], "symlinks": "follow-beneath"},
                           {"path": "/srv/in", "kind": "directory", "allow": ["read"]}]}
                """)
        }
    }

    @Test func canonicalPaths() {
        for good in ["/", "/a", "/a/b", "/a.b/..c", "/.x"] { #expect(isCanonicalAbsolutePath(good), "\(good)") }
        for bad in ["", "a", "/a/", "//a", "/a//b", "/./a", "/a/.", "/a/..", "/../a", "/a\0b"] { #expect(!isCanonicalAbsolutePath(bad), "\(bad)") }
    }

    /// The check reads eight bytes at a time where it can: against a plain reading of the
    /// rule, on random paths of every length up to 40 made of the bytes that matter, each
    /// at every offset from a word's start.
    @Test func canonicalCheckAgreesWithItsDefinition() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [0x2f, 0x2f, 0x2e, 0x2e, 0x61, 0x61, 0x61, 0x61, 0x61, 0x00, 0xc3, 0xa9]
        var disagreements: [[UInt8]] = []
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...40, using: &generator)
            var path = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            if !path.isEmpty && Bool.random(using: &generator) { path[0] = 0x2f }
            let padding = Int.random(in: 0..<8, using: &generator)
            let fast = ([UInt8](repeating: 0x2f, count: padding) + path).withUnsafeBufferPointer {
                isCanonicalAbsolutePath(bytes: UnsafeBufferPointer(rebasing: $0[padding...]))
            }
            if fast != isCanonicalByDefinition(path) { disagreements.append(path) }
        }
        let firstDisagreements = Array(disagreements.prefix(3))
        #expect(firstDisagreements.isEmpty)
    }

    /// Paths of 9 bytes or more are first tested a word at a time, for a "/" before "/" or
    /// "." and for NUL, and walked only when that finds one: against the definition, on
    /// random paths up to 64 bytes whose components are mostly long (so that most are
    /// canonical and pass the word test alone), each also with a byte that matters dropped in
    /// at every position: "/", ".", NUL, their neighbours "-" and "0", and "/" and "." with
    /// the high bit set.
    @Test func wordAtATimeCanonicalCheckAgreesWithItsDefinition() {
        func checked(_ path: [UInt8], padding: Int) -> Bool {
            ([UInt8](repeating: 0x2f, count: padding) + path + [0x2e, 0x2f]).withUnsafeBufferPointer {
                isCanonicalAbsolutePath(bytes: UnsafeBufferPointer(rebasing: $0[padding..<(padding + path.count)]))
            }
        }
        var generator = SystemRandomNumberGenerator()
        var disagreements: [[UInt8]] = []
        var canonicalAndLong = 0
        for _ in 0..<400 {
            var path: [UInt8] = []
            let length = Int.random(in: 9...64, using: &generator)
            while path.count < length {
                path.append(0x2f)
                path += (0..<Int.random(in: 1...12, using: &generator)).map { _ in UInt8.random(in: 0x61...0x7a, using: &generator) }
            }
            if isCanonicalByDefinition(path) { canonicalAndLong += 1 }
            if checked(path, padding: Int.random(in: 0..<8, using: &generator)) != isCanonicalByDefinition(path) { disagreements.append(path) }
            for byte: UInt8 in [0x2f, 0x2e, 0x00, 0x2d, 0x30, 0x80, 0xaf, 0xae] {
                for position in 1..<path.count {
                    var changed = path
                    changed[position] = byte
                    if checked(changed, padding: position % 8) != isCanonicalByDefinition(changed) { disagreements.append(changed) }
                }
            }
        }
        let firstDisagreements = Array(disagreements.prefix(3))
        #expect(firstDisagreements.isEmpty)
        #expect(canonicalAndLong == 400, "the generator makes canonical paths")
    }

    /// The most specific rule (the longest that matches) is found whatever the rules'
    /// order in the policy: nested directories, a file rule inside them, a sibling whose
    /// name begins with another rule's ("/ab" beside "/a") and "/" itself, in many orders,
    /// against the longest rule whose `matches(_:)` is true.
    @Test func mostSpecificRuleIsTheLongestMatchInAnyOrder() throws {
        let scratch = ScratchDirectory()
        for directory in ["a", "a/b", "a/b/c", "ab"] { scratch.mkdir(directory) }
        scratch.write("a/b/file.txt", "x")
        let root = scratch.path
        let rules = [
            PathRule(path: "/", kind: .directory, permissions: [.read]),
            PathRule(path: root + "/a", kind: .directory, permissions: [.read]),
            PathRule(path: root + "/a/b", kind: .directory, permissions: [.read]),
            PathRule(path: root + "/a/b/c", kind: .directory, permissions: [.read]),
            PathRule(path: root + "/a/b/file.txt", kind: .file, permissions: [.read]),
            PathRule(path: root + "/ab", kind: .directory, permissions: [.read]),
        ]
        let asked = ["/", "/etc/hostname", root, root + "/a", root + "/a/x", root + "/ab", root + "/ab/x", root + "/abc",
                     root + "/a/b", root + "/a/bc", root + "/a/b/c", root + "/a/b/c/d/e", root + "/a/b/file.txt",
                     root + "/a/b/file.txt/x", root + "/a/b/file.txtx", root + "/a/b/file.tx"]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<24 {
            // Every rule but one, in a random order: each rule is missing from some rounds.
            var chosen = rules.shuffled(using: &generator)
            chosen.remove(at: round % chosen.count)
            let policy = try ActivePolicy(Policy(paths: chosen))
            for path in asked {
                let expected = chosen.filter { $0.matches(path) }.max { $0.path.utf8.count < $1.path.utf8.count }?.path
                let found = policy.mostSpecificRule(for: path).map { chosen[$0].path }
                #expect(found == expected, "\(path) with rules \(chosen.map(\.path))")
            }
        }
    }

    /// Rule matching compares eight bytes at a time: a difference at any position, in a
    /// rule of any length up to 40, is found.
    @Test func ruleMatchingFindsADifferenceAtAnyByte() {
        for length in 1...40 {
            let path = "/" + String(repeating: "d", count: length)
            let file = PathRule(path: path, kind: .file, permissions: [.read])
            let directory = PathRule(path: path, kind: .directory, permissions: [.read])
            #expect(file.matches(path) && directory.matches(path) && directory.matches(path + "/x"))
            for position in 1...length {
                var changed = Array(path.utf8)
                changed[position] = UInt8(ascii: "e")
                let other = String(decoding: changed, as: UTF8.self)
                #expect(!file.matches(other) && !directory.matches(other) && !directory.matches(other + "/x"), "\(length) \(position)")
            }
        }
    }

    @Test func narrowingAddressRules() {
        let wide = Policy(connect: [AddressRule(network: .ipv4(IPv4Address(10, 0, 0, 0), prefixLength: 8), ports: 1...1024)])
        #expect(wide.contains(Policy(connect: [AddressRule(network: .ipv4(IPv4Address(10, 1, 0, 0), prefixLength: 16), ports: 80...80)])))
        #expect(!wide.contains(Policy(connect: [AddressRule(network: .ipv4(IPv4Address(10, 1, 0, 0), prefixLength: 16), ports: 80...2000)])))
        #expect(!wide.contains(Policy(connect: [AddressRule(network: .ipv4(IPv4Address(11, 0, 0, 0), prefixLength: 8), ports: 80...80)])))
        #expect(!wide.contains(Policy(connect: [AddressRule(network: .ipv4(IPv4Address(10, 0, 0, 0), prefixLength: 8), ports: 80...80, types: [2])])))
    }

    @Test func rulesCompareBytesNotCanonicallyEquivalentStrings() throws {
        let scratch = ScratchDirectory()
        scratch.mkdir("K")
        scratch.write("K/x", "x")
        let policy = try ActivePolicy(Policy(paths: [PathRule(path: scratch.path + "/K", kind: .directory, permissions: [.read])]))
        // U+212A KELVIN SIGN is canonically equivalent to "K" but is three different bytes.
        switch policy.open(OpenRequest(path: scratch.path + "/\u{212A}/x", flags: 0)) {
        case .granted: Issue.record("a different spelling matched the rule")
        case .denied(let errno, let reason):
            #expect(errno == .permissionDenied)
            #expect(reason == "no rule grants this path")
        }
        switch policy.open(OpenRequest(path: scratch.path + "/K/x", flags: 0)) {
        case .granted: break
        case .denied(let errno, let reason): Issue.record("\(errno): \(reason)")
        }
    }

    @Test func protocolZeroIsADefaultOnlyForInetAndUnix() throws {
        // For netlink, protocol 0 is NETLINK_ROUTE: a rule for uevents (15) must not grant it.
        let policy = try ActivePolicy(Policy(sockets: [SocketRule(domain: 16, type: 3, protocols: [15])]))
        switch policy.socket(SocketRequest(domain: 16, type: 3, protocol: 0)) {
        case .granted: Issue.record("NETLINK_ROUTE granted by a uevent rule")
        case .denied(let errno, _): #expect(errno == .permissionDenied)
        }
        let inet = try ActivePolicy(Policy(sockets: [SocketRule(domain: 2, type: 2)]))
        switch inet.socket(SocketRequest(domain: 2, type: 2, protocol: 17)) {
        case .granted: break
        case .denied(let errno, let why): Issue.record("UDP refused: \(errno) \(why)")
        }
        switch inet.socket(SocketRequest(domain: 2, type: 2, protocol: 136)) { // UDP-Lite
        case .granted: Issue.record("a non-default protocol was granted")
        case .denied: break
        }
    }

    @Test func activationFailsForAMissingDirectory() {
        #expect(throws: PolicyError.cannotOpen("/nonexistent-privsep-dir", "No such file or directory")) {
            _ = try ActivePolicy(Policy(paths: [PathRule(path: "/nonexistent-privsep-dir", kind: .directory, permissions: [.read])]))
        }
    }
}

/// The canonical-path rule read plainly, for the tests of the word-at-a-time check: "/",
/// then components that are neither empty, "." nor "..", and no NUL.
private func isCanonicalByDefinition(_ bytes: [UInt8]) -> Bool {
    guard bytes.first == UInt8(ascii: "/"), !bytes.contains(0) else { return false }
    if bytes == [UInt8(ascii: "/")] { return true }
    let components = bytes.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
    return !components.contains { $0.isEmpty || Array($0) == [0x2e] || Array($0) == [0x2e, 0x2e] }
}

@Suite struct OpenFlagTests {
    static let everyPermission: PathPermissions = [.read, .write, .create, .truncate, .append, .listDirectory]

    /// Every bit the broker knows is refused, passed to the open as given, forced (O_CLOEXEC,
    /// O_NOCTTY), dropped (O_LARGEFILE) or applied after the open (O_NONBLOCK): none is let
    /// through by omission, and a vetted request never carries a bit outside those passed.
    @Test func everyKnownFlagHasADecision() {
        let forcedDroppedOrAfter: Int32 = O_CLOEXEC | O_NOCTTY | privsep_O_LARGEFILE_KERNEL | O_NONBLOCK
        #expect(knownOpenFlags & ~(passedOpenFlags | refusedOpenFlagBits | forcedDroppedOrAfter) == 0)
        for bit in (0..<32).map({ Int32(bitPattern: 1 << $0) }) where knownOpenFlags & bit != 0 && O_ACCMODE & bit == 0 {
            for mode in [O_RDONLY, O_WRONLY, O_RDWR] {
                if case .success(let flags) = vetOpenFlags(mode | bit, permissions: Self.everyPermission) {
                    #expect(flags & ~(passedOpenFlags | O_CLOEXEC | O_NOCTTY) == 0, "bit 0x\(String(bit, radix: 16))")
                }
            }
        }
        for (flag, name) in refusedOpenFlags {
            #expect(throws: FlagDenial.self, "\(name)") { try vetOpenFlags(O_RDONLY | flag, permissions: Self.everyPermission).get() }
        }
    }

    /// `list` opens directories read-only; it must not let O_CREAT make a file the type check
    /// would refuse only after it exists.
    @Test func creatingNeedsTheAccessModesPermission() throws {
        #expect(throws: FlagDenial.self) { try vetOpenFlags(O_RDONLY | O_CREAT, permissions: [.listDirectory, .create]).get() }
        #expect(throws: FlagDenial.self) { try vetOpenFlags(O_WRONLY | O_CREAT, permissions: [.read, .create]).get() }
        #expect(try vetOpenFlags(O_RDONLY | O_CREAT, permissions: [.read, .create]).get() == O_RDONLY | O_CREAT | O_CLOEXEC | O_NOCTTY)
        #expect(try vetOpenFlags(O_RDONLY | O_DIRECTORY, permissions: [.listDirectory]).get() == O_DIRECTORY | O_CLOEXEC | O_NOCTTY)
    }
}

@Suite struct SyscallGroupHintTests {
    /// The groups named for a call are those that allow it so called; without its arguments,
    /// those that allow it whatever they are come first.
    @Test func groupsAreNamedForACallsArguments() {
        let names = { (groups: [SyscallGroup]) in groups.map(\.name) }
        #expect(names(SyscallGroup.groups(allowing: "openat")) == ["cpath", "rpath", "wpath", "dispatch"])
        let readOnly: [UInt64] = [UInt64(bitPattern: -100), 0, UInt64(O_RDONLY | O_CLOEXEC), 0, 0, 0]
        let creating: [UInt64] = [UInt64(bitPattern: -100), 0, UInt64(O_WRONLY | O_CREAT | O_CLOEXEC), 0, 0, 0]
        let writing: [UInt64] = [UInt64(bitPattern: -100), 0, UInt64(O_RDWR), 0, 0, 0]
        #expect(names(SyscallGroup.groups(allowing: "openat", arguments: readOnly)) == ["rpath", "wpath", "cpath", "dispatch"])
        #expect(names(SyscallGroup.groups(allowing: "openat", arguments: creating)) == ["cpath"])
        #expect(names(SyscallGroup.groups(allowing: "openat", arguments: writing)) == ["wpath", "cpath"])
        #expect(names(SyscallGroup.groups(allowing: "ioctl", arguments: [1, 0x5412, 0, 0, 0, 0])).isEmpty, "TIOCSTI")
        #expect(names(SyscallGroup.groups(allowing: "ioctl", arguments: [1, 0x5402, 0, 0, 0, 0])) == ["tty"])
        #expect(names(SyscallGroup.groups(allowing: "setsid")).isEmpty)
        // Priority and affinity: of the worker itself only.
        #expect(names(SyscallGroup.groups(allowing: "setpriority", arguments: [0, 0, 5, 0, 0, 0])) == ["proc"])
        #expect(names(SyscallGroup.groups(allowing: "setpriority", arguments: [0, 1, 5, 0, 0, 0])).isEmpty)
        #expect(names(SyscallGroup.groups(allowing: "setpriority", arguments: [2, 0, 5, 0, 0, 0])).isEmpty, "PRIO_USER")
        #expect(names(SyscallGroup.groups(allowing: "sched_setaffinity", arguments: [1, 8, 0, 0, 0, 0])).isEmpty)
    }

    /// The order learn recommends groups in names every group once.
    @Test func leastReachFirstNamesEveryGroupOnce() {
        #expect(SyscallGroup.leastReachFirst.count == SyscallGroup.all.count)
        #expect(Set(SyscallGroup.leastReachFirst) == Set(SyscallGroup.all))
    }
}
