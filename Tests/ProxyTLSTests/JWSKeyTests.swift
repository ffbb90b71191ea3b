import Foundation
import ProxyTLS
import XCTest

/// JWS signature verification: the RFC 7520 §4 examples as known answers, plus the refusals the
/// design requires (short RSA keys, points off the curve, short HMAC secrets, non-raw ECDSA
/// signatures, r or s out of range) and the key/algorithm pairing.
final class JWSKeyTests: XCTestCase {
    // MARK: RFC 7520 fixtures (§3.1 EC P-521, §3.3 RSA, §3.5 symmetric key, §4 payload)

    static let rfcRSAModulus =
        "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqV"
        + "wGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde"
        + "3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5g"
        + "HdrNP5zw"
    static let rfcRSAExponent = "AQAB"
    static let rfcECX = "AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt"
    static let rfcECY = "AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"
    static let rfcHMACKey = "hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg"
    static let rfcPayload =
        "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5k"
        + "IGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"

    /// (protected header, signature) of RFC 7520 §4.1 RS256, §4.2 PS384, §4.3 ES512, §4.4 HS256.
    static let rfcRS256 = (
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
        "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA"
            + "78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0"
            + "ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7v"
            + "jbU5y18kDquDg")
    static let rfcPS384 = (
        "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
        "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcb"
            + "UrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lf"
            + "JT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4i"
            + "fKo8DYM-X72Eaw")
    static let rfcES512 = (
        "eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9",
        "AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxX"
            + "Pn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2")
    static let rfcHS256 = (
        "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9",
        "s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0")

    func rfcRSAKey() throws -> JWSKey {
        try JWSKey.rsa(modulus: b64(Self.rfcRSAModulus), exponent: b64(Self.rfcRSAExponent))
    }

    func rfcECKey() throws -> JWSKey {
        try JWSKey.ec(curve: "P-521", x: b64(Self.rfcECX), y: b64(Self.rfcECY))
    }

    func rfcHMACKey() throws -> JWSKey {
        try JWSKey.hmac(secret: b64(Self.rfcHMACKey))
    }

    func signingInput(_ header: String) -> [UInt8] {
        Array("\(header).\(Self.rfcPayload)".utf8)
    }

    // MARK: Known answers

    func testVerify_RFC7520_RS256_Verifies() throws {
        let key = try rfcRSAKey()
        XCTAssertTrue(key.verify(algorithm: .RS256, signingInput: signingInput(Self.rfcRS256.0), signature: b64(Self.rfcRS256.1)))
        // The same signature is not a valid RS384 or PS256 signature.
        XCTAssertFalse(key.verify(algorithm: .RS384, signingInput: signingInput(Self.rfcRS256.0), signature: b64(Self.rfcRS256.1)))
        XCTAssertFalse(key.verify(algorithm: .PS256, signingInput: signingInput(Self.rfcRS256.0), signature: b64(Self.rfcRS256.1)))
    }

    func testVerify_RFC7520_PS384_Verifies() throws {
        let key = try rfcRSAKey()
        XCTAssertTrue(key.verify(algorithm: .PS384, signingInput: signingInput(Self.rfcPS384.0), signature: b64(Self.rfcPS384.1)))
        XCTAssertFalse(key.verify(algorithm: .RS384, signingInput: signingInput(Self.rfcPS384.0), signature: b64(Self.rfcPS384.1)))
    }

    func testVerify_RFC7520_ES512_Verifies() throws {
        let key = try rfcECKey()
        XCTAssertTrue(key.verify(algorithm: .ES512, signingInput: signingInput(Self.rfcES512.0), signature: b64(Self.rfcES512.1)))
    }

    func testVerify_RFC7520_HS256_Verifies() throws {
        let key = try rfcHMACKey()
        XCTAssertTrue(key.verify(algorithm: .HS256, signingInput: signingInput(Self.rfcHS256.0), signature: b64(Self.rfcHS256.1)))
        XCTAssertFalse(key.verify(algorithm: .HS384, signingInput: signingInput(Self.rfcHS256.0), signature: b64(Self.rfcHS256.1)))
    }

    // MARK: Tampering

    func testVerify_TamperedPayload_FailsForEveryAlgorithm() throws {
        let cases: [(JWSKey, JWSAlgorithm, (String, String))] = [
            (try rfcRSAKey(), .RS256, Self.rfcRS256), (try rfcRSAKey(), .PS384, Self.rfcPS384),
            (try rfcECKey(), .ES512, Self.rfcES512), (try rfcHMACKey(), .HS256, Self.rfcHS256),
        ]
        for (key, algorithm, (header, signature)) in cases {
            var input = signingInput(header)
            input[input.count - 2] ^= 0x01
            XCTAssertFalse(key.verify(algorithm: algorithm, signingInput: input, signature: b64(signature)), "\(algorithm)")
        }
    }

    func testVerify_TamperedSignature_FailsForEveryAlgorithm() throws {
        let cases: [(JWSKey, JWSAlgorithm, (String, String))] = [
            (try rfcRSAKey(), .RS256, Self.rfcRS256), (try rfcRSAKey(), .PS384, Self.rfcPS384),
            (try rfcECKey(), .ES512, Self.rfcES512), (try rfcHMACKey(), .HS256, Self.rfcHS256),
        ]
        for (key, algorithm, (header, signature)) in cases {
            var bytes = b64(signature)
            bytes[bytes.count / 2] ^= 0x80
            XCTAssertFalse(key.verify(algorithm: algorithm, signingInput: signingInput(header), signature: bytes), "\(algorithm)")
            // Truncated and empty signatures fail too.
            XCTAssertFalse(key.verify(algorithm: algorithm, signingInput: signingInput(header), signature: Array(b64(signature).dropLast())))
            XCTAssertFalse(key.verify(algorithm: algorithm, signingInput: signingInput(header), signature: []))
        }
    }

    // MARK: ECDSA signature form

    func testVerify_ES256_OnlyRawRS_DERRefused() throws {
        let generated = try GeneratedP256Key.make()
        let key = try JWSKey.ec(curve: "P-256", x: generated.x, y: generated.y)
        let input = Array("eyJhbGciOiJFUzI1NiJ9.e30".utf8)
        let der = try generated.signDER(input)
        let raw = try rawSignature(fromDER: der, size: 32)
        XCTAssertTrue(key.verify(algorithm: .ES256, signingInput: input, signature: raw))
        // The very same signature in DER form is refused, as is any length other than 64.
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: der))
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: raw + [0]))
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: [0] + raw))
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: Array(raw.dropLast())))
    }

    func testVerify_ES256_ROrSOutOfRange_Refused() throws {
        let generated = try GeneratedP256Key.make()
        let key = try JWSKey.ec(curve: "P-256", x: generated.x, y: generated.y)
        let input = Array("eyJhbGciOiJFUzI1NiJ9.e30".utf8)
        let raw = try rawSignature(fromDER: try generated.signDER(input), size: 32)
        let r = Array(raw[..<32])
        let s = Array(raw[32...])
        // The P-256 group order n.
        let n = hex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551")
        let zero = [UInt8](repeating: 0, count: 32)
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: zero + s), "r = 0")
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: r + zero), "s = 0")
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: r + n), "s = n")
        XCTAssertFalse(key.verify(algorithm: .ES256, signingInput: input, signature: n + s), "r = n")
        // Control: the untouched signature verifies, so the refusals above are about r and s alone.
        XCTAssertTrue(key.verify(algorithm: .ES256, signingInput: input, signature: r + s))
    }

    // MARK: Key construction refusals

    func testBuild_RSA1024_Refused() throws {
        var modulus = [UInt8](repeating: 0xA5, count: 128)
        modulus[0] = 0xC3
        modulus[127] = 0x01
        XCTAssertThrowsError(try JWSKey.rsa(modulus: modulus, exponent: [1, 0, 1])) { error in
            let error = error as! TLSError
            XCTAssertEqual(error.kind, .invalidKey)
            XCTAssertTrue(error.description.contains("1024 bits"), error.description)
        }
        // Leading zero bytes do not make a key longer.
        XCTAssertThrowsError(try JWSKey.rsa(modulus: [0, 0, 0] + modulus, exponent: [1, 0, 1]))
    }

    func testBuild_RSAEvenModulus_RefusedByPublicCheck() throws {
        var modulus = b64(Self.rfcRSAModulus)
        modulus[modulus.count - 1] &+= 1  // the RFC modulus is odd; make it even
        XCTAssertThrowsError(try JWSKey.rsa(modulus: modulus, exponent: [1, 0, 1]))
    }

    func testBuild_ECPointNotOnCurve_Refused() throws {
        var y = b64(Self.rfcECY)
        y[y.count - 1] ^= 0x01
        XCTAssertThrowsError(try JWSKey.ec(curve: "P-521", x: b64(Self.rfcECX), y: y)) { error in
            XCTAssertEqual((error as! TLSError).kind, .invalidKey)
        }
        XCTAssertThrowsError(try JWSKey.ec(curve: "P-256", x: [1], y: [1]))
    }

    func testBuild_ECWrongSizesOrCurve_Refused() throws {
        // A P-521 point is too long for P-256, and unknown curve names are refused.
        XCTAssertThrowsError(try JWSKey.ec(curve: "P-256", x: b64(Self.rfcECX), y: b64(Self.rfcECY)))
        XCTAssertThrowsError(try JWSKey.ec(curve: "secp256k1", x: [1], y: [2]))
    }

    func testBuild_ECShortCoordinates_LeftPadded() throws {
        // The RFC's P-521 x starts with 0x00: without it the key is the same point.
        let x = b64(Self.rfcECX)
        XCTAssertEqual(x.first, 0)
        let key = try JWSKey.ec(curve: "P-521", x: Array(x.dropFirst()), y: b64(Self.rfcECY))
        XCTAssertTrue(key.verify(algorithm: .ES512, signingInput: signingInput(Self.rfcES512.0), signature: b64(Self.rfcES512.1)))
    }

    func testBuild_ShortHMACSecret_Refused() throws {
        XCTAssertThrowsError(try JWSKey.hmac(secret: Array(repeating: 7, count: 31))) { error in
            let error = error as! TLSError
            XCTAssertEqual(error.kind, .invalidKey)
            XCTAssertTrue(error.description.contains("31 bytes"), error.description)
        }
        XCTAssertNoThrow(try JWSKey.hmac(secret: Array(repeating: 7, count: 32)))
    }

    func testBuild_Ed25519WrongLength_Refused() throws {
        XCTAssertThrowsError(try JWSKey.ed25519(publicKey: Array(repeating: 1, count: 31)))
        XCTAssertThrowsError(try JWSKey.ed25519(publicKey: Array(repeating: 1, count: 33)))
    }

    func testVerify_Ed25519_RFC8037Example() throws {
        // RFC 8037 §A.4: Ed25519 over the JWS signing input of §A.4.
        let key = try JWSKey.ed25519(publicKey: b64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
        let input = Array("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc".utf8)
        let signature = b64("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")
        XCTAssertTrue(key.verify(algorithm: .EdDSA, signingInput: input, signature: signature))
        var tampered = input
        tampered[tampered.count - 1] ^= 1
        XCTAssertFalse(key.verify(algorithm: .EdDSA, signingInput: tampered, signature: signature))
    }

    // MARK: Key/algorithm pairing

    func testSupports_Matrix() throws {
        let p256 = try GeneratedP256Key.make()
        let keys: [(String, JWSKey, Set<JWSAlgorithm>)] = [
            ("RSA", try rfcRSAKey(), [.RS256, .RS384, .RS512, .PS256, .PS384, .PS512]),
            ("P-256", try JWSKey.ec(curve: "P-256", x: p256.x, y: p256.y), [.ES256]),
            ("P-521", try rfcECKey(), [.ES512]),
            ("Ed25519", try JWSKey.ed25519(publicKey: b64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")), [.EdDSA]),
            ("HMAC", try rfcHMACKey(), [.HS256, .HS384, .HS512]),
        ]
        for (name, key, supported) in keys {
            for algorithm in JWSAlgorithm.allCases {
                XCTAssertEqual(key.supports(algorithm), supported.contains(algorithm), "\(name) \(algorithm)")
            }
        }
    }

    func testVerify_HS256KeyedWithRSAPublicKey_Refused() throws {
        // The HS256-with-a-public-key confusion: an attacker MACs with the public modulus bytes.
        // An RSA key never verifies HS*, whatever the signature.
        let key = try rfcRSAKey()
        let modulus = b64(Self.rfcRSAModulus)
        let input = signingInput("eyJhbGciOiJIUzI1NiJ9")
        let forged = try JWSKey.hmac(secret: modulus)
        XCTAssertFalse(key.supports(.HS256))
        // Sanity: the forged key itself "verifies" its own MAC, which is what an attacker relies on.
        let mac = try hmacSHA256(key: modulus, input)
        XCTAssertTrue(forged.verify(algorithm: .HS256, signingInput: input, signature: mac))
        XCTAssertFalse(key.verify(algorithm: .HS256, signingInput: input, signature: mac))
    }

    func testSummary_NamesTypeNotMaterial() throws {
        XCTAssertEqual(try rfcRSAKey().summary, "RSA 2048")
        XCTAssertEqual(try rfcECKey().summary, "EC P-521")
        XCTAssertEqual(try rfcHMACKey().summary, "HMAC")
    }
}

// MARK: - Helpers

/// Strict base64url (no padding) decoding for fixtures.
private func b64(_ text: String) -> [UInt8] {
    var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while base64.count % 4 != 0 { base64 += "=" }
    return Array(Data(base64Encoded: base64)!)
}

private func hex(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex {
        let next = text.index(index, offsetBy: 2)
        bytes.append(UInt8(text[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

private struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs the `openssl` CLI; stdin from `input`, returns stdout.
@discardableResult
private func openssl(_ arguments: [String], input: [UInt8] = []) throws -> [UInt8] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["openssl"] + arguments
    let stdin = Pipe()
    let stdout = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = FileHandle.nullDevice
    try process.run()
    stdin.fileHandleForWriting.write(Data(input))
    try stdin.fileHandleForWriting.close()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw FixtureError("openssl \(arguments.first ?? "") failed") }
    return Array(output)
}

private func hmacSHA256(key: [UInt8], _ input: [UInt8]) throws -> [UInt8] {
    let hexKey = key.map { String(format: "%02x", $0) }.joined()
    return try openssl(["dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt", "hexkey:\(hexKey)"], input: input)
}

/// A P-256 key pair generated with the `openssl` CLI into a temporary file.
private struct GeneratedP256Key {
    var keyFile: String
    var x: [UInt8]
    var y: [UInt8]

    static func make() throws -> GeneratedP256Key {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jws-p256-\(UUID().uuidString).pem").path
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file])
        // SubjectPublicKeyInfo DER ends with the 65-byte uncompressed point 04 ‖ x ‖ y.
        let spki = try openssl(["pkey", "-in", file, "-pubout", "-outform", "DER"])
        let point = Array(spki.suffix(65))
        guard point.first == 0x04 else { throw FixtureError("unexpected public key encoding") }
        return GeneratedP256Key(keyFile: file, x: Array(point[1...32]), y: Array(point[33...64]))
    }

    func signDER(_ input: [UInt8]) throws -> [UInt8] {
        try openssl(["dgst", "-sha256", "-sign", keyFile], input: input)
    }
}

/// DER ECDSA-Sig-Value (SEQUENCE { INTEGER r, INTEGER s }) → fixed-width r ‖ s.
private func rawSignature(fromDER der: [UInt8], size: Int) throws -> [UInt8] {
    var index = 0
    func byte() throws -> UInt8 {
        guard index < der.count else { throw FixtureError("short DER") }
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
    guard try byte() == 0x30 else { throw FixtureError("not a SEQUENCE") }
    _ = try length()
    var out: [UInt8] = []
    for _ in 0..<2 {
        guard try byte() == 0x02 else { throw FixtureError("not an INTEGER") }
        let count = try length()
        let integer = Array(der[index..<(index + count)].drop(while: { $0 == 0 }))
        index += count
        out += [UInt8](repeating: 0, count: size - integer.count) + integer
    }
    return out
}
