import Foundation

/// `maxLength` ids, whether the prompt was cut to fit, and 1 for every token (0 for padding).
public struct Tokens {
    public let ids: [Int64]
    public let truncated: Bool
    public let mask: [Int64]
}

/// A bundle's tokenizer (manifest `tokenizers[i]`): prompt -> ids, and the padding mask where the family reads one.
public protocol Tokenizer: AnyObject {
    var maxLength: Int { get }

    func encode(_ prompt: String) -> Tokens
}

/// The tokenizer types a manifest names, and the one to open for an entry.
public enum Tokenizers {
    public static let CLIP = "clip-bpe"
    public static let SENTENCEPIECE = "sentencepiece"

    public static func load(bundle: URL, spec: TokenizerSpec) throws -> any Tokenizer {
        if spec.type == CLIP { return try ClipTokenizer.load(bundle: bundle, spec: spec) }
        return try SentencePieceTokenizer.load(bundle: bundle, spec: spec)
    }
}

/// The ids of `text` with `specials` (token code units -> id, longest first) found in the raw
/// text first, leftmost-longest; `piece` adds the ids of each stretch between them.
func idsAroundSpecials(_ text: String, _ specials: [(token: [UInt16], id: Int)], _ piece: (String, inout [Int]) -> Void) -> [Int] {
    let units = Array(text.utf16)
    var out: [Int] = []
    var start = 0
    var i = 0
    while i < units.count {
        guard let special = specials.first(where: { units[i...].starts(with: $0.token) }) else {
            i += 1
            continue
        }
        piece(String(decoding: units[start..<i], as: UTF16.self), &out)
        out.append(special.id)
        i += special.token.count
        start = i
    }
    piece(String(decoding: units[start...], as: UTF16.self), &out)
    return out
}
