import Foundation

/// CLIP's byte-level BPE exactly as transformers' CLIPTokenizer runs it (runtimes/README.md):
/// special tokens (bos, eos, pad) are matched in the raw text first, leftmost-longest; every other
/// piece is NFC-normalized, whitespace runs become one space, each code point is lower-cased,
/// CLIP's pattern picks the words, each word's UTF-8 bytes map to printable characters and BPE
/// merges them with "</w>" on the last symbol. Ids are bos + at most maxLength - 2 tokens + eos,
/// padded with pad to maxLength.
///
/// Text is compared as UTF-16 code units and bytes, never as Swift Characters: String equality
/// is canonical equivalence and a Character is a whole grapheme, so "e" + U+0301 would equal "é"
/// and a special token followed by a combining mark would not be found.
public final class ClipTokenizer: Tokenizer {
    private let vocab: [String: Int]
    public let maxLength: Int
    public let bosTokenId: Int
    public let eosTokenId: Int
    public let padTokenId: Int

    private let ranks: [String: Int]
    private let specials: [(token: [UInt16], id: Int)]
    private var cache: [[UInt8]: [Int]] = [:]

    public init(vocab: [String: Int], merges: [String], maxLength: Int, bosTokenId: Int, eosTokenId: Int, padTokenId: Int) throws {
        self.vocab = vocab
        self.maxLength = maxLength
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.padTokenId = padTokenId
        var ranks: [String: Int] = [:]
        for (i, m) in merges.enumerated() { ranks[m] = i }
        self.ranks = ranks
        if maxLength < 2 { throw RuntimeError("max_length \(maxLength) leaves no room for bos and eos") }
        var byId: [Int: String] = [:]
        for (token, id) in vocab { byId[id] = token }
        var specials: [(token: [UInt16], id: Int)] = []
        for id in [bosTokenId, eosTokenId, padTokenId] where !specials.contains(where: { $0.id == id }) {
            guard let token = byId[id] else { throw RuntimeError("special token id \(id) is not in the vocabulary") }
            specials.append((token: Array(token.utf16), id: id))
        }
        self.specials = specials.sorted { $0.token.count > $1.token.count }
    }

    public func encode(_ prompt: String) -> Tokens {
        let content = idsAroundSpecials(prompt, specials) { piece, out in addWords(piece, &out) }
        let kept = min(content.count, maxLength - 2)
        var ids = [Int64](repeating: Int64(padTokenId), count: maxLength)
        ids[0] = Int64(bosTokenId)
        for k in 0..<kept { ids[k + 1] = Int64(content[k]) }
        ids[kept + 1] = Int64(eosTokenId)
        var mask = [Int64](repeating: 0, count: maxLength)
        for k in 0..<(kept + 2) { mask[k] = 1 }
        return Tokens(ids: ids, truncated: content.count + 2 > maxLength, mask: mask)
    }

    private func addWords(_ piece: String, _ out: inout [Int]) {
        if piece.isEmpty { return }
        let nfc = piece.precomposedStringWithCanonicalMapping
        let spaced = ClipTokenizer.WHITESPACE.stringByReplacingMatches(in: nfc, options: [], range: NSRange(nfc.startIndex..., in: nfc), withTemplate: " ")
        let normalized = ClipTokenizer.lowercase(spaced)
        let units = Array(normalized.utf16)
        for match in ClipTokenizer.WORD.matches(in: normalized, options: [], range: NSRange(location: 0, length: units.count)) {
            // Cut from the code units: a match may end inside a grapheme ("i" of "i" + U+0307),
            // and String's Character subscript would round that boundary down.
            let r = match.range
            let word = Array(String(decoding: units[r.location..<(r.location + r.length)], as: UTF16.self).utf8)
            if let ids = cache[word] {
                out.append(contentsOf: ids)
            } else {
                let ids = bpe(word)
                cache[word] = ids
                out.append(contentsOf: ids)
            }
        }
    }

    private func bpe(_ bytes: [UInt8]) -> [Int] {
        var symbols: [String] = []
        symbols.reserveCapacity(bytes.count)
        for b in bytes { symbols.append(String(ClipTokenizer.BYTE_CHARS[Int(b)])) }
        symbols[symbols.count - 1] = symbols[symbols.count - 1] + ClipTokenizer.END_OF_WORD
        while symbols.count > 1 {
            var best = -1
            var bestRank = Int.max
            for k in 0..<(symbols.count - 1) {
                guard let rank = ranks["\(symbols[k]) \(symbols[k + 1])"] else { continue }
                if rank < bestRank {
                    bestRank = rank
                    best = k
                }
            }
            if best < 0 { break }
            let first = symbols[best]
            let second = symbols[best + 1]
            var k = 0
            while k < symbols.count - 1 {
                if symbols[k] == first && symbols[k + 1] == second {
                    symbols[k] = first + second
                    symbols.remove(at: k + 1)
                }
                k += 1
            }
        }
        // An unknown symbol becomes CLIP's unk token, "<|endoftext|>" (eos).
        return symbols.map { vocab[$0] ?? eosTokenId }
    }

    public static let END_OF_WORD = "</w>"
    // ICU implements \s as [\p{WhiteSpace}], Unicode White_Space, as Java's \s under
    // UNICODE_CHARACTER_CLASS and the tokenizers library see it (its documentation says less).
    private static let WHITESPACE = try! NSRegularExpression(pattern: "\\s+")
    private static let WORD = try! NSRegularExpression(pattern: "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+")

    /// GPT-2/CLIP's byte -> printable character table.
    public static let BYTE_CHARS: [Character] = {
        var printable = Set<Int>()
        for range in [0x21...0x7E, 0xA1...0xAC, 0xAE...0xFF] { printable.formUnion(range) }
        var extra: UInt32 = 0
        var out: [Character] = []
        for b in 0..<256 {
            if printable.contains(b) {
                out.append(Character(Unicode.Scalar(UInt8(b))))
            } else {
                out.append(Character(Unicode.Scalar(256 + extra)!))
                extra += 1
            }
        }
        return out
    }()

    /// Each code point lower-cased on its own (full Unicode mapping, no context rules such as final sigma).
    public static func lowercase(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars { out += scalar.properties.lowercaseMapping }
        return out
    }

    public static func load(bundle: URL, spec: TokenizerSpec) throws -> ClipTokenizer {
        let vocabFile = bundle.appendingPathComponent(spec.vocab!)
        guard let raw = try Json.readFile(vocabFile, maxBytes: Json.MAX_TOKENIZER_BYTES) as? Json.Object else {
            throw BundleError(vocabFile.path, "vocabulary must be a JSON object")
        }
        var vocab: [String: Int] = [:]
        for (key, value) in raw.entries {
            guard let id = value as? Int64 else { throw BundleError(vocabFile.path, "id of \(key) is not an integer") }
            vocab[key] = Int(id)
        }
        let merges = try readMerges(String(decoding: Data(contentsOf: bundle.appendingPathComponent(spec.merges!)), as: UTF8.self))
        return try ClipTokenizer(vocab: vocab, merges: merges, maxLength: spec.maxLength,
                                 bosTokenId: spec.bosTokenId!, eosTokenId: spec.eosTokenId, padTokenId: spec.padTokenId)
    }

    /// merges.txt: an optional "#version" line, then one "left right" pair per line in rank order.
    public static func readMerges(_ text: String) -> [String] {
        // Split on the byte '\n': "\r\n" is a single Character, which a Character split keeps whole.
        var lines: [String] = []
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            var bytes = line[...]
            while bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
            lines.append(String(decoding: bytes, as: UTF8.self))
        }
        var out: [String] = []
        for (i, line) in lines.enumerated() where !line.isEmpty && !(i == 0 && line.utf8.starts(with: "#version".utf8)) {
            out.append(line)
        }
        return out
    }
}
