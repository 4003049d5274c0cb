// swift-tools-version: 6.1
//
// swift-privsep: a privilege-separation supervisor for Linux.
//
// Module graph (see docs/ARCHITECTURE.md):
//
//   CPrivsepProtocol  the wire protocol as one C header (the spec)
//   CPrivsepShims     C macros and raw syscalls Swift cannot import; no logic
//   CSeccomp          libseccomp, found with pkg-config
//   CPrivsepTrap      the SIGSYS violation reporter (C: it runs in a signal handler)
//   CPrivsepAttacks   raw syscalls a hostile worker tries (tests, `privsep selftest`)
//   PrivsepIPC        seqpacket channel, fd passing, protocol codec
//   Supervisor        spawn, policy, broker, lifecycle       (imports PrivsepIPC)
//   Worker            client API and lockdown                (imports PrivsepIPC)
//
// Supervisor and Worker never import each other. PrivsepIPC and Worker never
// import Foundation: a worker pays ~9 ms of start-up and ~16 MB for it.
import PackageDescription

let strictSwift: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-privsep",
    products: [
        .library(name: "PrivsepIPC", targets: ["PrivsepIPC"]),
        .library(name: "Supervisor", targets: ["Supervisor"]),
        .library(name: "Worker", targets: ["Worker"]),
        .executable(name: "privsep", targets: ["privsep"]),
        .executable(name: "privsep-intercept", targets: ["privsep-intercept"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(name: "CPrivsepProtocol"),
        .target(name: "CPrivsepShims"),
        // The SIGSYS violation reporter: C because it runs in a signal handler.
        .target(name: "CPrivsepTrap", dependencies: ["CPrivsepProtocol"]),
        .systemLibrary(
            name: "CSeccomp",
            pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]
        ),
        .target(
            name: "PrivsepIPC",
            dependencies: [
                "CPrivsepShims",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "Supervisor",
            dependencies: [
                "PrivsepIPC", "Worker", "CPrivsepShims", "CSeccomp",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSwift
        ),
        .target(
            name: "Worker",
            dependencies: [
                "PrivsepIPC", "CPrivsepShims", "CSeccomp", "CPrivsepTrap",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "privsep",
            dependencies: [
                "Supervisor", "Worker", "PrivsepIPC", "CPrivsepAttacks", "CPrivsepShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift
        ),
        // Intercept mode's helper: locks itself down, hands the supervisor its seccomp
        // listener, execs an unmodified program. No Foundation.
        .executableTarget(
            name: "privsep-intercept",
            dependencies: ["Worker", "PrivsepIPC"],
            swiftSettings: strictSwift
        ),
        // Benchmarks: Swift channel vs. a plain C sendmsg/recvmsg reference in the same run.
        .target(name: "CBenchReference", path: "Benchmarks/CBenchReference"),
        .executableTarget(
            name: "privsep-bench",
            dependencies: ["PrivsepIPC", "Supervisor", "Worker", "CBenchReference", "CPrivsepShims",
                           .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/privsep-bench",
            swiftSettings: strictSwift
        ),
        // The smallest real worker (Worker + PrivsepIPC only), for privsep-bench's start-up row.
        .executableTarget(
            name: "bench-ready-worker",
            dependencies: ["Worker"],
            path: "Benchmarks/bench-ready-worker",
            swiftSettings: strictSwift
        ),
        // Fuzz targets (Fuzz/run.sh builds them for libFuzzer; built normally they replay a corpus).
        .target(name: "CFuzzDriver", path: "Fuzz/CFuzzDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzDriver"], path: "Fuzz/FuzzSupport",
                swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "fuzz-decoder", dependencies: ["PrivsepIPC", "FuzzSupport"], path: "Fuzz/fuzz-decoder",
                          swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "fuzz-policy", dependencies: ["Supervisor", "FuzzSupport"], path: "Fuzz/fuzz-policy",
                          swiftSettings: [.swiftLanguageMode(.v6)]),
        // Examples (see examples/README.md).
        .executableTarget(
            name: "csv-parser",
            dependencies: ["Worker", "PrivsepIPC"],
            path: "examples/untrusted-parser/csv-parser",
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "reader",
            dependencies: ["Worker", "PrivsepIPC"],
            path: "examples/file-broker/reader",
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "hello-server",
            dependencies: ["Worker", "PrivsepIPC"],
            path: "examples/privileged-port/hello-server",
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "record-parser",
            dependencies: ["Worker", "PrivsepIPC", .product(name: "SystemPackage", package: "swift-system")],
            path: "examples/parser-pool/record-parser",
            swiftSettings: strictSwift
        ),
        .executableTarget(
            name: "embedding-example",
            dependencies: ["Supervisor", "PrivsepIPC", .product(name: "Logging", package: "swift-log")],
            path: "examples/embedding",
            swiftSettings: strictSwift
        ),
        // System calls a hostile worker tries (for the tests and `privsep selftest`).
        .target(name: "CPrivsepAttacks"),
        .target(name: "PrivsepTestSupport", path: "Tests/TestSupport", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "privsep-test-worker",
            dependencies: ["Worker", "PrivsepIPC", "CPrivsepShims", "CPrivsepAttacks", .product(name: "SystemPackage", package: "swift-system")],
            path: "Tests/Fixtures/privsep-test-worker",
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .testTarget(
            name: "SupervisorTests",
            dependencies: ["Supervisor", "Worker", "PrivsepIPC", "CPrivsepShims", "privsep-test-worker", "privsep", "csv-parser", "reader", "hello-server", "embedding-example", "record-parser", "PrivsepTestSupport",
                           .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Logging", package: "swift-log"), "privsep-intercept"], // the helper InterceptTests run
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "PrivsepIPCTests",
            dependencies: ["PrivsepIPC", "CPrivsepProtocol", "CPrivsepShims", "PrivsepTestSupport",
                           .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
