// Fuzzes the bearer tokens file: the input is the file's contents, read as UTF-8 like
// `BearerTokenTable.load`. A table that loads is searched for a fixed token.
import Foundation
import FuzzSupport
import ProxyAuth

runFuzzer { data, count in
    guard let text = String(bytes: fuzzBytes(data, count), encoding: .utf8) else { return 0 }
    do {
        let table = try BearerTokenTable.parse(yaml: text, file: "tokens.yaml")
        _ = table.match(token: Array("fuzz-bearer-token-0123456789abcdef".utf8))
        for entry in table.entries where TenantID.problem(entry.tenant) != nil {
            fatalError("a tokens file with an invalid tenant loaded")
        }
    } catch let error as AuthConfigurationError {
        _ = error.description
    } catch {
        fatalError("an error of an unexpected type: \(error)")
    }
    return 0
}
