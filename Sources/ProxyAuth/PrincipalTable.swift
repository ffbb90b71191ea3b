import ProxyOTLP
import ProxyTLS

/// A principal or identity pattern: an exact name, or one with `*` wildcards, each matching any run
/// of characters (including none, dots and slashes): `spiffe://prod.example/ns/otel/*`,
/// `*.clients.example.com`, `user:*`. Matching is case-sensitive and works on Unicode scalars.
public struct PrincipalPattern: Sendable, Equatable, Hashable, CustomStringConvertible {
    public let text: String
    private let parts: [[Unicode.Scalar]]

    public init(_ text: String) {
        self.text = text
        self.parts = text.split(separator: "*", omittingEmptySubsequences: false).map { Array($0.unicodeScalars) }
    }

    public var description: String { text }

    /// Whether the whole of `name` matches. Linear in the name per literal part (no backtracking
    /// blow-up): each literal after a `*` is taken at its leftmost occurrence, which is enough
    /// because `*` can absorb anything before it.
    public func matches(_ name: String) -> Bool {
        let scalars = Array(name.unicodeScalars)
        if parts.count == 1 { return scalars == parts[0] }
        let head = parts[0]
        let tail = parts[parts.count - 1]
        guard scalars.count >= head.count + tail.count,
              scalars.starts(with: head), scalars.suffix(tail.count).elementsEqual(tail)
        else { return false }
        var position = head.count
        let end = scalars.count - tail.count
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let found = Self.find(part, in: scalars, from: position, before: end) else { return false }
            position = found + part.count
        }
        return true
    }

    private static func find(_ needle: [Unicode.Scalar], in haystack: [Unicode.Scalar], from start: Int, before end: Int) -> Int? {
        guard end - start >= needle.count else { return nil }
        var index = start
        while index + needle.count <= end {
            if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}

/// Where a client certificate's identity is read from (`auth.mtls.principal_from`).
public enum PrincipalSource: String, Sendable, CaseIterable {
    case uriSAN = "uri_san"
    case dnsSAN = "dns_san"
    case subjectCN = "subject_cn"
}

/// How a verified client certificate becomes a principal (`auth.mtls`): the identity sources in
/// order (the first source the certificate has wins; within a source, its first value), and an
/// optional allow-list of identities. The TLS layer has already verified the chain.
public struct MTLSPolicy: Sendable, Equatable {
    public static let defaultPrincipalFrom: [PrincipalSource] = [.uriSAN, .dnsSAN, .subjectCN]

    public var principalFrom: [PrincipalSource]
    /// Identity patterns (not qualified: `spiffe://…`, not `cert:spiffe://…`). Empty allows every
    /// certificate the configured CAs signed.
    public var allowedPrincipals: [PrincipalPattern]

    public init(principalFrom: [PrincipalSource] = MTLSPolicy.defaultPrincipalFrom, allowedPrincipals: [String] = []) {
        self.principalFrom = principalFrom
        self.allowedPrincipals = allowedPrincipals.map(PrincipalPattern.init)
    }

    /// The certificate's identity per `principalFrom`, or nil when it has none of them.
    public func identity(of certificate: PeerCertificate) -> String? {
        for source in principalFrom {
            let value: String?
            switch source {
            case .uriSAN: value = certificate.uris.first { !$0.isEmpty }
            case .dnsSAN: value = certificate.dnsNames.first { !$0.isEmpty }
            case .subjectCN: value = certificate.subjectCommonName.flatMap { $0.isEmpty ? nil : $0 }
            }
            if let value { return value }
        }
        return nil
    }

    /// Whether the identity passes `allowed_principals` (always, when the list is empty).
    public func allows(identity: String) -> Bool {
        allowedPrincipals.isEmpty || allowedPrincipals.contains { $0.matches(identity) }
    }
}

/// The `auth.principals` table: qualified principal patterns mapped to a tenant and to the tenants
/// and signals the principal may write. Entries are tried in order; the first match wins, so put
/// specific entries before wildcards.
public struct PrincipalTable: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// A qualified principal name or pattern, e.g. `cert:spiffe://prod.example/ns/otel/*`.
        public var pattern: PrincipalPattern
        /// A fixed tenant for matching principals; overrides the credential's own tenant.
        public var tenant: String?
        /// When set, the tenant (however found) must be one of these.
        public var allowedTenants: [String]?
        /// When set, only these signals are accepted; default every signal.
        public var signals: Set<OTLPSignal>?

        public init(pattern: String, tenant: String? = nil, allowedTenants: [String]? = nil, signals: Set<OTLPSignal>? = nil) {
            self.pattern = PrincipalPattern(pattern)
            self.tenant = tenant
            self.allowedTenants = allowedTenants
            self.signals = signals
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) {
        self.entries = entries
    }

    /// The first entry whose pattern matches the qualified principal name.
    public func entry(for principal: String) -> Entry? {
        entries.first { $0.pattern.matches(principal) }
    }
}
