// Fuzzes the OTLP payload editor: the input is an export request body, read as each of the four
// signals (and, when it starts with "{", as OTLP/JSON too). OTLPPayload.rewrite either refuses it,
// and then so does count, or its output (a) counts the same items, (b) comes back byte-identical
// when rewritten again, (c) has exactly one KeyValue per attribute on every Resource, written as
// the editor writes it, and (d) without those attributes reads as the input does. The checks are
// OTLPFixtures.PayloadCheck, which reads bodies with ProxyOTLP's ProtoWalker and JSONValue, not
// with the editor's cursor. Seeds: fuzz/corpus/otlp (fuzz/seeds/make_otlp_seeds.py).
import FuzzSupport
import OTLPFixtures
import ProxyOTLP

/// The tenant attribute as configured, and a one-letter key the fuzzer finds easily.
let attributes = [ResourceAttribute(key: "tenant.id", value: "team-a"), ResourceAttribute(key: "k", value: "v")]

runFuzzer { data, count in
    let input = fuzzBytes(data, count)
    let encodings: [OTLPPayloadEncoding] = input.first == UInt8(ascii: "{") ? [.protobuf, .json] : [.protobuf]
    for encoding in encodings {
        for signal in OTLPSignal.allCases {
            let problems = encoding == .protobuf
                ? PayloadCheck.protobuf(signal, input, attributes) : PayloadCheck.json(signal, input, attributes)
            guard let problems else {
                if (try? OTLPPayload.count(signal, encoding, input)) != nil {
                    fatalError("\(signal) \(encoding): rewrite refused what count accepted")
                }
                if fuzzTracing { print("\(signal) \(encoding): refused") }
                continue
            }
            if !problems.isEmpty { fatalError("\(signal) \(encoding): \(problems.joined(separator: "; "))") }
            if fuzzTracing { print("\(signal) \(encoding): ok") }
        }
    }
    return 0
}
