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
