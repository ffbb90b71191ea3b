/// Turns the credentials a request carries into a principal, using the methods the configuration
/// enables. Pure logic: no channels, no I/O, so it is tested directly and shared by HTTP/1.1 and HTTP/2.
public struct Authenticator: Sendable {
    public let bearer: BearerTokenTable?

    public init(bearer: BearerTokenTable?) {
        self.bearer = bearer
    }

    /// Authenticates from every `Authorization` header value the request carried (all of them: more
    /// than one is refused, not resolved by picking one).
    public func authenticate(authorization values: [String]) -> Result<Principal, AuthFailure> {
        guard let value = values.first else { return .failure(.missingCredential) }
        guard values.count == 1 else { return .failure(.multipleAuthorizationHeaders) }
        guard let header = AuthorizationHeader(value) else { return .failure(.malformedAuthorization) }
        switch header.scheme {
        case .bearer:
            guard let bearer else { return .failure(.unsupportedScheme) }
            guard let entry = bearer.match(token: header.credentials) else { return .failure(.unknownToken) }
            return .success(Principal(name: "token:\(entry.principal)", tenant: entry.tenant, method: .bearer))
        case .basic, .other:
            return .failure(.unsupportedScheme)
        }
    }
}
