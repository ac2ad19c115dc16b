package dev.onestep.runtime

/** An app's picture: 8-bit RGB, row-major, `width * height * 3` bytes (alpha dropped by the caller). */
class Picture(val width: Int, val height: Int, val rgb: ByteArray) {
    init {
        require(width > 0 && height > 0 && rgb.size.toLong() == width.toLong() * height * 3) {
            "a picture needs width * height * 3 bytes of RGB"
        }
    }
}

/** One strength a bundle ships: the diffusers img2img call it matches and the denoiser's step row. */
class Strength(val strength: Double, val numInferenceSteps: Int, val step: FloatArray)

/**
 * Image-to-image (manifest `img2img`): the picture fitted to the image size by the integer rule of
 * compiler/contract/init_image.py, bit for bit, and the denoiser's `step` row per strength.
 */
class Img2Img(val height: Int, val width: Int, val encoder: String, val textToImage: FloatArray, val strengths: List<Strength>) {

    /** The step row for `strength` (null: text-to-image); a strength the bundle does not ship is an error naming those it does. */
    fun row(strength: Double?): FloatArray {
        if (strength == null) return textToImage
        return strengths.firstOrNull { Math.abs(it.strength - strength) <= 1e-6 }?.step
            ?: throw IllegalArgumentException("strength $strength is not in this bundle (it ships " +
                strengths.joinToString(", ") { it.strength.toString() } + ")")
    }

    /** The encoder's input: the picture fitted, as float32 [1, 3, H, W] in [0, 1]. */
    fun tensor(picture: Picture): Tensor = toTensor(fit(picture, height, width), height, width)

    companion object {
        const val IMAGE_SOURCE = "init_image.pixels"
        const val STEP_SOURCE = "sampler.step"
        const val STEP_SIZE = 6
        private const val ONE = 1L shl 16

        /** Centre crop to the aspect ratio, a k x k box average when the crop is k >= 2 times the
         *  image, then bilinear in 16-bit fixed point: `outH * outW * 3` RGB bytes. */
        fun fit(p: Picture, outH: Int, outW: Int): ByteArray {
            var cw: Int
            var ch: Int
            if (p.width.toLong() * outH > p.height.toLong() * outW) {
                cw = maxOf(1L, p.height.toLong() * outW / outH).toInt(); ch = p.height
            } else {
                cw = p.width; ch = maxOf(1L, p.width.toLong() * outH / outW).toInt()
            }
            val k = minOf(cw / outW, ch / outH)
            val box = if (k >= 2) k else 1
            cw = cw / box * box
            ch = ch / box * box
            val x0 = (p.width - cw) / 2
            val y0 = (p.height - ch) / 2
            val sw = cw / box
            val sh = ch / box
            val src = LongArray(sw * sh * 3)
            for (y in 0 until sh) for (x in 0 until sw) for (c in 0 until 3) {
                var sum = 0L
                for (dy in 0 until box) for (dx in 0 until box) {
                    sum += p.rgb[((y0 + y * box + dy) * p.width + x0 + x * box + dx) * 3 + c].toLong() and 0xFF
                }
                src[(y * sw + x) * 3 + c] = if (box == 1) sum else (sum + box * box / 2) / (box * box)
            }
            val xs = positions(outW, sw)
            val ys = positions(outH, sh)
            val out = ByteArray(outH * outW * 3)
            for (y in 0 until outH) {
                val ya = (ys[y] shr 16).toInt()
                val yb = minOf(ya + 1, sh - 1)
                val fy = ys[y] and (ONE - 1)
                for (x in 0 until outW) {
                    val xa = (xs[x] shr 16).toInt()
                    val xb = minOf(xa + 1, sw - 1)
                    val fx = xs[x] and (ONE - 1)
                    for (c in 0 until 3) {
                        val top = src[(ya * sw + xa) * 3 + c] * (ONE - fx) + src[(ya * sw + xb) * 3 + c] * fx
                        val bottom = src[(yb * sw + xa) * 3 + c] * (ONE - fx) + src[(yb * sw + xb) * 3 + c] * fx
                        out[(y * outW + x) * 3 + c] = ((top * (ONE - fy) + bottom * fy + (1L shl 31)) shr 32).toByte()
                    }
                }
            }
            return out
        }

        /** Source position of each output column (or row) in 16-bit fixed point, half-pixel centres, clamped. */
        private fun positions(out: Int, size: Int): LongArray = LongArray(out) { i ->
            ((2L * i + 1) * size * ONE / (2L * out) - ONE / 2).coerceIn(0L, (size - 1) * ONE)
        }

        /** RGB bytes -> float32 [1, 3, H, W], each value / 255. */
        fun toTensor(pixels: ByteArray, height: Int, width: Int): Tensor {
            val plane = height * width
            val data = FloatArray(3 * plane)
            for (i in 0 until plane) for (c in 0 until 3) data[c * plane + i] = (pixels[i * 3 + c].toInt() and 0xFF) / 255f
            return Tensor.float32(intArrayOf(1, 3, height, width), data)
        }

        /** The manifest's `img2img` block; null when a key is missing or of the wrong type. */
        fun parse(raw: Map<*, *>): Img2Img? {
            val image = raw["image"] as? Map<*, *> ?: return null
            val height = (image["height"] as? Long)?.toInt() ?: return null
            val width = (image["width"] as? Long)?.toInt() ?: return null
            val encoder = raw["encoder"] as? String ?: return null
            val t2i = row(raw["text_to_image"]) ?: return null
            val strengths = (raw["strengths"] as? List<*>)?.map { s ->
                val m = s as? Map<*, *> ?: return null
                Strength((m["strength"] as? Number)?.toDouble() ?: return null,
                    (m["num_inference_steps"] as? Long)?.toInt() ?: return null, row(m["step"]) ?: return null)
            } ?: return null
            return Img2Img(height, width, encoder, t2i, strengths)
        }

        private fun row(value: Any?): FloatArray? {
            val list = value as? List<*> ?: return null
            if (list.size != STEP_SIZE) return null
            return FloatArray(STEP_SIZE) { i -> ((list[i] as? Number) ?: return null).toDouble().toFloat() }
        }
    }
}
