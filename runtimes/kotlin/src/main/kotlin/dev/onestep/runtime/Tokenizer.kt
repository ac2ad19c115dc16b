package dev.onestep.runtime

import java.io.File

/** `maxLength` ids, whether the prompt was cut to fit, and 1 for every token (0 for padding). */
class Tokens(val ids: LongArray, val truncated: Boolean, val mask: LongArray)

/** A bundle's tokenizer (manifest `tokenizers[i]`): prompt -> ids, and the padding mask where the family reads one. */
interface Tokenizer {
    val maxLength: Int

    fun encode(prompt: String): Tokens
}

/** The tokenizer types a manifest names, and the one to open for an entry. */
object Tokenizers {
    const val CLIP = "clip-bpe"
    const val SENTENCEPIECE = "sentencepiece"

    fun load(bundle: File, spec: TokenizerSpec): Tokenizer =
        if (spec.type == CLIP) ClipTokenizer.load(bundle, spec) else SentencePieceTokenizer.load(bundle, spec)
}
