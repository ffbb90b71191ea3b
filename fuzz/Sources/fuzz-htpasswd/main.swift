// Fuzzes htpasswd parsing: the input is the file's contents, read as UTF-8 like `HtpasswdFile.load`.
import Foundation
import FuzzSupport
import ProxyAuth

runFuzzer { data, count in
    guard let text = String(bytes: fuzzBytes(data, count), encoding: .utf8) else { return 0 }
    do {
        let file = try HtpasswdFile.parse(text, file: "fuzz.htpasswd")
        if file.users.isEmpty { fatalError("an htpasswd file without users loaded") }
        _ = file.isCached(user: file.users[0], password: "secret")
    } catch let error as AuthConfigurationError {
        _ = error.description
    } catch {
        fatalError("an error of an unexpected type: \(error)")
    }
    return 0
}
