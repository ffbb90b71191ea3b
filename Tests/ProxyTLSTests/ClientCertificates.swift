import Foundation
import XCTest

/// Client-certificate fixtures made once per test process with `openssl req` / `openssl ca` in a
/// fresh temporary directory (nothing is committed): a client root CA, an intermediate under it,
/// an unrelated CA, leaves for every verification case, and CRLs. All keys are ECDSA P-256.
struct ClientCertificates: Sendable {
    /// A client key pair: `chain` is the PEM to pass to `s_client -cert_chain` (empty when the
    /// leaf is issued straight by a trust anchor).
    struct Client: Sendable {
        let cert: String
        let key: String
        let chain: String?
    }

    let directory: String
    /// Trust anchor bundle for `tls.client_ca_file`: the client root CA only.
    let caFile: String
    /// The intermediate CA's certificate (issued by the root).
    let intermediate: String
    /// The unrelated CA's certificate, as a `tls.client_ca_file` that trusts none of the root's leaves.
    let otherCAFile: String

    /// CN collector-1, URI SAN spiffe://prod.example/ns/otel/sa/collector, two DNS SANs, clientAuth.
    let good: Client
    /// Valid 2020-01-01 .. 2020-01-02.
    let expired: Client
    /// Valid 2099-01-01 .. 2099-12-31.
    let notYetValid: Client
    /// Issued by the unrelated CA.
    let otherCA: Client
    /// Issued by the root and listed in `crlFile`.
    let revoked: Client
    /// extendedKeyUsage serverAuth only.
    let serverAuthOnly: Client
    /// Issued by the intermediate; URI SAN spiffe://prod.example/ns/otel/sa/via-int.
    let viaIntermediate: Client
    /// CN cn-only-client, no subjectAltName extension.
    let cnOnly: Client
    /// Subject O=SPIRE (no CN), URI SAN spiffe://prod.example/ns/otel/sa/spiffe-only.
    let spiffeOnly: Client
    /// Issued by the root with neither subject nor authority key identifier (accepted: the
    /// server does not use X509_STRICT).
    let noKeyIdentifiers: Client
    /// A server certificate (serverAuth, DNS:localhost) issued straight by the client root CA,
    /// for TLS client tests that need a second, distinguishable server identity.
    let sniServer: Client

    /// The root's CRL (revokes `revoked`) followed by the intermediate's (revokes nothing).
    let crlFile: String
    /// Only the intermediate's CRL: leaves issued by the root have no CRL.
    let intermediateCRLOnly: String
    /// The root's CRL with nextUpdate 2020-01-02.
    let expiredCRL: String
    /// A good CRL followed by a damaged CRL block.
    let crlThenGarbage: String
    let garbageFile: String

    static let shared: Result<ClientCertificates, any Error> = Result { try generate() }

    static func load() throws -> ClientCertificates {
        try shared.get()
    }

    /// A fresh CRL from the root (revoking `revoked`) whose nextUpdate is `seconds` from now.
    func makeShortLivedCRL(seconds: Int) throws -> String {
        let path = "\(directory)/short-\(UUID().uuidString).crl"
        try Self.shell(
            "SAN=DNS:unused.invalid openssl ca -config root/ca.cnf -cert root/cert.pem -keyfile root/key.pem -gencrl -crlsec \(seconds) -out '\(path)'",
            in: directory)
        return path
    }

    // MARK: Generation

    private static func generate() throws -> ClientCertificates {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("proxytls-mtls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try shell(script, in: dir)
        func client(_ name: String, chain: String? = nil) -> Client {
            Client(cert: "\(dir)/\(name).pem", key: "\(dir)/\(name).key", chain: chain.map { "\(dir)/\($0)" })
        }
        return ClientCertificates(
            directory: dir, caFile: "\(dir)/root/cert.pem", intermediate: "\(dir)/int/cert.pem",
            otherCAFile: "\(dir)/other/cert.pem",
            good: client("good"), expired: client("expired"), notYetValid: client("future"),
            otherCA: client("other-ca"), revoked: client("revoked"), serverAuthOnly: client("server-only"),
            viaIntermediate: client("via-int", chain: "int/cert.pem"), cnOnly: client("cn-only"),
            spiffeOnly: client("spiffe-only"), noKeyIdentifiers: client("no-keyid"),
            sniServer: client("sni-server"),
            crlFile: "\(dir)/crls.pem", intermediateCRLOnly: "\(dir)/int.crl", expiredCRL: "\(dir)/expired.crl",
            crlThenGarbage: "\(dir)/crl-then-garbage.pem", garbageFile: "\(dir)/garbage.pem")
    }

    private struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    private static func shell(_ script: String, in directory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-euc", script]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "client certificate fixtures failed:\n\(text)")
        }
    }

    /// `openssl ca` needs a directory per CA (index, serial, CRL number) and a config file; the
    /// leaf extension sections read the SAN from the environment.
    private static let script = #"""
        cnf() {
        cat > "$1/ca.cnf" <<CNF
        [ca]
        default_ca = this
        [this]
        dir = $PWD/$1
        database = $PWD/$1/index.txt
        new_certs_dir = $PWD/$1/new
        serial = $PWD/$1/serial
        crlnumber = $PWD/$1/crlnumber
        default_md = sha256
        policy = any
        unique_subject = no
        default_crl_days = 7
        [any]
        commonName = optional
        organizationName = optional
        [ca_ext]
        basicConstraints = critical,CA:TRUE
        keyUsage = critical,keyCertSign,cRLSign
        subjectKeyIdentifier = hash
        authorityKeyIdentifier = keyid:always
        [client]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = clientAuth
        subjectKeyIdentifier = hash
        authorityKeyIdentifier = keyid:always
        subjectAltName = \${ENV::SAN}
        [client_nosan]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = clientAuth
        subjectKeyIdentifier = hash
        authorityKeyIdentifier = keyid:always
        [client_nokeyid]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = clientAuth
        subjectKeyIdentifier = none
        authorityKeyIdentifier = none
        subjectAltName = \${ENV::SAN}
        [server_only]
        basicConstraints = CA:FALSE
        keyUsage = critical,digitalSignature
        extendedKeyUsage = serverAuth
        subjectKeyIdentifier = hash
        authorityKeyIdentifier = keyid:always
        subjectAltName = \${ENV::SAN}
        CNF
        }
        newca() {
          mkdir -p "$1/new"; : > "$1/index.txt"; echo 1000 > "$1/serial"; echo 1000 > "$1/crlnumber"; cnf "$1"
        }
        selfsigned() {
          openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/key.pem" \
            -out "$1/cert.pem" -days 30 -subj "$2" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>&1
        }
        sign() {  # CA EXTENSIONS CSR OUT [STARTDATE ENDDATE]
          if [ $# -ge 6 ]; then dates="-startdate $5 -enddate $6"; else dates="-days 30"; fi
          openssl ca -batch -notext -config "$1/ca.cnf" -cert "$1/cert.pem" -keyfile "$1/key.pem" \
            -extensions "$2" $dates -in "$3" -out "$4" 2>&1
        }
        leaf() {  # CA NAME SUBJECT EXTENSIONS SAN [STARTDATE ENDDATE]
          SAN=$5; export SAN
          openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$2.key" \
            -out "$2.csr" -subj "$3" 2>&1
          if [ $# -ge 7 ]; then sign "$1" "$4" "$2.csr" "$2.pem" "$6" "$7"; else sign "$1" "$4" "$2.csr" "$2.pem"; fi
        }
        SAN=DNS:unused.invalid; export SAN

        newca root; selfsigned root "/O=Test/CN=Clients Root CA"
        newca other; selfsigned other "/O=Test/CN=Other CA"
        newca int
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout int/key.pem \
          -out int/req.pem -subj "/O=Test/CN=Clients Intermediate CA" 2>&1
        sign root ca_ext int/req.pem int/cert.pem

        leaf root good "/CN=collector-1" client \
          "URI:spiffe://prod.example/ns/otel/sa/collector,DNS:collector-1.clients.example.com,DNS:alt.clients.example.com"
        leaf root expired "/CN=expired-client" client "DNS:expired.clients.example.com" 20200101000000Z 20200102000000Z
        leaf root future "/CN=future-client" client "DNS:future.clients.example.com" 20990101000000Z 20991231000000Z
        leaf other other-ca "/CN=other-ca-client" client "DNS:other.clients.example.com"
        leaf root revoked "/CN=revoked-client" client "DNS:revoked.clients.example.com"
        leaf root server-only "/CN=server-only" server_only "DNS:server-only.clients.example.com"
        leaf int via-int "/CN=via-intermediate" client "URI:spiffe://prod.example/ns/otel/sa/via-int"
        leaf root cn-only "/CN=cn-only-client" client_nosan ""
        leaf root spiffe-only "/O=SPIRE" client "URI:spiffe://prod.example/ns/otel/sa/spiffe-only"
        leaf root no-keyid "/CN=no-keyid-client" client_nokeyid "DNS:no-keyid.clients.example.com"
        leaf root sni-server "/CN=sni-server" server_only "DNS:localhost"

        openssl ca -config root/ca.cnf -cert root/cert.pem -keyfile root/key.pem -revoke revoked.pem 2>&1
        openssl ca -config root/ca.cnf -cert root/cert.pem -keyfile root/key.pem -gencrl -out root.crl 2>&1
        openssl ca -config int/ca.cnf -cert int/cert.pem -keyfile int/key.pem -gencrl -out int.crl 2>&1
        openssl ca -config root/ca.cnf -cert root/cert.pem -keyfile root/key.pem -gencrl \
          -crl_lastupdate 20200101000000Z -crl_nextupdate 20200102000000Z -out expired.crl 2>&1
        cat root.crl int.crl > crls.pem
        { cat root.crl; printf -- '-----BEGIN X509 CRL-----\nAAAAnotacrl\n-----END X509 CRL-----\n'; } > crl-then-garbage.pem
        printf 'this is not PEM at all\n' > garbage.pem
        """#
}
