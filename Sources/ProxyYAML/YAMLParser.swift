/// Reads one YAML document of the subset configuration files use.
///
/// Supported: block mappings and sequences (`- key: value` items, sequences at the indentation of
/// their key), flow mappings and sequences, plain, single- and double-quoted scalars (with YAML's
/// escapes and line folding), `|` and `>` block scalars with chomping and indentation indicators,
/// comments, one optional `---` and `...`.
///
/// Refused, each with the line and the construct named: anchors and aliases, tags, a second document,
/// directives, complex (`? `) keys, collections as keys, duplicate keys, tabs in indentation, control
/// characters. Nesting deeper than `maximumDepth` and input longer than `maximumBytes` are refused too,
/// so the work (and the recursion) is bounded by the limits, never by what the file asks for.
public enum YAML {
    /// Mappings and sequences inside each other; the configuration needs six.
    public static let defaultMaximumDepth = 64
    /// 4 MiB: far above a configuration or tokens file (a 10,000-entry tokens file is about 1.5 MiB).
    public static let defaultMaximumBytes = 4 * 1024 * 1024

    /// The document in `text`, or nil when it holds no node (empty, only comments, or `---` alone).
    public static func parse(
        _ text: String, maximumDepth: Int = defaultMaximumDepth, maximumBytes: Int = defaultMaximumBytes
    ) throws(YAMLError) -> YAMLNode? {
        try parse(bytes: Array(text.utf8), maximumDepth: maximumDepth, maximumBytes: maximumBytes)
    }

    /// The document in UTF-8 `bytes`; bytes that are not UTF-8 are refused with their position.
    public static func parse(
        bytes: [UInt8], maximumDepth: Int = defaultMaximumDepth, maximumBytes: Int = defaultMaximumBytes
    ) throws(YAMLError) -> YAMLNode? {
        guard bytes.count <= maximumBytes else {
            throw YAMLError(
                line: 1, column: 1,
                reason: "the document is \(bytes.count) bytes, more than the \(maximumBytes) allowed")
        }
        var parser = try YAMLParser(bytes: bytes, maximumDepth: maximumDepth)
        return try parser.parseDocument()
    }
}

private let space = UInt8(ascii: " ")
private let tab = UInt8(ascii: "\t")
private let lineFeed = UInt8(ascii: "\n")
private let carriageReturn = UInt8(ascii: "\r")
private let hash = UInt8(ascii: "#")
private let colon = UInt8(ascii: ":")
private let dash = UInt8(ascii: "-")
private let question = UInt8(ascii: "?")
private let comma = UInt8(ascii: ",")
private let openBracket = UInt8(ascii: "[")
private let closeBracket = UInt8(ascii: "]")
private let openBrace = UInt8(ascii: "{")
private let closeBrace = UInt8(ascii: "}")
private let singleQuote = UInt8(ascii: "'")
private let doubleQuote = UInt8(ascii: "\"")
private let backslash = UInt8(ascii: "\\")
private let pipe = UInt8(ascii: "|")
private let greater = UInt8(ascii: ">")
private let ampersand = UInt8(ascii: "&")
private let asterisk = UInt8(ascii: "*")
private let exclamation = UInt8(ascii: "!")
private let percent = UInt8(ascii: "%")
private let at = UInt8(ascii: "@")
private let backtick = UInt8(ascii: "`")
private let dot = UInt8(ascii: ".")
private let plus = UInt8(ascii: "+")

private func isBlank(_ byte: UInt8?) -> Bool { byte == space || byte == tab }
private func isBlankOrBreak(_ byte: UInt8?) -> Bool { byte == nil || byte == space || byte == tab || byte == lineFeed }
private func isFlowIndicator(_ byte: UInt8?) -> Bool {
    byte == comma || byte == openBracket || byte == closeBracket || byte == openBrace || byte == closeBrace
}

/// The parser's state: the input (line breaks normalized to LF), the position, the current line and
/// the nesting depth. Block parsing is recursive descent over indentation; each block function starts
/// at the first character of its node and returns with `position` at the first non-space character
/// of the next content line (or the end). Inline functions (scalars, flow collections) return right
/// after their last character; `finishLine` then checks that only blanks or a comment follow.
struct YAMLParser {
    private let bytes: [UInt8]
    private var position = 0
    private var line = 1
    private var lineStart = 0
    private var depth = 0
    private let maximumDepth: Int
    // Column of `cachePosition` on the line starting at `cacheLineStart`: columns count characters, so
    // they are counted forward from the last one asked for, keeping long lines linear.
    private var cacheLineStart = -1
    private var cachePosition = 0
    private var cacheColumn = 1

    init(bytes input: [UInt8], maximumDepth: Int) throws(YAMLError) {
        self.maximumDepth = maximumDepth
        var normalized: [UInt8] = []
        normalized.reserveCapacity(input.count)
        var index = 0
        // A byte-order mark is allowed at the start only.
        if input.count >= 3, input[0] == 0xEF, input[1] == 0xBB, input[2] == 0xBF { index = 3 }
        var line = 1
        var column = 1
        var decoder = UTF8.ForwardParser()
        var iterator = input[index...].makeIterator()
        while true {
            switch decoder.parseScalar(from: &iterator) {
            case .valid(let encoded):
                let scalar = UTF8.decode(encoded)
                let value = scalar.value
                if value == 0x0D {
                    // CR LF and a lone CR are both one line break.
                    normalized.append(lineFeed)
                    line += 1
                    column = 1
                    var lookahead = iterator
                    if lookahead.next() == lineFeed { _ = iterator.next() }
                    continue
                }
                if value == 0x0A {
                    normalized.append(lineFeed)
                    line += 1
                    column = 1
                    continue
                }
                let printable = value == 0x09 || (value >= 0x20 && value != 0x7F && !(0x80...0x9F).contains(value))
                    || value == 0x85
                guard printable, value != 0xFEFF else {
                    let hex = String(value, radix: 16, uppercase: true)
                    throw YAMLError(
                        line: line, column: column,
                        reason: "the control character U+\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex) "
                            + "is not allowed in YAML text; remove it (or write it as an escape in a double-quoted value)")
                }
                normalized.append(contentsOf: encoded)
                column += 1
            case .error:
                throw YAMLError(line: line, column: column, reason: "the text is not UTF-8; save the file as UTF-8")
            case .emptyInput:
                self.bytes = normalized
                return
            }
        }
    }

    // MARK: - Positions and errors

    private func byte(_ offset: Int = 0) -> UInt8? {
        let index = position + offset
        return index < bytes.count ? bytes[index] : nil
    }

    private var atEnd: Bool { position >= bytes.count }

    /// The indentation of the current line when `position` is at its first content character.
    private var indent: Int { position - lineStart }

    private mutating func column(at index: Int) -> Int {
        if cacheLineStart != lineStart || index < cachePosition {
            cacheLineStart = lineStart
            cachePosition = lineStart
            cacheColumn = 1
        }
        while cachePosition < index {
            if bytes[cachePosition] & 0xC0 != 0x80 { cacheColumn += 1 }
            cachePosition += 1
        }
        return cacheColumn
    }

    private struct Mark {
        var line: Int
        var column: Int
    }

    private mutating func mark() -> Mark { Mark(line: line, column: column(at: position)) }

    private mutating func error(_ reason: String) -> YAMLError {
        let here = mark()
        return YAMLError(line: here.line, column: here.column, reason: reason)
    }

    private func error(_ reason: String, at mark: Mark) -> YAMLError {
        YAMLError(line: mark.line, column: mark.column, reason: reason)
    }

    /// Moves past the line feed at `position`.
    private mutating func newLine() {
        position += 1
        line += 1
        lineStart = position
    }

    private mutating func enter() throws(YAMLError) {
        depth += 1
        if depth > maximumDepth {
            throw error("mappings and lists are nested more than \(maximumDepth) deep")
        }
    }

    private mutating func leave() { depth -= 1 }

    // MARK: - Lines

    /// `---` or `...` at the start of a line, followed by a blank, a line break or the end.
    private func atDocumentMarker(_ marker: UInt8? = nil) -> Bool {
        guard position == lineStart, let first = byte(), first == dash || first == dot,
              marker == nil || marker == first,
              byte(1) == first, byte(2) == first, isBlankOrBreak(byte(3))
        else { return false }
        return true
    }

    /// After a value: only blanks and a comment may follow on its line. Leaves `position` at the line
    /// feed (or the end). Positions at the start of a line (after a block scalar) are left alone.
    private mutating func finishLine(after what: String) throws(YAMLError) {
        if position == lineStart && (position == 0 || bytes[position - 1] == lineFeed) { return }
        while isBlank(byte()) { position += 1 }
        guard let next = byte(), next != lineFeed else { return }
        if next == hash && (position == lineStart || isBlank(bytes[position - 1])) {
            while let byte = byte(), byte != lineFeed { position += 1 }
            return
        }
        if next == colon {
            throw error("a key must be a plain or quoted value, found \(what) before this `:`")
        }
        throw error("unexpected text after \(what); a comment needs a space before its `#`")
    }

    /// Skips line breaks, blank lines and comment lines. Leaves `position` at the first non-space
    /// character of the next content line, or at the end. `position` must be at a line feed, at the
    /// start of a line or at the end.
    private mutating func skipToContent() throws(YAMLError) {
        while true {
            if byte() == lineFeed { newLine() }
            guard !atEnd else { return }
            while byte() == space { position += 1 }
            switch byte() {
            case nil:
                return
            case lineFeed:
                continue
            case hash:
                while let byte = byte(), byte != lineFeed { position += 1 }
            case tab:
                let tabMark = mark()
                while isBlank(byte()) { position += 1 }
                if byte() == nil || byte() == lineFeed { continue }
                if byte() == hash {
                    while let byte = byte(), byte != lineFeed { position += 1 }
                    continue
                }
                throw error("a tab is not allowed for indentation; indent with spaces", at: tabMark)
            default:
                return
            }
        }
    }

    // MARK: - Document

    mutating func parseDocument() throws(YAMLError) -> YAMLNode? {
        try skipToContent()
        if byte() == percent && position == lineStart {
            throw error("directives (`%YAML`, `%TAG`) are not supported; remove the line")
        }
        var root: YAMLNode?
        var rootParsed = false
        if atDocumentMarker(dash) {
            position += 3
            while isBlank(byte()) { position += 1 }
            if let next = byte(), next != lineFeed, next != hash {
                root = try inlineNode(parentIndent: -1, context: "after `---`")
                try finishLine(after: "the value")
                rootParsed = true
            } else {
                try finishLine(after: "`---`")
            }
            try skipToContent()
        }
        if !rootParsed, !atEnd, !atDocumentMarker() {
            root = try blockNode(indent: indent, parentIndent: -1)
        }
        if atDocumentMarker(dot) {
            position += 3
            try finishLine(after: "`...`")
            try skipToContent()
            if !atEnd && !atDocumentMarker(dash) {
                if byte() == percent && position == lineStart {
                    throw error("directives (`%YAML`, `%TAG`) are not supported; remove the line")
                }
                throw error("text after the end of the document (`...`); remove it")
            }
        }
        if atDocumentMarker(dash) {
            throw error("another document starts here (`---`); a file holds one document: remove the marker "
                + "and merge the documents, or split the file")
        }
        if !atEnd {
            if let root, indent < root.column - 1 {
                throw error("this line is indented less than the document's first line; align it with the lines above")
            }
            throw error("this line does not continue the \(root?.sequence != nil ? "list" : "mapping") above it: "
                + "a document is one mapping (or one list); check the line's indentation and its `- ` or `key: `")
        }
        return root
    }

    // MARK: - Block nodes

    /// A node whose first character is at `position`, in column `indent` (0-based): a block sequence,
    /// a block mapping, or an inline node. Continuation lines of its scalars must be indented more
    /// than `parentIndent`.
    private mutating func blockNode(indent: Int, parentIndent: Int) throws(YAMLError) -> YAMLNode {
        if byte() == dash && isBlankOrBreak(byte(1)) {
            return try blockSequence(indent: indent)
        }
        try checkNodeStart()
        if try lineHasImplicitKey() {
            return try blockMapping(indent: indent)
        }
        let node = try inlineNode(parentIndent: parentIndent, context: nil)
        try finishLine(after: describe(node))
        try skipToContent()
        return node
    }

    private mutating func blockMapping(indent mappingIndent: Int) throws(YAMLError) -> YAMLNode {
        try enter()
        let start = mark()
        var entries: [YAMLMapping.Entry] = []
        var seen: [String: Int] = [:]
        while true {
            if byte() == dash && isBlankOrBreak(byte(1)) {
                throw error("a list item (`- `) where a key was expected; indent the list under its key, "
                    + "or write `key:` before it")
            }
            try checkNodeStart()
            let key = try blockKey()
            try checkDuplicate(key, in: &seen)
            let value = try blockValue(parentIndent: mappingIndent, sequenceMayAlign: true)
            entries.append(.init(key: key, value: value))
            if atEnd || atDocumentMarker() { break }
            if indent == mappingIndent { continue }
            if indent < mappingIndent { break }
            throw error("this line is indented more than the keys above it (column \(mappingIndent + 1)); "
                + "align it with them, or put the nested value under a key that ends with `:`")
        }
        leave()
        return .mapping(YAMLMapping(entries: entries, line: start.line, column: start.column))
    }

    private mutating func blockSequence(indent sequenceIndent: Int) throws(YAMLError) -> YAMLNode {
        try enter()
        let start = mark()
        var items: [YAMLNode] = []
        while true {
            // At the `-` of an item.
            items.append(try blockValue(parentIndent: sequenceIndent, sequenceMayAlign: false, compact: true))
            if atEnd || atDocumentMarker() { break }
            if indent == sequenceIndent {
                if byte() == dash && isBlankOrBreak(byte(1)) { continue }
                break
            }
            if indent < sequenceIndent { break }
            throw error("this line is indented more than the list's items (`-` at column \(sequenceIndent + 1)); "
                + "align it with them, or nest it under a key")
        }
        leave()
        return .sequence(YAMLSequence(items: items, line: start.line, column: start.column))
    }

    /// The value after a block key's `:` or a list item's `-` (at `position`, which is skipped): on the
    /// same line, or on the lines below, indented more than `parentIndent` (or, for a list under a key,
    /// as much). An absent value is a null scalar.
    private mutating func blockValue(
        parentIndent: Int, sequenceMayAlign: Bool, compact: Bool = false
    ) throws(YAMLError) -> YAMLNode {
        let indicator = mark()
        position += 1
        while isBlank(byte()) { position += 1 }
        if let next = byte(), next != lineFeed, next != hash {
            if compact {
                // `- key: value` and `- - item`: the item's own block starts at this column.
                return try blockNode(indent: indent, parentIndent: parentIndent)
            }
            let node = try inlineNode(parentIndent: parentIndent, context: "after a key on the same line")
            try finishLine(after: describe(node))
            try skipToContent()
            return node
        }
        try finishLine(after: "`:`")
        try skipToContent()
        let null = YAMLNode.scalar(YAMLScalar(text: "", style: .plain, line: indicator.line, column: indicator.column + 1))
        if atEnd || atDocumentMarker() { return null }
        if indent > parentIndent {
            return try blockNode(indent: indent, parentIndent: parentIndent)
        }
        if indent == parentIndent && sequenceMayAlign && byte() == dash && isBlankOrBreak(byte(1)) {
            return try blockSequence(indent: indent)
        }
        return null
    }

    /// A block mapping key (plain or quoted, on one line) and its `:`; leaves `position` at the `:`.
    private mutating func blockKey() throws(YAMLError) -> YAMLScalar {
        let start = mark()
        switch byte() {
        case question where isBlankOrBreak(byte(1)):
            throw error("complex keys (`? `) are not supported; write `key: value`")
        case openBracket, openBrace:
            throw error("a key must be a plain or quoted value, not a flow collection")
        case singleQuote, doubleQuote:
            let key = try quotedScalar()
            guard key.line == start.line else {
                throw error("a key must fit on one line", at: start)
            }
            while isBlank(byte()) { position += 1 }
            guard byte() == colon, isBlankOrBreak(byte(1)) else {
                throw error("expected `:` after the key (a key is followed by `: ` and its value)")
            }
            return key
        default:
            try checkPlainStart(flow: false)
            let keyStart = position
            var end = position
            while let next = byte(), next != lineFeed {
                if next == colon && isBlankOrBreak(byte(1)) { break }
                if next == hash && position > keyStart && isBlank(bytes[position - 1]) { break }
                position += 1
                if !isBlank(next) { end = position }
            }
            guard byte() == colon else {
                position = keyStart
                throw error("expected `key: value` here (a key, a colon and a space), or a list item `- value`")
            }
            return YAMLScalar(
                text: String(decoding: bytes[keyStart..<end], as: UTF8.self), style: .plain,
                line: start.line, column: start.column)
        }
    }

    /// Whether the current line, from `position`, is `key:` or `key: value` (a one-line plain or quoted
    /// key followed by `:` and a blank or the line's end). Does not move.
    private func lineHasImplicitKey() throws(YAMLError) -> Bool {
        var index = position
        func at(_ offset: Int = 0) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
        switch at() {
        case singleQuote?, doubleQuote?:
            let quote = at()
            index += 1
            while let next = at(), next != lineFeed {
                if quote == doubleQuote && next == backslash {
                    index += 2
                    continue
                }
                if next == quote {
                    if quote == singleQuote && at(1) == singleQuote {
                        index += 2
                        continue
                    }
                    index += 1
                    while isBlank(at()) { index += 1 }
                    return at() == colon && isBlankOrBreak(at(1))
                }
                index += 1
            }
            return false
        case openBracket?, openBrace?:
            return false
        default:
            let start = index
            while let next = at(), next != lineFeed {
                if next == colon && isBlankOrBreak(at(1)) { return true }
                if next == hash && index > start && isBlank(bytes[index - 1]) { return false }
                index += 1
            }
            return false
        }
    }

    // MARK: - Inline nodes

    /// A node that starts on the current line and is not a block collection: a scalar (plain, quoted
    /// or block), or a flow collection. `context` names where a nested mapping or list would be misplaced.
    private mutating func inlineNode(parentIndent: Int, context: String?) throws(YAMLError) -> YAMLNode {
        try checkNodeStart()
        switch byte() {
        case dash where isBlankOrBreak(byte(1)):
            throw error("a list cannot start \(context ?? "here"); start it on the next line, indented")
        case question where isBlankOrBreak(byte(1)):
            throw error("complex keys (`? `) are not supported; write `key: value`")
        case pipe, greater:
            return .scalar(try blockScalar(parentIndent: parentIndent))
        case openBracket, openBrace:
            let node = try flowNode(parentIndent: parentIndent)
            return node
        default:
            break
        }
        if let context, try lineHasImplicitKey() {
            throw error("a mapping cannot start \(context); put `key: value` on its own line, indented under its key")
        }
        if byte() == singleQuote || byte() == doubleQuote {
            return .scalar(try quotedScalar())
        }
        return .scalar(try plainScalar(parentIndent: parentIndent, flow: false))
    }

    /// Refuses anchors, aliases, tags and the reserved indicators where a node starts.
    private mutating func checkNodeStart() throws(YAMLError) {
        switch byte() {
        case ampersand:
            throw error("anchors (`&name`) are not supported; write the value out in full")
        case asterisk:
            throw error("aliases (`*name`) are not supported; write the value out in full")
        case exclamation:
            throw error("tags (`!tag`, `!!type`) are not supported; remove the tag (quote the value to make it a string)")
        default:
            break
        }
    }

    private mutating func checkPlainStart(flow: Bool) throws(YAMLError) {
        guard let first = byte() else { return }
        switch first {
        case percent, at, backtick, pipe, greater:
            throw error("a value cannot start with `\(Character(Unicode.Scalar(first)))`; quote it")
        case dash, question, colon:
            let next = byte(1)
            if isBlankOrBreak(next) || (flow && isFlowIndicator(next)) {
                throw error("`\(Character(Unicode.Scalar(first)))` alone cannot start a value here; quote it")
            }
        case comma, closeBracket, closeBrace:
            throw error("a value cannot start with `\(Character(Unicode.Scalar(first)))`; quote it")
        case hash:
            throw error("expected a value, found a comment")
        default:
            break
        }
    }

    private func describe(_ node: YAMLNode) -> String {
        switch node {
        case .mapping: return "a flow mapping"
        case .sequence: return "a flow sequence"
        case .scalar(let scalar):
            switch scalar.style {
            case .plain: return "the value"
            case .singleQuoted, .doubleQuoted: return "a quoted value"
            case .literal, .folded: return "a block scalar"
            }
        }
    }

    // MARK: - Plain scalars

    /// A plain scalar from `position`. In block context its continuation lines are indented more than
    /// `parentIndent`; in flow context it also ends at `,[]{}`. Line breaks fold as YAML folds them.
    private mutating func plainScalar(parentIndent: Int, flow: Bool) throws(YAMLError) -> YAMLScalar {
        try checkPlainStart(flow: flow)
        let start = mark()
        var text: [UInt8] = []
        var firstLine = true
        var emptyLines = 0
        while true {
            // One line's segment.
            let segmentStart = position
            var segmentEnd = position
            var stop = false
            while let next = byte(), next != lineFeed {
                if next == colon {
                    let after = byte(1)
                    if isBlankOrBreak(after) || (flow && isFlowIndicator(after)) {
                        if !firstLine && !flow {
                            throw error("`key: value` inside a multi-line value; indent the nested mapping "
                                + "under a key that ends with `:`, or quote the value")
                        }
                        stop = true
                        break
                    }
                }
                if next == hash && position > segmentStart && isBlank(bytes[position - 1]) {
                    stop = true
                    break
                }
                if flow && isFlowIndicator(next) {
                    stop = true
                    break
                }
                position += 1
                if !isBlank(next) { segmentEnd = position }
            }
            if segmentEnd > segmentStart {
                if !firstLine {
                    if emptyLines == 0 {
                        text.append(space)
                    } else {
                        text.append(contentsOf: repeatElement(lineFeed, count: emptyLines))
                    }
                }
                text.append(contentsOf: bytes[segmentStart..<segmentEnd])
                firstLine = false
            }
            if stop || atEnd { break }
            // At a line feed: does the next content line continue the scalar? If not, the scalar
            // ends at this line feed.
            let saved = (position, line, lineStart)
            emptyLines = 0
            var continues = false
            while byte() == lineFeed {
                newLine()
                var lineIndent = 0
                while byte() == space {
                    position += 1
                    lineIndent += 1
                }
                while isBlank(byte()) { position += 1 }
                guard let next = byte() else { break }
                if next == lineFeed {
                    emptyLines += 1
                    continue
                }
                if next == hash || (lineIndent == 0 && atDocumentMarkerAt(lineStart)) { break }
                if flow {
                    // A flow indicator ends the scalar; the collection goes on.
                    continues = !isFlowIndicator(next)
                        && !(next == colon && (isBlankOrBreak(byte(1)) || isFlowIndicator(byte(1))))
                } else {
                    continues = lineIndent > parentIndent
                }
                break
            }
            if !continues {
                (position, line, lineStart) = saved
                break
            }
        }
        return YAMLScalar(text: String(decoding: text, as: UTF8.self), style: .plain, line: start.line, column: start.column)
    }

    private func atDocumentMarkerAt(_ index: Int) -> Bool {
        guard index + 2 < bytes.count else { return false }
        let first = bytes[index]
        guard first == dash || first == dot, bytes[index + 1] == first, bytes[index + 2] == first else { return false }
        return index + 3 >= bytes.count || isBlankOrBreak(bytes[index + 3])
    }

    // MARK: - Quoted scalars

    /// A single- or double-quoted scalar from its opening quote; returns after the closing quote.
    private mutating func quotedScalar() throws(YAMLError) -> YAMLScalar {
        let start = mark()
        let quote = bytes[position]
        let double = quote == doubleQuote
        let kind = double ? "double-quoted" : "single-quoted"
        position += 1
        var text: [UInt8] = []
        // Source blanks before a line break are dropped; escaped ones are content.
        var keep = 0
        while true {
            guard let next = byte() else {
                throw error("a \(kind) value is not closed: the file ends before its closing quote",
                            at: start)
            }
            if next == quote {
                if !double && byte(1) == singleQuote {
                    text.append(singleQuote)
                    keep = text.count
                    position += 2
                    continue
                }
                position += 1
                break
            }
            if double && next == backslash {
                if byte(1) == lineFeed {
                    // An escaped line break: the lines join without a space.
                    position += 1
                    newLine()
                    while isBlank(byte()) { position += 1 }
                    keep = text.count
                    continue
                }
                try escape(into: &text)
                keep = text.count
                continue
            }
            if next == lineFeed {
                text.removeLast(text.count - keep)
                var emptyLines = 0
                while true {
                    newLine()
                    if atDocumentMarker() {
                        throw error("a \(kind) value that starts at line \(start.line) is not closed before this "
                            + "document marker", at: start)
                    }
                    while isBlank(byte()) { position += 1 }
                    if byte() == lineFeed {
                        emptyLines += 1
                        continue
                    }
                    break
                }
                if emptyLines == 0 {
                    text.append(space)
                } else {
                    text.append(contentsOf: repeatElement(lineFeed, count: emptyLines))
                }
                keep = text.count
                continue
            }
            text.append(next)
            position += 1
            if !isBlank(next) { keep = text.count }
        }
        return YAMLScalar(
            text: String(decoding: text, as: UTF8.self), style: double ? .doubleQuoted : .singleQuoted,
            line: start.line, column: start.column)
    }

    /// One escape sequence of a double-quoted scalar, from its backslash.
    private mutating func escape(into text: inout [UInt8]) throws(YAMLError) {
        let escapeMark = mark()
        position += 1
        guard let code = byte() else {
            throw error("a double-quoted value is not closed", at: escapeMark)
        }
        position += 1
        func append(_ value: UInt32) -> Bool {
            guard let scalar = Unicode.Scalar(value) else { return false }
            text.append(contentsOf: Array(String(Character(scalar)).utf8))
            return true
        }
        var hexDigits = 0
        switch code {
        case UInt8(ascii: "0"): text.append(0)
        case UInt8(ascii: "a"): text.append(0x07)
        case UInt8(ascii: "b"): text.append(0x08)
        case UInt8(ascii: "t"), tab: text.append(tab)
        case UInt8(ascii: "n"): text.append(lineFeed)
        case UInt8(ascii: "v"): text.append(0x0B)
        case UInt8(ascii: "f"): text.append(0x0C)
        case UInt8(ascii: "r"): text.append(carriageReturn)
        case UInt8(ascii: "e"): text.append(0x1B)
        case space: text.append(space)
        case doubleQuote: text.append(doubleQuote)
        case UInt8(ascii: "/"): text.append(UInt8(ascii: "/"))
        case backslash: text.append(backslash)
        case UInt8(ascii: "N"): _ = append(0x85)
        case UInt8(ascii: "_"): _ = append(0xA0)
        case UInt8(ascii: "L"): _ = append(0x2028)
        case UInt8(ascii: "P"): _ = append(0x2029)
        case UInt8(ascii: "x"): hexDigits = 2
        case UInt8(ascii: "u"): hexDigits = 4
        case UInt8(ascii: "U"): hexDigits = 8
        default:
            let shown = code < 0x80 && code >= 0x20 ? "\\" + String(Character(Unicode.Scalar(code))) : "\\"
            throw error("unknown escape `\(shown)` in a double-quoted value; write `\\\\` for a backslash",
                        at: escapeMark)
        }
        guard hexDigits > 0 else { return }
        var value: UInt32 = 0
        for _ in 0..<hexDigits {
            guard let digit = byte(), let nibble = hexValue(digit) else {
                throw error("`\\\(Character(Unicode.Scalar(code)))` needs \(hexDigits) hexadecimal digits", at: escapeMark)
            }
            value = value << 4 | UInt32(nibble)
            position += 1
        }
        guard append(value) else {
            throw error("`\\\(Character(Unicode.Scalar(code)))` escape U+\(String(value, radix: 16, uppercase: true)) "
                + "is not a Unicode character", at: escapeMark)
        }
    }

    private func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    // MARK: - Block scalars

    /// A `|` or `>` block scalar from its indicator; returns at the start of the first line after it.
    private mutating func blockScalar(parentIndent: Int) throws(YAMLError) -> YAMLScalar {
        let start = mark()
        let literal = byte() == pipe
        position += 1
        enum Chomping { case strip, clip, keep }
        var chomping = Chomping.clip
        var explicitIndent: Int?
        for _ in 0..<2 {
            switch byte() {
            case dash? where chomping == .clip:
                chomping = .strip
                position += 1
            case plus? where chomping == .clip:
                chomping = .keep
                position += 1
            case let digit? where explicitIndent == nil && digit >= UInt8(ascii: "1") && digit <= UInt8(ascii: "9"):
                explicitIndent = Int(digit - UInt8(ascii: "0"))
                position += 1
            case UInt8(ascii: "0")?:
                throw error("a block scalar's indentation indicator is 1 to 9")
            default:
                break
            }
        }
        let headerEnd = position
        while isBlank(byte()) { position += 1 }
        if byte() == hash && position > headerEnd {
            while let next = byte(), next != lineFeed { position += 1 }
        }
        guard byte() == nil || byte() == lineFeed else {
            throw error("only `-`, `+`, an indentation digit and a comment may follow `\(literal ? "|" : ">")` on its line")
        }
        if byte() == lineFeed { newLine() }

        // The content's indentation (as PyYAML and libyaml find it): explicit, relative to the
        // parent's, or the deepest of the leading empty lines and the first non-empty one.
        let minimumIndent = max(parentIndent + 1, 1)
        var indentation = minimumIndent
        if let explicitIndent {
            indentation = minimumIndent + explicitIndent - 1
        } else {
            var index = position
            var deepest = 0
            while index < bytes.count {
                var spaces = 0
                while index < bytes.count && bytes[index] == space {
                    index += 1
                    spaces += 1
                }
                deepest = max(deepest, spaces)
                guard index < bytes.count, bytes[index] == lineFeed else { break }
                index += 1
            }
            indentation = max(minimumIndent, deepest)
        }

        // Lines until one is indented less (and is not empty); spaces beyond the indentation are content.
        var lines: [ArraySlice<UInt8>] = []
        var lastContentLine = -1
        var contentEndsWithBreak = false
        while !atEnd {
            let rowStart = position
            var spaces = 0
            while byte() == space && spaces < indentation {
                position += 1
                spaces += 1
            }
            if byte() == nil { break }
            if byte() == lineFeed {
                lines.append(bytes[position..<position])
                newLine()
                continue
            }
            if spaces < indentation {
                position = rowStart
                break
            }
            var end = position
            while end < bytes.count && bytes[end] != lineFeed { end += 1 }
            lines.append(bytes[position..<end])
            lastContentLine = lines.count - 1
            position = end
            contentEndsWithBreak = byte() == lineFeed
            if contentEndsWithBreak { newLine() }
        }

        let body = lines[0..<(lastContentLine + 1)]
        var text: [UInt8] = []
        if literal {
            for (offset, row) in body.enumerated() {
                if offset > 0 { text.append(lineFeed) }
                text.append(contentsOf: row)
            }
        } else {
            var previousWasText = false
            var started = false
            var emptyLines = 0
            for row in body {
                if row.isEmpty {
                    emptyLines += 1
                    continue
                }
                let moreIndented = isBlank(row.first)
                if !started {
                    text.append(contentsOf: repeatElement(lineFeed, count: emptyLines))
                } else if previousWasText && !moreIndented {
                    if emptyLines == 0 {
                        text.append(space)
                    } else {
                        text.append(contentsOf: repeatElement(lineFeed, count: emptyLines))
                    }
                } else {
                    text.append(contentsOf: repeatElement(lineFeed, count: emptyLines + 1))
                }
                text.append(contentsOf: row)
                started = true
                previousWasText = !moreIndented
                emptyLines = 0
            }
        }
        let trailingEmpty = lines.count - (lastContentLine + 1)
        switch chomping {
        case .strip:
            break
        case .clip:
            if lastContentLine >= 0 && contentEndsWithBreak { text.append(lineFeed) }
        case .keep:
            if lastContentLine >= 0 && contentEndsWithBreak { text.append(lineFeed) }
            text.append(contentsOf: repeatElement(lineFeed, count: trailingEmpty))
        }
        return YAMLScalar(
            text: String(decoding: text, as: UTF8.self), style: literal ? .literal : .folded,
            line: start.line, column: start.column)
    }

    // MARK: - Flow collections

    /// Skips blanks, line breaks and comments inside a flow collection.
    private mutating func skipFlowSpace(opened: Mark, kind: String) throws(YAMLError) {
        var afterBlank = true
        while let next = byte() {
            if next == space || next == tab {
                position += 1
                afterBlank = true
            } else if next == lineFeed {
                newLine()
                afterBlank = true
                if atDocumentMarker() {
                    throw error("a \(kind) opened at line \(opened.line), column \(opened.column) is not closed "
                        + "before this document marker", at: opened)
                }
            } else if next == hash && afterBlank {
                while let byte = byte(), byte != lineFeed { position += 1 }
            } else {
                return
            }
        }
        throw error("a \(kind) opened at line \(opened.line), column \(opened.column) is not closed: the file ends "
            + "before its `\(kind == "flow sequence" ? "]" : "}")`", at: opened)
    }

    private mutating func flowNode(parentIndent: Int) throws(YAMLError) -> YAMLNode {
        try checkNodeStart()
        switch byte() {
        case openBracket: return try flowSequence(parentIndent: parentIndent)
        case openBrace: return try flowMapping(parentIndent: parentIndent)
        case singleQuote, doubleQuote: return .scalar(try quotedScalar())
        case question where isBlankOrBreak(byte(1)) || isFlowIndicator(byte(1)):
            throw error("complex keys (`? `) are not supported; write `key: value`")
        case pipe, greater:
            throw error("a block scalar (`|`, `>`) cannot be inside `[...]` or `{...}`; quote the value")
        default:
            return .scalar(try plainScalar(parentIndent: parentIndent, flow: true))
        }
    }

    private mutating func flowSequence(parentIndent: Int) throws(YAMLError) -> YAMLNode {
        try enter()
        let opened = mark()
        let kind = "flow sequence"
        position += 1
        var items: [YAMLNode] = []
        while true {
            try skipFlowSpace(opened: opened, kind: kind)
            if byte() == closeBracket {
                position += 1
                break
            }
            var item = try flowNode(parentIndent: parentIndent)
            try skipFlowSpace(opened: opened, kind: kind)
            if byte() == colon {
                // `[key: value]`: a one-entry mapping.
                guard case .scalar(let key) = item else {
                    throw error("a key must be a plain or quoted value, not a flow collection")
                }
                if line != key.line {
                    throw error("a key and its `:` must be on one line", at: Mark(line: key.line, column: key.column))
                }
                position += 1
                try skipFlowSpace(opened: opened, kind: kind)
                let value: YAMLNode
                if byte() == comma || byte() == closeBracket {
                    value = .scalar(YAMLScalar(text: "", style: .plain, line: line, column: column(at: position)))
                } else {
                    value = try flowNode(parentIndent: parentIndent)
                }
                item = .mapping(YAMLMapping(entries: [.init(key: key, value: value)], line: key.line, column: key.column))
                try skipFlowSpace(opened: opened, kind: kind)
            }
            items.append(item)
            if byte() == comma {
                position += 1
                continue
            }
            if byte() == closeBracket {
                position += 1
                break
            }
            throw error("expected `,` or `]` in the flow sequence opened at line \(opened.line), column \(opened.column)")
        }
        leave()
        return .sequence(YAMLSequence(items: items, line: opened.line, column: opened.column))
    }

    private mutating func flowMapping(parentIndent: Int) throws(YAMLError) -> YAMLNode {
        try enter()
        let opened = mark()
        let kind = "flow mapping"
        position += 1
        var entries: [YAMLMapping.Entry] = []
        var seen: [String: Int] = [:]
        while true {
            try skipFlowSpace(opened: opened, kind: kind)
            if byte() == closeBrace {
                position += 1
                break
            }
            if byte() == openBracket || byte() == openBrace {
                throw error("a key must be a plain or quoted value, not a flow collection")
            }
            guard case .scalar(let key) = try flowNode(parentIndent: parentIndent) else {
                throw error("a key must be a plain or quoted value, not a flow collection")
            }
            try checkDuplicate(key, in: &seen)
            try skipFlowSpace(opened: opened, kind: kind)
            let value: YAMLNode
            if byte() == colon && line != key.line {
                throw error("a key and its `:` must be on one line", at: Mark(line: key.line, column: key.column))
            }
            if byte() == colon {
                position += 1
                try skipFlowSpace(opened: opened, kind: kind)
                if byte() == comma || byte() == closeBrace {
                    value = .scalar(YAMLScalar(text: "", style: .plain, line: line, column: column(at: position)))
                } else {
                    value = try flowNode(parentIndent: parentIndent)
                }
            } else if byte() == comma || byte() == closeBrace {
                value = .scalar(YAMLScalar(text: "", style: .plain, line: line, column: column(at: position)))
            } else {
                throw error("expected `:` after the key in the flow mapping opened at line \(opened.line), "
                    + "column \(opened.column)")
            }
            entries.append(.init(key: key, value: value))
            try skipFlowSpace(opened: opened, kind: kind)
            if byte() == comma {
                position += 1
                continue
            }
            if byte() == closeBrace {
                position += 1
                break
            }
            throw error("expected `,` or `}` in the flow mapping opened at line \(opened.line), column \(opened.column)")
        }
        leave()
        return .mapping(YAMLMapping(entries: entries, line: opened.line, column: opened.column))
    }

    // MARK: - Keys

    private func checkDuplicate(_ key: YAMLScalar, in seen: inout [String: Int]) throws(YAMLError) {
        if let first = seen[key.text] {
            let shown = key.text.count > 64 ? String(key.text.prefix(64)) + "…" : key.text
            throw YAMLError(
                line: key.line, column: key.column,
                reason: "duplicate key `\(shown)` (first at line \(first)): a key may appear only once in a mapping; keep one")
        }
        seen[key.text] = key.line
    }
}
