/// A TCP address the proxy listens on or connects to: a host (name, IPv4 or IPv6 literal) and a port.
///
/// A plain value: it owns no socket and resolves no names. IPv6 hosts are stored without brackets
/// (`::1`) and written with them (`[::1]:4318`), the form `Endpoint.parse` reads back.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// A host name, an IPv4 literal or an IPv6 literal without brackets, e.g. "0.0.0.0", "::1", "localhost".
    public var host: String
    /// 0...65535; 0 asks the kernel for an ephemeral port when listening.
    public var port: Int

    /// Brackets around an IPv6 host ("[::1]") are removed so that `host` always holds the bare literal.
    public init(host: String, port: Int) {
        if host.hasPrefix("["), host.hasSuffix("]"), host.count >= 2 {
            self.host = String(host.dropFirst().dropLast())
        } else {
            self.host = host
        }
        self.port = port
    }

    /// Reads "host:port", "[v6]:port" or ":port" (host 0.0.0.0). Returns nil for anything else,
    /// including a scheme ("http://…"), a path, an unbracketed IPv6 literal, or a port outside 0...65535.
    public static func parse(_ text: String) -> Endpoint? {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            // "[v6]:port": the literal is everything up to the closing bracket.
            guard let close = text.firstIndex(of: "]") else { return nil }
            let afterClose = text.index(after: close)
            guard afterClose < text.endIndex, text[afterClose] == ":" else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(after: afterClose)...]
            guard isIPv6Literal(hostPart) else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            // A second colon means an IPv6 literal without brackets: the port is ambiguous.
            guard !hostPart.contains(":") else { return nil }
            guard hostPart.isEmpty || isHostName(hostPart) else { return nil }
        }
        guard let port = parsePort(portPart) else { return nil }
        return Endpoint(host: hostPart.isEmpty ? "0.0.0.0" : String(hostPart), port: port)
    }

    /// True for 127.0.0.0/8, ::1 (and ::ffff:127.x.y.z) and the name "localhost".
    /// Only these are trusted for plaintext forwarding: traffic to them never leaves the host.
    public var isLoopback: Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "localhost." { return true }
        if let octets = Self.ipv4Octets(Substring(host)) { return octets[0] == 127 }
        if let groups = Self.ipv6Groups(Substring(host)) {
            if groups == [0, 0, 0, 0, 0, 0, 0, 1] { return true }
            // IPv4-mapped loopback, ::ffff:127.0.0.1.
            if groups[0..<5].allSatisfy({ $0 == 0 }), groups[5] == 0xffff, groups[6] >> 8 == 127 { return true }
        }
        return false
    }

    /// True for the addresses that listen on every interface: 0.0.0.0 and ::.
    var isWildcard: Bool {
        if let octets = Self.ipv4Octets(Substring(host)) { return octets == [0, 0, 0, 0] }
        if let groups = Self.ipv6Groups(Substring(host)) { return groups.allSatisfy { $0 == 0 } }
        return false
    }

    /// "127.0.0.1:4318", "[::1]:4318".
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    // MARK: - Lexical checks (no name resolution)

    private static func parsePort(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = Int(text), (0...65535).contains(port)
        else { return nil }
        return port
    }

    /// A DNS name or IPv4 literal: letters, digits, '-', '_' and '.', labels not empty.
    private static func isHostName(_ text: Substring) -> Bool {
        guard text.utf8.count <= 253 else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        for (index, label) in labels.enumerated() {
            // A single trailing dot ("localhost.") is a fully qualified name.
            if label.isEmpty { if index == labels.count - 1 && index > 0 { continue } else { return false } }
            guard label.utf8.count <= 63,
                  label.utf8.allSatisfy({ byte in
                      (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A)
                          || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D || byte == 0x5F
                  })
            else { return false }
        }
        return true
    }

    private static func isIPv6Literal(_ text: Substring) -> Bool {
        // A zone ("fe80::1%eth0") is allowed for link-local listeners.
        let address = text.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
        if address.count == 2 && address[1].isEmpty { return false }
        return ipv6Groups(address[0]) != nil
    }

    /// The four octets of a strict dotted-quad IPv4 literal, or nil.
    static func ipv4Octets(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = UInt8(part)
            else { return nil }
            octets.append(value)
        }
        return octets
    }

    /// The eight 16-bit groups of an IPv6 literal (with "::" compression and an optional
    /// trailing dotted quad), or nil when the text is not one.
    static func ipv6Groups(_ text: Substring) -> [UInt16]? {
        guard text.contains(":") else { return nil }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }

        func groups(_ part: String, allowIPv4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if index == pieces.count - 1, allowIPv4Tail, piece.contains(".") {
                    guard let octets = ipv4Octets(piece) else { return nil }
                    result.append(UInt16(octets[0]) << 8 | UInt16(octets[1]))
                    result.append(UInt16(octets[2]) << 8 | UInt16(octets[3]))
                    continue
                }
                guard (1...4).contains(piece.count), piece.allSatisfy({ $0.isHexDigit && $0.isASCII }),
                      let value = UInt16(piece, radix: 16)
                else { return nil }
                result.append(value)
            }
            return result
        }

        if halves.count == 1 {
            guard let all = groups(halves[0], allowIPv4Tail: true), all.count == 8 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowIPv4Tail: false),
              let tail = groups(halves[1], allowIPv4Tail: true),
              head.count + tail.count <= 7
        else { return nil }
        return head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
    }
}
