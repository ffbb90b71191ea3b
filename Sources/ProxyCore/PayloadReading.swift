import NIOCore
import ProxyCompression
import ProxyConfig
import ProxyOTLP

/// What the proxy does with request payloads, from the configuration: whether it reads them at all
/// (a Resource attribute to set, items to count or an item rate to charge), and which attributes it
/// sets. Without any of these, bodies pass through untouched and unread.
struct PayloadPolicy: Sendable {
    var reads: Bool
    /// `tenant.resource_attribute`.
    var tenantAttribute: String?
    /// `tenant.principal_attribute`.
    var principalAttribute: String?

    init(_ configuration: ProxyConfiguration) {
        reads = configuration.readsPayloads
        tenantAttribute = configuration.tenant.resourceAttribute
        principalAttribute = configuration.tenant.principalAttribute
    }

    /// The attributes set on every Resource of a request accepted for `tenant` and `principal`.
    func attributes(tenant: String, principal: String) -> [ResourceAttribute] {
        var out: [ResourceAttribute] = []
        if let key = tenantAttribute { out.append(ResourceAttribute(key: key, value: tenant)) }
        if let key = principalAttribute { out.append(ResourceAttribute(key: key, value: principal)) }
        return out
    }
}

/// Why a payload the proxy reads is refused. The description is the client's message: it names the
/// problem, never the payload's bytes.
enum PayloadRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    /// `Content-Encoding` or `grpc-encoding` names a coding the proxy cannot decompress (415 / UNIMPLEMENTED).
    case unsupportedCoding(String)
    /// An OTLP/HTTP `Content-Type` other than `application/x-protobuf` or `application/json` (415).
    case unsupportedMediaType
    /// Decompressed, the payload would pass the body or message limit (413 / RESOURCE_EXHAUSTED).
    case tooLarge
    /// Corrupt compressed data, broken gRPC framing, or not an export request (400 / INVALID_ARGUMENT).
    case invalid(String)

    var description: String {
        switch self {
        case .unsupportedCoding(let coding): return "unsupported content coding \(coding)"
        case .unsupportedMediaType: return "unsupported media type: use application/x-protobuf or application/json"
        case .tooLarge: return "decompressed payload too large"
        case .invalid(let reason): return "invalid export request: \(reason)"
        }
    }

    /// The access log's reason.
    var reason: String {
        switch self {
        case .unsupportedCoding: return "unsupported_coding"
        case .unsupportedMediaType: return "unsupported_media_type"
        case .tooLarge: return "payload_limit"
        case .invalid: return "invalid_payload"
        }
    }
}

/// The request body of one exchange whose payload the proxy reads. The body is collected whole (the
/// exchange already bounds it by `http.max_request_body_size` or `grpc.max_recv_msg_size` on the wire),
/// then, once the tenant is known: the one gRPC message is taken out of its frame, decompressed within
/// the same limit, checked and counted in one pass over the protobuf framing (or over the OTLP/JSON text),
/// and given the configured Resource attributes.
///
/// What goes upstream: the client's bytes untouched when nothing is set (only counted), else the edited
/// payload uncompressed (loopback costs less than compressing again), in a new gRPC frame for gRPC.
struct PayloadReader {
    let signal: OTLPSignal
    let isGRPC: Bool
    let encoding: OTLPPayloadEncoding
    let coding: ContentCoding
    /// The most bytes the payload may have once decompressed.
    let limit: Int
    private(set) var collected = ByteBuffer()

    /// Reads the head's facts; a refusal when the coding or media type cannot be read.
    static func make(
        signal: OTLPSignal, isGRPC: Bool, contentType: String?, contentEncodings: [String], grpcEncoding: String?,
        limit: Int
    ) -> Result<PayloadReader, PayloadRefusal> {
        let coding: ContentCoding
        let encoding: OTLPPayloadEncoding
        if isGRPC {
            encoding = .protobuf
            if let name = grpcEncoding {
                guard let known = ContentCoding(token: name) else {
                    return .failure(.unsupportedCoding(name.count <= 64 ? name : String(name.prefix(61)) + "..."))
                }
                coding = known
            } else {
                coding = .identity
            }
        } else {
            switch OTLPMediaType(contentType) {
            case .protobuf: encoding = .protobuf
            case .json: encoding = .json
            case .other: return .failure(.unsupportedMediaType)
            }
            do {
                coding = try ContentCoding(contentEncoding: contentEncodings)
            } catch {
                if case .unsupportedCoding(let name) = error { return .failure(.unsupportedCoding(name)) }
                return .failure(.unsupportedCoding("?"))
            }
        }
        return .success(PayloadReader(signal: signal, isGRPC: isGRPC, encoding: encoding, coding: coding, limit: limit))
    }

    mutating func append(_ data: ByteBuffer) {
        guard data.readableBytes > 0 else { return }
        if collected.capacity == 0 {
            collected = data
        } else {
            collected.writeImmutableBuffer(data)
        }
    }

    /// What reading found.
    struct Read {
        /// The body to send upstream; nil: the client's, unchanged.
        var body: ByteBuffer?
        var items: Int
        /// The payload's size once decompressed.
        var decodedBytes: Int
    }

    /// Reads the collected payload and sets `attributes` on every Resource (none: counts only).
    func read(setting attributes: [ResourceAttribute]) -> Result<Read, PayloadRefusal> {
        var message = collected
        var compressed = coding != .identity
        if isGRPC {
            // Exactly one message: an OTLP Export call is unary.
            guard let flag = message.readInteger(as: UInt8.self), let length = message.readInteger(as: UInt32.self) else {
                return .failure(.invalid("the call carries no complete gRPC message"))
            }
            guard flag <= 1 else { return .failure(.invalid("unknown gRPC message flag")) }
            guard message.readableBytes == Int(length) else {
                return .failure(.invalid("a unary call carries exactly one gRPC message"))
            }
            if flag == 1 && !compressed { return .failure(.invalid("compressed message without grpc-encoding")) }
            compressed = flag == 1
        }
        let payload: [UInt8]
        do {
            if compressed {
                payload = try Decompressor.decompress(message.readableBytesView, coding: coding, limit: limit)
            } else {
                payload = Array(message.readableBytesView)
            }
        } catch {
            if case .tooLarge = error { return .failure(.tooLarge) }
            return .failure(.invalid("\(error)"))
        }
        do {
            if attributes.isEmpty {
                let summary = try OTLPPayload.count(signal, encoding, payload)
                return .success(Read(body: nil, items: summary.items, decodedBytes: payload.count))
            }
            // With the attributes the payload may pass the limit the receiver shares with the proxy.
            let (edited, summary) = try OTLPPayload.rewrite(signal, encoding, payload, setting: attributes, limit: limit)
            var out = ByteBuffer()
            out.reserveCapacity(edited.count + (isGRPC ? 5 : 0))
            if isGRPC {
                out.writeInteger(UInt8(0))
                out.writeInteger(UInt32(edited.count))
            }
            out.writeBytes(edited)
            return .success(Read(body: out, items: summary.items, decodedBytes: payload.count))
        } catch {
            return .failure(error.exceedsLimit ? .tooLarge : .invalid(error.description))
        }
    }
}

/// The OTLP/HTTP media types (`Content-Type` without parameters, any case).
enum OTLPMediaType: Equatable {
    case protobuf
    case json
    case other

    init(_ contentType: String?) {
        guard let contentType else {
            self = .other
            return
        }
        let media = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch media.trimmingBlanks().lowercased() {
        case "application/x-protobuf": self = .protobuf
        case "application/json": self = .json
        default: self = .other
        }
    }
}

extension Substring {
    /// Without spaces and tabs at either end.
    fileprivate func trimmingBlanks() -> Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
