package dev.onestep.runtime

import java.io.ByteArrayOutputStream
import java.util.zip.Adler32
import java.util.zip.CRC32

/** 8-bit RGB pixels, row-major, three bytes per pixel. */
class Image(val width: Int, val height: Int, val rgb: ByteArray) {
    /** Android's Bitmap.setPixels / Compose's ImageBitmap layout: opaque ARGB ints. */
    fun argb(): IntArray = IntArray(width * height) { p ->
        val r = rgb[3 * p].toInt() and 0xff
        val g = rgb[3 * p + 1].toInt() and 0xff
        val b = rgb[3 * p + 2].toInt() and 0xff
        (0xff shl 24) or (r shl 16) or (g shl 8) or b
    }
}

/**
 * Image conversion and PNG bytes exactly as compiler/contract/png.py writes them: v = x * 255 + 0.5 in
 * float, NaN -> 0, clamped to [0, 255], truncated; PNG with filter 0 rows and stored deflate
 * blocks, so every platform writes the same bytes.
 */
object Png {
    private val SIGNATURE = byteArrayOf(0x89.toByte(), 'P'.code.toByte(), 'N'.code.toByte(), 'G'.code.toByte(), 13, 10, 26, 10)
    private const val STORED_BLOCK = 65535

    /** [1, 3, H, W] floats in [0, 1] -> pixels. */
    fun pixels(image: Tensor): Image {
        val s = image.shape
        require(image.dtype == DType.FLOAT32 && s.size == 4 && s[0] == 1 && s[1] == 3) {
            "image must be float32 [1, 3, H, W], got ${image.dtype} ${s.contentToString()}"
        }
        val (h, w) = s[2] to s[3]
        val x = image.floats!!
        val rgb = ByteArray(h * w * 3)
        for (c in 0 until 3) for (y in 0 until h) for (col in 0 until w) {
            rgb[(y * w + col) * 3 + c] = to8bit(x[(c * h + y) * w + col]).toByte()
        }
        return Image(w, h, rgb)
    }

    fun to8bit(x: Float): Int {
        val v = x * 255f + 0.5f
        return if (v.isNaN()) 0 else v.coerceIn(0f, 255f).toInt()
    }

    fun encode(image: Image): ByteArray {
        val raw = ByteArray(image.height * (1 + image.width * 3))
        for (y in 0 until image.height) {
            System.arraycopy(image.rgb, y * image.width * 3, raw, y * (1 + image.width * 3) + 1, image.width * 3)
        }
        val ihdr = ByteArrayOutputStream().apply {
            int32(image.width); int32(image.height); write(8); write(2); write(0); write(0); write(0)
        }.toByteArray()
        return ByteArrayOutputStream().apply {
            write(SIGNATURE)
            chunk("IHDR", ihdr)
            chunk("IDAT", storedZlib(raw))
            chunk("IEND", ByteArray(0))
        }.toByteArray()
    }

    private fun storedZlib(data: ByteArray): ByteArray = ByteArrayOutputStream().apply {
        write(0x78); write(0x01)
        val blocks = if (data.isEmpty()) 1 else (data.size + STORED_BLOCK - 1) / STORED_BLOCK
        for (i in 0 until blocks) {
            val start = i * STORED_BLOCK
            val len = minOf(STORED_BLOCK, data.size - start)
            write(if (i == blocks - 1) 1 else 0)
            write(len and 0xff); write(len shr 8)
            val nlen = len xor 0xffff
            write(nlen and 0xff); write(nlen shr 8)
            write(data, start, len)
        }
        int32(Adler32().apply { update(data) }.value.toInt())
    }.toByteArray()

    private fun ByteArrayOutputStream.chunk(kind: String, body: ByteArray) {
        val type = kind.toByteArray(Charsets.US_ASCII)
        int32(body.size)
        write(type)
        write(body)
        int32(CRC32().apply { update(type); update(body) }.value.toInt())
    }

    private fun ByteArrayOutputStream.int32(v: Int) {
        write(v ushr 24); write((v ushr 16) and 0xff); write((v ushr 8) and 0xff); write(v and 0xff)
    }
}
