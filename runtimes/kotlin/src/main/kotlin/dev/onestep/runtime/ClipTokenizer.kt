package dev.onestep.runtime

import java.io.File
import java.text.Normalizer
import java.util.Locale
import java.util.regex.Pattern

/**
 * CLIP's byte-level BPE exactly as transformers' CLIPTokenizer runs it (runtimes/README.md):
 * special tokens (bos, eos, pad) are matched in the raw text first, leftmost-longest; every other
 * piece is NFC-normalized, whitespace runs become one space, each code point is lower-cased,
 * CLIP's pattern picks the words, each word's UTF-8 bytes map to printable characters and BPE
 * merges them with "</w>" on the last symbol. Ids are bos + at most maxLength - 2 tokens + eos,
 * padded with pad to maxLength.
 */
class ClipTokenizer(
    private val vocab: Map<String, Int>,
    merges: List<String>,
    override val maxLength: Int,
    val bosTokenId: Int,
    val eosTokenId: Int,
    val padTokenId: Int,
) : Tokenizer {

    private val ranks: Map<String, Int> = merges.withIndex().associate { (i, m) -> m to i }
    private val specials: List<Pair<String, Int>>
    private val cache = HashMap<String, IntArray>()

    init {
        require(maxLength >= 2) { "max_length $maxLength leaves no room for bos and eos" }
        val byId = HashMap<Int, String>()
        for ((token, id) in vocab) byId[id] = token
        specials = listOf(bosTokenId, eosTokenId, padTokenId).distinct()
            .map { (byId[it] ?: throw IllegalArgumentException("special token id $it is not in the vocabulary")) to it }
            .sortedByDescending { it.first.length }
    }

    override fun encode(prompt: String): Tokens {
        val text = prompt
        val content = idsAroundSpecials(text, specials, ::addWords)
        val kept = minOf(content.size, maxLength - 2)
        val ids = LongArray(maxLength) { padTokenId.toLong() }
        ids[0] = bosTokenId.toLong()
        for (k in 0 until kept) ids[k + 1] = content[k].toLong()
        ids[kept + 1] = eosTokenId.toLong()
        return Tokens(ids, content.size + 2 > maxLength, LongArray(maxLength) { if (it < kept + 2) 1L else 0L })
    }

    private fun addWords(piece: String, out: MutableList<Int>) {
        if (piece.isEmpty()) return
        val normalized = lowercase(WHITESPACE.matcher(Normalizer.normalize(piece, Normalizer.Form.NFC)).replaceAll(" "))
        val words = WORD.matcher(normalized)
        while (words.find()) {
            val word = words.group()
            for (id in cache.getOrPut(word) { bpe(word) }) out.add(id)
        }
    }

    private fun bpe(word: String): IntArray {
        val bytes = word.toByteArray(Charsets.UTF_8)
        val symbols = ArrayList<String>(bytes.size)
        for (b in bytes) symbols.add(BYTE_CHARS[b.toInt() and 0xff].toString())
        symbols[symbols.size - 1] = symbols.last() + END_OF_WORD
        while (symbols.size > 1) {
            var best = -1
            var bestRank = Int.MAX_VALUE
            for (k in 0 until symbols.size - 1) {
                val rank = ranks["${symbols[k]} ${symbols[k + 1]}"] ?: continue
                if (rank < bestRank) { bestRank = rank; best = k }
            }
            if (best < 0) break
            val first = symbols[best]
            val second = symbols[best + 1]
            var k = 0
            while (k < symbols.size - 1) {
                if (symbols[k] == first && symbols[k + 1] == second) {
                    symbols[k] = first + second
                    symbols.removeAt(k + 1)
                }
                k++
            }
        }
        // An unknown symbol becomes CLIP's unk token, "<|endoftext|>" (eos).
        return IntArray(symbols.size) { vocab[symbols[it]] ?: eosTokenId }
    }

    companion object {
        const val END_OF_WORD = "</w>"
        // Unicode White_Space, as the tokenizers library's normalizer and pattern see \s.
        private val WHITESPACE = Pattern.compile("\\s+", Pattern.UNICODE_CHARACTER_CLASS)
        private val WORD = Pattern.compile(
            "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+", Pattern.UNICODE_CHARACTER_CLASS)

        /** GPT-2/CLIP's byte -> printable character table. */
        val BYTE_CHARS: CharArray = run {
            val printable = (('!'.code..'~'.code) + ('¡'.code..'¬'.code) + ('®'.code..'ÿ'.code)).toSet()
            var extra = 0
            CharArray(256) { b -> if (b in printable) b.toChar() else (256 + extra++).toChar() }
        }

        /** Each code point lower-cased on its own (full Unicode mapping, no context rules such as final sigma). */
        fun lowercase(text: String): String {
            val out = StringBuilder(text.length)
            var i = 0
            while (i < text.length) {
                val cp = text.codePointAt(i)
                out.append(String(Character.toChars(cp)).lowercase(Locale.ROOT))
                i += Character.charCount(cp)
            }
            return out.toString()
        }

        fun load(bundle: File, spec: TokenizerSpec): ClipTokenizer {
            @Suppress("UNCHECKED_CAST")
            val vocabFile = File(bundle, spec.vocab!!)
            val raw = Json.readFile(vocabFile, Json.MAX_TOKENIZER_BYTES) as? Map<String, Any?>
                ?: throw BundleError(vocabFile.path, "vocabulary must be a JSON object")
            val vocab = raw.mapValues { (it.value as? Long)?.toInt() ?: throw BundleError(vocabFile.path, "id of ${it.key} is not an integer") }
            return ClipTokenizer(vocab, readMerges(File(bundle, spec.merges!!).readText(Charsets.UTF_8)), spec.maxLength,
                spec.bosTokenId!!, spec.eosTokenId, spec.padTokenId)
        }

        /** merges.txt: an optional "#version" line, then one "left right" pair per line in rank order. */
        fun readMerges(text: String): List<String> =
            text.split('\n').map { it.trimEnd('\r') }.filterIndexed { i, line -> line.isNotEmpty() && !(i == 0 && line.startsWith("#version")) }
    }
}
