#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in wall-clock time: seconds since the Unix epoch (UTC), read from `CLOCK_REALTIME`.
///
/// For what is compared with times written by others (JWT `exp`/`nbf`/`iat`, a certificate's
/// not-after, log and metric timestamps). Durations and deadlines use NIO's `NIODeadline` or
/// `ContinuousClock` instead, which do not jump when the system clock is set. A `Double` like
/// Foundation's `Date`, so comparisons with NumericDate claims (which may be fractional) are unchanged.
public struct WallTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var secondsSince1970: Double

    public init(secondsSince1970: Double) {
        self.secondsSince1970 = secondsSince1970
    }

    /// The current time of the system's real-time clock.
    public static func now() -> WallTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return WallTime(secondsSince1970: Double(spec.tv_sec) + Double(spec.tv_nsec) / 1_000_000_000)
    }

    public func adding(seconds: Double) -> WallTime {
        WallTime(secondsSince1970: secondsSince1970 + seconds)
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    public func seconds(since earlier: WallTime) -> Double {
        secondsSince1970 - earlier.secondsSince1970
    }

    public static func < (lhs: WallTime, rhs: WallTime) -> Bool {
        lhs.secondsSince1970 < rhs.secondsSince1970
    }

    /// RFC 3339 in UTC to the second, e.g. `2026-01-02T03:04:05Z`.
    public var rfc3339: String {
        Self.format(secondsSince1970, milliseconds: false)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z` (truncated, not rounded).
    public var rfc3339Milliseconds: String {
        Self.format(secondsSince1970, milliseconds: true)
    }

    public var description: String { rfc3339 }

    private static func format(_ interval: Double, milliseconds: Bool) -> String {
        // Outside what time_t and a four-digit year hold, say so rather than trap or wrap.
        guard interval.isFinite, interval >= -62_135_596_800, interval < 253_402_300_800 else {
            return interval.isFinite ? "(out of range: \(interval) s)" : "(not a time)"
        }
        var seconds = time_t(interval.rounded(.down))
        let millis = min(999, Int((interval - Double(seconds)) * 1000))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var out = pad(Int(parts.tm_year) + 1900, 4) + "-" + pad(Int(parts.tm_mon) + 1, 2) + "-" + pad(Int(parts.tm_mday), 2)
        out += "T" + pad(Int(parts.tm_hour), 2) + ":" + pad(Int(parts.tm_min), 2) + ":" + pad(Int(parts.tm_sec), 2)
        if milliseconds { out += "." + pad(millis, 3) }
        return out + "Z"
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, width - text.count)) + text
    }
}
