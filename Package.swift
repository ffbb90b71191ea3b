// swift-tools-version:6.0
import PackageDescription

// Every C library is imported by exactly one Swift module (see DESIGN.md, "Layout"):
// COpenSSL → ProxyTLS, CJansson → ProxyJSON, CNghttp2 → ProxyHTTP2, CCrypt → ProxyAuth,
// CZlib and CZstd → ProxyCompression.
let package = Package(
    name: "otlp-auth-proxy",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "otlp-auth-proxy", targets: ["otlp-auth-proxy"]),
        // Libraries for the fuzz targets in fuzz/ (a separate package that depends on this one by path).
        .library(name: "ProxyAuth", targets: ["ProxyAuth"]),
        .library(name: "ProxyConfig", targets: ["ProxyConfig"]),
        .library(name: "ProxyHTTP2", targets: ["ProxyHTTP2"]),
        .library(name: "ProxyOTLP", targets: ["ProxyOTLP"]),
        // The OTLP fixtures and the checks of rewritten payloads, for the fuzz-otlp target.
        .library(name: "OTLPFixtures", targets: ["OTLPFixtures"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CNghttp2", pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(
            name: "CJansson", pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]),
        .systemLibrary(
            name: "CCrypt", pkgConfig: "libcrypt",
            providers: [.apt(["libcrypt-dev"])]),
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        // glibc's malloc.h (malloc_trim) for ProxyCore; part of libc, so no package and nothing to link.
        .systemLibrary(name: "CMalloc"),

        // The C library's files, environment and wall clock, for the modules above (no Foundation).
        .target(name: "ProxySystem"),
        .target(
            name: "ProxyTLS",
            dependencies: [
                "COpenSSL", "ProxySystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]),
        .target(name: "ProxyJSON", dependencies: ["CJansson"]),
        // OTLP payloads without generated code: the signals, and one-pass readers of export requests
        // (protobuf wire format and OTLP/JSON) that count items and set Resource attributes.
        .target(name: "ProxyOTLP"),
        // Bounded gzip/deflate/zstd decompression of OTLP payloads (the sink and the proxy's payload reader).
        .target(name: "ProxyCompression", dependencies: ["CZlib", "CZstd"]),
        // The YAML reader for the configuration and tokens files: pure Swift, standard library only.
        .target(name: "ProxyYAML"),
        .target(
            name: "ProxyHTTP2",
            dependencies: ["CNghttp2", .product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "ProxyAuth",
            dependencies: ["ProxySystem", "ProxyTLS", "ProxyJSON", "ProxyYAML", "ProxyOTLP", "CCrypt"]),
        .target(name: "ProxyConfig", dependencies: ["ProxySystem", "ProxyYAML", "ProxyOTLP"]),
        .target(
            name: "ProxyCore",
            dependencies: [
                "ProxySystem", "ProxyTLS", "ProxyJSON", "ProxyHTTP2", "ProxyAuth", "ProxyConfig", "ProxyOTLP",
                "ProxyCompression", "CMalloc",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .target(
            name: "ProxySink",
            dependencies: [
                "ProxyJSON", "ProxyHTTP2", "ProxyCompression", "ProxyOTLP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "otlp-auth-proxy",
            dependencies: [
                "ProxyCore", "ProxyConfig", "ProxySink",
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .testTarget(
            name: "ProxyTLSTests",
            dependencies: [
                "ProxyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .testTarget(name: "ProxyJSONTests", dependencies: ["ProxyJSON"]),
        // Compressed fixtures made at test time by the system's gzip, zstd and zlib, for the test targets.
        .target(name: "CompressionFixtures", path: "Tests/CompressionFixtures"),
        .testTarget(name: "ProxyCompressionTests", dependencies: ["ProxyCompression", "CompressionFixtures"]),
        .testTarget(name: "ProxyYAMLTests", dependencies: ["ProxyYAML"]),
        // OTLP export requests built by hand in protobuf, with known item counts, and the checks of
        // rewritten payloads (read with ProxyOTLP's ProtoWalker, not the editor), for the test targets.
        .target(name: "OTLPFixtures", dependencies: ["ProxyOTLP", "ProxyJSON"], path: "Tests/OTLPFixtures"),
        // Runs OTLPPayload on stdin for the end-to-end interoperability test (tests/e2e/test_otlp_wire_editor.py),
        // measures its cost (`bench`) and writes the fuzz seeds (`seeds`); not part of the product.
        .executableTarget(name: "otlp-payload-tool", dependencies: ["ProxyOTLP", "OTLPFixtures"], path: "Tests/OTLPPayloadTool"),
        .testTarget(name: "ProxyOTLPTests", dependencies: ["ProxyOTLP", "OTLPFixtures", "ProxyJSON"]),
        .testTarget(name: "ProxySystemTests", dependencies: ["ProxySystem"]),
        .testTarget(
            name: "ProxyHTTP2Tests",
            dependencies: ["ProxyHTTP2", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "ProxyAuthTests", dependencies: ["ProxyAuth"]),
        .testTarget(name: "ProxyConfigTests", dependencies: ["ProxyConfig", "ProxyOTLP"]),
        .testTarget(
            name: "ProxySinkTests",
            dependencies: [
                "ProxySink", "ProxyHTTP2", "ProxyOTLP", "CompressionFixtures", "OTLPFixtures",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .testTarget(
            name: "ProxyCoreTests",
            dependencies: [
                "ProxyCore", "ProxyConfig", "ProxyTLS", "ProxySink", "ProxyHTTP2", "ProxyOTLP", "OTLPFixtures",
                "CompressionFixtures",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
    ]
)
