import ProxyYAML

extension ProxyConfiguration {
    /// Protection of the proxy and of the receiver (key `limits`): how many connections are held,
    /// how long a TLS handshake may take, how many request and response bytes the proxy may hold
    /// across all connections before it sheds new requests, and per-tenant request and byte rates.
    public struct Limits: Sendable, Equatable {
        public static let defaultMaxConnections = 10_000
        public static let defaultHandshakeTimeout = Duration.seconds(10)
        /// 256 MiB.
        public static let defaultMaxBufferedBytes = 256 * 1024 * 1024

        /// Per-tenant token buckets (key `tenant_rate`), checked after authentication.
        public struct TenantRate: Sendable, Equatable {
            public static let defaultBurstSeconds = Duration.seconds(2)

            /// One tenant's rates; 0 means unlimited.
            public struct Rates: Sendable, Equatable {
                /// Key `requests_per_second`: requests a tenant may start per second.
                public var requestsPerSecond: Double
                /// Key `bytes_per_second`: request body bytes a tenant may send per second.
                public var bytesPerSecond: Double
                /// Key `items_per_second`: spans, data points, log records or profiles a tenant may send per
                /// second (the proxy then reads payloads).
                public var itemsPerSecond: Double

                public init(requestsPerSecond: Double = 0, bytesPerSecond: Double = 0, itemsPerSecond: Double = 0) {
                    self.requestsPerSecond = requestsPerSecond
                    self.bytesPerSecond = bytesPerSecond
                    self.itemsPerSecond = itemsPerSecond
                }

                /// Every rate unlimited.
                public var isUnlimited: Bool { requestsPerSecond == 0 && bytesPerSecond == 0 && itemsPerSecond == 0 }
            }

            /// Keys `requests_per_second` and `bytes_per_second`: every tenant without an override.
            public var defaults: Rates
            /// Key `burst_seconds`: each bucket holds `rate × burst_seconds` tokens.
            public var burstSeconds: Duration
            /// Key `overrides`: tenant ID → its own rates; a rate an override leaves out is the default's.
            public var overrides: [String: Rates]

            public init(defaults: Rates = Rates(), burstSeconds: Duration = defaultBurstSeconds, overrides: [String: Rates] = [:]) {
                self.defaults = defaults
                self.burstSeconds = burstSeconds
                self.overrides = overrides
            }

            /// The rates that apply to `tenant`.
            public func rates(for tenant: String) -> Rates {
                overrides[tenant] ?? defaults
            }

            /// Some tenant has an item rate.
            public var limitsItems: Bool {
                defaults.itemsPerSecond > 0 || overrides.values.contains { $0.itemsPerSecond > 0 }
            }

            /// No tenant has any limit: the limiter can be skipped.
            public var isUnlimited: Bool {
                defaults.isUnlimited && overrides.values.allSatisfy(\.isUnlimited)
            }
        }

        /// Key `max_connections`: client connections beyond this are closed as they are accepted.
        public var maxConnections: Int
        /// Key `handshake_timeout`: a connection whose TLS handshake has not completed by then is closed.
        public var handshakeTimeout: Duration
        /// Key `max_buffered_bytes`: above this many held bytes, new requests get 503 / UNAVAILABLE.
        public var maxBufferedBytes: Int
        /// Key `max_connection_age`: a client connection this old (less up to a tenth, at random) is asked
        /// to finish and reconnect, as in a drain. nil (the default): connections live as long as clients keep them.
        public var maxConnectionAge: Duration?
        /// Key `tenant_rate`.
        public var tenantRate: TenantRate

        public init(
            maxConnections: Int = defaultMaxConnections, handshakeTimeout: Duration = defaultHandshakeTimeout,
            maxBufferedBytes: Int = defaultMaxBufferedBytes, maxConnectionAge: Duration? = nil,
            tenantRate: TenantRate = TenantRate()
        ) {
            self.maxConnections = maxConnections
            self.handshakeTimeout = handshakeTimeout
            self.maxBufferedBytes = maxBufferedBytes
            self.maxConnectionAge = maxConnectionAge
            self.tenantRate = tenantRate
        }
    }
}

/// Reading and checking of the `limits` section, part of the one validation pass of
/// `ConfigurationReader`: each problem names its dotted key (overrides as
/// `limits.tenant_rate.overrides.team-a.requests_per_second`).
extension ConfigurationReader {
    typealias Limits = ProxyConfiguration.Limits

    mutating func readLimits(_ fields: Fields) -> Limits {
        var limits = Limits()
        if let value = integer(fields, "max_connections", minimum: 1, example: "10000") { limits.maxConnections = value }
        if let value = duration(fields, "handshake_timeout", example: "10s") { limits.handshakeTimeout = value }
        if let value = size(fields, "max_buffered_bytes", example: "256MiB") { limits.maxBufferedBytes = value }
        if let value = duration(fields, "max_connection_age", example: "10m") { limits.maxConnectionAge = value }

        let rateFields = section(in: fields, "tenant_rate")
        var tenantRate = Limits.TenantRate()
        if let value = rate(rateFields, "requests_per_second", example: "100") { tenantRate.defaults.requestsPerSecond = value }
        if let value = sizeOrZero(rateFields, "bytes_per_second", example: "5MiB") {
            tenantRate.defaults.bytesPerSecond = Double(value)
        }
        if let value = rate(rateFields, "items_per_second", example: "10000") { tenantRate.defaults.itemsPerSecond = value }
        if let value = duration(rateFields, "burst_seconds", example: "2") { tenantRate.burstSeconds = value }
        tenantRate.overrides = readRateOverrides(rateFields, defaults: tenantRate.defaults)
        limits.tenantRate = tenantRate
        return limits
    }

    /// `overrides: { team-a: { requests_per_second: 50, bytes_per_second: 5MiB } }`: the keys are
    /// tenant IDs, checked like every tenant ID in the file.
    private mutating func readRateOverrides(_ fields: Fields, defaults: Limits.TenantRate.Rates) -> [String: Limits.TenantRate.Rates] {
        guard let node = fields["overrides"], !Self.isNull(node) else { return [:] }
        let key = fields.key("overrides")
        guard case let .mapping(mapping) = node else {
            report(key, "must be a mapping of tenant IDs to rates, found \(Self.describe(node)); "
                + "e.g. overrides: { team-a: { requests_per_second: 50, bytes_per_second: 5MiB } }")
            return [:]
        }
        var overrides: [String: Limits.TenantRate.Rates] = [:]
        for entry in mapping.entries {
            let tenant = entry.key.text
            let value = entry.value
            if let problem = Self.tenantIDProblem(tenant) {
                report(key, "\(quote(tenant)): \(problem)")
                continue
            }
            let entryPath = "\(key).\(tenant)"
            if Self.isNull(value) || value.mapping?.isEmpty == true {
                report(entryPath, "has no rates: set requests_per_second, bytes_per_second or items_per_second, "
                    + "e.g. \(tenant): { requests_per_second: 50 }, or remove the tenant")
                continue
            }
            let entry = section(value, path: entryPath, schema: "limits.tenant_rate.overrides.<tenant>")
            if entry.isBroken { continue }
            var rates = defaults
            if let value = rate(entry, "requests_per_second", example: "50") { rates.requestsPerSecond = value }
            if let value = sizeOrZero(entry, "bytes_per_second", example: "5MiB") { rates.bytesPerSecond = Double(value) }
            if let value = rate(entry, "items_per_second", example: "20000") { rates.itemsPerSecond = value }
            overrides[tenant] = rates
        }
        return overrides
    }

    /// A number of events per second, 0 (unlimited) or more; fractions allowed ("0.5" is one every 2s).
    private mutating func rate(_ fields: Fields, _ name: String, example: String) -> Double? {
        guard let (found, text) = scalar(fields, name, expected: "a number per second", example: example) else { return nil }
        guard found.kind == .int || found.kind == .float, let value = Double(text), value.isFinite else {
            let unquote = found.kind == .string && Double(text) != nil ? " (remove the quotes)" : ""
            report(fields.key(name), "must be a number per second, found \(Self.describe(.scalar(found)))\(unquote); "
                + "e.g. \(name): \(example), or 0 for unlimited")
            return nil
        }
        guard value >= 0 else {
            report(fields.key(name), "must be 0 (unlimited) or more, found \(text); e.g. \(name): \(example)")
            return nil
        }
        return value
    }

    /// A size, or 0 for unlimited.
    private mutating func sizeOrZero(_ fields: Fields, _ name: String, example: String) -> Int? {
        if let found = fields[name]?.scalar, found.kind == .int, found.int == 0 { return 0 }
        if let found = fields[name]?.scalar, found.kind == .string, found.text.trimmingSpaces == "0" { return 0 }
        return size(fields, name, example: example)
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
