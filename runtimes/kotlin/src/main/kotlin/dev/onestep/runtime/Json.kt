package dev.onestep.runtime

/**
 * A strict JSON reader (RFC 8259) for manifest.json and the golden fixtures, so the pure parts
 * of the runtime need no library. Objects keep their key order; a duplicate key is an error
 * (two readers could disagree on which value wins). Integers that fit a Long are Long, other
 * numbers Double. Nesting is bounded (MAX_DEPTH) and so are the files a bundle hands it
 * (`readFile`): a hostile file is an error, never a stack overflow or an exhausted heap.
 */
object Json {
    class Error(message: String) : Exception(message)

    /** Deeper than any manifest or tokenizer.json (about 6 levels); the same limit in Python and Swift. */
    const val MAX_DEPTH = 64
    /** manifest.json: a few kB per component; the same limit in Python and Swift. */
    const val MAX_MANIFEST_BYTES = 16L shl 20
    /** tokenizer.json and vocab.json: Gemma-2's tokenizer.json is 17 MB. */
    const val MAX_TOKENIZER_BYTES = 64L shl 20

    /** A bundle's JSON file: at most maxBytes, UTF-8, valid and bounded JSON; BundleError naming it otherwise. */
    fun readFile(file: java.io.File, maxBytes: Long): Any? {
        val where = file.path
        if (file.length() > maxBytes) throw BundleError(where, "${file.length()} bytes, more than the $maxBytes this runtime reads")
        val text = try {
            Charsets.UTF_8.newDecoder().onMalformedInput(java.nio.charset.CodingErrorAction.REPORT)
                .decode(java.nio.ByteBuffer.wrap(file.readBytes())).toString()
        } catch (e: java.nio.charset.CharacterCodingException) {
            throw BundleError(where, "not valid JSON (not UTF-8)")
        }
        return try {
            parse(text)
        } catch (e: Error) {
            throw BundleError(where, "not valid JSON (${e.message})")
        }
    }

    fun parse(text: String): Any? {
        val reader = Reader(text)
        val value = reader.value()
        reader.skipSpace()
        if (reader.i != text.length) reader.fail("trailing characters")
        return value
    }

    private class Reader(val s: String) {
        var i = 0
        private var depth = 0

        private fun enter() {
            if (++depth > MAX_DEPTH) fail("nested deeper than $MAX_DEPTH levels")
        }

        fun fail(message: String): Nothing = throw Error("$message at offset $i")

        fun skipSpace() {
            while (i < s.length && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++
        }

        fun value(): Any? {
            skipSpace()
            if (i >= s.length) fail("unexpected end of input")
            return when (s[i]) {
                '{' -> obj()
                '[' -> array()
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> number()
            }
        }

        private fun literal(word: String, value: Any?): Any? {
            if (!s.startsWith(word, i)) fail("invalid literal")
            i += word.length
            return value
        }

        private fun expect(c: Char) {
            skipSpace()
            if (i >= s.length || s[i] != c) fail("expected '$c'")
            i++
        }

        private fun obj(): Map<String, Any?> {
            i++
            enter()
            val out = LinkedHashMap<String, Any?>()
            skipSpace()
            if (i < s.length && s[i] == '}') { i++; depth--; return out }
            while (true) {
                skipSpace()
                if (i >= s.length || s[i] != '"') fail("expected a key")
                val key = string()
                expect(':')
                if (out.containsKey(key)) fail("duplicate key \"$key\"")
                out[key] = value()
                skipSpace()
                if (i < s.length && s[i] == ',') { i++; continue }
                expect('}')
                depth--
                return out
            }
        }

        private fun array(): List<Any?> {
            i++
            enter()
            val out = ArrayList<Any?>()
            skipSpace()
            if (i < s.length && s[i] == ']') { i++; depth--; return out }
            while (true) {
                out.add(value())
                skipSpace()
                if (i < s.length && s[i] == ',') { i++; continue }
                expect(']')
                depth--
                return out
            }
        }

        private fun string(): String {
            i++
            val out = StringBuilder()
            while (true) {
                if (i >= s.length) fail("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> return out.toString()
                    c == '\\' -> {
                        if (i >= s.length) fail("unterminated escape")
                        when (val e = s[i++]) {
                            '"' -> out.append('"'); '\\' -> out.append('\\'); '/' -> out.append('/')
                            'b' -> out.append('\b'); 'f' -> out.append('\u000c'); 'n' -> out.append('\n')
                            'r' -> out.append('\r'); 't' -> out.append('\t')
                            'u' -> {
                                val hex = if (i + 4 <= s.length) s.substring(i, i + 4) else fail("short \\u escape")
                                if (!hex.all { it in '0'..'9' || it in 'a'..'f' || it in 'A'..'F' }) fail("bad \\u escape")
                                out.append(hex.toInt(16).toChar())
                                i += 4
                            }
                            else -> fail("bad escape '\\$e'")
                        }
                    }
                    c < ' ' -> fail("control character in string")
                    else -> out.append(c)
                }
            }
        }

        private fun number(): Any {
            val start = i
            if (i < s.length && s[i] == '-') i++
            val digits = i
            while (i < s.length && s[i].isAsciiDigit()) i++
            if (i == digits) fail("invalid value")
            if (s[digits] == '0' && i - digits > 1) fail("leading zero")
            var integral = true
            if (i < s.length && s[i] == '.') {
                integral = false
                i++
                val frac = i
                while (i < s.length && s[i].isAsciiDigit()) i++
                if (i == frac) fail("digits expected after '.'")
            }
            if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
                integral = false
                i++
                if (i < s.length && (s[i] == '+' || s[i] == '-')) i++
                val exp = i
                while (i < s.length && s[i].isAsciiDigit()) i++
                if (i == exp) fail("digits expected in exponent")
            }
            val text = s.substring(start, i)
            return if (integral) text.toLongOrNull() ?: text.toDouble() else text.toDouble()
        }

        private fun Char.isAsciiDigit() = this in '0'..'9'
    }
}
