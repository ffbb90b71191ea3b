/// Who sent a request, as established by one authentication method, and the tenant their data belongs to.
public struct Principal: Sendable, Equatable, CustomStringConvertible {
    /// The authentication method that produced this principal.
    public enum Method: String, Sendable, Equatable {
        case bearer
    }

    /// The qualified name used in logs and the tenant table, e.g. `token:ci-runner`.
    public var name: String
    /// The tenant the proxy sets in the tenant header for this principal's requests.
    public var tenant: String
    public var method: Method

    public init(name: String, tenant: String, method: Method) {
        self.name = name
        self.tenant = tenant
        self.method = method
    }

    public var description: String { "\(name) (tenant \(tenant))" }
}

/// Every reason a request's credentials are refused, as one flat list.
///
/// The mapping to responses (401 + `WWW-Authenticate`, 403, gRPC status) lives in exactly one place in
/// ProxyCore; the specific reason only goes to logs and metrics, clients get the generic reply.
public enum AuthFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// No `Authorization` header at all.
    case missingCredential
    /// More than one `Authorization` header: ambiguous, refused rather than guessed.
    case multipleAuthorizationHeaders
    /// The header is not `<scheme> <credentials>` with a token68 credential.
    case malformedAuthorization
    /// A scheme no configured method accepts (e.g. `Basic` when only bearer tokens are set up).
    case unsupportedScheme
    /// A bearer token that matches no entry of the tokens file.
    case unknownToken

    /// The specific reason, for logs and metric labels. Never contains credential material.
    public var reason: String {
        switch self {
        case .missingCredential: return "missing_credential"
        case .multipleAuthorizationHeaders: return "multiple_authorization_headers"
        case .malformedAuthorization: return "malformed_authorization"
        case .unsupportedScheme: return "unsupported_scheme"
        case .unknownToken: return "unknown_token"
        }
    }

    /// Whether the client is authenticated but not allowed (403) rather than unauthenticated (401).
    public var isForbidden: Bool { false }

    public var description: String { reason }
}
