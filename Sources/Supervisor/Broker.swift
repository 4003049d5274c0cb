import CPrivsepShims
import Glibc
public import PrivsepIPC
public import SystemPackage

/// A policy made ready to serve: the directory of every rule opened once, as an
/// O_PATH descriptor, so each request is resolved beneath a directory the
/// supervisor chose, never beneath a path the worker spelled.
///
/// One active policy can be shared by many workers.
public final class ActivePolicy: Sendable {
    public let policy: Policy
    /// Per path rule (same index): the O_PATH fd to resolve beneath, and for a
    /// file rule the rule's own copy of the file name.
    let anchors: [Anchor]
    /// Per unix address rule: the O_PATH fd of the socket's directory and its name.
    private let unixAnchors: [String: Anchor]
    /// Every path rule's path, one after another, for ``mostSpecificRule(forPath:)``.
    private let rulePathBytes: [UInt8]
    /// The path rules, longest path first (equal lengths in the policy's order): the first
    /// that matches a path is its most specific.
    private let rulesLongestFirst: [RuleSpan]

    /// Where a path rule's path lies in ``rulePathBytes``.
    struct RuleSpan: Sendable {
        let start: Int
        let count: Int
        let index: Int
        let kind: PathRule.Kind
    }

    struct Anchor: Sendable {
        let directory: Int32
        let name: String?
        /// The device the directory is on, and whether that is procfs: a file opened
        /// beneath it on the same device needs no fstatfs to know it is not procfs.
        var device: UInt64 = 0
        var onProcfs = true
        /// Whether the rule lies inside /proc (only such rules hand out procfs files).
        var ruleInsideProc = false
        /// Whether the directory is on a disk or memory filesystem whose regular files never
        /// block, so O_NONBLOCK (set while opening) can stay on them.
        var regularFilesNeverBlock = false
        /// The audit reason of a grant under this rule, built once rather than per OPEN.
        var grantReason = ""
        /// The rule's file types as one bit each (at `fileTypeBit(_:)`): an OPEN tests a
        /// bit rather than hashing into the rule's set.
        var allowedFileTypeBits: UInt16 = 0
    }

    /// Opens every rule's directory. Fails, naming the rule, if the policy is not
    /// well formed or a directory cannot be opened: a grant that cannot be
    /// enforced is an error, never silently dropped.
    public init(_ policy: Policy) throws(PolicyError) {
        try policy.validate()
        var anchors: [Anchor] = []
        var unixAnchors: [String: Anchor] = [:]
        func openDirectory(_ path: String) throws(PolicyError) -> Int32 {
            switch system_open(path, O_PATH_FLAGS) {
            case .success(let fd): return fd
            case .failure(let errno): throw .cannotOpen(path, "\(errno)")
            }
        }
        func anchor(_ directory: Int32, name: String?) -> Anchor {
            var anchor = Anchor(directory: directory, name: name)
            if case .success(let info) = system_fstat(directory) {
                anchor.device = UInt64(info.st_dev)
                anchor.onProcfs = isProcFilesystem(directory)
                anchor.regularFilesNeverBlock = isPlainFilesystem(directory)
            }
            return anchor
        }
        do {
            for rule in policy.paths {
                switch rule.kind {
                case .directory:
                    anchors.append(anchor(try openDirectory(rule.path), name: nil))
                case .file:
                    let (parent, name) = splitParent(rule.path)
                    anchors.append(anchor(try openDirectory(parent), name: name))
                }
                anchors[anchors.count - 1].ruleInsideProc = PathRule(path: "/proc", kind: .directory, permissions: [.read]).matches(rule.path)
                anchors[anchors.count - 1].grantReason = "rule \(rule.path)"
                anchors[anchors.count - 1].allowedFileTypeBits = rule.allowedFileTypes.reduce(0) { $0 | fileTypeBit($1) }
            }
            for rule in policy.connect + policy.bind {
                guard case .unix(let path) = rule.network, unixAnchors[path] == nil else { continue }
                let (parent, name) = splitParent(path)
                unixAnchors[path] = Anchor(directory: try openDirectory(parent), name: name)
            }
        } catch {
            for anchor in anchors { _ = system_close(anchor.directory) }
            for anchor in unixAnchors.values { _ = system_close(anchor.directory) }
            throw error
        }
        self.policy = policy
        self.anchors = anchors
        self.unixAnchors = unixAnchors
        var bytes: [UInt8] = []
        var spans: [RuleSpan] = []
        for (index, rule) in policy.paths.enumerated() {
            spans.append(RuleSpan(start: bytes.count, count: rule.path.utf8.count, index: index, kind: rule.kind))
            bytes.append(contentsOf: rule.path.utf8)
        }
        rulePathBytes = bytes
        // Swift's sort is stable: of two rules as long, the earlier stays first.
        rulesLongestFirst = spans.sorted { $0.count > $1.count }
    }

    /// Whether every directory this policy opened is the one the same path reaches
    /// beneath `current`'s rules without following symlinks. A narrowed policy's
    /// rules are checked as text by ``Policy/contains(_:)``; this checks the
    /// filesystem agrees, so a symlink on a narrowed rule's path cannot lead out.
    func isAnchored(beneath current: ActivePolicy) -> Bool {
        for (index, rule) in policy.paths.enumerated() {
            let directoryPath = rule.kind == .directory ? rule.path : splitParent(rule.path).parent
            guard case .success(let mine) = system_fstat(anchors[index].directory) else { return false }
            // The current rule whose anchor this directory lies beneath (a file rule's anchor is its parent).
            var best: (index: Int, length: Int)? = nil
            for (candidate, currentRule) in current.policy.paths.enumerated() {
                let anchorPath = currentRule.kind == .directory ? currentRule.path : splitParent(currentRule.path).parent
                let probe = PathRule(path: anchorPath, kind: .directory, permissions: [.read])
                guard probe.matches(directoryPath), anchorPath.utf8.count > (best?.length ?? -1) else { continue }
                best = (candidate, anchorPath.utf8.count)
            }
            guard let best else { return false }
            let currentRule = current.policy.paths[best.index]
            let anchorPath = currentRule.kind == .directory ? currentRule.path : splitParent(currentRule.path).parent
            let relative = directoryPath.utf8.count == anchorPath.utf8.count ? "."
                : String(decoding: directoryPath.utf8.dropFirst(anchorPath == "/" ? 1 : anchorPath.utf8.count + 1), as: UTF8.self)
            switch system_openat2(current.anchors[best.index].directory, relative, flags: O_PATH_FLAGS, mode: 0,
                                  resolve: privsep_RESOLVE_BENEATH | privsep_RESOLVE_NO_MAGICLINKS | privsep_RESOLVE_NO_SYMLINKS) {
            case .success(let fd):
                defer { _ = system_close(fd) }
                guard case .success(let reached) = system_fstat(fd), reached.st_dev == mine.st_dev, reached.st_ino == mine.st_ino else {
                    return false
                }
            case .failure:
                return false
            }
        }
        return true
    }

    deinit {
        for anchor in anchors { _ = system_close(anchor.directory) }
        for anchor in unixAnchors.values { _ = system_close(anchor.directory) }
    }

    // MARK: OPEN

    /// Serves an OPEN: vets the flags bit by bit, resolves the path beneath the
    /// most specific rule with openat2, and checks what was opened.
    ///
    /// A path outside every rule fails with EACCES before any system call, the
    /// same errno as a path that exists but is denied, so the broker is no
    /// oracle of what exists outside the policy.
    /// No process's /proc files are handed out (see ``Requester``).
    public func open(_ request: OpenRequest) -> BrokerResult {
        open(request, requester: .nobody)
    }

    func open(_ request: OpenRequest, requester: Requester) -> BrokerResult {
        switch open(path: request.path, flags: request.flags, requester: requester) {
        case .granted(let fd, let rule): .granted(fd, grantReason(rule: rule))
        case .denied(let errno, let reason): .denied(errno, reason)
        }
    }

    /// ``open(path:flags:)`` on a string's bytes.
    func open(path: String, flags: Int32, requester: Requester) -> OpenDecision {
        let count = path.utf8.count
        // withCString hands over every byte (a NUL inside too, which the checks refuse) and a
        // NUL after them, copying only a string that is not already contiguous.
        var decision: OpenDecision? = nil
        path.withCString { cString in
            decision = open(path: UnsafeBufferPointer(start: UnsafeRawPointer(cString).assumingMemoryBound(to: UInt8.self), count: count),
                            flags: flags, requester: requester)
        }
        return decision.take()!
    }

    /// Why an open under path rule `rule` was granted, for the audit log.
    func grantReason(rule: Int) -> String { anchors[rule].grantReason }

    /// ``open(_:)`` on the path's bytes, as the serving loop has them in the datagram
    /// (``InPlaceOpenRequest``). A NUL must follow them in memory: the part beneath the
    /// rule goes to openat2 from where it lies.
    ///
    /// A grant names its rule rather than carrying the rule's reason: the serving loop reads
    /// the reason (``grantReason(rule:)``) only when it writes a record, so an OPEN costs no
    /// reference counting for a string it does not use (BENCHMARKS.md, seventh round).
    func open(path: UnsafeBufferPointer<UInt8>, flags requestFlags: Int32, requester: Requester) -> OpenDecision {
        guard isCanonicalAbsolutePath(bytes: path) else {
            return .denied(.permissionDenied, "path is not absolute and canonical")
        }
        return open(checkedPath: path, flags: requestFlags, requester: requester)
    }

    /// ``open(path:flags:)`` of a path the caller has already found absolute and canonical
    /// (the intercept thread, which chose by it how to read the path), so it is not walked
    /// twice. Each entry point inlines the body: neither pays for the other.
    func open(canonicalPath path: UnsafeBufferPointer<UInt8>, flags requestFlags: Int32, requester: Requester) -> OpenDecision {
        open(checkedPath: path, flags: requestFlags, requester: requester)
    }

    /// Who asks for an open, by the numbers /proc knows it by: its own files there are the
    /// only ones of a process a rule inside /proc hands out.
    struct Requester {
        var process: pid_t
        /// The calling thread (intercept mode), else the process again.
        var thread: pid_t
        /// No process: none of a process's files (pid 0 has no /proc entry).
        static let nobody = Requester(process: 0, thread: 0)
    }

    @inline(__always)
    private func open(checkedPath path: UnsafeBufferPointer<UInt8>, flags requestFlags: Int32, requester: Requester) -> OpenDecision {
        guard let index = mostSpecificRule(forPath: path) else {
            return .denied(.permissionDenied, "no rule grants this path")
        }
        // The rule and its anchor are read field by field: copying either would retain
        // and release their strings (and the rule's set) on every OPEN.
        let permissions = policy.paths[index].permissions
        let flags: Int32
        switch vetOpenFlags(requestFlags, permissions: permissions) {
        case .success(let vetted): flags = vetted
        case .failure(let denial): return .denied(denial.errno, denial.reason)
        }
        let directory = anchors[index].directory, anchorDevice = anchors[index].device
        // O_NONBLOCK while opening: a FIFO must not hang the supervisor. Cleared below
        // unless the worker asked for it.
        let fd: OwnedFileDescriptor
        // openat2 refuses a mode without O_CREAT.
        let mode = flags & O_CREAT != 0 ? policy.paths[index].createMode : 0
        let resolve = resolveFlags(policy.paths[index].symlinks)
        let opened = withRelativePath(of: path, beneath: index) { relative in
            system_openat2(directory, relative, flags: flags | O_NONBLOCK, mode: mode, resolve: resolve)
        }
        switch opened {
        case .success(let raw):
            fd = OwnedFileDescriptor(adoptingRawValue: raw)
        case .failure(.tooManySymbolicLinkLevels), .failure(.improperLink):
            // ELOOP: a symlink where the rule allows none; EXDEV: resolution tried to leave the subtree.
            return .denied(.permissionDenied, "resolution left the rule's directory or met a symlink")
        case .failure(let errno):
            return .denied(errno, "open failed")
        }
        // fstat here, not OwnedFileDescriptor.status(): a call into another module, one
        // more page of code per OPEN (BENCHMARKS.md, sixth round).
        let status: (type: PrivsepIPC.FileType, device: UInt64)
        switch system_fstat(fd.unsafeRawValue) {
        case .success(let info): status = (PrivsepIPC.FileType(rawValue: info.st_mode & PrivsepIPC.FileType.mask), UInt64(info.st_dev))
        case .failure(let errno): return .denied(errno, "fstat failed")
        }
        // procfs files speak for the process that opens them (here the supervisor:
        // /proc/self/mem, environ...). Only a rule inside /proc may hand them out, and of the
        // files of processes only the requester's own: any other would be the supervisor's
        // (/proc/self, reached through a link or by its number) or another process's.
        let rawFD = fd.unsafeRawValue
        let sameFilesystem = status.device == anchorDevice && !anchors[index].onProcfs
        if !sameFilesystem && (anchors[index].onProcfs || isProcFilesystem(rawFD)) {
            guard anchors[index].ruleInsideProc else {
                return .denied(.permissionDenied, "procfs files are handed out only by rules inside /proc")
            }
            if let refusal = procFileRefusal(rawFD, flags: requestFlags, requester: requester) {
                return .denied(.permissionDenied, refusal)
            }
        }
        guard anchors[index].allowedFileTypeBits & fileTypeBit(status.type) != 0 else {
            return .denied(.permissionDenied, "\(status.type) is not a type this rule hands out")
        }
        let accessMode = requestFlags & O_ACCMODE
        if status.type == .directory {
            guard permissions.contains(.listDirectory), accessMode == O_RDONLY else {
                return .denied(.permissionDenied, "opening a directory needs the list permission and read-only access")
            }
        } else if accessMode != O_WRONLY && !permissions.contains(.read) {
            return .denied(.permissionDenied, "reading needs the read permission")
        }
        // The worker gets the blocking mode it asked for (regular files on procfs, sysfs
        // or FUSE can block). Where the flag changes nothing (directories; regular files
        // on ext4, xfs, btrfs, tmpfs, overlayfs) the fcntl is skipped.
        let neverBlocks = status.type == .directory
            || (status.type == .regular && status.device == anchorDevice && anchors[index].regularFilesNeverBlock)
        if requestFlags & O_NONBLOCK == 0 && !neverBlocks {
            switch system_fcntl(fd.unsafeRawValue, F_SETFL, flags & ~O_NONBLOCK & STATUS_FLAGS) {
            case .success: break
            case .failure(let errno): return .denied(errno, "fcntl failed")
            }
        }
        return .granted(fd, rule: index)
    }

    /// Why a file open on procfs, under a rule inside /proc, is not handed out, if it is not.
    /// The supervisor opened it with its own rights, which the file may keep: of a process's
    /// files, only the requester's own, and none that judges its opener (pagemap's physical
    /// pages); of the others, only as anyone may open them (a root supervisor passes every
    /// permission check: kmsg, kcore, sysrq-trigger), and none that shows its opener's view
    /// (kernel addresses in kallsyms).
    private func procFileRefusal(_ fd: Int32, flags: Int32, requester: Requester) -> String? {
        let path: [UInt8]
        switch inspectProcFile(fd) {
        case .process(let owner, let processPath) where (owner == requester.process || owner == requester.thread) && procNumbersOurProcesses:
            let name = lastComponent(processPath)
            return processFilesShowingTheOpenersView.contains { name.elementsEqual($0) }
                ? "this file of a process shows, or lets write, what its opener (the supervisor) may" : nil
        case .process, .unknown: return "another process's /proc files are not handed out (the supervisor's, say)"
        case .system(let systemPath): path = systemPath
        }
        guard case .success(let info) = system_fstat(fd) else { return "fstat failed" }
        let accessMode = flags & O_ACCMODE
        if (accessMode != O_WRONLY && info.st_mode & S_IROTH == 0) || (accessMode != O_RDONLY && info.st_mode & S_IWOTH == 0) {
            return "procfs files are handed out only where anyone may open them so (the supervisor's own rights would open this one)"
        }
        if procFilesShowingTheOpenersView.contains(path) {
            return "this procfs file shows its opener's view (the supervisor's)"
        }
        return nil
    }

    func mostSpecificRule(for path: String) -> Int? {
        var path = path // withUTF8 makes a string contiguous first (a no-op for a native one)
        return path.withUTF8 { mostSpecificRule(forPath: $0) }
    }

    /// ``mostSpecificRule(for:)`` on the bytes of a path: the matching rule with the
    /// longest path, the first in the policy of two as long.
    ///
    /// Walks the rules longest first over their bytes copied at activation, and stops at
    /// the first match: no rule's `String` is read on a request (each read checked the
    /// string's representation first), and the rules shorter than the match are not
    /// tried.
    func mostSpecificRule(forPath path: UnsafeBufferPointer<UInt8>) -> Int? {
        rulePathBytes.withUnsafeBufferPointer { all in
            for span in rulesLongestFirst where span.count <= path.count {
                let rule = UnsafeBufferPointer(rebasing: all[span.start..<(span.start + span.count)])
                if PathRule.matches(asked: path, rule: rule, kind: span.kind) { return span.index }
            }
            return nil
        }
    }

    // MARK: SOCKET, CONNECT, BIND

    /// Serves a SOCKET: only (domain, type) pairs the policy lists. The socket is close-on-exec.
    ///
    /// An Internet stream or seqpacket socket is refused unless `checkedLater` (intercept mode, which
    /// serves the program's connect, bind and listen on it): a worker holding an unbound one
    /// could listen on it, which binds it to every interface at an ephemeral port with no
    /// BIND rule asked, or connect it where no CONNECT rule reaches. A brokered worker gets
    /// its TCP sockets from CONNECT and BIND.
    public func socket(_ request: SocketRequest, checkedLater: Bool = false) -> BrokerResult {
        let baseType = request.type & ~(privsep_SOCK_NONBLOCK | privsep_SOCK_CLOEXEC)
        guard baseType & ~0xf == 0 else { return .denied(.invalidArgument, "unknown socket type bits") }
        if !checkedLater && SocketRule.refusedToBrokeredWorkers(domain: request.domain, type: baseType) {
            return .denied(.permissionDenied, "an unbound TCP (or SCTP) socket could listen on every interface or connect "
                           + "past the rules: ask CONNECT or BIND for a TCP socket")
        }
        guard policy.sockets.contains(where: { $0.allows(domain: request.domain, type: baseType, protocol: request.protocol) }) else {
            return .denied(.permissionDenied, "no rule allows socket(\(request.domain), \(baseType), \(request.protocol))")
        }
        switch system_socket(request.domain, request.type | privsep_SOCK_CLOEXEC, request.protocol) {
        case .success(let fd): return .granted(OwnedFileDescriptor(adoptingRawValue: fd), "socket rule")
        case .failure(let errno): return .denied(errno, "socket failed")
        }
    }

    /// Starts a CONNECT. The socket is created non-blocking so a slow peer never
    /// stalls the supervisor: the result is either final or in progress, in which
    /// case the caller waits for the fd to become writable and calls ``finishConnect(_:)``.
    public func startConnect(_ request: AddressRequest) -> ConnectStart {
        let baseType = request.type & ~(privsep_SOCK_NONBLOCK | privsep_SOCK_CLOEXEC)
        guard policy.connect.contains(where: { $0.allows(request.address, type: baseType) }) else {
            return .finished(.denied(.permissionDenied, "no rule allows connecting to \(request.address)"))
        }
        guard isDefaultProtocol(request.protocol, domain: family(of: request.address), type: baseType) else {
            return .finished(.denied(.permissionDenied, "protocol \(request.protocol) is not the default for this socket type"))
        }
        let socket: OwnedFileDescriptor
        switch makeSocket(for: request, nonBlocking: true) {
        case .success(let fd): socket = OwnedFileDescriptor(adoptingRawValue: fd)
        case .failure(let errno): return .finished(.denied(errno, "socket failed"))
        }
        let raw = socket.unsafeRawValue
        let result = withSocketAddress(request.address) { address, length in
            let first = system_connect(raw, address, length)
            guard case .failure(.nowInProgress) = first else { return first }
            // A loopback handshake has usually completed by the time connect returns, and
            // asking again says so in one call (0 once established, EALREADY while the
            // handshake runs, the connection's error if it failed), sparing those the
            // round trip through the event loop and a poll and getsockopt.
            switch system_connect(raw, address, length) {
            case .success, .failure(.socketIsConnected): return .success(())
            case .failure(.alreadyInProcess), .failure(.nowInProgress): return .failure(.nowInProgress)
            case .failure(let errno): return .failure(errno)
            }
        }
        switch result {
        case .success:
            return .finished(restoreBlocking(socket, requested: request.type))
        case .failure(.nowInProgress):
            return .inProgress(socket)
        case .failure(let errno):
            return .finished(.denied(errno, "connect failed"))
        }
    }

    /// Completes a CONNECT that was in progress, once its socket is writable.
    public func finishConnect(_ pending: consuming PendingConnect) -> BrokerResult {
        let socket = pending.socket
        switch system_getsockopt_int(socket.unsafeRawValue, SOL_SOCKET, SO_ERROR) {
        case .success(0):
            return restoreBlocking(socket, requested: pending.requestedType)
        case .success(let error):
            return .denied(Errno(rawValue: error), "connect failed")
        case .failure(let errno):
            return .denied(errno, "getsockopt failed")
        }
    }

    /// Serves a BIND: the classic use is a privileged port for an unprivileged worker.
    public func bind(_ request: AddressRequest) -> BrokerResult {
        let baseType = request.type & ~(privsep_SOCK_NONBLOCK | privsep_SOCK_CLOEXEC)
        guard policy.bind.contains(where: { $0.allowsBinding(request.address, type: baseType) }) else {
            return .denied(.permissionDenied, "no rule allows binding \(request.address)")
        }
        guard isDefaultProtocol(request.protocol, domain: family(of: request.address), type: baseType) else {
            return .denied(.permissionDenied, "protocol \(request.protocol) is not the default for this socket type")
        }
        let socket: OwnedFileDescriptor
        switch makeSocket(for: request, nonBlocking: false) {
        case .success(let fd): socket = OwnedFileDescriptor(adoptingRawValue: fd)
        case .failure(let errno): return .denied(errno, "socket failed")
        }
        if baseType == privsep_SOCK_STREAM, case .unix = request.address {} else if baseType == privsep_SOCK_STREAM {
            _ = system_setsockopt(socket.unsafeRawValue, SOL_SOCKET, SO_REUSEADDR, 1)
        }
        let raw = socket.unsafeRawValue
        if case .failure(let errno) = keepIPv4Out(raw, binding: request.address, type: baseType) {
            return .denied(errno, "setsockopt(IPV6_V6ONLY) failed")
        }
        switch withSocketAddress(request.address, binding: true, { system_bind(raw, $0, $1) }) {
        case .success: return .granted(socket, "bound \(request.address)")
        case .failure(let errno): return .denied(errno, "bind failed")
        }
    }

    /// Makes a socket about to be bound at `::` IPv6-only, unless the policy would also let
    /// it bind 0.0.0.0 at that port. Linux's sockets are dual-stack by default
    /// (IPV6_V6ONLY off), and one bound at `::` then takes IPv4 connections and datagrams
    /// too, which only IPv4 rules decide. Any other IPv6 address reaches no IPv4 traffic
    /// (a mapped address is matched by IPv4 rules already). Fails if the socket is bound.
    func keepIPv4Out(_ raw: Int32, binding address: SocketAddress, type: Int32) -> Result<Void, Errno> {
        guard keepsIPv4Out(address, type: type) else { return .success(()) }
        return system_setsockopt(raw, 41 /* IPPROTO_IPV6 */, 26 /* IPV6_V6ONLY */, 1)
    }

    /// Whether a socket bound at `address` must be IPv6-only (``keepIPv4Out(_:binding:type:)``).
    func keepsIPv4Out(_ address: SocketAddress, type: Int32) -> Bool {
        guard case .ipv6(let ip, let port, _) = address, ip == .any else { return false }
        return !policy.bind.contains(where: { $0.allowsBinding(.ipv4(.any, port: port), type: type) })
    }

    func family(of address: SocketAddress) -> Int32 {
        switch address {
        case .ipv4: AF_INET
        case .ipv6: AF_INET6
        case .unix: AF_UNIX
        }
    }

    private func makeSocket(for request: AddressRequest, nonBlocking: Bool) -> Result<Int32, Errno> {
        let domain = family(of: request.address)
        let type = request.type | privsep_SOCK_CLOEXEC | (nonBlocking ? privsep_SOCK_NONBLOCK : 0)
        return system_socket(domain, type, request.protocol)
    }

    /// (The grant's reason is a constant: the audit record's detail names the address,
    /// and formatting it for every connect cost more than the fcntl.)
    private func restoreBlocking(_ socket: consuming OwnedFileDescriptor, requested type: Int32) -> BrokerResult {
        if type & privsep_SOCK_NONBLOCK == 0 {
            if case .failure(let errno) = system_fcntl(socket.unsafeRawValue, F_SETFL, O_RDWR) {
                return .denied(errno, "fcntl failed")
            }
        }
        return .granted(socket, "connected")
    }

    /// Calls `body` with the sockaddr for `address`. A unix path is reached through
    /// the rule's directory fd (/proc/self/fd/N/name), pinning the directory the
    /// supervisor opened when the policy was activated.
    func withSocketAddress(_ address: SocketAddress, binding: Bool = false,
                                   _ body: (UnsafeRawPointer, socklen_t) -> Result<Void, Errno>) -> Result<Void, Errno> {
        var storage = [UInt8](repeating: 0, count: 128)
        let length: Int
        switch address {
        case .ipv4(let ip, let port):
            storage.storeBytes(UInt16(AF_INET), at: 0)
            storage.storeBytes(port.bigEndian, at: 2)
            storage.storeBytes(ip.value.bigEndian, at: 4)
            length = 16
        case .ipv6(let ip, let port, let scope):
            storage.storeBytes(UInt16(AF_INET6), at: 0)
            storage.storeBytes(port.bigEndian, at: 2)
            storage.storeBytes(UInt64(truncatingIfNeeded: ip.value >> 64).bigEndian, at: 8)
            storage.storeBytes(UInt64(truncatingIfNeeded: ip.value).bigEndian, at: 16)
            storage.storeBytes(scope, at: 24)
            length = 28
        case .unix(let path):
            guard let anchor = unixAnchors.first(where: { $0.key.utf8.elementsEqual(path.utf8) })?.value,
                  let name = anchor.name else { return .failure(.permissionDenied) }
            // To connect, pin the socket itself: an O_PATH fd resolved beneath the rule's
            // directory without following any symlink, reached through /proc/self/fd.
            // (connect() on a path would follow a symlink planted in its place.) To bind,
            // the name does not exist yet; bind() never follows a symlink there.
            var socketFD: Int32 = -1
            defer { if socketFD >= 0 { _ = system_close(socketFD) } }
            if !binding {
                switch system_openat2(anchor.directory, name, flags: privsep_O_PATH | O_CLOEXEC, mode: 0,
                                      resolve: privsep_RESOLVE_BENEATH | privsep_RESOLVE_NO_SYMLINKS | privsep_RESOLVE_NO_MAGICLINKS) {
                case .success(let fd): socketFD = fd
                case .failure(.tooManySymbolicLinkLevels): return .failure(.permissionDenied)
                case .failure(let errno): return .failure(errno)
                }
            }
            let pinnedPath = socketFD >= 0 ? "/proc/self/fd/\(socketFD)" : "/proc/self/fd/\(anchor.directory)/\(name)"
            let pinned = Array(pinnedPath.utf8)
            guard pinned.count < 108 else { return .failure(.fileNameTooLong) }
            storage.storeBytes(UInt16(AF_UNIX), at: 0)
            storage.replaceSubrange(2..<(2 + pinned.count), with: pinned)
            length = 2 + pinned.count + 1
            return storage.withUnsafeBytes { body($0.baseAddress!, socklen_t(length)) }
        }
        return storage.withUnsafeBytes { body($0.baseAddress!, socklen_t(length)) }
    }
}

/// The outcome of one brokered request.
public enum BrokerResult: ~Copyable, Sendable {
    /// The fd to hand to the worker, and why it was granted (for the audit log).
    case granted(OwnedFileDescriptor, String)
    /// The errno to answer with, and why (for the audit log).
    case denied(Errno, String)
}

/// What ``ActivePolicy/open(path:flags:)`` decided: a ``BrokerResult`` whose grant names
/// the rule that granted it.
enum OpenDecision: ~Copyable {
    case granted(OwnedFileDescriptor, rule: Int)
    case denied(Errno, String)
}

/// The first step of a CONNECT.
public enum ConnectStart: ~Copyable, Sendable {
    case finished(BrokerResult)
    /// The socket is connecting; wait until it is writable, then ``ActivePolicy/finishConnect(_:)``.
    case inProgress(OwnedFileDescriptor)
}

/// A CONNECT waiting for its socket to become writable.
public struct PendingConnect: ~Copyable, Sendable {
    public var socket: OwnedFileDescriptor
    public var requestedType: Int32
    public var address: SocketAddress
    public init(socket: consuming OwnedFileDescriptor, requestedType: Int32, address: SocketAddress) {
        self.socket = socket
        self.requestedType = requestedType
        self.address = address
    }
}

struct FlagDenial: Error {
    var errno: Errno
    var reason: String
}

/// O_PATH | O_DIRECTORY | O_CLOEXEC: how rule directories are held.
let O_PATH_FLAGS: Int32 = privsep_O_PATH | O_DIRECTORY | O_CLOEXEC
/// File status flags F_SETFL can change.
let STATUS_FLAGS: Int32 = O_APPEND | O_NONBLOCK | privsep_O_DIRECT | privsep_O_NOATIME | 0o20000 /* FASYNC */

/// Every open flag the broker knows. A bit outside this set is refused with EINVAL;
/// adding a flag here without a decision in `vetOpenFlags` is caught by the
/// `everyKnownFlagHasADecision` test.
let knownOpenFlags: Int32 = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC
    | O_SYNC | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | privsep_O_LARGEFILE_KERNEL | privsep_O_PATH | privsep_O_TMPFILE
    | privsep_O_NOATIME | privsep_O_DIRECT | 0o20000 /* FASYNC */

/// Flags of a vetted request that reach the open as the worker gave them. The rest of
/// ``knownOpenFlags`` is refused (``refusedOpenFlags``), forced (O_CLOEXEC, O_NOCTTY),
/// dropped (O_LARGEFILE, which the kernel sets itself) or applied after the open (O_NONBLOCK).
let passedOpenFlags: Int32 = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DSYNC | O_SYNC | O_DIRECTORY | O_NOFOLLOW

/// Flags a worker may never have honoured, whatever the rule: they bypass the
/// broker's checks (O_PATH, O_TMPFILE) or are not the worker's business.
let refusedOpenFlags: [(Int32, String)] = [
    (privsep_O_PATH, "O_PATH"), (privsep_O_TMPFILE, "O_TMPFILE"), (privsep_O_NOATIME, "O_NOATIME"),
    (privsep_O_DIRECT, "O_DIRECT"), (0o20000, "O_ASYNC"),
]
/// Every bit of any refused flag. Spelled out, not reduced from the list: as a constant it
/// folds, where the reduction was a lazily initialized global behind swift_once on every
/// OPEN. The tests hold the two equal.
let refusedOpenFlagBits: Int32 = privsep_O_PATH | privsep_O_TMPFILE | privsep_O_NOATIME | privsep_O_DIRECT | 0o20000

/// A file type's bit in ``ActivePolicy/Anchor/allowedFileTypeBits`` (S_IFMT's four bits).
@inline(__always)
func fileTypeBit(_ type: PrivsepIPC.FileType) -> UInt16 {
    1 << UInt16(truncatingIfNeeded: (type.rawValue & FileType.mask) >> 12)
}

/// Checks every bit of a worker's open flags against a rule's `permissions` and returns the flags
/// to open with: the worker's, minus what it may not have, plus O_CLOEXEC and O_NOCTTY.
func vetOpenFlags(_ requested: Int32, permissions: PathPermissions) -> Result<Int32, FlagDenial> {
    guard requested & ~knownOpenFlags == 0 else {
        return .failure(FlagDenial(errno: .invalidArgument, reason: "unknown open flag bits 0x\(String(UInt32(bitPattern: requested & ~knownOpenFlags), radix: 16))"))
    }
    // O_TMPFILE includes O_DIRECTORY's bit, so each flag is matched whole; the mask
    // only spares the named walk for the usual request, which has none of them.
    if requested & refusedOpenFlagBits != 0 {
        for (flag, name) in refusedOpenFlags where requested & flag == flag {
            return .failure(FlagDenial(errno: .permissionDenied, reason: "\(name) is never granted"))
        }
    }
    let accessMode = requested & O_ACCMODE
    switch accessMode {
    case O_RDONLY:
        guard permissions.contains(.read) || permissions.contains(.listDirectory) else {
            return .failure(FlagDenial(errno: .permissionDenied, reason: "reading is not granted"))
        }
    case O_WRONLY, O_RDWR:
        if accessMode == O_RDWR && !permissions.contains(.read) {
            return .failure(FlagDenial(errno: .permissionDenied, reason: "reading is not granted"))
        }
        // Append-only is O_WRONLY: a readable fd could be mapped shared and writable,
        // and a mapping ignores O_APPEND.
        let appendOnly = requested & O_APPEND != 0 && permissions.contains(.append) && accessMode == O_WRONLY
        guard permissions.contains(.write) || appendOnly else {
            return .failure(FlagDenial(errno: .permissionDenied, reason: permissions.contains(.append)
                ? "only appending (O_APPEND) is granted" : "writing is not granted"))
        }
    default:
        return .failure(FlagDenial(errno: .invalidArgument, reason: "invalid access mode 3"))
    }
    if requested & O_CREAT != 0 && !permissions.contains(.create) {
        return .failure(FlagDenial(errno: .permissionDenied, reason: "creating is not granted"))
    }
    // `list` passes O_RDONLY for directories, but O_CREAT makes a regular file, which the
    // type check would refuse only once it exists.
    if requested & O_CREAT != 0 && accessMode == O_RDONLY && !permissions.contains(.read) {
        return .failure(FlagDenial(errno: .permissionDenied, reason: "reading is not granted (list opens directories only)"))
    }
    if requested & O_TRUNC != 0 && (!permissions.contains(.truncate) || accessMode == O_RDONLY) {
        return .failure(FlagDenial(errno: .permissionDenied, reason: "truncating is not granted"))
    }
    return .success(requested & passedOpenFlags | O_CLOEXEC | O_NOCTTY)
}

func splitParent(_ path: String) -> (parent: String, name: String) {
    let bytes = Array(path.utf8)
    let slash = bytes.lastIndex(of: UInt8(ascii: "/"))!
    let parent = slash == 0 ? "/" : String(decoding: bytes[..<slash], as: UTF8.self)
    return (parent, String(decoding: bytes[(slash + 1)...], as: UTF8.self))
}

private extension Array where Element == UInt8 {
    mutating func storeBytes<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        Swift.withUnsafeBytes(of: value) { for (i, byte) in $0.enumerated() { self[offset + i] = byte } }
    }
}

extension ActivePolicy {
    /// `path` relative to the directory of rule `index` (which matches it): the rule's
    /// own copy of the name for a file rule, "." for the rule itself.
    func relativePath(of path: String, beneath index: Int) -> String {
        let rule = policy.paths[index]
        if let name = anchors[index].name { return name } // the rule's copy, not the requester's string
        if path == rule.path { return "." }
        // `matches` compared bytes, so this cut falls right after the rule's own bytes and a "/".
        let cut = rule.path == "/" ? 1 : rule.path.utf8.count + 1
        // Native strings: decode straight from their bytes (the generic Slice path looked
        // up metadata on every OPEN; a short result needs no allocation at all).
        if let relative = path.utf8.withContiguousStorageIfAvailable({
            String(decoding: UnsafeBufferPointer(rebasing: $0[cut...]), as: UTF8.self)
        }) {
            return relative
        }
        return String(decoding: path.utf8.dropFirst(cut), as: UTF8.self)
    }
}

extension ActivePolicy {
    /// Calls `body` with the part of `path` (bytes a NUL follows) to resolve beneath
    /// rule `index`'s anchor, as a C string: ``relativePath(of:beneath:)`` without a copy.
    func withRelativePath<R>(of path: UnsafeBufferPointer<UInt8>, beneath index: Int, _ body: (UnsafePointer<CChar>) -> R) -> R {
        if let name = anchors[index].name { return name.withCString(body) } // the rule's copy, not the requester's bytes
        let ruleLength = policy.paths[index].path.utf8.count
        if path.count == ruleLength { return ".".withCString(body) }
        // `matches` compared bytes, so this cut falls right after the rule's own bytes and a "/".
        let cut = ruleLength == 1 ? 1 : ruleLength + 1
        return body(UnsafeRawPointer(path.baseAddress! + cut).assumingMemoryBound(to: CChar.self))
    }
}

/// The openat2 RESOLVE flags for resolving beneath the directory of a rule with `symlinks`.
func resolveFlags(_ symlinks: PathRule.SymlinkPolicy) -> UInt64 {
    var resolve = privsep_RESOLVE_BENEATH | privsep_RESOLVE_NO_MAGICLINKS
    if symlinks == .refuse { resolve |= privsep_RESOLVE_NO_SYMLINKS }
    return resolve
}
