import ProxyYAML
import XCTest

/// The YAML subset, construct by construct: what each reads to, and what is refused with which message.
/// Trees are compared through `shape`: `{key: value}` mappings, `[a, b]` lists, plain scalars bare,
/// quoted and block scalars in Swift string syntax, nulls as `~`.
final class YAMLParserTests: XCTestCase {
    private func shape(_ node: YAMLNode?) -> String {
        guard let node else { return "nil" }
        switch node {
        case .scalar(let scalar):
            if scalar.isNull { return "~" }
            return scalar.isPlain ? scalar.text : scalar.text.debugDescription
        case .sequence(let sequence):
            return "[" + sequence.items.map(shape).joined(separator: ", ") + "]"
        case .mapping(let mapping):
            return "{" + mapping.entries.map { shape(.scalar($0.key)) + ": " + shape($0.value) }.joined(separator: ", ") + "}"
        }
    }

    private func read(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            return shape(try YAML.parse(text))
        } catch {
            XCTFail("\(text.debugDescription): \(error)", file: file, line: line)
            return ""
        }
    }

    private func refusal(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let node = try YAML.parse(text)
            XCTFail("\(text.debugDescription) was read as \(shape(node))", file: file, line: line)
            return ""
        } catch {
            return error.description
        }
    }

    // MARK: - Block collections

    func testBlockMappingsAndSequences() {
        XCTAssertEqual(read("a: 1\nb: two\n"), "{a: 1, b: two}")
        XCTAssertEqual(read("a:\n  b: c\n  d:\n    - x\n    - y\ne: f\n"), "{a: {b: c, d: [x, y]}, e: f}")
        XCTAssertEqual(read("- - a\n  - b\n- c\n"), "[[a, b], c]")
        XCTAssertEqual(read("   a: 1\n   b: 2\n"), "{a: 1, b: 2}")
    }

    func testListItemsThatAreMappings_WithFurtherKeysUnderThem() {
        XCTAssertEqual(read("- a: 1\n  b: 2\n- c: 3\n"), "[{a: 1, b: 2}, {c: 3}]")
        XCTAssertEqual(read("tokens:\n  - principal: ci\n    tenant: team-a\n    signals: [traces]\n  - principal: b\n"),
                       "{tokens: [{principal: ci, tenant: team-a, signals: [traces]}, {principal: b}]}")
        XCTAssertEqual(read("- a:\n  - x\n  b: y\n"), "[{a: [x], b: y}]")
        XCTAssertEqual(read("-   b: 1\n    c: 2\n"), "[{b: 1, c: 2}]")
    }

    func testSequenceAtTheIndentationOfItsKey() {
        XCTAssertEqual(read("list:\n- a\n- b\nnext: 1\n"), "{list: [a, b], next: 1}")
        XCTAssertEqual(read("a:\n- x: 1\n  y: 2\n- z\nb: c\n"), "{a: [{x: 1, y: 2}, z], b: c}")
    }

    func testEmptyValuesAreNull() {
        XCTAssertEqual(read("a:\nb: ~\nc: null\nd: Null\ne: NULL\nf: nULL\ng: ''\n"),
                       "{a: ~, b: ~, c: ~, d: ~, e: ~, f: nULL, g: \"\"}")
        XCTAssertEqual(read("- \n-\n- x\n"), "[~, ~, x]")
        XCTAssertEqual(read("a:\n  # only a comment\nb: 1\n"), "{a: ~, b: 1}")
        XCTAssertTrue(try XCTUnwrap(YAML.parse("a:\n")).mapping?["a"]?.isNull == true)
        XCTAssertFalse(try XCTUnwrap(YAML.parse("a: 'null'\n")).mapping?["a"]?.isNull == true)
    }

    // MARK: - Flow collections

    func testFlowCollections_Nested() {
        XCTAssertEqual(read("a: [1, 2, {b: c, d: [e, f]}]\n"), "{a: [1, 2, {b: c, d: [e, f]}]}")
        XCTAssertEqual(read("a: {x: 1, y: , z}\n"), "{a: {x: 1, y: ~, z: ~}}")
        XCTAssertEqual(read("a: [\n  1,\n  2,  # two\n]\n"), "{a: [1, 2]}")
        XCTAssertEqual(read("a: {\"b\":1, 'c':2}\n"), "{a: {\"b\": 1, \"c\": 2}}")
        XCTAssertEqual(read("a: [a: b, c]\n"), "{a: [{a: b}, c]}")
        XCTAssertEqual(read("a: {}\nb: []\n"), "{a: {}, b: []}")
        XCTAssertEqual(read("a: [::1, 'x y', z z]\n"), "{a: [::1, \"x y\", z z]}")
        XCTAssertEqual(read("{a: 1}\n"), "{a: 1}")
    }

    // MARK: - Scalars

    func testPlainScalars() {
        XCTAssertEqual(read("url: http://example.com:80/a#frag\n"), "{url: http://example.com:80/a#frag}")
        XCTAssertEqual(read("a: b#c # comment\n"), "{a: b#c}")
        XCTAssertEqual(read("a: -1\nb: -x\nc: :x\nd: b:c\n"), "{a: -1, b: -x, c: :x, d: b:c}")
        XCTAssertEqual(read("key with spaces: v\n"), "{key with spaces: v}")
        XCTAssertEqual(read("a :  1\n"), "{a: 1}")
    }

    func testPlainScalars_MultiLine_FoldAsYAMLDoes() {
        XCTAssertEqual(read("p: this is\n  a multi\n\n  line plain\n"), "{p: this is a multi\nline plain}")
        XCTAssertEqual(read("- a\n  b\n- c\n"), "[a b, c]")
        XCTAssertEqual(read("a: [b, c\n  d]\n"), "{a: [b, c d]}")
    }

    func testQuotedScalars() {
        XCTAssertEqual(read("s: 'it''s'\n"), "{s: \"it\\'s\"}")
        XCTAssertEqual(read("'a b': 1\n\"c\" : 2\n"), "{\"a b\": 1, \"c\": 2}")
        XCTAssertEqual(read("a: ' lead and trail '\n"), "{a: \" lead and trail \"}")
        XCTAssertEqual(read("a: \"#not a comment\"\n"), "{a: \"#not a comment\"}")
    }

    func testDoubleQuotedEscapes() throws {
        let node = try XCTUnwrap(YAML.parse(#"d: "tab\tnl\nq\"u\u00e9\x41\U0001F600\\\/\0\ \_\N\L\P\e\a\b\v\f\r""#))
        XCTAssertEqual(node.mapping?["d"]?.scalar?.text,
                       "tab\tnl\nq\"u\u{e9}A\u{1F600}\\/\u{0} \u{A0}\u{85}\u{2028}\u{2029}\u{1B}\u{07}\u{08}\u{0B}\u{0C}\r")
        XCTAssertEqual(node.mapping?["d"]?.scalar?.style, .doubleQuoted)
    }

    func testQuotedScalars_MultiLine_FoldAsYAMLDoes() {
        XCTAssertEqual(read("q: 'single\n  folded\n\n  para'\n"), "{q: \"single folded\\npara\"}")
        XCTAssertEqual(read("d: \"double  \n  folded\"\n"), "{d: \"double folded\"}")
        XCTAssertEqual(read("d: \"a\\\n   b\"\n"), "{d: \"ab\"}")
        XCTAssertEqual(read("d: \"kept\\t\n  x\"\n"), "{d: \"kept\\t x\"}")
    }

    func testBlockScalars_ChompingAndIndentation() {
        XCTAssertEqual(read("l: |\n  one\n  two\n\n  three\n"), "{l: \"one\\ntwo\\n\\nthree\\n\"}")
        XCTAssertEqual(read("l: |-\n  one\n\n"), "{l: \"one\"}")
        XCTAssertEqual(read("l: |+\n  one\n\n\nn: 1\n"), "{l: \"one\\n\\n\\n\", n: 1}")
        XCTAssertEqual(read("l: |\n  x\n\n\n"), "{l: \"x\\n\"}")
        XCTAssertEqual(read("l: |\n  x"), "{l: \"x\"}")
        XCTAssertEqual(read("l: |2\n    indented\n  base\n"), "{l: \"  indented\\nbase\\n\"}")
        XCTAssertEqual(read("l: |\n\n  after empty\n"), "{l: \"\\nafter empty\\n\"}")
        XCTAssertTrue(refusal("l: |\n    deeper\n  less\n").hasPrefix("line 3, column 3: this line is indented more"))
        XCTAssertEqual(read("- |\n  in a list\n- x\n"), "[\"in a list\\n\", x]")
        XCTAssertEqual(read("l: | # comment\n  # not a comment\n"), "{l: \"# not a comment\\n\"}")
    }

    func testFoldedScalars() {
        XCTAssertEqual(read("f: >\n  one\n  two\n\n  three\n    more\n  four\n"), "{f: \"one two\\nthree\\n  more\\nfour\\n\"}")
        XCTAssertEqual(read("f: >-\n  a\n  b\n"), "{f: \"a b\"}")
        XCTAssertEqual(read("f: >+\n  a\n\n"), "{f: \"a\\n\\n\"}")
        XCTAssertEqual(read("f: >\n\n  after empty\n  next\n"), "{f: \"\\nafter empty next\\n\"}")
    }

    func testScalarsKeepTheirPositionAndStyle() throws {
        let node = try XCTUnwrap(YAML.parse("# head\nouter:\n  key: 'v'\n  list:\n    - plain\n    - |\n      block\n"))
        let outer = try XCTUnwrap(node.mapping?["outer"]?.mapping)
        let key = try XCTUnwrap(outer.entries.first?.key)
        XCTAssertEqual([key.line, key.column], [3, 3])
        let value = try XCTUnwrap(outer["key"]?.scalar)
        XCTAssertEqual([value.line, value.column], [3, 8])
        XCTAssertEqual(value.style, .singleQuoted)
        let list = try XCTUnwrap(outer["list"]?.sequence)
        XCTAssertEqual([list.line, list.column], [5, 5])
        XCTAssertEqual(list.items.map(\.line), [5, 6])
        XCTAssertEqual(list.items.compactMap(\.scalar?.style), [.plain, .literal])
        // Columns count characters, not bytes.
        let accented = try XCTUnwrap(YAML.parse("é: [a, b]\n")?.mapping?["é"]?.sequence)
        XCTAssertEqual(accented.column, 4)
    }

    // MARK: - Documents

    func testDocumentMarkersAndEmptyDocuments() throws {
        XCTAssertEqual(read("---\na: 1\n...\n"), "{a: 1}")
        XCTAssertEqual(read("--- # start\n- a\n"), "[a]")
        XCTAssertEqual(read("--- |\n  text\n"), "\"text\\n\"")
        XCTAssertEqual(read("a: 1\n...\n# trailing comment\n"), "{a: 1}")
        for empty in ["", "\n\n", "# only a comment\n", "---\n", "--- \n...\n"] {
            XCTAssertNil(try YAML.parse(empty), empty.debugDescription)
        }
        XCTAssertEqual(read("\u{FEFF}a: 1\r\nb: 2\r\n"), "{a: 1, b: 2}")
    }

    // MARK: - Refused constructs

    func testRefused_AnchorsAliasesTags() {
        XCTAssertEqual(refusal("a: &x 1\n"), "line 1, column 4: anchors (`&name`) are not supported; write the value out in full")
        XCTAssertEqual(refusal("a: 1\nb: *x\n"), "line 2, column 4: aliases (`*name`) are not supported; write the value out in full")
        XCTAssertEqual(refusal("a: [1, *x]\n"), "line 1, column 8: aliases (`*name`) are not supported; write the value out in full")
        XCTAssertEqual(refusal("&a k: v\n"), "line 1, column 1: anchors (`&name`) are not supported; write the value out in full")
        XCTAssertEqual(refusal("a: !!str 1\n"),
                       "line 1, column 4: tags (`!tag`, `!!type`) are not supported; remove the tag (quote the value to make it a string)")
        XCTAssertEqual(refusal("- !secret x\n"),
                       "line 1, column 3: tags (`!tag`, `!!type`) are not supported; remove the tag (quote the value to make it a string)")
    }

    func testRefused_SeveralDocumentsAndDirectives() {
        XCTAssertTrue(refusal("a: 1\n---\nb: 2\n").hasPrefix("line 2, column 1: another document starts here (`---`)"))
        XCTAssertTrue(refusal("---\na: 1\n---\n").hasPrefix("line 3, column 1: another document starts here"))
        XCTAssertTrue(refusal("a: 1\n...\n---\nb: 2\n").hasPrefix("line 3, column 1: another document starts here"))
        XCTAssertEqual(refusal("a: v\n...\nb: w\n"), "line 3, column 1: text after the end of the document (`...`); remove it")
        XCTAssertEqual(refusal("%YAML 1.2\n---\na: 1\n"), "line 1, column 1: directives (`%YAML`, `%TAG`) are not supported; remove the line")
    }

    func testRefused_ComplexAndCollectionKeys() {
        XCTAssertEqual(refusal("? a\n: b\n"), "line 1, column 1: complex keys (`? `) are not supported; write `key: value`")
        XCTAssertEqual(refusal("a: {? b: c}\n"), "line 1, column 5: complex keys (`? `) are not supported; write `key: value`")
        XCTAssertEqual(refusal("{a: 1}: x\n"),
                       "line 1, column 7: a key must be a plain or quoted value, found a flow mapping before this `:`")
        XCTAssertEqual(refusal("- [a, b]: c\n"),
                       "line 1, column 9: a key must be a plain or quoted value, found a flow sequence before this `:`")
        XCTAssertEqual(refusal("a: {[b]: c}\n"), "line 1, column 5: a key must be a plain or quoted value, not a flow collection")
    }

    func testRefused_TabsInIndentation() {
        XCTAssertEqual(refusal("a:\n\tb: c\n"), "line 2, column 1: a tab is not allowed for indentation; indent with spaces")
        XCTAssertEqual(refusal("a:\n  \tb: c\n"), "line 2, column 3: a tab is not allowed for indentation; indent with spaces")
        // A tab after the indentation, or on a line with nothing else, is only white space.
        XCTAssertEqual(read("a:\tb\t# comment\n\t\nc: d\n"), "{a: b, c: d}")
    }

    func testRefused_DuplicateKeys() {
        XCTAssertEqual(refusal("a: 1\nb: 2\na: 3\n"),
                       "line 3, column 1: duplicate key `a` (first at line 1): a key may appear only once in a mapping; keep one")
        XCTAssertEqual(refusal("x: {a: 1,\n  'a': 2}\n"),
                       "line 2, column 3: duplicate key `a` (first at line 1): a key may appear only once in a mapping; keep one")
        // The same key in different mappings is fine.
        XCTAssertEqual(read("- a: 1\n- a: 2\n"), "[{a: 1}, {a: 2}]")
    }

    func testRefused_BrokenStructure_NamesLineAndColumn() {
        XCTAssertEqual(refusal("tls:\n  cert_file: a\n key_file: b\n"),
                       "line 3, column 2: this line is indented more than the keys above it (column 1); align it with them, "
                           + "or put the nested value under a key that ends with `:`")
        XCTAssertTrue(refusal("k: v: w\n").hasPrefix("line 1, column 4: a mapping cannot start after a key on the same line"))
        XCTAssertTrue(refusal("a: b\n  c: d\n").hasPrefix("line 2, column 4: `key: value` inside a multi-line value"))
        XCTAssertTrue(refusal("a: 1\n- b\n").hasPrefix("line 2, column 1: a list item (`- `) where a key was expected"))
        XCTAssertTrue(refusal("- a\nb: 1\n").hasPrefix("line 2, column 1: this line does not continue the list above it"))
        XCTAssertTrue(refusal("a: b\nc\n").hasPrefix("line 2, column 1: expected `key: value` here"))
        XCTAssertTrue(refusal("a: \"x\" y\n").hasPrefix("line 1, column 8: unexpected text after a quoted value"))
        XCTAssertTrue(refusal("a: - b\n").hasPrefix("line 1, column 4: a list cannot start after a key on the same line"))
        XCTAssertTrue(refusal("a: @x\n").hasPrefix("line 1, column 4: a value cannot start with `@`; quote it"))
        XCTAssertEqual(refusal(">key: v\n"), "line 1, column 1: a value cannot start with `>`; quote it")
        XCTAssertTrue(refusal("a: >x\n").hasPrefix("line 1, column 5: only `-`, `+`, an indentation digit and a comment may follow `>`"))
        // Implicit keys are one line, as in YAML: a flow key cannot run on to the next line.
        XCTAssertEqual(refusal("a: {b\n  c: d}\n"), "line 1, column 5: a key and its `:` must be on one line")
        XCTAssertEqual(refusal("a: [b\n  : c]\n"), "line 1, column 5: a key and its `:` must be on one line")
    }

    func testRefused_UnclosedQuotesAndCollections_NameWhereTheyOpened() {
        XCTAssertEqual(refusal("a: 1\nb: 'open\nc: 2\n"),
                       "line 2, column 4: a single-quoted value is not closed: the file ends before its closing quote")
        XCTAssertEqual(refusal("a: [1, 2\n"),
                       "line 1, column 4: a flow sequence opened at line 1, column 4 is not closed: the file ends before its `]`")
        XCTAssertEqual(refusal("a: {b: 1\n"),
                       "line 1, column 4: a flow mapping opened at line 1, column 4 is not closed: the file ends before its `}`")
        XCTAssertTrue(refusal("a: [1,\n---\n").hasPrefix("line 1, column 4: a flow sequence opened at line 1"))
    }

    func testRefused_BadEscapesAndControlCharacters() {
        XCTAssertEqual(refusal(#"a: "\q""#), #"line 1, column 5: unknown escape `\q` in a double-quoted value; write `\\` for a backslash"#)
        XCTAssertEqual(refusal(#"a: "\x4""#), #"line 1, column 5: `\x` needs 2 hexadecimal digits"#)
        XCTAssertEqual(refusal(#"a: "\uD800""#), #"line 1, column 5: `\u` escape U+D800 is not a Unicode character"#)
        XCTAssertTrue(refusal("a: b\u{7}\n").hasPrefix("line 1, column 5: the control character U+0007 is not allowed"))
        XCTAssertTrue(refusal("a: 1\nb: x\u{FEFF}\n").hasPrefix("line 2, column 5: the control character U+FEFF"))
    }

    func testRefused_InvalidUTF8_NamesThePosition() {
        XCTAssertThrowsError(try YAML.parse(bytes: Array("a: 1\nb: ".utf8) + [0xC3, 0x28])) { error in
            XCTAssertEqual((error as? YAMLError)?.description, "line 2, column 4: the text is not UTF-8; save the file as UTF-8")
        }
    }

    // MARK: - Bounds

    func testDeepNesting_RefusedAtTheLimit_NotAStackOverflow() {
        let limit = YAML.defaultMaximumDepth
        XCTAssertNoThrow(try YAML.parse(String(repeating: "[", count: limit) + String(repeating: "]", count: limit)))
        XCTAssertEqual(refusal(String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)),
                       "line 1, column \(limit + 1): mappings and lists are nested more than \(limit) deep")
        XCTAssertTrue(refusal(String(repeating: "{a: ", count: 100_000)).hasSuffix("nested more than \(limit) deep"))
        XCTAssertTrue(refusal(String(repeating: "- ", count: 100_000) + "x").hasSuffix("nested more than \(limit) deep"))
        let block = (0..<1000).map { String(repeating: " ", count: $0) + "k\($0):\n" }.joined()
        XCTAssertEqual(refusal(block), "line \(limit + 1), column \(limit + 1): mappings and lists are nested more than \(limit) deep")
    }

    func testHugeInput_RefusedBeforeParsing() {
        let huge = String(repeating: "a", count: YAML.defaultMaximumBytes + 1)
        XCTAssertEqual(refusal(huge), "line 1, column 1: the document is \(YAML.defaultMaximumBytes + 1) bytes, "
            + "more than the \(YAML.defaultMaximumBytes) allowed")
        XCTAssertEqual(refusal("a: 1\n", maximumBytes: 4), "line 1, column 1: the document is 5 bytes, more than the 4 allowed")
    }

    /// Large documents near the size limit are read whole: a 10,000-entry tokens file and a
    /// 300,000-item flow list. (How fast is a benchmark matter, not asserted here.)
    func testLargeDocuments_ReadWhole() throws {
        var tokens = "tokens:\n"
        for index in 0..<10_000 {
            tokens += "  - principal: p\(index)\n    tenant: t\n    token: \"\(index)-0123456789abcdef\"\n"
        }
        var items: [String] = []
        for index in 0..<300_000 { items.append("a\(index)") }
        let wide = "[" + items.joined(separator: ",") + "]"

        let entries: YAMLSequence? = try YAML.parse(tokens)?.mapping?["tokens"]?.sequence
        XCTAssertEqual(entries?.count, 10_000)
        let lastEntry: YAMLNode? = entries?.last
        XCTAssertEqual(lastEntry?.mapping?["principal"]?.scalar?.text, "p9999")
        let list: YAMLSequence? = try YAML.parse(wide)?.sequence
        XCTAssertEqual(list?.count, 300_000)
        let lastItem: YAMLNode? = list?.last
        XCTAssertEqual(lastItem?.scalar?.text, "a299999")
    }

    private func refusal(_ text: String, maximumBytes: Int, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try YAML.parse(text, maximumBytes: maximumBytes)
            XCTFail("read", file: file, line: line)
            return ""
        } catch {
            return error.description
        }
    }
}
