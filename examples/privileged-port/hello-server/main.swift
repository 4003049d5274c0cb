// hello-server: serves one HTTP request on a privileged port it could never bind
// itself. The supervisor binds the socket (policy "bind"); the worker only
// listens and accepts (the "serve" syscall group).
import Glibc
import PrivsepIPC
import Worker

/// One unbuffered write per line, so the line is out before the next step.
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = write(1, bytes, bytes.count)
}

let port = CommandLine.arguments.count > 1 ? UInt16(CommandLine.arguments[1]) ?? 80 : 80
do {
    let supervisor = try SupervisorConnection.connect()
    // Spawned by a root supervisor (to bind port 80), it gives up root: the port is bound already.
    var lockdown = Lockdown(groups: [.serve], landlock: Lockdown.FilesystemAccess.none)
    lockdown.identity = Lockdown.nobodyIfRoot
    try lockdown.apply(reportingTo: supervisor)
    let listener = try supervisor.listen(at: .ipv4(.loopback, port: port))
    say("hello-server: listening on 127.0.0.1:\(port)")
    let client = accept(listener.unsafeRawValue, nil, nil)
    guard client >= 0 else { say("hello-server: accept failed"); exit(1) }
    var request = [UInt8](repeating: 0, count: 4096)
    _ = read(client, &request, request.count)
    let body = "hello from a sandboxed worker on port \(port)\n"
    let response = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    _ = write(client, response, response.utf8.count)
    close(client)
} catch {
    say("hello-server: \(error)")
    exit(1)
}
