import ProxyYAML

extension ProxyConfiguration {
    /// When the proxy rebuilds its state from the files (key `reload`). SIGHUP always reloads.
    public struct Reload: Sendable, Equatable {
        public static let defaultWatchInterval = Duration.seconds(10)

        /// Key `watch_interval`: how often the configuration file and every file it names are checked
        /// for changes (following symlinks, so Kubernetes' swap of a mounted secret counts); a change
        /// reloads. Zero disables polling.
        public var watchInterval: Duration

        public init(watchInterval: Duration = defaultWatchInterval) {
            self.watchInterval = watchInterval
        }
    }

    /// Graceful shutdown on SIGTERM or SIGINT (key `shutdown`).
    public struct Shutdown: Sendable, Equatable {
        public static let defaultDrainTimeout = Duration.seconds(25)

        /// Key `drain_timeout`: how long requests in flight may take to finish after the listeners
        /// closed; connections still open then are closed.
        public var drainTimeout: Duration

        public init(drainTimeout: Duration = defaultDrainTimeout) {
            self.drainTimeout = drainTimeout
        }
    }
}

extension ConfigurationReader {
    /// Reads `reload` and `shutdown`.
    mutating func readOperations(_ top: Fields) -> (ProxyConfiguration.Reload, ProxyConfiguration.Shutdown) {
        let reloadFields = section(in: top, "reload")
        var reload = ProxyConfiguration.Reload()
        if let value = durationOrZero(reloadFields, "watch_interval", example: "10s", zeroMeans: "disables polling") {
            reload.watchInterval = value
        }

        let shutdownFields = section(in: top, "shutdown")
        var shutdown = ProxyConfiguration.Shutdown()
        if let value = duration(shutdownFields, "drain_timeout", example: "25s") {
            if value > .seconds(3600) {
                report(shutdownFields.key("drain_timeout"), "must be at most 1h, found \(quote(Self.text(shutdownFields["drain_timeout"]))); "
                    + "a pod's terminationGracePeriodSeconds should exceed it, e.g. drain_timeout: 25s with 30")
            } else {
                shutdown.drainTimeout = value
            }
        }
        return (reload, shutdown)
    }

    /// A duration where zero is allowed and means something ("0", "0s", "0ms"): the usual duration
    /// reader refuses zero.
    private mutating func durationOrZero(_ fields: Fields, _ name: String, example: String, zeroMeans: String) -> Duration? {
        if let node = fields[name], case let .scalar(scalar) = node, Self.isZeroDuration(scalar.text) {
            return .zero
        }
        if let node = fields[name], case let .scalar(scalar) = node,
           scalar.text.drop(while: \.isWhitespace).hasPrefix("-") {
            report(fields.key(name), "must not be negative, found \(quote(scalar.text)); e.g. \(name): \(example), "
                + "or \(name): 0s (\(zeroMeans))")
            return nil
        }
        return duration(fields, name, example: example)
    }

    /// "0", "0s", "0.0s", "0ms", " 0 m ": a zero with at most one known unit.
    static func isZeroDuration(_ text: String) -> Bool {
        let trimmed = text.filter { !$0.isWhitespace }
        let number = trimmed.prefix { $0 == "0" || $0 == "." }
        guard number.contains("0"), number.filter({ $0 == "." }).count <= 1 else { return false }
        let unit = trimmed.dropFirst(number.count)
        if unit.isEmpty { return true }
        guard unit.allSatisfy(\.isLetter) else { return false }
        return (try? Units.parseDuration("1" + unit)) != nil
    }

    private static func text(_ node: YAMLNode?) -> String {
        if let node, case let .scalar(scalar) = node { return scalar.text }
        return ""
    }
}
