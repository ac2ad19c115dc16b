import Foundation

/// A strict JSON reader (RFC 8259) for manifest.json and the golden fixtures, so the pure parts
/// of the runtime need no library (JSONSerialization accepts duplicate keys and loses key order).
/// Objects keep their key order; a duplicate key is an error (two readers could disagree on which
/// value wins). Values are nil (null), Bool, Int64 (integers that fit), Double (other numbers),
/// String, [Any?] and Json.Object. Nesting is bounded (MAX_DEPTH) and so are the files a bundle
/// hands it (`readFile`): a hostile file is an error, never a stack overflow or an exhausted heap.
public enum Json {
    /// Deeper than any manifest or tokenizer.json (about 6 levels); the same limit in Python and Kotlin.
    public static let MAX_DEPTH = 64
    /// manifest.json: a few kB per component; the same limit in Python and Kotlin.
    public static let MAX_MANIFEST_BYTES: Int64 = 16 << 20
    /// tokenizer.json and vocab.json: Gemma-2's tokenizer.json is 17 MB.
    public static let MAX_TOKENIZER_BYTES: Int64 = 64 << 20

    public struct Error: Swift.Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// A JSON object in document order. Kotlin's LinkedHashMap keeps that order and Swift's
    /// Dictionary does not; the order decides which problem a manifest reports first.
    public struct Object: CustomStringConvertible {
        public private(set) var keys: [String] = []
        // keyed by UTF-16 code units: String keys compare by canonical equivalence, which would
        // merge "e" + U+0301 and "é" (two pieces of a tokenizer's vocabulary) into one key
        private var values: [[UInt16]: Any?] = [:]

        public init() {}

        /// nil for a missing key and for JSON null alike, as Kotlin's Map.get.
        public subscript(key: String) -> Any? { values[Array(key.utf16)] ?? nil }

        public func containsKey(_ key: String) -> Bool { values.index(forKey: Array(key.utf16)) != nil }

        public var count: Int { keys.count }

        public var entries: [(key: String, value: Any?)] {
            var out: [(key: String, value: Any?)] = []
            for key in keys { out.append((key: key, value: self[key])) }
            return out
        }

        public var description: String { Manifest.pyRepr(self) }

        /// Sets a key (a new one goes last, as Kotlin's LinkedHashMap.put).
        mutating func put(_ key: String, _ value: Any?) {
            if values.updateValue(value, forKey: Array(key.utf16)) == nil { keys.append(key) }
        }

        /// This object without `key`.
        func removing(_ key: String) -> Object {
            var out = Object()
            for (k, v) in entries where k != key { out.put(k, v) }
            return out
        }
    }

    /// A bundle's JSON file: at most maxBytes, UTF-8, valid and bounded JSON; BundleError naming it otherwise.
    public static func readFile(_ url: URL, maxBytes: Int64) throws -> Any? {
        let location = url.path
        let attributes = try? FileManager.default.attributesOfItem(atPath: location)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? 0
        if size > maxBytes { throw BundleError(location, "\(size) bytes, more than the \(maxBytes) this runtime reads") }
        let data = try Data(contentsOf: url)
        let text = String(decoding: data, as: UTF8.self)
        if !text.utf8.elementsEqual(data) { throw BundleError(location, "not valid JSON (not UTF-8)") }
        do {
            return try parse(text)
        } catch let e as Error {
            throw BundleError(location, "not valid JSON (\(e.message))")
        }
    }

    public static func parse(_ text: String) throws -> Any? {
        let reader = Reader(Array(text.utf16))
        let value = try reader.value()
        reader.skipSpace()
        if reader.i != reader.s.count { try reader.fail("trailing characters") }
        return value
    }

    /// Reads UTF-16 code units, as Kotlin's String does, so offsets and \u escapes (surrogate
    /// pairs included) behave the same.
    private final class Reader {
        let s: [UInt16]
        var i = 0
        private var depth = 0

        private func enter() throws {
            depth += 1
            if depth > MAX_DEPTH { try fail("nested deeper than \(MAX_DEPTH) levels") }
        }

        init(_ s: [UInt16]) { self.s = s }

        func fail(_ message: String) throws -> Never { throw Error(message: "\(message) at offset \(i)") }

        func skipSpace() {
            while i < s.count && (s[i] == unit(" ") || s[i] == unit("\n") || s[i] == unit("\r") || s[i] == unit("\t")) { i += 1 }
        }

        func value() throws -> Any? {
            skipSpace()
            if i >= s.count { try fail("unexpected end of input") }
            switch s[i] {
            case unit("{"): return try obj()
            case unit("["): return try array()
            case unit("\""): return try string()
            case unit("t"): return try literal("true", true)
            case unit("f"): return try literal("false", false)
            case unit("n"): return try literal("null", nil)
            default: return try number()
            }
        }

        private func literal(_ word: String, _ value: Any?) throws -> Any? {
            if !s[i...].starts(with: word.utf16) { try fail("invalid literal") }
            i += word.utf16.count
            return value
        }

        private func expect(_ c: Unicode.Scalar) throws {
            skipSpace()
            if i >= s.count || s[i] != unit(c) { try fail("expected '\(c)'") }
            i += 1
        }

        private func obj() throws -> Object {
            i += 1
            try enter()
            var out = Object()
            skipSpace()
            if i < s.count && s[i] == unit("}") { i += 1; depth -= 1; return out }
            while true {
                skipSpace()
                if i >= s.count || s[i] != unit("\"") { try fail("expected a key") }
                let key = try string()
                try expect(":")
                // Swift compares strings by canonical equivalence, so keys that are equal only
                // that way are refused too: another reader could keep both.
                if out.containsKey(key) { try fail("duplicate key \"\(key)\"") }
                let item = try value()
                out.put(key, item)
                skipSpace()
                if i < s.count && s[i] == unit(",") { i += 1; continue }
                try expect("}")
                depth -= 1
                return out
            }
        }

        private func array() throws -> [Any?] {
            i += 1
            try enter()
            var out: [Any?] = []
            skipSpace()
            if i < s.count && s[i] == unit("]") { i += 1; depth -= 1; return out }
            while true {
                let item = try value()
                out.append(item)
                skipSpace()
                if i < s.count && s[i] == unit(",") { i += 1; continue }
                try expect("]")
                depth -= 1
                return out
            }
        }

        private func string() throws -> String {
            i += 1
            var out: [UInt16] = []
            while true {
                if i >= s.count { try fail("unterminated string") }
                let c = s[i]
                i += 1
                if c == unit("\"") {
                    return String(decoding: out, as: UTF16.self)
                } else if c == unit("\\") {
                    if i >= s.count { try fail("unterminated escape") }
                    let e = s[i]
                    i += 1
                    switch e {
                    case unit("\""), unit("\\"), unit("/"): out.append(e)
                    case unit("b"): out.append(0x08)
                    case unit("f"): out.append(0x0C)
                    case unit("n"): out.append(0x0A)
                    case unit("r"): out.append(0x0D)
                    case unit("t"): out.append(0x09)
                    case unit("u"):
                        if i + 4 > s.count { try fail("short \\u escape") }
                        guard let code = hex4(s[i..<(i + 4)]) else { try fail("bad \\u escape") }
                        out.append(code)
                        i += 4
                    default:
                        try fail("bad escape '\\\(String(decoding: [e], as: UTF16.self))'")
                    }
                } else if c < 0x20 {
                    try fail("control character in string")
                } else {
                    out.append(c)
                }
            }
        }

        private func number() throws -> Any {
            let start = i
            if i < s.count && s[i] == unit("-") { i += 1 }
            let digits = i
            while i < s.count && isAsciiDigit(s[i]) { i += 1 }
            if i == digits { try fail("invalid value") }
            if s[digits] == unit("0") && i - digits > 1 { try fail("leading zero") }
            var integral = true
            if i < s.count && s[i] == unit(".") {
                integral = false
                i += 1
                let frac = i
                while i < s.count && isAsciiDigit(s[i]) { i += 1 }
                if i == frac { try fail("digits expected after '.'") }
            }
            if i < s.count && (s[i] == unit("e") || s[i] == unit("E")) {
                integral = false
                i += 1
                if i < s.count && (s[i] == unit("+") || s[i] == unit("-")) { i += 1 }
                let exp = i
                while i < s.count && isAsciiDigit(s[i]) { i += 1 }
                if i == exp { try fail("digits expected in exponent") }
            }
            let text = String(decoding: s[start..<i], as: UTF16.self)
            if integral, let n = Int64(text) { return n }
            guard let d = Double(text) else { try fail("number out of range") }
            return d
        }
    }
}

private func unit(_ c: Unicode.Scalar) -> UInt16 { UInt16(c.value) }

private func isAsciiDigit(_ u: UInt16) -> Bool { u >= unit("0") && u <= unit("9") }

/// Exactly four hex digits (Kotlin's toIntOrNull(16) would also take a sign).
private func hex4(_ units: ArraySlice<UInt16>) -> UInt16? {
    var v: UInt16 = 0
    for u in units {
        let d: UInt16
        switch u {
        case unit("0")...unit("9"): d = u - unit("0")
        case unit("a")...unit("f"): d = u - unit("a") + 10
        case unit("A")...unit("F"): d = u - unit("A") + 10
        default: return nil
        }
        v = (v << 4) | d
    }
    return v
}
