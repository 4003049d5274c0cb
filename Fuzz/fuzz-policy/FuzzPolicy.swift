// Fuzz target for the policy file parser (PolicyFile.parse): it must refuse
// anything that is not a valid policy with an error, never trap.
//
// Built with -D FUZZING -sanitize=fuzzer (Fuzz/run.sh) it runs libFuzzer;
// built normally it replays the files on its command line.
import FuzzSupport
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

@main
struct FuzzPolicy {
    static func main() {
        runFuzzTarget(name: "fuzz-policy") { data, size in
            check(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        }
    }
}
