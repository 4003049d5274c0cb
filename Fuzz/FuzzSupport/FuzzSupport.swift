// What both fuzz targets share: the libFuzzer driver when built with -D FUZZING
// (Fuzz/run.sh), and otherwise a replayer of the files named on the command line.
import CFuzzDriver
import Glibc

/// Runs `check` on every input: libFuzzer's, or each file given as an argument.
public func runFuzzTarget(name: String, check: @escaping @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    #if FUZZING
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, check))
    #else
    var replayed = 0
    for path in CommandLine.arguments.dropFirst() {
        guard let bytes = readFile(path) else { fatalError("cannot read \(path)") }
        _ = bytes.withUnsafeBufferPointer { check($0.baseAddress, $0.count) }
        replayed += 1
    }
    print("\(name): \(replayed) inputs replayed, no failure")
    exit(0)
    #endif
}

/// The bytes of a file, or nil.
public func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return bytes
}
