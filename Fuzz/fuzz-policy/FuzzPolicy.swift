// Fuzz target for the policy file parser (PolicyFile.parse): it must refuse
// anything that is not a valid policy with an error, never trap.
//
// Built with -D FUZZING -sanitize=fuzzer (Fuzz/run.sh) it runs libFuzzer;
// built normally it replays the files on its command line.
import CFuzzDriver
import Glibc
import Supervisor

func check(_ bytes: UnsafeRawBufferPointer) {
    let text = String(decoding: bytes, as: UTF8.self)
    if let file = try? PolicyFile.parse(text) {
        _ = file.summary
        // What parses must also validate.
        do { try file.policy.validate() } catch { fatalError("parsed but invalid: \(error)") }
    }
}

#if FUZZING
@main
struct Fuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            check(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        })
    }
}
#else
@main
struct ReplayCorpus {
    static func main() {
        var replayed = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let bytes = readFile(path) else { fatalError("cannot read \(path)") }
            bytes.withUnsafeBytes(check)
            replayed += 1
        }
        print("fuzz-policy: \(replayed) inputs replayed, no failure")
    }
}
#endif
