/// The four ways a client can prove who it is, named as in `auth.methods`.
public enum AuthMethod: String, Sendable, CaseIterable {
    case mtls
    case jwt
    case bearer
    case basic
}

/// Who sent a request, as established by one authentication method.
///
/// The name is qualified by its method so principals of different kinds never collide in the
/// principal table or in logs: `cert:<identity>`, `user:<htpasswd user>`, `token:<tokens-file
/// principal>`, `jwt:<issuer>#<principal claim>`.
public struct Principal: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// Kept for source compatibility: the method is an `AuthMethod`.
    public typealias Method = AuthMethod

    /// The qualified name used in logs and the principal table, e.g. `token:ci-runner`.
    public var name: String
    /// The authentication method that produced this principal.
    public var method: AuthMethod

    public init(name: String, method: AuthMethod) {
        self.name = name
        self.method = method
    }

    public var description: String { name }
}

/// Every reason a request's credentials are refused, as one flat list.
///
/// The mapping to responses (401 + `WWW-Authenticate` / gRPC 16 for authentication, 403 / gRPC 7
/// for authorization) lives in exactly one place in ProxyCore; the specific reason only goes to logs
/// and metrics, clients get the generic reply.
public enum AuthFailure: Error, Sendable, Equatable, CustomStringConvertible {
    // MARK: Authentication (401 / UNAUTHENTICATED)

    /// No credential at all: no verified client certificate for an enabled `mtls`, no `Authorization`.
    case missingCredential
    /// More than one `Authorization` header: ambiguous, refused rather than guessed.
    case multipleAuthorizationHeaders
    /// The header is not `<scheme> <credentials>` with a token68 credential, or a Basic credential is
    /// not base64 of UTF-8 `user:password`.
    case malformedAuthorization
    /// The `Authorization` value is longer than `auth.jwt.max_token_bytes`; refused before parsing.
    case credentialTooLarge
    /// A scheme no enabled method accepts (e.g. `Basic` when only bearer tokens are set up).
    case unsupportedScheme
    /// A bearer token that matches no entry of the tokens file.
    case unknownToken
    /// A Basic user name the htpasswd file does not list.
    case unknownUser
    /// A Basic password that does not match the user's hash.
    case wrongPassword
    /// A JWT that failed verification, with the specific reason.
    case invalidJWT(JWTFailure)
    /// A verified client certificate carries none of the identities `principal_from` looks for.
    case certificateIdentityMissing

    // MARK: Authorization (403 / PERMISSION_DENIED)

    /// A client certificate identity outside `auth.mtls.allowed_principals`.
    case principalNotAllowed
    /// No tenant from the principal table, the credential or `tenant.default`.
    case noTenant
    /// The tenant found is not a valid tenant ID (e.g. a JWT tenant claim with a space or a slash).
    case invalidTenant
    /// The tenant is not in the matching principal entry's `allowed_tenants`.
    case tenantNotAllowed
    /// The request's signal is not in the principal entry's or token entry's `signals`.
    case signalNotAllowed

    /// The specific reason, for logs and metric labels: snake_case, from a fixed set, never secret.
    public var reason: String {
        switch self {
        case .missingCredential: return "missing_credential"
        case .multipleAuthorizationHeaders: return "multiple_authorization_headers"
        case .malformedAuthorization: return "malformed_authorization"
        case .credentialTooLarge: return "credential_too_large"
        case .unsupportedScheme: return "unsupported_scheme"
        case .unknownToken: return "unknown_token"
        case .unknownUser: return "unknown_user"
        case .wrongPassword: return "wrong_password"
        case .invalidJWT(let failure): return "jwt_\(failure.reason)"
        case .certificateIdentityMissing: return "certificate_identity_missing"
        case .principalNotAllowed: return "principal_not_allowed"
        case .noTenant: return "no_tenant"
        case .invalidTenant: return "invalid_tenant"
        case .tenantNotAllowed: return "tenant_not_allowed"
        case .signalNotAllowed: return "signal_not_allowed"
        }
    }

    /// Whether the client is authenticated but not allowed (403 / gRPC 7) rather than
    /// unauthenticated (401 / gRPC 16).
    public var isForbidden: Bool {
        switch self {
        case .principalNotAllowed, .noTenant, .invalidTenant, .tenantNotAllowed, .signalNotAllowed:
            return true
        case .missingCredential, .multipleAuthorizationHeaders, .malformedAuthorization, .credentialTooLarge,
            .unsupportedScheme, .unknownToken, .unknownUser, .wrongPassword, .invalidJWT,
            .certificateIdentityMissing:
            return false
        }
    }

    public var description: String { reason }
}
