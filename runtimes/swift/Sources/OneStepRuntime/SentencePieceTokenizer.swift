import Foundation

/// SentencePiece tokenizers as the tokenizers library runs them from tokenizer.json
/// (runtimes/README.md, "Tokenization (sentencepiece)"): T5's unigram (PixArt, FLUX) and Gemma's
/// BPE with byte fallback (SANA). Added tokens (`<pad>`, `</s>`, ...) are matched in the raw text
/// first, leftmost-longest; each other piece is normalized and split the way the file says, then
/// the model picks the pieces. The family's format wraps it: `prefix` + the prompt (lower-cased and
/// stripped when `lowercase`), the post-processor's special tokens around it, truncated to
/// maxLength and right-padded with pad; the attention mask is 1 for every token.
///
/// Pieces are looked up by their UTF-8 bytes, never as Swift Strings: String equality is
/// canonical equivalence, so "e" + U+0301 and "é" would be one key.
public final class SentencePieceTokenizer: Tokenizer {
    private let model: SentencePieceModel
    private let normalizer: SentencePieceNormalizer
    private let splitWords: Bool
    private let added: [(token: [UInt16], id: Int)]
    private let before: [Int]      // the post-processor's special tokens around the prompt's ids
    private let after: [Int]
    public let maxLength: Int
    private let padTokenId: Int
    private let prefix: String
    private let lowercase: Bool

    private init(model: SentencePieceModel, normalizer: SentencePieceNormalizer, splitWords: Bool, added: [(token: [UInt16], id: Int)],
                 before: [Int], after: [Int], maxLength: Int, padTokenId: Int, prefix: String, lowercase: Bool) {
        self.model = model
        self.normalizer = normalizer
        self.splitWords = splitWords
        self.added = added
        self.before = before
        self.after = after
        self.maxLength = maxLength
        self.padTokenId = padTokenId
        self.prefix = prefix
        self.lowercase = lowercase
    }

    public func encode(_ prompt: String) -> Tokens {
        let text = prefix + (lowercase ? SentencePieceTokenizer.pythonStrip(SentencePieceTokenizer.pythonLower(prompt)) : prompt)
        let content = idsAroundSpecials(text, added) { piece, out in addPiece(piece, &out) }
        let specials = before.count + after.count
        let kept = min(content.count, maxLength - specials)
        let sequence = before + content[0..<kept] + after
        var ids = [Int64](repeating: Int64(padTokenId), count: maxLength)
        var mask = [Int64](repeating: 0, count: maxLength)
        for (k, id) in sequence.enumerated() {
            ids[k] = Int64(id)
            mask[k] = 1
        }
        return Tokens(ids: ids, truncated: content.count + specials > maxLength, mask: mask)
    }

    private func addPiece(_ piece: String, _ out: inout [Int]) {
        if piece.isEmpty { return }
        let normalized = normalizer.normalize(piece)
        let words = splitWords ? SentencePieceTokenizer.metaspaceWords(normalized) : [Array(normalized.unicodeScalars)]
        for word in words where !word.isEmpty { model.tokenize(word, &out) }
    }

    /// WhitespaceSplit, then Metaspace(prepend_scheme always, split): every word starts with ▁, split before each ▁.
    private static func metaspaceWords(_ text: String) -> [[Unicode.Scalar]] {
        var out: [[Unicode.Scalar]] = []
        for word in splitOnWhitespace(text) {
            let w = word.first == META ? word : [META] + word
            var from = 0
            for k in 1..<max(1, w.count) where w[k] == META {
                out.append(Array(w[from..<k]))
                from = k
            }
            out.append(Array(w[from...]))
        }
        return out
    }

    private struct ReplaceSpaces: SentencePieceNormalizer {
        func normalize(_ text: String) -> String {
            var out = String.UnicodeScalarView()
            for s in text.unicodeScalars { out.append(s == " " ? SentencePieceTokenizer.META : s) }
            return String(out)
        }
    }

    /// Unigram: the segmentation with the highest total score (Viterbi); unknown characters, fused, become unk.
    private final class Unigram: SentencePieceModel {
        private var ids: [[UInt8]: Int] = [:]
        private let scores: [Double]
        private let maxPieceLength: Int
        private let unkScore: Double
        private let unkId: Int

        init(pieces: [(piece: [UInt8], score: Double)], unkId: Int) {
            for (i, p) in pieces.enumerated() where ids[p.piece] == nil { ids[p.piece] = i }
            scores = pieces.map { $0.score }
            maxPieceLength = pieces.map { $0.piece.count }.max() ?? 1
            unkScore = (pieces.map { $0.score }.min() ?? 0) - Unigram.UNK_PENALTY
            self.unkId = unkId
        }

        func tokenize(_ word: [Unicode.Scalar], _ out: inout [Int]) {
            var bytes: [UInt8] = []
            for s in word { bytes.append(contentsOf: Array(String(s).utf8)) }
            let n = bytes.count
            var best = [Double](repeating: 0, count: n + 1)
            var from = [Int](repeating: -1, count: n + 1)
            var id = [Int](repeating: 0, count: n + 1)
            var start = 0
            while start < n {
                let here = best[start]
                let charLength = SentencePieceTokenizer.utf8Length(bytes[start])
                var single = false
                // pieces starting here, shortest first, as the tokenizers library's trie yields them
                var end = start + 1
                while end <= min(n, start + maxPieceLength) {
                    defer { end += 1 }
                    if end < n && SentencePieceTokenizer.isContinuation(bytes[end]) { continue }
                    guard let piece = ids[Array(bytes[start..<end])] else { continue }
                    let score = scores[piece] + here
                    if from[end] < 0 || score > best[end] {
                        best[end] = score
                        from[end] = start
                        id[end] = piece
                    }
                    if end - start == charLength { single = true }
                }
                if !single {
                    let end = start + charLength
                    let score = unkScore + here
                    if from[end] < 0 || score > best[end] {
                        best[end] = score
                        from[end] = start
                        id[end] = unkId
                    }
                }
                start += charLength
            }
            // back from the end; a run of unknown characters is one piece (its text, when a piece, else unk)
            var pieces: [Int] = []
            var end = n
            var unkEnd = -1
            while end > 0 {
                let s = from[end]
                if id[end] == unkId {
                    if unkEnd < 0 { unkEnd = end }
                } else {
                    if unkEnd >= 0 {
                        pieces.append(ids[Array(bytes[end..<unkEnd])] ?? unkId)
                        unkEnd = -1
                    }
                    pieces.append(id[end])
                }
                end = s
            }
            if unkEnd >= 0 { pieces.append(ids[Array(bytes[0..<unkEnd])] ?? unkId) }
            out.append(contentsOf: pieces.reversed())
        }

        static let UNK_PENALTY = 10.0
    }

    /// BPE over the whole word: characters (unknown ones as their UTF-8 bytes, `<0xNN>`), then merges, lowest rank first, leftmost first.
    private final class Bpe: SentencePieceModel {
        private let vocab: [[UInt8]: Int]
        private var ranks: [Int: (rank: Int, merged: Int)] = [:]   // left id << 32 | right id -> (rank, merged id)
        private let unkId: Int?

        init(vocab: [[UInt8]: Int], merges: [(left: String, right: String)], unkId: Int?) {
            self.vocab = vocab
            self.unkId = unkId
            for (rank, m) in merges.enumerated() {
                let l = Array(m.left.utf8), r = Array(m.right.utf8)
                guard let left = vocab[l], let right = vocab[r], let merged = vocab[l + r] else { continue }
                ranks[left << 32 | right] = (rank: rank, merged: merged)   // a repeated pair: the last one counts, as in the library
            }
        }

        func tokenize(_ word: [Unicode.Scalar], _ out: inout [Int]) {
            var symbols: [Int] = []
            var pendingUnk = false
            for scalar in word {
                let ch = Array(String(scalar).utf8)
                if let known = vocab[ch] {
                    if pendingUnk {
                        symbols.append(unkId!)
                        pendingUnk = false
                    }
                    symbols.append(known)
                    continue
                }
                let bytes = ch.map { vocab[Array(String(format: "<0x%02X>", UInt32($0)).utf8)] }
                if bytes.allSatisfy({ $0 != nil }) {
                    symbols.append(contentsOf: bytes.map { $0! })
                    continue
                }
                if unkId != nil { pendingUnk = true }   // unknown characters in a row fuse into one unk
            }
            if pendingUnk { symbols.append(unkId!) }
            while symbols.count > 1 {
                var best = -1
                var bestRank = Int.max
                var bestId = 0
                for k in 0..<(symbols.count - 1) {
                    guard let m = ranks[symbols[k] << 32 | symbols[k + 1]] else { continue }
                    if m.rank < bestRank {
                        bestRank = m.rank
                        best = k
                        bestId = m.merged
                    }
                }
                if best < 0 { break }
                symbols[best] = bestId
                symbols.remove(at: best + 1)
            }
            out.append(contentsOf: symbols)
        }
    }

    /// SentencePiece's precompiled character map (its nmt_nfkc rules): a darts-clone double array
    /// from UTF-8 keys to offsets in a table of NUL-terminated replacements. Applied per grapheme
    /// as the tokenizers library does: a grapheme under 6 bytes is looked up whole (the shortest key
    /// that prefixes it replaces all of it), otherwise, or when that finds nothing, character by character.
    private struct Precompiled: SentencePieceNormalizer {
        private let units: [UInt32]
        private let table: [UInt8]

        init(_ blob: [UInt8]) throws {
            guard blob.count >= 4 else { throw RuntimeError("precompiled_charsmap is too short") }
            let trieSize = Int(Precompiled.le32(blob, 0))
            guard trieSize % 4 == 0, 4 + trieSize <= blob.count else { throw RuntimeError("precompiled_charsmap trie size \(trieSize)") }
            units = (0..<(trieSize / 4)).map { Precompiled.le32(blob, 4 + 4 * $0) }
            table = Array(blob[(4 + trieSize)...])
        }

        func normalize(_ text: String) -> String {
            var out = ""
            for grapheme in text {   // a Swift Character is an extended grapheme cluster
                let g = String(grapheme)
                let bytes = Array(g.utf8)
                if bytes.count < 6, let whole = transform(bytes) {
                    out += whole
                    continue
                }
                for scalar in g.unicodeScalars {
                    out += transform(Array(String(scalar).utf8)) ?? String(scalar)
                }
            }
            return out
        }

        /// The replacement of the shortest key that prefixes `key`, or nil.
        private func transform(_ key: [UInt8]) -> String? {
            if units.isEmpty { return nil }
            var pos = Precompiled.offset(units[0])
            for b in key {
                if b == 0 { break }
                pos ^= Int(b)
                if pos < 0 || pos >= units.count { return nil }
                let unit = units[pos]
                if Precompiled.label(unit) != UInt32(b) { return nil }
                pos ^= Precompiled.offset(unit)
                if Precompiled.hasLeaf(unit) {
                    let start = Int(units[pos] & 0x7fff_ffff)
                    var end = start
                    while end < table.count && table[end] != 0 { end += 1 }
                    return String(decoding: table[min(start, table.count)..<end], as: UTF8.self)
                }
            }
            return nil
        }

        private static func hasLeaf(_ unit: UInt32) -> Bool { (unit >> 8) & 1 == 1 }
        private static func label(_ unit: UInt32) -> UInt32 { unit & (0x8000_0000 | 0xff) }
        private static func offset(_ unit: UInt32) -> Int { Int((unit >> 10) << ((unit & (1 << 9)) >> 6)) }

        private static func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
            UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
        }
    }

    public static let META: Unicode.Scalar = "\u{2581}"

    /// Python's str.isspace(), which str.strip() uses.
    private static func isPythonSpace(_ v: UInt32) -> Bool {
        (0x09...0x0d).contains(v) || (0x1c...0x20).contains(v) || v == 0x85 || v == 0xa0 || v == 0x1680 ||
            (0x2000...0x200a).contains(v) || v == 0x2028 || v == 0x2029 || v == 0x202f || v == 0x205f || v == 0x3000
    }

    /// Rust's char::is_whitespace (Unicode White_Space), which WhitespaceSplit uses.
    private static func isWhiteSpace(_ v: UInt32) -> Bool {
        (0x09...0x0d).contains(v) || v == 0x20 || v == 0x85 || v == 0xa0 || v == 0x1680 ||
            (0x2000...0x200a).contains(v) || v == 0x2028 || v == 0x2029 || v == 0x202f || v == 0x205f || v == 0x3000
    }

    private static func pythonStrip(_ s: String) -> String {
        var scalars = Array(s.unicodeScalars)
        while let last = scalars.last, isPythonSpace(last.value) { scalars.removeLast() }
        let start = scalars.firstIndex(where: { !isPythonSpace($0.value) }) ?? scalars.count
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[start...])
        return String(out)
    }

    /// Python's str.lower(): each code point's full lower-case mapping, and capital sigma as final
    /// sigma after a cased letter and before none (case-ignorable characters skipped both ways).
    private static func pythonLower(_ s: String) -> String {
        let scalars = Array(s.unicodeScalars)
        var out = ""
        for (i, scalar) in scalars.enumerated() {
            if scalar.value == 0x03a3 {
                let before = scalars[..<i].reversed().first(where: { !$0.properties.isCaseIgnorable })?.properties.isCased ?? false
                let after = scalars[(i + 1)...].first(where: { !$0.properties.isCaseIgnorable })?.properties.isCased ?? false
                out += before && !after ? "\u{03c2}" : "\u{03c3}"
            } else {
                out += scalar.properties.lowercaseMapping
            }
        }
        return out
    }

    private static func splitOnWhitespace(_ s: String) -> [[Unicode.Scalar]] {
        var out: [[Unicode.Scalar]] = []
        var word: [Unicode.Scalar] = []
        for scalar in s.unicodeScalars {
            if isWhiteSpace(scalar.value) {
                if !word.isEmpty {
                    out.append(word)
                    word = []
                }
            } else {
                word.append(scalar)
            }
        }
        if !word.isEmpty { out.append(word) }
        return out
    }

    private static func utf8Length(_ lead: UInt8) -> Int {
        lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4
    }

    private static func isContinuation(_ b: UInt8) -> Bool { b & 0xc0 == 0x80 }

    public static func load(bundle: URL, spec: TokenizerSpec) throws -> SentencePieceTokenizer {
        let file = bundle.appendingPathComponent(spec.tokenizerJson!)
        guard let root = try Json.readFile(file, maxBytes: Json.MAX_TOKENIZER_BYTES) as? Json.Object else {
            throw BundleError(file.path, "must be a JSON object")
        }
        return try fromJson(root, file.path, spec)
    }

    private static func fromJson(_ root: Json.Object, _ location: String, _ spec: TokenizerSpec) throws -> SentencePieceTokenizer {
        func fail(_ field: String, _ why: String) -> BundleError { BundleError("\(location): \(field)", why) }
        guard let model = root["model"] as? Json.Object else { throw fail("model", "must be an object") }
        var added: [(token: [UInt16], id: Int)] = []
        for (i, t) in ((root["added_tokens"] as? [Any?]) ?? []).enumerated() {
            guard let m = t as? Json.Object else { throw fail("added_tokens[\(i)]", "must be an object") }
            guard let content = m["content"] as? String else { throw fail("added_tokens[\(i)].content", "must be a string") }
            guard let id = m["id"] as? Int64 else { throw fail("added_tokens[\(i)].id", "must be an integer") }
            for flag in ["single_word", "lstrip", "rstrip"] where (m[flag] as? Bool) == true {
                throw fail("added_tokens[\(i)].\(flag)", "true is not supported")
            }
            if !content.isEmpty { added.append((token: Array(content.utf16), id: Int(id))) }
        }
        added.sort { $0.token.count > $1.token.count }
        let tokenModel: SentencePieceModel
        let normalizer: SentencePieceNormalizer
        let split: Bool
        switch model["type"] as? String {
        case "Unigram":
            guard let vocab = model["vocab"] as? [Any?] else { throw fail("model.vocab", "must be a list") }
            var pieces: [(piece: [UInt8], score: Double)] = []
            for (i, e) in vocab.enumerated() {
                guard let pair = e as? [Any?], pair.count >= 2, let piece = pair[0] as? String,
                      let score = (pair[1] as? Double) ?? (pair[1] as? Int64).map({ Double($0) }) else {
                    throw fail("model.vocab[\(i)]", "must be [piece, score]")
                }
                pieces.append((piece: Array(piece.utf8), score: score))
            }
            if (model["byte_fallback"] as? Bool) == true { throw fail("model.byte_fallback", "true is not supported for Unigram") }
            guard let unk = model["unk_id"] as? Int64 else { throw fail("model.unk_id", "must be an integer") }
            try expect(root["pre_tokenizer"], "\(location): pre_tokenizer", UNIGRAM_PRE_TOKENIZER)
            tokenModel = Unigram(pieces: pieces, unkId: Int(unk))
            normalizer = try precompiled(root["normalizer"], "\(location): normalizer")
            split = true
        case "BPE":
            guard let vocabRaw = model["vocab"] as? Json.Object else { throw fail("model.vocab", "must be an object") }
            var vocab: [[UInt8]: Int] = [:]
            for (key, value) in vocabRaw.entries {
                guard let id = value as? Int64 else { throw fail("model.vocab", "id of \(key) is not an integer") }
                vocab[Array(key.utf8)] = Int(id)
            }
            guard let mergesRaw = model["merges"] as? [Any?] else { throw fail("model.merges", "must be a list") }
            var merges: [(left: String, right: String)] = []
            for (i, m) in mergesRaw.enumerated() {
                if let text = m as? String {
                    guard let space = text.utf8.firstIndex(of: UInt8(ascii: " ")) else { throw fail("model.merges[\(i)]", "must be 'left right'") }
                    merges.append((left: String(decoding: text.utf8[..<space], as: UTF8.self),
                                   right: String(decoding: text.utf8[text.utf8.index(after: space)...], as: UTF8.self)))
                } else if let pair = m as? [Any?], pair.count == 2, let l = pair[0] as? String, let r = pair[1] as? String {
                    merges.append((left: l, right: r))
                } else {
                    throw fail("model.merges[\(i)]", "must be [left, right]")
                }
            }
            if (model["byte_fallback"] as? Bool) != true { throw fail("model.byte_fallback", "must be true (Gemma's BPE)") }
            var unk: Int? = nil
            if let name = model["unk_token"] as? String {
                guard let id = vocab[Array(name.utf8)] else { throw fail("model.unk_token", "not in the vocabulary") }
                unk = id
            }
            try expect(root["normalizer"], "\(location): normalizer", GEMMA_NORMALIZER)
            try expect(root["pre_tokenizer"], "\(location): pre_tokenizer", GEMMA_PRE_TOKENIZER)
            tokenModel = Bpe(vocab: vocab, merges: merges, unkId: unk)
            normalizer = ReplaceSpaces()
            split = false
        default:
            throw fail("model.type", "\(Manifest.pyRepr(model["type"])): runtimes implement Unigram (T5) and BPE (Gemma)")
        }
        let (before, after) = try template(root["post_processor"], "\(location): post_processor")
        return SentencePieceTokenizer(model: tokenModel, normalizer: normalizer, splitWords: split, added: added,
                                      before: before, after: after, maxLength: spec.maxLength, padTokenId: spec.padTokenId,
                                      prefix: spec.prefix, lowercase: spec.lowercase)
    }

    /// TemplateProcessing's `single`: the special tokens before and after the sequence.
    private static func template(_ value: Any?, _ location: String) throws -> ([Int], [Int]) {
        let m = value as? Json.Object
        guard let t = m, (t["type"] as? String) == "TemplateProcessing" else {
            throw BundleError("\(location).type", "\(Manifest.pyRepr(m?["type"])): runtimes implement TemplateProcessing")
        }
        guard let specials = t["special_tokens"] as? Json.Object else { throw BundleError("\(location).special_tokens", "must be an object") }
        guard let single = t["single"] as? [Any?] else { throw BundleError("\(location).single", "must be a list") }
        var before: [Int] = []
        var after: [Int] = []
        var seen = false
        for (i, item) in single.enumerated() {
            guard let entry = item as? Json.Object else { throw BundleError("\(location).single[\(i)]", "must be an object") }
            if entry.containsKey("Sequence") {
                if seen { throw BundleError("\(location).single[\(i)]", "a second sequence") }
                seen = true
            } else if entry.containsKey("SpecialToken") {
                let name = (entry["SpecialToken"] as? Json.Object)?["id"] as? String
                let raw = ((name.flatMap { specials[$0] }) as? Json.Object)?["ids"] as? [Any?]
                guard let list = raw, list.allSatisfy({ $0 is Int64 }) else {
                    throw BundleError("\(location).special_tokens", "\(Manifest.pyRepr(name)) has no ids")
                }
                let ids = list.map { Int($0 as! Int64) }
                if seen { after += ids } else { before += ids }
            } else {
                throw BundleError("\(location).single[\(i)]", "must be a Sequence or a SpecialToken")
            }
        }
        if !seen { throw BundleError("\(location).single", "has no sequence") }
        return (before, after)
    }

    private static func precompiled(_ value: Any?, _ location: String) throws -> SentencePieceNormalizer {
        guard let m = value as? Json.Object else { throw BundleError(location, "must be a Precompiled normalizer") }
        if (m["type"] as? String) != "Precompiled" {
            throw BundleError("\(location).type", "\(Manifest.pyRepr(m["type"])): runtimes implement Precompiled (T5)")
        }
        guard let blob = Data(base64Encoded: (m["precompiled_charsmap"] as? String) ?? "") else {
            throw BundleError("\(location).precompiled_charsmap", "not base64")
        }
        do {
            return try Precompiled([UInt8](blob))
        } catch let error as RuntimeError {
            throw BundleError("\(location).precompiled_charsmap", error.description)
        }
    }

    /// `value` has each path's value ("a.b", a list index as a number), or the form is not the one implemented.
    private static func expect(_ value: Any?, _ location: String, _ form: (fields: [(path: String, value: Any?)], describe: String)) throws {
        for (path, want) in form.fields {
            var v: Any? = value
            for key in path.split(separator: ".") {
                if let obj = v as? Json.Object { v = obj[String(key)] }
                else if let list = v as? [Any?], let i = Int(key), i < list.count { v = list[i] }
                else { v = nil }
            }
            let same: Bool
            switch want {
            case let s as String: same = (v as? String) == s
            case let b as Bool: same = (v as? Bool) == b
            default: same = v == nil
            }
            if !same { throw BundleError(location, "not the form runtimes implement (\(form.describe))") }
        }
    }

    private static let UNIGRAM_PRE_TOKENIZER: (fields: [(path: String, value: Any?)], describe: String) = (fields: [
        (path: "type", value: "Sequence"), (path: "pretokenizers.0.type", value: "WhitespaceSplit"),
        (path: "pretokenizers.1.type", value: "Metaspace"), (path: "pretokenizers.1.replacement", value: "\u{2581}"),
        (path: "pretokenizers.1.prepend_scheme", value: "always"), (path: "pretokenizers.1.split", value: true),
        (path: "pretokenizers.2", value: nil)], describe: "WhitespaceSplit, then Metaspace with prepend_scheme always and split")
    private static let GEMMA_NORMALIZER: (fields: [(path: String, value: Any?)], describe: String) = (fields: [
        (path: "type", value: "Replace"), (path: "pattern.String", value: " "), (path: "content", value: "\u{2581}")],
        describe: "Replace ' ' with '\u{2581}'")
    private static let GEMMA_PRE_TOKENIZER: (fields: [(path: String, value: Any?)], describe: String) = (fields: [
        (path: "type", value: "Split"), (path: "pattern.String", value: " "), (path: "behavior", value: "MergedWithPrevious"),
        (path: "invert", value: false)], describe: "Split on ' ', MergedWithPrevious")
}

/// How a tokenizer.json model turns one pre-tokenized word into ids.
fileprivate protocol SentencePieceModel {
    func tokenize(_ word: [Unicode.Scalar], _ out: inout [Int])
}

fileprivate protocol SentencePieceNormalizer {
    func normalize(_ text: String) -> String
}
