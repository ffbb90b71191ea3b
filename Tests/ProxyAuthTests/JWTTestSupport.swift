import Foundation
import ProxyTLS
import XCTest

/// Keys generated at test time (Python `cryptography`), written as PKCS #8 PEM into a fresh
/// temporary directory, with their public halves as JWK members. Tokens are signed with the
/// `openssl` CLI, independently of the proxy's own JWS code. Nothing here is committed.
struct JWTTestKeys: Sendable {
    struct Key: Sendable {
        var file: String
        /// Public JWK members (kty, n/e or crv/x/y), without kid/alg/use.
        var jwk: [String: String]
    }

    var rsa: Key
    var rsa1024: Key
    var ec256: Key
    var ec256Other: Key
    var ec384: Key
    var ec521: Key
    var ed25519: Key
    /// The SubjectPublicKeyInfo PEM of `rsa`, as an attacker would use it for HS256.
    var rsaPublicPEM: [UInt8]

    static let shared: Result<JWTTestKeys, any Error> = Result { try generate() }

    static func load() throws -> JWTTestKeys { try shared.get() }

    private static func generate() throws -> JWTTestKeys {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("jwt-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let script = """
            import json, sys, base64
            from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519
            from cryptography.hazmat.primitives import serialization as s
            d = sys.argv[1]
            def b64(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
            def ib(i, n=None):
                n = n or (i.bit_length() + 7) // 8
                return i.to_bytes(n, 'big')
            def save(name, key):
                open(f'{d}/{name}.pem', 'wb').write(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
                return f'{d}/{name}.pem'
            out = {}
            for name, bits in (('rsa', 2048), ('rsa1024', 1024)):
                k = rsa.generate_private_key(public_exponent=65537, key_size=bits)
                p = k.public_key().public_numbers()
                out[name] = {'file': save(name, k), 'jwk': {'kty': 'RSA', 'n': b64(ib(p.n)), 'e': b64(ib(p.e))}}
                if name == 'rsa':
                    out['rsaPublicPEM'] = k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode()
            for name, curve, crv, size in (('ec256', ec.SECP256R1(), 'P-256', 32), ('ec256Other', ec.SECP256R1(), 'P-256', 32),
                                           ('ec384', ec.SECP384R1(), 'P-384', 48), ('ec521', ec.SECP521R1(), 'P-521', 66)):
                k = ec.generate_private_key(curve)
                p = k.public_key().public_numbers()
                out[name] = {'file': save(name, k), 'jwk': {'kty': 'EC', 'crv': crv, 'x': b64(ib(p.x, size)), 'y': b64(ib(p.y, size))}}
            k = ed25519.Ed25519PrivateKey.generate()
            raw = k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
            out['ed25519'] = {'file': save('ed25519', k), 'jwk': {'kty': 'OKP', 'crv': 'Ed25519', 'x': b64(raw)}}
            print(json.dumps(out))
            """
        let output = try runTool("python3", ["-c", script, dir])
        let object = try JSONSerialization.jsonObject(with: Data(output)) as! [String: Any]
        func key(_ name: String) -> Key {
            let entry = object[name] as! [String: Any]
            return Key(file: entry["file"] as! String, jwk: entry["jwk"] as! [String: String])
        }
        return JWTTestKeys(
            rsa: key("rsa"), rsa1024: key("rsa1024"), ec256: key("ec256"), ec256Other: key("ec256Other"),
            ec384: key("ec384"), ec521: key("ec521"), ed25519: key("ed25519"),
            rsaPublicPEM: Array((object["rsaPublicPEM"] as! String).utf8))
    }
}

/// What signs a test token.
enum TestSigner {
    case key(JWTTestKeys.Key)
    case secret([UInt8])
    /// ECDSA left in OpenSSL's DER form instead of JWS r‖s.
    case derECDSA(JWTTestKeys.Key)
    /// A fixed signature (e.g. empty for `alg: none`).
    case raw([UInt8])
}

enum JWTMint {
    /// `base64url(header).base64url(claims).base64url(signature)`, where header and claims are
    /// taken as raw JSON text so tests can write duplicates or odd types.
    static func token(header: String, claims: String, algorithm: String, signer: TestSigner) throws -> String {
        let signingInput = "\(b64url(Array(header.utf8))).\(b64url(Array(claims.utf8)))"
        let signature = try sign(Array(signingInput.utf8), algorithm: algorithm, signer: signer)
        return "\(signingInput).\(b64url(signature))"
    }

    static func sign(_ input: [UInt8], algorithm: String, signer: TestSigner) throws -> [UInt8] {
        let digest = "-sha" + String(algorithm.suffix(3))
        switch signer {
        case .raw(let bytes):
            return bytes
        case .secret(let secret):
            let hexKey = secret.map { String(format: "%02x", $0) }.joined()
            return try runTool("openssl", ["dgst", digest, "-binary", "-mac", "HMAC", "-macopt", "hexkey:\(hexKey)"], input: input)
        case .derECDSA(let key):
            return try runTool("openssl", ["dgst", digest, "-sign", key.file], input: input)
        case .key(let key):
            if algorithm == "EdDSA" {
                let file = FileManager.default.temporaryDirectory.appendingPathComponent("jwt-input-\(UUID().uuidString)").path
                try Data(input).write(to: URL(fileURLWithPath: file))
                defer { try? FileManager.default.removeItem(atPath: file) }
                return try runTool("openssl", ["pkeyutl", "-sign", "-inkey", key.file, "-rawin", "-in", file])
            }
            if algorithm.hasPrefix("PS") {
                return try runTool("openssl", [
                    "dgst", digest, "-sign", key.file, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest",
                ], input: input)
            }
            let signature = try runTool("openssl", ["dgst", digest, "-sign", key.file], input: input)
            if algorithm.hasPrefix("ES") {
                let size = ["ES256": 32, "ES384": 48, "ES512": 66][algorithm]!
                return try rawECDSA(fromDER: signature, size: size)
            }
            return signature
        }
    }

    /// JSON text for a claims or header dictionary (keys sorted, so tokens are reproducible).
    static func json(_ object: [String: Any]) -> String {
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    static func b64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// DER ECDSA-Sig-Value → fixed-width r ‖ s.
    static func rawECDSA(fromDER der: [UInt8], size: Int) throws -> [UInt8] {
        var index = 0
        func byte() throws -> UInt8 {
            guard index < der.count else { throw ToolError("short DER signature") }
            defer { index += 1 }
            return der[index]
        }
        func length() throws -> Int {
            let first = try byte()
            if first < 0x80 { return Int(first) }
            var value = 0
            for _ in 0..<(first & 0x7F) { value = value << 8 | Int(try byte()) }
            return value
        }
        guard try byte() == 0x30 else { throw ToolError("not a DER SEQUENCE") }
        _ = try length()
        var out: [UInt8] = []
        for _ in 0..<2 {
            guard try byte() == 0x02 else { throw ToolError("not a DER INTEGER") }
            let count = try length()
            let integer = Array(der[index..<(index + count)].drop(while: { $0 == 0 }))
            index += count
            out += [UInt8](repeating: 0, count: size - integer.count) + integer
        }
        return out
    }
}

struct ToolError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs a tool from PATH with `input` on stdin; returns stdout, throws on a non-zero exit.
@discardableResult
func runTool(_ tool: String, _ arguments: [String], input: [UInt8] = []) throws -> [UInt8] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [tool] + arguments
    let stdin = Pipe()
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    stdin.fileHandleForWriting.write(Data(input))
    try stdin.fileHandleForWriting.close()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let errors = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ToolError("\(tool) \(arguments.first ?? "") failed: \(String(decoding: errors, as: UTF8.self))")
    }
    return Array(output)
}
