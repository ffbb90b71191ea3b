/// The tree one YAML document reads into: scalars, mappings and sequences, each with its position.
///
/// There are no anchors, aliases or tags (the reader refuses them), so the tree is exactly what the
/// file spells out, and its size is bounded by the input's. Scalars keep their text unresolved: whether
/// `8080` is a number or `yes` a boolean is the reader's decision (`YAMLScalar.style` tells it whether
/// the value was quoted).
public enum YAMLNode: Sendable, Equatable {
    case scalar(YAMLScalar)
    case mapping(YAMLMapping)
    case sequence(YAMLSequence)

    /// The line the node starts on (1-based).
    public var line: Int {
        switch self {
        case .scalar(let scalar): return scalar.line
        case .mapping(let mapping): return mapping.line
        case .sequence(let sequence): return sequence.line
        }
    }

    /// The column the node starts at (1-based, in characters).
    public var column: Int {
        switch self {
        case .scalar(let scalar): return scalar.column
        case .mapping(let mapping): return mapping.column
        case .sequence(let sequence): return sequence.column
        }
    }

    public var scalar: YAMLScalar? {
        if case .scalar(let scalar) = self { return scalar }
        return nil
    }

    public var mapping: YAMLMapping? {
        if case .mapping(let mapping) = self { return mapping }
        return nil
    }

    public var sequence: YAMLSequence? {
        if case .sequence(let sequence) = self { return sequence }
        return nil
    }

    /// A plain scalar that YAML reads as null: empty (`key:`), `~`, `null`, `Null` or `NULL`.
    public var isNull: Bool { scalar?.isNull ?? false }
}

/// One scalar value: its text after quoting, escapes and line folding are applied.
public struct YAMLScalar: Sendable, Equatable {
    /// How the value was written. Only `plain` values are resolved to null, booleans or numbers.
    public enum Style: Sendable, Equatable {
        case plain
        case singleQuoted
        case doubleQuoted
        /// A `|` block scalar.
        case literal
        /// A `>` block scalar.
        case folded
    }

    public var text: String
    public var style: Style
    public var line: Int
    public var column: Int

    public init(text: String, style: Style, line: Int, column: Int) {
        self.text = text
        self.style = style
        self.line = line
        self.column = column
    }

    /// Written without quotes or a block indicator.
    public var isPlain: Bool { style == .plain }

    /// A plain scalar YAML reads as null: empty, `~`, `null`, `Null` or `NULL`.
    public var isNull: Bool {
        guard style == .plain else { return false }
        switch text {
        case "", "~", "null", "Null", "NULL": return true
        default: return false
        }
    }
}

/// A mapping: its entries in file order. Keys are scalars (the reader refuses collections as keys)
/// and unique by text (the reader refuses duplicates).
public struct YAMLMapping: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var key: YAMLScalar
        public var value: YAMLNode

        public init(key: YAMLScalar, value: YAMLNode) {
            self.key = key
            self.value = value
        }
    }

    public var entries: [Entry]
    public var line: Int
    public var column: Int

    public init(entries: [Entry], line: Int, column: Int) {
        self.entries = entries
        self.line = line
        self.column = column
    }

    /// The value under the key spelled `key`, or nil.
    public subscript(key: String) -> YAMLNode? {
        entries.first { $0.key.text == key }?.value
    }

    public var isEmpty: Bool { entries.isEmpty }
}

/// A sequence (list): its items in file order.
public struct YAMLSequence: Sendable, Equatable {
    public var items: [YAMLNode]
    public var line: Int
    public var column: Int

    public init(items: [YAMLNode], line: Int, column: Int) {
        self.items = items
        self.line = line
        self.column = column
    }
}

/// Why a document could not be read, and where. `description` is "line 7, column 3: reason".
/// The reason never quotes the document's values (it may name a key), so it is safe to log even for a
/// file that holds secrets.
public struct YAMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public var reason: String

    public init(line: Int, column: Int, reason: String) {
        self.line = line
        self.column = column
        self.reason = reason
    }

    public var description: String { "line \(line), column \(column): \(reason)" }
}

/// The items, in order.
extension YAMLSequence: RandomAccessCollection {
    public var startIndex: Int { items.startIndex }
    public var endIndex: Int { items.endIndex }
    public subscript(position: Int) -> YAMLNode { items[position] }
}
