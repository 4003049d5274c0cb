import CPrivsepShims
import Glibc
public import SystemPackage

/// One end of a connected AF_UNIX SOCK_SEQPACKET socket: the privsep channel.
///
/// SOCK_SEQPACKET rather than SOCK_STREAM because it keeps message boundaries
/// (one `recvmsg` is one whole message, never a fragment, so there is no
/// framing code to get wrong) and, unlike SOCK_DGRAM, it is connection-oriented:
/// when the peer dies its end closes and a receive sees end-of-file.
///
/// The socket owns its descriptor and closes it exactly once. Every receive that can
/// take fds uses MSG_CMSG_CLOEXEC, so a received fd is never inherited by an `exec` that
/// races with it (an end that refuses fds receives with `recv`: see
/// ``refuseFileDescriptors()``); every send uses MSG_NOSIGNAL, so a dead peer is an
/// error, never SIGPIPE.
public struct SeqpacketSocket: ~Copyable, Sendable {
    /// The most fds one message can carry (the kernel's SCM_MAX_FD).
    public static let maximumFileDescriptorsPerMessage = 253

    private let descriptor: OwnedFileDescriptor
    /// What this end does besides receiving bytes: one byte for all, so that the socket
    /// stays an fd and a byte (a third Bool of its own cost every send and receive about 40
    /// instructions of moving it about: BENCHMARKS.md, fifteenth round).
    private struct Modes: OptionSet {
        let rawValue: UInt8
        static let receivesSenderCredentials = Modes(rawValue: 1)
        static let refusesFileDescriptors = Modes(rawValue: 2)
        static let closesPeerFileDescriptorsOnReceipt = Modes(rawValue: 4)
    }
    private var modes: Modes = []

    /// Whether SO_PASSCRED is on, so each datagram brings its sender's credentials.
    private var receivesSenderCredentials: Bool {
        get { modes.contains(.receivesSenderCredentials) }
        set { if newValue { modes.insert(.receivesSenderCredentials) } else { modes.remove(.receivesSenderCredentials) } }
    }
    /// Whether the kernel refuses fds sent to this end (SO_PASSRIGHTS off).
    private var refusesFileDescriptors: Bool {
        get { modes.contains(.refusesFileDescriptors) }
        set { if newValue { modes.insert(.refusesFileDescriptors) } else { modes.remove(.refusesFileDescriptors) } }
    }
    /// Whether fds the peer sends are taken as hostile (``closePeerFileDescriptorsAtOnce()``).
    private var closesPeerFileDescriptorsOnReceipt: Bool {
        get { modes.contains(.closesPeerFileDescriptorsOnReceipt) }
        set { if newValue { modes.insert(.closesPeerFileDescriptorsOnReceipt) } else { modes.remove(.closesPeerFileDescriptorsOnReceipt) } }
    }

    /// Wraps a descriptor that is already a connected SOCK_SEQPACKET socket.
    /// Use ``validated(_:)`` for a descriptor of unknown origin.
    public init(_ descriptor: consuming OwnedFileDescriptor) {
        self.descriptor = descriptor
    }

    /// Turns on SO_PASSCRED: from now on each received datagram carries the
    /// credentials of the process that sent it, filled in by the kernel
    /// (``ReceivedDatagram/senderCredentials``).
    ///
    /// This, not ``peerCredentials()``, identifies a spawned worker: SO_PEERCRED
    /// on a `socketpair` names the process that created the pair (the supervisor),
    /// whichever process the other end was later handed to.
    public mutating func enableSenderCredentials() throws(Errno) {
        var on: Int32 = 1
        try system_setsockopt(descriptor.unsafeRawValue, SOL_SOCKET, SO_PASSCRED, &on).get()
        receivesSenderCredentials = true
    }

    /// Turns SO_PASSCRED off again (the kernel's work to attach credentials is
    /// wasted once the peer is identified).
    public mutating func disableSenderCredentials() throws(Errno) {
        var off: Int32 = 0
        try system_setsockopt(descriptor.unsafeRawValue, SOL_SOCKET, SO_PASSCRED, &off).get()
        receivesSenderCredentials = false
    }

    /// Bounds the bytes this end's sent datagrams may occupy until the peer reads them
    /// (SO_SNDBUF; the kernel doubles the value for its bookkeeping). Past it a send waits,
    /// or fails with EAGAIN when non-blocking. A datagram must fit whole.
    public func setSendBufferSize(_ bytes: Int32) throws(Errno) {
        var size = bytes
        try system_setsockopt(descriptor.unsafeRawValue, SOL_SOCKET, SO_SNDBUF, &size).get()
    }

    /// Has the kernel refuse every fd sent to this end (SO_PASSRIGHTS off, Linux 6.16+):
    /// the peer's `sendmsg` with SCM_RIGHTS fails with EPERM, so no fd of the peer's is
    /// ever in flight to this process, and the peer learns at once that fds are not taken.
    ///
    /// For an end that never accepts fds, called before the peer can send anything: a
    /// datagram queued earlier with fds attached would have them dropped by the kernel
    /// unseen. Once sender credentials are off too, nothing but bytes can arrive, so a
    /// receive is `recv(2)`: the kernel need not copy in and check a msghdr and an iovec
    /// (about 0.2 µs a receive here: BENCHMARKS.md, ninth round). Fails with ENOPROTOOPT
    /// on older kernels, and receiving stays as it was: a receive installs at most the
    /// fds it allows (closed if the datagram is refused) and reports more
    /// (``ChannelError/controlTruncated(acceptedFileDescriptors:)``).
    public mutating func refuseFileDescriptors() throws(Errno) {
        var off: Int32 = 0
        try system_setsockopt(descriptor.unsafeRawValue, SOL_SOCKET, privsep_SO_PASSRIGHTS, &off).get()
        refusesFileDescriptors = true
    }

    /// Whether the kernel refuses every fd sent to this end (``refuseFileDescriptors()``
    /// succeeded): no fd of the peer's can be in flight to it.
    public var refusesPeerFileDescriptors: Bool { refusesFileDescriptors }

    /// For an end whose peer is hostile and whose receiving thread must never block: every fd
    /// the peer sends is installed and, if a socket, set to close at once (SO_LINGER {1, 0})
    /// before anything else happens to it, including being closed with a refused datagram.
    ///
    /// The last close of a TCP socket the peer set to linger, with data a receiver never takes,
    /// waits for the linger time the peer chose. An fd the kernel drops because the receive
    /// had no room for it is closed by the kernel on the receiving thread, unseen. So where
    /// fds can arrive (the kernel cannot refuse them, or this end takes a LISTENER) a receive
    /// has room for all a datagram can carry (253, the kernel's SCM_MAX_FD), and those past
    /// the caller's `maximumFileDescriptors` are installed only to be closed.
    public mutating func closePeerFileDescriptorsAtOnce() {
        closesPeerFileDescriptorsOnReceipt = true
    }

    /// Whether this kernel can refuse fds sent to a socket (SO_PASSRIGHTS, Linux 6.16+),
    /// as ``refuseFileDescriptors()`` asks: probed once, on a pair of its own.
    public static let kernelCanRefuseFileDescriptors: Bool = {
        guard let sockets = try? SeqpacketSocket.pair() else { return false }
        var end = sockets.second
        return (try? end.refuseFileDescriptors()) != nil
    }()

    /// Wraps `descriptor` after checking that it is a connected AF_UNIX
    /// SOCK_SEQPACKET socket; fails with ENOTSOCK, EPROTOTYPE, EAFNOSUPPORT or ENOTCONN.
    public static func validated(_ descriptor: consuming OwnedFileDescriptor) throws(Errno) -> SeqpacketSocket {
        let fd = descriptor.unsafeRawValue
        var type: Int32 = 0
        _ = try system_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type).get()
        guard type == privsep_SOCK_SEQPACKET else { throw .protocolWrongTypeForSocket }
        var domain: Int32 = 0
        _ = try system_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain).get()
        guard domain == AF_UNIX else { throw .addressFamilyNotSupported }
        // A connected pair has a peer; an unconnected socket reports ENOTCONN here.
        var credentials = privsep_peer_credentials()
        _ = try system_getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials).get()
        guard credentials.pid > 0 else { throw .socketNotConnected }
        return SeqpacketSocket(descriptor)
    }

    /// A connected pair, both ends close-on-exec.
    /// The corresponding C call is `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)`.
    public static func pair() throws(Errno) -> SeqpacketSocketPair {
        let (a, b) = try system_socketpair(AF_UNIX, privsep_SOCK_SEQPACKET | privsep_SOCK_CLOEXEC, 0).get()
        return SeqpacketSocketPair(first: SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: a)),
                                   second: SeqpacketSocket(OwnedFileDescriptor(adoptingRawValue: b)))
    }

    /// The raw descriptor, for polling it. It stays owned by the socket.
    public var unsafeRawValue: Int32 { descriptor.unsafeRawValue }

    /// Borrows the underlying descriptor.
    public func withFileDescriptor<R: ~Copyable, E: Error>(
        _ body: (borrowing OwnedFileDescriptor) throws(E) -> R
    ) throws(E) -> R {
        try body(descriptor)
    }

    /// Gives up the socket and returns its descriptor.
    public consuming func intoFileDescriptor() -> OwnedFileDescriptor {
        descriptor
    }

    // MARK: Sending

    /// Sends one datagram carrying `bytes` and no fds.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(ChannelError) {
        try sendRaw(bytes, fileDescriptors: UnsafeBufferPointer(start: nil, count: 0), flags: 0)
    }

    /// Sends one datagram carrying `bytes` and a duplicate of `fd` (the caller keeps its own).
    public func send(_ bytes: UnsafeRawBufferPointer, passing fd: borrowing OwnedFileDescriptor) throws(ChannelError) {
        var raw = fd.unsafeRawValue
        try withUnsafePointer(to: &raw) { (pointer) throws(ChannelError) in
            try sendRaw(bytes, fileDescriptors: UnsafeBufferPointer(start: pointer, count: 1), flags: 0)
        }
    }

    /// Sends one datagram carrying `bytes` and duplicates of every fd in `fds`.
    public func send(_ bytes: UnsafeRawBufferPointer, passing fds: borrowing OwnedFileDescriptors) throws(ChannelError) {
        try fds.withUnsafeRawValues { (raw) throws(ChannelError) in try unsafeSend(bytes, passingRawValues: raw) }
    }

    /// Sends `bytes` with fds named by raw number: the escape hatch for fds this
    /// library does not own. Each must stay open until the call returns.
    public func unsafeSend(_ bytes: UnsafeRawBufferPointer, passingRawValues fds: [Int32], flags: Int32 = 0) throws(ChannelError) {
        let result = fds.withUnsafeBufferPointer { buffer in
            Result { () throws(ChannelError) in try sendRaw(bytes, fileDescriptors: buffer, flags: flags) }
        }
        try result.get()
    }

    /// ``unsafeSend(_:passingRawValues:flags:)`` with the numbers in a buffer.
    public func unsafeSend(_ bytes: UnsafeRawBufferPointer, passingRawValues fds: UnsafeBufferPointer<Int32>, flags: Int32 = 0) throws(ChannelError) {
        try sendRaw(bytes, fileDescriptors: fds, flags: flags)
    }

    /// Sends with MSG_DONTWAIT: `.system(.resourceTemporarilyUnavailable)` instead of blocking.
    public func sendNonBlocking(_ bytes: UnsafeRawBufferPointer) throws(ChannelError) {
        try sendRaw(bytes, fileDescriptors: UnsafeBufferPointer(start: nil, count: 0), flags: privsep_MSG_DONTWAIT)
    }

    @inline(__always)
    func sendRaw(
        _ bytes: UnsafeRawBufferPointer, fileDescriptors fds: UnsafeBufferPointer<Int32>, flags: Int32
    ) throws(ChannelError) {
        guard fds.count <= Self.maximumFileDescriptorsPerMessage else {
            throw .tooManyFileDescriptorsToSend(fds.count)
        }
        let result: Result<Int, Errno>
        if fds.isEmpty {
            // send(2), not sendmsg: with nothing to attach, the kernel need not copy in and
            // check a msghdr and an iovec (about 0.1 µs per request here: BENCHMARKS.md,
            // eighth round). Every lockdown's baseline allows both.
            result = system_send(descriptor.unsafeRawValue, bytes, privsep_MSG_NOSIGNAL | flags)
        } else {
            result = sendRawWithRights(bytes, fileDescriptors: fds, flags: flags)
        }
        switch result {
        case .success(let sent):
            // SOCK_SEQPACKET sends are atomic: all or EMSGSIZE.
            precondition(sent == bytes.count, "short seqpacket send: \(sent) of \(bytes.count)")
        case .failure(.brokenPipe), .failure(.connectionReset):
            throw .peerClosed
        case .failure(let errno):
            throw .system(errno)
        }
    }

    /// sendmsg with `fds` as one SCM_RIGHTS control message.
    @inline(__always)
    private func sendRawWithRights(
        _ bytes: UnsafeRawBufferPointer, fileDescriptors fds: UnsafeBufferPointer<Int32>, flags: Int32
    ) -> Result<Int, Errno> {
        let controlLength = privsep_cmsg_space(fds.count * MemoryLayout<Int32>.size)
        return withUnsafeTemporaryAllocation(
            byteCount: controlLength, alignment: MemoryLayout<cmsghdr>.alignment
        ) { control in
            var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                control.initializeMemory(as: UInt8.self, repeating: 0)
                message.msg_control = control.baseAddress
                message.msg_controllen = controlLength
                let header = privsep_cmsg_firsthdr(&message)!
                header.pointee.cmsg_level = SOL_SOCKET
                header.pointee.cmsg_type = privsep_SCM_RIGHTS
                header.pointee.cmsg_len = privsep_cmsg_len(fds.count * MemoryLayout<Int32>.size)
                UnsafeMutableRawPointer(privsep_cmsg_data(header))
                    .copyMemory(from: fds.baseAddress!, byteCount: fds.count * MemoryLayout<Int32>.size)
                return system_sendmsg(descriptor.unsafeRawValue, &message, privsep_MSG_NOSIGNAL | flags)
            }
        }
    }

    // MARK: Receiving

    /// Receives one datagram into `buffer`, accepting at most `maximumFileDescriptors` fds.
    ///
    /// Fails, with every fd that arrived already closed, if the datagram did not
    /// fit (MSG_TRUNC), ancillary data was cut (MSG_CTRUNC; ``ChannelError/fileDescriptorsNotInstalled(byteCount:)``
    /// when this process had no free fd number for them), more fds than allowed
    /// arrived, or a control message other than SCM_RIGHTS came with it. The
    /// control buffer is sized for `maximumFileDescriptors`, so a peer that sends
    /// more cannot make this process install them (except on an end that
    /// ``closePeerFileDescriptorsAtOnce()``, which installs them to close them itself).
    /// End-of-file is ``ChannelError/peerClosed``.
    /// On an end that refuses fds with sender credentials off, the receive is `recv`: no
    /// control data can arrive there, so of these only a datagram that did not fit fails it.
    public func receive(
        into buffer: UnsafeMutableRawBufferPointer,
        maximumFileDescriptors: Int,
        nonBlocking: Bool = false
    ) throws(ChannelError) -> ReceivedDatagram {
        precondition((0...Self.maximumFileDescriptorsPerMessage).contains(maximumFileDescriptors),
                     "maximumFileDescriptors must be 0...253")
        return try withUnsafeTemporaryAllocation(
            byteCount: max(controlLength(room(for: maximumFileDescriptors)), 1), alignment: MemoryLayout<cmsghdr>.alignment
        ) { (control) throws(ChannelError) -> ReceivedDatagram in
            try receive(into: buffer, control: control, maximumFileDescriptors: maximumFileDescriptors, nonBlocking: nonBlocking)
        }
    }

    /// Bytes of control buffer a receive of up to `maximumFileDescriptors` fds uses.
    /// Sized exactly: fds beyond the room are never installed in this process. The fd
    /// part is CMSG_LEN, not CMSG_SPACE: the kernel fills the room it is given, and the
    /// alignment padding of CMSG_SPACE holds one more fd when the count is odd.
    /// SCM_CREDENTIALS, when enabled, comes first.
    private func controlLength(_ maximumFileDescriptors: Int) -> Int {
        let credentialsLength = receivesSenderCredentials ? privsep_cmsg_space(MemoryLayout<privsep_peer_credentials>.size) : 0
        return credentialsLength + (maximumFileDescriptors == 0
            ? 0 : privsep_cmsg_len(maximumFileDescriptors * MemoryLayout<Int32>.size))
    }

    /// The fds a receive makes room for: those the caller takes, or every fd a datagram can
    /// carry on an end that closes a hostile peer's fds itself (``closePeerFileDescriptorsAtOnce()``).
    @inline(__always)
    private func room(for maximumFileDescriptors: Int) -> Int {
        _slowPath(closesPeerFileDescriptorsOnReceipt && !refusesFileDescriptors) ? Self.maximumFileDescriptorsPerMessage : maximumFileDescriptors
    }

    /// The largest control buffer any receive uses (253 fds and credentials).
    static let maximumControlLength = controlSpace(MemoryLayout<privsep_peer_credentials>.size)
        + controlSpace(maximumFileDescriptorsPerMessage * MemoryLayout<Int32>.size)

    /// CMSG_SPACE(`length`) as Linux defines it: the header and the data, each padded to the
    /// alignment of size_t. In Swift, not the C shim, so that the constants made of it fold
    /// at compile time; made of shim calls, each was a lazily initialized global, behind a
    /// call to swift_once on every receive. The tests hold it to the C macro.
    @inline(__always)
    package static func controlSpace(_ length: Int) -> Int {
        let padding = MemoryLayout<Int>.size - 1
        return ((MemoryLayout<cmsghdr>.size + padding) & ~padding) + ((length + padding) & ~padding)
    }

    /// ``receive(into:maximumFileDescriptors:nonBlocking:)`` with the caller's control
    /// buffer (cmsghdr-aligned, at least ``controlLength(_:)`` bytes; only that much is offered).
    @inline(__always)
    func receive(
        into buffer: UnsafeMutableRawBufferPointer,
        control scratch: UnsafeMutableRawBufferPointer,
        maximumFileDescriptors: Int,
        nonBlocking: Bool
    ) throws(ChannelError) -> ReceivedDatagram {
        if refusesFileDescriptors && !receivesSenderCredentials {
            return try receiveBytesOnly(into: buffer, nonBlocking: nonBlocking)
        }
        let room = room(for: maximumFileDescriptors)
        let controlLength = controlLength(room)
        precondition(scratch.count >= controlLength, "control buffer too small")
        let control = UnsafeMutableRawBufferPointer(rebasing: scratch[..<max(controlLength, 1)])
        let flags = privsep_MSG_CMSG_CLOEXEC | (nonBlocking ? privsep_MSG_DONTWAIT : 0)
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var message = msghdr()
        let received: Result<Int, Errno> = withUnsafeMutablePointer(to: &iov) { iovPointer in
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            message.msg_control = controlLength > 0 ? control.baseAddress : nil
            message.msg_controllen = controlLength
            return system_recvmsg(descriptor.unsafeRawValue, &message, flags)
        }
        let byteCount: Int
        switch received {
        case .success(let count): byteCount = count
        case .failure(.connectionReset): throw .peerClosed
        case .failure(let errno): throw .system(errno)
        }
        // Take ownership of every fd the kernel installed before judging the datagram,
        // so each failure below closes them (the list owns each as it is found).
        var fds = OwnedFileDescriptors()
        var unexpected: (level: Int32, type: Int32)? = nil
        var sender: PeerCredentials? = nil
        // The control messages, walked as CMSG_FIRSTHDR and CMSG_NXTHDR walk them but in
        // Swift: glibc's CMSG_NXTHDR is a call into libc, one more page of code per receive
        // (BENCHMARKS.md, sixth round). Each message must lie whole within what the kernel
        // reported; one that does not (the kernel writes none) ends the walk as unexpected.
        let controlEnd = Int(message.msg_controllen), dataOffset = Self.controlSpace(0)
        var offset = 0
        while offset + MemoryLayout<cmsghdr>.size <= controlEnd {
            let header = UnsafeRawPointer(control.baseAddress! + offset).load(as: cmsghdr.self)
            let length = Int(header.cmsg_len)
            guard length >= dataOffset, length <= controlEnd - offset else {
                if unexpected == nil { unexpected = (header.cmsg_level, header.cmsg_type) }
                break
            }
            let dataLength = length - dataOffset
            let level = header.cmsg_level, type = header.cmsg_type
            let data = UnsafeRawPointer(control.baseAddress! + offset + dataOffset)
            let isRights = level == SOL_SOCKET && type == privsep_SCM_RIGHTS
            // SCM_PIDFD carries an fd too: own it so it is closed, then report it as unexpected.
            if (isRights || (level == SOL_SOCKET && type == privsep_SCM_PIDFD)) && dataLength > 0 {
                fds.reserveCapacity(fds.count + dataLength / MemoryLayout<Int32>.size)
                for index in 0..<(dataLength / MemoryLayout<Int32>.size) {
                    let fd = data.loadUnaligned(fromByteOffset: index * MemoryLayout<Int32>.size, as: Int32.self)
                    if fd >= 0 {
                        if closesPeerFileDescriptorsOnReceipt { system_reset_linger_if_socket(fd) }
                        fds.adopt(fd)
                    }
                }
                if !isRights && unexpected == nil { unexpected = (level, type) }
            } else if level == SOL_SOCKET && type == privsep_SCM_CREDENTIALS && receivesSenderCredentials
                        && dataLength >= MemoryLayout<privsep_peer_credentials>.size {
                let credentials = data.loadUnaligned(as: privsep_peer_credentials.self)
                sender = PeerCredentials(processID: credentials.pid, userID: credentials.uid, groupID: credentials.gid)
            } else if unexpected == nil {
                unexpected = (level, type)
            }
            // The next message starts at this one's length rounded up to size_t (CMSG_ALIGN).
            offset += (length + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1)
        }
        if message.msg_flags & privsep_MSG_CTRUNC != 0 {
            // The kernel installs fds until the room offered is full or an install fails: fewer
            // than the room, whole bytes and nothing unexpected mean this process had no free
            // fd number (EMFILE), not that the sender sent too many.
            if fds.count < room && message.msg_flags & privsep_MSG_TRUNC == 0 && unexpected == nil {
                throw fds.count > maximumFileDescriptors
                    ? .tooManyFileDescriptors(received: fds.count, limit: maximumFileDescriptors)
                    : .fileDescriptorsNotInstalled(byteCount: byteCount)
            }
            throw .controlTruncated(acceptedFileDescriptors: maximumFileDescriptors)
        }
        if message.msg_flags & privsep_MSG_TRUNC != 0 { throw .messageTruncated(capacity: buffer.count) }
        if let unexpected { throw .unexpectedControlMessage(level: unexpected.level, type: unexpected.type) }
        if fds.count > maximumFileDescriptors {
            throw .tooManyFileDescriptors(received: fds.count, limit: maximumFileDescriptors)
        }
        // With sender credentials on, an empty datagram carries them and only the end does not.
        if byteCount == 0 && fds.isEmpty && sender == nil { throw .peerClosed }
        return ReceivedDatagram(byteCount: byteCount, fileDescriptors: fds, flags: message.msg_flags,
                                senderCredentials: sender)
    }

    /// A receive on an end that takes neither fds nor credentials (the kernel attaches
    /// no control data for it to deliver): `recv` with MSG_TRUNC, which reports the
    /// datagram's whole length, so one that did not fit is still refused.
    @inline(__always)
    private func receiveBytesOnly(into buffer: UnsafeMutableRawBufferPointer, nonBlocking: Bool) throws(ChannelError) -> ReceivedDatagram {
        let flags = privsep_MSG_TRUNC | (nonBlocking ? privsep_MSG_DONTWAIT : 0)
        let byteCount: Int
        switch system_recv(descriptor.unsafeRawValue, buffer, flags) {
        case .success(let count): byteCount = count
        case .failure(.connectionReset): throw .peerClosed
        case .failure(let errno): throw .system(errno)
        }
        if byteCount > buffer.count { throw .messageTruncated(capacity: buffer.count) }
        if byteCount == 0 { throw .peerClosed }
        return ReceivedDatagram(byteCount: byteCount, fileDescriptors: OwnedFileDescriptors(), flags: 0, senderCredentials: nil)
    }

    /// Receives one datagram of at most `maximumBytes` bytes as an array.
    public func receive(maximumBytes: Int, maximumFileDescriptors: Int) throws(ChannelError) -> ReceivedBytes {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: maximumBytes, alignment: 8)
        defer { buffer.deallocate() }
        let datagram = try receive(into: buffer, maximumFileDescriptors: maximumFileDescriptors)
        return ReceivedBytes(bytes: Array(buffer[..<datagram.byteCount]),
                             fileDescriptors: datagram.fileDescriptors, flags: datagram.flags,
                             senderCredentials: datagram.senderCredentials)
    }

    // MARK: Socket state

    /// Sets or clears O_NONBLOCK on the socket. In non-blocking mode a send or
    /// receive that would wait fails with `.system(.resourceTemporarilyUnavailable)`.
    public func setNonBlocking(_ enabled: Bool) throws(Errno) {
        let flags = try system_fcntl(descriptor.unsafeRawValue, F_GETFL).get()
        let wanted = enabled ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags { _ = try system_fcntl(descriptor.unsafeRawValue, F_SETFL, wanted).get() }
    }

    /// Whether O_NONBLOCK is set.
    public func isNonBlocking() throws(Errno) -> Bool {
        (try system_fcntl(descriptor.unsafeRawValue, F_GETFL).get() & O_NONBLOCK) != 0
    }

    /// Which directions ``shutdown(_:)`` closes.
    public enum ShutdownDirection: Sendable {
        case reading, writing, both
    }

    /// Shuts down one or both directions; the peer sees end-of-file when writing is shut.
    public func shutdown(_ direction: ShutdownDirection) throws(Errno) {
        let how: Int32 = switch direction {
        case .reading: Int32(SHUT_RD)
        case .writing: Int32(SHUT_WR)
        case .both: Int32(SHUT_RDWR)
        }
        try system_shutdown(descriptor.unsafeRawValue, how).get()
    }

    /// The credentials of the process that created the peer's end, captured by
    /// the kernel at `socketpair`/`connect` time (SO_PEERCRED). For a socketpair
    /// that is the process that called `socketpair`, on both ends; use
    /// ``enableSenderCredentials()`` to learn which process sends.
    public func peerCredentials() throws(Errno) -> PeerCredentials {
        var credentials = privsep_peer_credentials()
        _ = try system_getsockopt(descriptor.unsafeRawValue, SOL_SOCKET, SO_PEERCRED, &credentials).get()
        return PeerCredentials(processID: credentials.pid, userID: credentials.uid, groupID: credentials.gid)
    }

    /// A pidfd for the peer process (SO_PEERPIDFD, Linux 6.5 and later; the same
    /// process ``peerCredentials()`` names), which
    /// unlike a pid cannot come to name another process after the peer exits.
    /// Fails with ENOPROTOOPT on older kernels.
    public func peerProcessDescriptor() throws(Errno) -> OwnedFileDescriptor {
        var fd: Int32 = -1
        _ = try system_getsockopt(descriptor.unsafeRawValue, SOL_SOCKET, privsep_SO_PEERPIDFD, &fd).get()
        return OwnedFileDescriptor(adoptingRawValue: fd)
    }
}

/// One received datagram: how many bytes landed in the buffer, and the fds it carried.
@frozen
public struct ReceivedDatagram: ~Copyable, Sendable {
    /// Bytes written to the receive buffer.
    public var byteCount: Int
    /// The fds that arrived, owned; any left unclaimed close with this value.
    public var fileDescriptors: OwnedFileDescriptors
    /// The `msg_flags` recvmsg returned (MSG_EOR and so on; never MSG_TRUNC or MSG_CTRUNC);
    /// 0 on an end that refuses fds and credentials, which receives with `recv`.
    public var flags: Int32
    /// Who sent the datagram, as the kernel saw it; only after ``SeqpacketSocket/enableSenderCredentials()``.
    public var senderCredentials: PeerCredentials?
}

/// One received datagram as an array of its bytes, with the fds it carried.
@frozen
public struct ReceivedBytes: ~Copyable, Sendable {
    public var bytes: [UInt8]
    /// The fds that arrived, owned; any left unclaimed close with this value.
    public var fileDescriptors: OwnedFileDescriptors
    public var flags: Int32
    public var senderCredentials: PeerCredentials?
}

/// Both ends of a new connected pair; take them apart with `let a = pair.first`.
@frozen
public struct SeqpacketSocketPair: ~Copyable, Sendable {
    public var first: SeqpacketSocket
    public var second: SeqpacketSocket
}

/// The identity of the process on the other end of a socket.
public struct PeerCredentials: Sendable, Equatable {
    public var processID: Int32
    public var userID: UInt32
    public var groupID: UInt32

    public init(processID: Int32, userID: UInt32, groupID: UInt32) {
        self.processID = processID
        self.userID = userID
        self.groupID = groupID
    }
}
