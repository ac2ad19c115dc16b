package dev.onestep.runtime

import java.io.File
import java.util.Base64
import java.util.Locale

/**
 * SentencePiece tokenizers as the tokenizers library runs them from tokenizer.json
 * (runtimes/README.md, "Tokenization (sentencepiece)"): T5's unigram (PixArt, FLUX) and Gemma's
 * BPE with byte fallback (SANA). Added tokens (`<pad>`, `</s>`, ...) are matched in the raw text
 * first, leftmost-longest; each other piece is normalized and split the way the file says, then
 * the model picks the pieces. The family's format wraps it: `prefix` + the prompt (lower-cased and
 * stripped when `lowercase`), bos prepended or eos appended as the file's post-processor says,
 * truncated to maxLength and right-padded with pad; the attention mask is 1 for every token.
 */
class SentencePieceTokenizer private constructor(
    private val model: Model,
    private val normalizer: Normalizer,
    private val splitWords: Boolean,
    private val added: List<Pair<String, Int>>,
    private val before: List<Int>,      // the post-processor's special tokens around the prompt's ids
    private val after: List<Int>,
    override val maxLength: Int,
    private val padTokenId: Int,
    private val prefix: String,
    private val lowercase: Boolean,
) : Tokenizer {

    override fun encode(prompt: String): Tokens {
        val text = prefix + if (lowercase) pythonStrip(prompt.lowercase(Locale.ROOT)) else prompt
        val content = idsAroundSpecials(text, added, ::addPiece)
        val specials = before.size + after.size
        val kept = minOf(content.size, maxLength - specials)
        val sequence = ArrayList<Int>(maxLength)
        sequence.addAll(before)
        sequence.addAll(content.subList(0, kept))
        sequence.addAll(after)
        val ids = LongArray(maxLength) { padTokenId.toLong() }
        val mask = LongArray(maxLength)
        for ((k, id) in sequence.withIndex()) { ids[k] = id.toLong(); mask[k] = 1 }
        return Tokens(ids, content.size + specials > maxLength, mask)
    }

    private fun addPiece(piece: String, out: MutableList<Int>) {
        if (piece.isEmpty()) return
        val normalized = normalizer.normalize(piece)
        val words = if (splitWords) metaspaceWords(normalized) else listOf(normalized)
        for (word in words) if (word.isNotEmpty()) model.tokenize(word, out)
    }

    /** WhitespaceSplit, then Metaspace(prepend_scheme always, split): every word starts with ▁, split before each ▁. */
    private fun metaspaceWords(text: String): List<String> {
        val out = ArrayList<String>()
        for (word in splitOnWhitespace(text)) {
            val w = if (word.startsWith(META)) word else META + word
            var from = 0
            for (k in 1 until w.length) {
                if (w[k] == META[0]) { out.add(w.substring(from, k)); from = k }
            }
            out.add(w.substring(from))
        }
        return out
    }

    /** How the file's model turns one pre-tokenized word into ids. */
    private interface Model {
        fun tokenize(word: String, out: MutableList<Int>)
    }

    private interface Normalizer {
        fun normalize(text: String): String
    }

    private class ReplaceSpaces : Normalizer {
        override fun normalize(text: String) = text.replace(" ", META)
    }

    /** Unigram: the segmentation with the highest total score (Viterbi); unknown characters, fused, become unk. */
    private class Unigram(pieces: List<Pair<String, Double>>, private val unkId: Int) : Model {
        private val ids = HashMap<String, Int>()
        private val scores = DoubleArray(pieces.size)
        private val maxPieceLength: Int
        private val unkScore: Double

        init {
            for ((i, p) in pieces.withIndex()) { ids.putIfAbsent(p.first, i); scores[i] = p.second }
            maxPieceLength = pieces.maxOfOrNull { it.first.toByteArray(Charsets.UTF_8).size } ?: 1
            unkScore = (pieces.minOfOrNull { it.second } ?: 0.0) - UNK_PENALTY
        }

        override fun tokenize(word: String, out: MutableList<Int>) {
            val bytes = word.toByteArray(Charsets.UTF_8)
            val n = bytes.size
            val best = DoubleArray(n + 1)
            val from = IntArray(n + 1) { -1 }
            val id = IntArray(n + 1)
            var start = 0
            while (start < n) {
                val here = best[start]
                val charLength = utf8Length(bytes[start])
                var single = false
                // pieces starting here, shortest first, as the tokenizers library's trie yields them
                for (end in start + 1..minOf(n, start + maxPieceLength)) {
                    if (end < n && isContinuation(bytes[end])) continue
                    val piece = ids[String(bytes, start, end - start, Charsets.UTF_8)] ?: continue
                    val score = scores[piece] + here
                    if (from[end] < 0 || score > best[end]) { best[end] = score; from[end] = start; id[end] = piece }
                    if (end - start == charLength) single = true
                }
                if (!single) {
                    val end = start + charLength
                    val score = unkScore + here
                    if (from[end] < 0 || score > best[end]) { best[end] = score; from[end] = start; id[end] = unkId }
                }
                start += charLength
            }
            // back from the end; a run of unknown characters is one piece (its text, when a piece, else unk)
            val pieces = ArrayList<Int>()
            var end = n
            var unkEnd = -1
            while (end > 0) {
                val s = from[end]
                if (id[end] == unkId) {
                    if (unkEnd < 0) unkEnd = end
                } else {
                    if (unkEnd >= 0) { pieces.add(fused(bytes, end, unkEnd)); unkEnd = -1 }
                    pieces.add(id[end])
                }
                end = s
            }
            if (unkEnd >= 0) pieces.add(fused(bytes, 0, unkEnd))
            for (k in pieces.indices.reversed()) out.add(pieces[k])
        }

        private fun fused(bytes: ByteArray, start: Int, end: Int) = ids[String(bytes, start, end - start, Charsets.UTF_8)] ?: unkId

        companion object {
            const val UNK_PENALTY = 10.0
        }
    }

    /** BPE over the whole word: characters (unknown ones as their UTF-8 bytes, `<0xNN>`), then merges, lowest rank first, leftmost first. */
    private class Bpe(private val vocab: Map<String, Int>, merges: List<Pair<String, String>>, private val unkId: Int?) : Model {
        private val ranks: HashMap<Pair<Int, Int>, Pair<Int, Int>> = HashMap()   // (left id, right id) -> (rank, merged id)

        init {
            for ((rank, m) in merges.withIndex()) {
                val left = vocab[m.first] ?: continue
                val right = vocab[m.second] ?: continue
                val merged = vocab[m.first + m.second] ?: continue
                ranks[left to right] = rank to merged   // a repeated pair: the last one counts, as in the library
            }
        }

        override fun tokenize(word: String, out: MutableList<Int>) {
            val symbols = ArrayList<Int>()
            var pendingUnk = false
            var i = 0
            while (i < word.length) {
                val cp = word.codePointAt(i)
                val ch = String(Character.toChars(cp))
                i += Character.charCount(cp)
                val known = vocab[ch]
                if (known != null) {
                    if (pendingUnk) { symbols.add(unkId!!); pendingUnk = false }
                    symbols.add(known)
                    continue
                }
                val bytes = ch.toByteArray(Charsets.UTF_8).map { vocab["<0x%02X>".format(it.toInt() and 0xff)] }
                if (bytes.all { it != null }) { bytes.forEach { symbols.add(it!!) }; continue }
                if (unkId != null) pendingUnk = true   // unknown characters in a row fuse into one unk
            }
            if (pendingUnk) symbols.add(unkId!!)
            while (symbols.size > 1) {
                var best = -1
                var bestRank = Int.MAX_VALUE
                var bestId = 0
                for (k in 0 until symbols.size - 1) {
                    val m = ranks[symbols[k] to symbols[k + 1]] ?: continue
                    if (m.first < bestRank) { bestRank = m.first; best = k; bestId = m.second }
                }
                if (best < 0) break
                symbols[best] = bestId
                symbols.removeAt(best + 1)
            }
            out.addAll(symbols)
        }
    }

    /**
     * SentencePiece's precompiled character map (its nmt_nfkc rules): a darts-clone double array
     * from UTF-8 keys to offsets in a table of NUL-terminated replacements. Applied per grapheme
     * as the tokenizers library does: a grapheme under 6 bytes is looked up whole (the shortest key
     * that prefixes it replaces all of it), otherwise, or when that finds nothing, character by character.
     */
    private class Precompiled(blob: ByteArray) : Normalizer {
        private val units: IntArray
        private val table: ByteArray

        init {
            require(blob.size >= 4) { "precompiled_charsmap is too short" }
            val trieSize = le32(blob, 0)
            require(trieSize >= 0 && trieSize % 4 == 0 && 4 + trieSize <= blob.size) { "precompiled_charsmap trie size $trieSize" }
            units = IntArray(trieSize / 4) { le32(blob, 4 + 4 * it) }
            table = blob.copyOfRange(4 + trieSize, blob.size)
        }

        override fun normalize(text: String): String {
            val out = StringBuilder(text.length)
            for (g in graphemes(text)) {
                val bytes = g.toByteArray(Charsets.UTF_8)
                if (bytes.size < 6) {
                    val whole = transform(bytes)
                    if (whole != null) { out.append(whole); continue }
                }
                var i = 0
                while (i < g.length) {
                    val n = Character.charCount(g.codePointAt(i))
                    val ch = g.substring(i, i + n)
                    out.append(transform(ch.toByteArray(Charsets.UTF_8)) ?: ch)
                    i += n
                }
            }
            return out.toString()
        }

        /** The replacement of the shortest key that prefixes `key`, or null. */
        private fun transform(key: ByteArray): String? {
            if (units.isEmpty()) return null
            var pos = offset(units[0])
            for (b in key) {
                val c = b.toInt() and 0xff
                if (c == 0) break
                pos = pos xor c
                if (pos !in units.indices) return null
                val unit = units[pos]
                if (label(unit) != c) return null
                pos = pos xor offset(unit)
                if (hasLeaf(unit)) {
                    val start = value(units[pos])
                    var end = start
                    while (end < table.size && table[end] != 0.toByte()) end++
                    return String(table, start, end - start, Charsets.UTF_8)
                }
            }
            return null
        }

        private fun hasLeaf(unit: Int) = (unit ushr 8) and 1 == 1
        private fun value(unit: Int) = unit and 0x7fffffff
        private fun label(unit: Int) = unit and (0x80000000.toInt() or 0xff)
        private fun offset(unit: Int) = (unit ushr 10) shl ((unit and (1 shl 9)) ushr 6)

        private fun le32(b: ByteArray, at: Int) =
            (b[at].toInt() and 0xff) or ((b[at + 1].toInt() and 0xff) shl 8) or
                ((b[at + 2].toInt() and 0xff) shl 16) or ((b[at + 3].toInt() and 0xff) shl 24)
    }

    companion object {
        const val META = "\u2581"

        /** Python's str.isspace(), which str.strip() uses. */
        private fun isPythonSpace(cp: Int) = cp in 0x09..0x0d || cp in 0x1c..0x20 || cp == 0x85 || cp == 0xa0 ||
            cp == 0x1680 || cp in 0x2000..0x200a || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000

        /** Rust's char::is_whitespace (Unicode White_Space), which WhitespaceSplit uses. */
        private fun isWhiteSpace(cp: Int) = cp in 0x09..0x0d || cp == 0x20 || cp == 0x85 || cp == 0xa0 ||
            cp == 0x1680 || cp in 0x2000..0x200a || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000

        private fun pythonStrip(s: String): String {
            var start = 0
            var end = s.length
            while (start < end && isPythonSpace(s.codePointAt(start))) start += Character.charCount(s.codePointAt(start))
            while (end > start && isPythonSpace(s.codePointBefore(end))) end -= Character.charCount(s.codePointBefore(end))
            return s.substring(start, end)
        }

        private fun splitOnWhitespace(s: String): List<String> {
            val out = ArrayList<String>()
            val word = StringBuilder()
            var i = 0
            while (i < s.length) {
                val cp = s.codePointAt(i)
                if (isWhiteSpace(cp)) {
                    if (word.isNotEmpty()) { out.add(word.toString()); word.setLength(0) }
                } else word.appendCodePoint(cp)
                i += Character.charCount(cp)
            }
            if (word.isNotEmpty()) out.add(word.toString())
            return out
        }

        /**
         * UAX #29 extended grapheme clusters, as far as the character map can tell them apart (a
         * cluster under 6 bytes): CR LF; a prepended mark with what follows; any other character
         * except a control with the marks (Mn, Me, Mc), joiners and tags after it.
         */
        private fun graphemes(s: String): List<String> {
            val out = ArrayList<String>()
            var i = 0
            while (i < s.length) {
                val start = i
                var cp = s.codePointAt(i)
                i += Character.charCount(cp)
                if (cp == 0x0d && i < s.length && s[i] == '\n') { out.add("\r\n"); i++; continue }
                while (isPrepend(cp) && i < s.length && !isControl(s.codePointAt(i))) {
                    cp = s.codePointAt(i)
                    i += Character.charCount(cp)
                }
                if (!isControl(cp)) {
                    while (i < s.length && isExtend(s.codePointAt(i))) i += Character.charCount(s.codePointAt(i))
                }
                out.add(s.substring(start, i))
            }
            return out
        }

        private fun isExtend(cp: Int): Boolean {
            val type = Character.getType(cp)
            return type == Character.NON_SPACING_MARK.toInt() || type == Character.ENCLOSING_MARK.toInt() ||
                type == Character.COMBINING_SPACING_MARK.toInt() || cp == 0x200c || cp == 0x200d ||
                cp in 0xff9e..0xff9f || cp in 0x1f3fb..0x1f3ff || cp in 0xe0020..0xe007f
        }

        private fun isPrepend(cp: Int) = cp in 0x0600..0x0605 || cp == 0x06dd || cp == 0x070f || cp in 0x0890..0x0891 ||
            cp == 0x08e2 || cp == 0x0d4e

        private fun isControl(cp: Int): Boolean {
            if (cp == 0x200c || cp == 0x200d || isPrepend(cp) || cp in 0xe0020..0xe007f) return false
            val type = Character.getType(cp)
            return type == Character.CONTROL.toInt() || type == Character.LINE_SEPARATOR.toInt() ||
                type == Character.PARAGRAPH_SEPARATOR.toInt() || type == Character.FORMAT.toInt()
        }

        private fun utf8Length(lead: Byte): Int {
            val b = lead.toInt() and 0xff
            return when { b < 0x80 -> 1; b < 0xe0 -> 2; b < 0xf0 -> 3; else -> 4 }
        }

        private fun isContinuation(b: Byte) = (b.toInt() and 0xc0) == 0x80

        fun load(bundle: File, spec: TokenizerSpec): SentencePieceTokenizer {
            val file = File(bundle, spec.tokenizerJson!!)
            val where = file.path
            val root = Json.readFile(file, Json.MAX_TOKENIZER_BYTES) as? Map<*, *> ?: throw BundleError(where, "must be a JSON object")
            return fromJson(root, where, spec)
        }

        @Suppress("UNCHECKED_CAST")
        private fun fromJson(root: Map<*, *>, where: String, spec: TokenizerSpec): SentencePieceTokenizer {
            fun fail(field: String, why: String): Nothing = throw BundleError("$where: $field", why)
            val model = root["model"] as? Map<*, *> ?: fail("model", "must be an object")
            val added = (root["added_tokens"] as? List<*> ?: emptyList<Any?>()).mapIndexed { i, t ->
                val m = t as? Map<*, *> ?: fail("added_tokens[$i]", "must be an object")
                val content = m["content"] as? String ?: fail("added_tokens[$i].content", "must be a string")
                val id = (m["id"] as? Long)?.toInt() ?: fail("added_tokens[$i].id", "must be an integer")
                for (flag in listOf("single_word", "lstrip", "rstrip")) {
                    if (m[flag] == true) fail("added_tokens[$i].$flag", "true is not supported")
                }
                content to id
            }.filter { it.first.isNotEmpty() }.sortedByDescending { it.first.length }
            val (tokenModel, normalizer, split) = when (model["type"]) {
                "Unigram" -> {
                    val vocab = (model["vocab"] as? List<*> ?: fail("model.vocab", "must be a list")).mapIndexed { i, e ->
                        val pair = e as? List<*> ?: fail("model.vocab[$i]", "must be [piece, score]")
                        val score = (pair.getOrNull(1) as? Number)?.toDouble() ?: fail("model.vocab[$i]", "must be [piece, score]")
                        (pair[0] as? String ?: fail("model.vocab[$i]", "must be [piece, score]")) to score
                    }
                    if (model["byte_fallback"] == true) fail("model.byte_fallback", "true is not supported for Unigram")
                    val unk = (model["unk_id"] as? Long)?.toInt() ?: fail("model.unk_id", "must be an integer")
                    expect(root["pre_tokenizer"], "$where: pre_tokenizer", UNIGRAM_PRE_TOKENIZER)
                    Triple(Unigram(vocab, unk), precompiled(root["normalizer"], "$where: normalizer"), true)
                }
                "BPE" -> {
                    val vocab = (model["vocab"] as? Map<*, *> ?: fail("model.vocab", "must be an object")).entries.associate { (k, v) ->
                        (k as String) to ((v as? Long)?.toInt() ?: fail("model.vocab", "id of $k is not an integer"))
                    }
                    val merges = (model["merges"] as? List<*> ?: fail("model.merges", "must be a list")).mapIndexed { i, m ->
                        when (m) {
                            is String -> m.split(' ', limit = 2).let { if (it.size == 2) it[0] to it[1] else fail("model.merges[$i]", "must be 'left right'") }
                            is List<*> -> if (m.size == 2 && m.all { it is String }) (m[0] as String) to (m[1] as String) else fail("model.merges[$i]", "must be [left, right]")
                            else -> fail("model.merges[$i]", "must be [left, right]")
                        }
                    }
                    if (model["byte_fallback"] != true) fail("model.byte_fallback", "must be true (Gemma's BPE)")
                    val unk = (model["unk_token"] as? String)?.let { vocab[it] ?: fail("model.unk_token", "not in the vocabulary") }
                    expect(root["normalizer"], "$where: normalizer", GEMMA_NORMALIZER)
                    expect(root["pre_tokenizer"], "$where: pre_tokenizer", GEMMA_PRE_TOKENIZER)
                    Triple(Bpe(vocab, merges, unk), ReplaceSpaces(), false)
                }
                else -> fail("model.type", "${Manifest.pyRepr(model["type"])}: runtimes implement Unigram (T5) and BPE (Gemma)")
            }
            val (before, after) = template(root["post_processor"], "$where: post_processor")
            return SentencePieceTokenizer(tokenModel, normalizer, split, added, before, after,
                spec.maxLength, spec.padTokenId, spec.prefix, spec.lowercase)
        }

        /** TemplateProcessing's `single`: the special tokens before and after the sequence. */
        private fun template(value: Any?, where: String): Pair<List<Int>, List<Int>> {
            val m = value as? Map<*, *>
            if (m?.get("type") != "TemplateProcessing") throw BundleError("$where.type", "${Manifest.pyRepr(m?.get("type"))}: runtimes implement TemplateProcessing")
            val specials = m["special_tokens"] as? Map<*, *> ?: throw BundleError("$where.special_tokens", "must be an object")
            val before = ArrayList<Int>()
            val after = ArrayList<Int>()
            var seen = false
            for ((i, item) in (m["single"] as? List<*> ?: throw BundleError("$where.single", "must be a list")).withIndex()) {
                val entry = item as? Map<*, *> ?: throw BundleError("$where.single[$i]", "must be an object")
                when {
                    "Sequence" in entry -> if (seen) throw BundleError("$where.single[$i]", "a second sequence") else seen = true
                    "SpecialToken" in entry -> {
                        val name = (entry["SpecialToken"] as? Map<*, *>)?.get("id")
                        val ids = ((specials[name] as? Map<*, *>)?.get("ids") as? List<*>)?.map { (it as? Long)?.toInt() }
                        if (ids == null || ids.any { it == null }) throw BundleError("$where.special_tokens", "${Manifest.pyRepr(name)} has no ids")
                        (if (seen) after else before).addAll(ids.map { it!! })
                    }
                    else -> throw BundleError("$where.single[$i]", "must be a Sequence or a SpecialToken")
                }
            }
            if (!seen) throw BundleError("$where.single", "has no sequence")
            return before to after
        }

        private fun precompiled(value: Any?, where: String): Normalizer {
            val m = value as? Map<*, *> ?: throw BundleError(where, "must be a Precompiled normalizer")
            if (m["type"] != "Precompiled") throw BundleError("$where.type", "${Manifest.pyRepr(m["type"])}: runtimes implement Precompiled (T5)")
            val blob = try {
                Base64.getDecoder().decode(m["precompiled_charsmap"] as? String ?: "")
            } catch (e: IllegalArgumentException) {
                throw BundleError("$where.precompiled_charsmap", "not base64")
            }
            return try { Precompiled(blob) } catch (e: IllegalArgumentException) {
                throw BundleError("$where.precompiled_charsmap", e.message ?: "malformed")
            }
        }

        /** `value` has each path's value ("a.b", a list index as a number), or the form is not the one implemented. */
        private fun expect(value: Any?, where: String, form: Pair<List<Pair<String, Any?>>, String>) {
            for ((path, want) in form.first) {
                var v: Any? = value
                for (key in path.split('.')) {
                    v = when (v) {
                        is Map<*, *> -> v[key]
                        is List<*> -> key.toIntOrNull()?.let { v.getOrNull(it) }
                        else -> null
                    }
                }
                if (v != want) throw BundleError(where, "not the form runtimes implement (${form.second})")
            }
        }

        private val UNIGRAM_PRE_TOKENIZER = listOf("type" to "Sequence", "pretokenizers.0.type" to "WhitespaceSplit",
            "pretokenizers.1.type" to "Metaspace", "pretokenizers.1.replacement" to META,
            "pretokenizers.1.prepend_scheme" to "always", "pretokenizers.1.split" to true, "pretokenizers.2" to null) to
            "WhitespaceSplit, then Metaspace with prepend_scheme always and split"
        private val GEMMA_NORMALIZER = listOf("type" to "Replace", "pattern.String" to " ", "content" to META) to
            "Replace ' ' with '$META'"
        private val GEMMA_PRE_TOKENIZER = listOf("type" to "Split", "pattern.String" to " ", "behavior" to "MergedWithPrevious",
            "invert" to false) to "Split on ' ', MergedWithPrevious"
    }
}
