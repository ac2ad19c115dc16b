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

/**
 * The ids of `text` with `specials` (token text -> id, longest first) found in the raw text first,
 * leftmost-longest; `piece` adds the ids of each stretch between them.
 */
internal fun idsAroundSpecials(text: String, specials: List<Pair<String, Int>>, piece: (String, MutableList<Int>) -> Unit): MutableList<Int> {
    val out = ArrayList<Int>()
    var start = 0
    var i = 0
    while (i < text.length) {
        val special = specials.firstOrNull { text.startsWith(it.first, i) }
        if (special == null) { i++; continue }
        piece(text.substring(start, i), out)
        out.add(special.second)
        i += special.first.length
        start = i
    }
    piece(text.substring(start), out)
    return out
}
