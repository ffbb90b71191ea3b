import Foundation
import XCTest

/// Certificates and keys made with the `openssl` CLI into a fresh temporary directory, once per
/// test process: a root CA, an intermediate CA, an RSA-2048 and an ECDSA P-256 server certificate
/// for 127.0.0.1/localhost (each chain file is leaf + intermediate), an unrelated key, and
/// broken files. Nothing here is committed.
struct TestCertificates: Sendable {
    let directory: String
    /// Root CA that clients trust (`-CAfile`).
    let caFile: String
    /// CN "rsa-server": RSA-2048 leaf + intermediate; key in PKCS#8.
    let rsaChain: String
    let rsaKey: String
    /// CN "ecdsa-server": P-256 leaf + intermediate; key in traditional "EC PRIVATE KEY" form.
    let ecdsaChain: String
    let ecdsaKey: String
    /// An RSA-2048 key that belongs to no certificate.
    let unrelatedRSAKey: String
    let emptyFile: String
    let garbageFile: String
    /// The first half of `rsaChain`, as if a write was cut short.
    let truncatedChain: String

    static let shared: Result<TestCertificates, any Error> = Result { try generate() }

    static func load() throws -> TestCertificates {
        try shared.get()
    }

    private static func generate() throws -> TestCertificates {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("proxytls-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func path(_ name: String) -> String { "\(dir)/\(name)" }
        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        }

        try write("ca.ext", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
        try write(
            "leaf.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")

        try openssl([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path("ca.key"), "-out", path("ca.pem"),
            "-days", "30", "-subj", "/CN=Test Root CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try openssl([
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("int.key"), "-out", path("int.csr"),
            "-subj", "/CN=Test Intermediate CA",
        ])
        try openssl([
            "x509", "-req", "-in", path("int.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
            "-CAcreateserial", "-out", path("int.pem"), "-days", "30", "-extfile", path("ca.ext"),
        ])

        // RSA-2048 server; `req -newkey` writes PKCS#8 ("BEGIN PRIVATE KEY").
        try openssl([
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("rsa.key"), "-out", path("rsa.csr"),
            "-subj", "/CN=rsa-server",
        ])
        try openssl([
            "x509", "-req", "-in", path("rsa.csr"), "-CA", path("int.pem"), "-CAkey", path("int.key"),
            "-CAcreateserial", "-out", path("rsa.pem"), "-days", "30", "-extfile", path("leaf.ext"),
        ])

        // ECDSA P-256 server, key converted to the traditional SEC1 form.
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", path("ec-pkcs8.key"), "-out", path("ec.csr"), "-subj", "/CN=ecdsa-server",
        ])
        try openssl(["ec", "-in", path("ec-pkcs8.key"), "-out", path("ec.key")])
        try openssl([
            "x509", "-req", "-in", path("ec.csr"), "-CA", path("int.pem"), "-CAkey", path("int.key"),
            "-CAcreateserial", "-out", path("ec.pem"), "-days", "30", "-extfile", path("leaf.ext"),
        ])

        try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path("other.key")])

        let intermediate = try String(contentsOfFile: path("int.pem"), encoding: .utf8)
        let rsaChain = try String(contentsOfFile: path("rsa.pem"), encoding: .utf8) + intermediate
        try write("rsa-chain.pem", rsaChain)
        try write("ec-chain.pem", try String(contentsOfFile: path("ec.pem"), encoding: .utf8) + intermediate)
        try write("empty.pem", "")
        try write("garbage.pem", "this is not PEM at all\n-----BEGIN NOTHING-----\n")
        try write("truncated.pem", String(rsaChain.prefix(rsaChain.count / 4)))

        return TestCertificates(
            directory: dir, caFile: path("ca.pem"),
            rsaChain: path("rsa-chain.pem"), rsaKey: path("rsa.key"),
            ecdsaChain: path("ec-chain.pem"), ecdsaKey: path("ec.key"),
            unrelatedRSAKey: path("other.key"), emptyFile: path("empty.pem"),
            garbageFile: path("garbage.pem"), truncatedChain: path("truncated.pem"))
    }

    private struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "openssl \(arguments.joined(separator: " ")) failed:\n\(text)")
        }
    }
}
