// swift-tools-version:6.0
import Foundation
import PackageDescription

// libFuzzer targets for otlp-auth-proxy. A separate package so that the main package's
// `swift build` / `swift test` never see executables without a `main`; built only by `make fuzz`
// (scripts/fuzz.sh) with `-sanitize=fuzzer,address`.
//
// The main package is a path dependency; SwiftPM names it after its directory, which differs
// between clones and worktrees, so the name is taken from where this manifest lives.
let rootPackage = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzSupport"] + dependencies)
}

let package = Package(
    name: "otlp-auth-proxy-fuzz",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // Declares libFuzzer's LLVMFuzzerRunDriver (linked in by -sanitize=fuzzer).
        .target(name: "FuzzDriver"),
        .target(name: "FuzzSupport", dependencies: ["FuzzDriver"]),
        fuzzTarget("fuzz-jwt", [.product(name: "ProxyAuth", package: rootPackage)]),
        fuzzTarget("fuzz-jwks", [.product(name: "ProxyAuth", package: rootPackage)]),
        fuzzTarget(
            "fuzz-authorization",
            [.product(name: "ProxyAuth", package: rootPackage), .product(name: "ProxyOTLP", package: rootPackage)]),
        fuzzTarget("fuzz-htpasswd", [.product(name: "ProxyAuth", package: rootPackage)]),
        fuzzTarget("fuzz-tokens", [.product(name: "ProxyAuth", package: rootPackage)]),
        fuzzTarget("fuzz-config", [.product(name: "ProxyConfig", package: rootPackage)]),
        fuzzTarget(
            "fuzz-otlp",
            [.product(name: "ProxyOTLP", package: rootPackage), .product(name: "OTLPFixtures", package: rootPackage)]),
        fuzzTarget(
            "fuzz-h2",
            [
                .product(name: "ProxyHTTP2", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]),
    ]
)
