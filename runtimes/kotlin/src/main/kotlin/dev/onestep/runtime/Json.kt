package dev.onestep.runtime

/**
 * A strict JSON reader (RFC 8259) for manifest.json and the golden fixtures, so the pure parts
 * of the runtime need no library. Objects keep their key order; a duplicate key is an error
 * (two readers could disagree on which value wins). Integers that fit a Long are Long, other
 * numbers Double.
 */
object Json {
    class Error(message: String) : Exception(message)

    fun parse(text: String): Any? {
        val reader = Reader(text)
        val value = reader.value()
        reader.skipSpace()
        if (reader.i != text.length) reader.fail("trailing characters")
        return value
    }

    private class Reader(val s: String) {
        var i = 0

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
            val out = LinkedHashMap<String, Any?>()
            skipSpace()
            if (i < s.length && s[i] == '}') { i++; return out }
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
                return out
            }
        }

        private fun array(): List<Any?> {
            i++
            val out = ArrayList<Any?>()
            skipSpace()
            if (i < s.length && s[i] == ']') { i++; return out }
            while (true) {
                out.add(value())
                skipSpace()
                if (i < s.length && s[i] == ',') { i++; continue }
                expect(']')
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
