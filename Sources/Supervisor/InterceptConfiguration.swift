extension WorkerConfiguration {
    /// A worker that runs an unmodified `program` in intercept mode: the supervisor spawns
    /// `helper` (the `privsep-intercept` executable), which locks itself down with a seccomp
    /// filter whose listener it hands to the supervisor, then execs `program`. The program's
    /// opens, stats, access checks, readlinks, sockets, connects, binds and execs (and those of
    /// every process it starts) are served by the supervisor under `policy`.
    ///
    /// `program` must be absolute, and `policy` must grant it `execute` (and `read` on the
    /// shared libraries it loads). The program runs in `workingDirectory` ("/" unless changed),
    /// as `identity` (uid, gid) if given: set it when the supervisor runs as root.
    public static func intercepting(program: String, arguments: [String] = [], argv0: String? = nil,
                                    policy: Policy, helper: String, identity: (uid: UInt32, gid: UInt32)? = nil) -> WorkerConfiguration {
        // The helper's Landlock ruleset grants execution beneath exactly the policy's execute rules.
        var helperArguments: [String] = []
        for rule in policy.paths where rule.permissions.contains(.execute) {
            helperArguments += ["--exec", rule.path]
        }
        if let identity { helperArguments += ["--identity", "\(identity.uid):\(identity.gid)"] }
        helperArguments += ["--", program, argv0 ?? program] + arguments
        var configuration = WorkerConfiguration(executable: helper, arguments: helperArguments, policy: policy,
                                                name: String(program.split(separator: "/").last ?? "program"))
        configuration.argv0 = "privsep-intercept"
        configuration.intercept = true
        configuration.interceptIdentity = identity
        return configuration
    }
}
