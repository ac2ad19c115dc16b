package dev.onestep.runtime

/**
 * Tiled decoding (manifest `components.<name>.tiling`, runtimes/README.md): the component's
 * program takes one tile of the latent; the whole image is its tiles blended with linear ramps
 * over their overlaps, in float32 and in the order compiler/contract/tiling.py computes it, so every
 * runtime writes the same pixels.
 */
class TilePlan(
    val input: String, val latentShape: IntArray, val tileHeight: Int, val tileWidth: Int,
    val overlap: Int, val scale: Int, val rows: List<Int>, val cols: List<Int>,
) {
    /** The component's input as the pipeline feeds it: the whole latent. */
    fun wholeInput(spec: TensorSpec): TensorSpec =
        if (spec.name == input) TensorSpec(spec.name, spec.dtype, latentShape) else spec

    /** The component's output as the pipeline receives it: the whole image. */
    fun wholeOutput(spec: TensorSpec): TensorSpec {
        val shape = spec.shape.copyOf()
        shape[shape.size - 2] = latentShape[latentShape.size - 2] * scale
        shape[shape.size - 1] = latentShape[latentShape.size - 1] * scale
        return TensorSpec(spec.name, spec.dtype, shape)
    }

    /** The whole image from a session that decodes one tile into its single output `output`. */
    fun run(session: Session, feeds: Map<String, Tensor>, output: String): Tensor {
        val latents = feeds.getValue(input).floats ?: throw IllegalArgumentException("$input: tiled input must be float32")
        val lead = latentShape.size - 2
        val h = latentShape[lead]
        val w = latentShape[lead + 1]
        val planes = latentShape.copyOfRange(0, lead).fold(1) { a, b -> a * b }
        val tileShape = latentShape.copyOf().also { it[lead] = tileHeight; it[lead + 1] = tileWidth }
        val wy = axisWeights(rows.size, tileHeight)
        val wx = axisWeights(cols.size, tileWidth)
        val height = h * scale
        val width = w * scale
        val th = tileHeight * scale
        val tw = tileWidth * scale
        val weight = FloatArray(height * width)
        var total: FloatArray? = null
        var shape: IntArray? = null
        for ((i, r) in rows.withIndex()) {
            for ((j, c) in cols.withIndex()) {
                val tile = FloatArray(planes * tileHeight * tileWidth)
                for (p in 0 until planes) {
                    for (y in 0 until tileHeight) {
                        System.arraycopy(latents, (p * h + r + y) * w + c, tile, (p * tileHeight + y) * tileWidth, tileWidth)
                    }
                }
                val out = session.run(feeds + (input to Tensor.float32(tileShape, tile)))[output]
                    ?: throw IllegalStateException("tile returned no output $output")
                val o = out.floats ?: throw IllegalStateException("$output: tiled output must be float32")
                val outPlanes = o.size / (th * tw)
                val sum = total ?: FloatArray(outPlanes * height * width).also {
                    total = it
                    shape = out.shape.copyOf().also { s -> s[s.size - 2] = height; s[s.size - 1] = width }
                }
                for (y in 0 until th) {
                    for (x in 0 until tw) {
                        val wgt = wy[i][y] * wx[j][x]
                        val at = (r * scale + y) * width + c * scale + x
                        weight[at] += wgt
                        for (p in 0 until outPlanes) sum[p * height * width + at] += wgt * o[(p * th + y) * tw + x]
                    }
                }
            }
        }
        val sum = total!!
        for (k in sum.indices) sum[k] = sum[k] / weight[k % (height * width)]
        return Tensor.float32(shape!!, sum)
    }

    /** Each tile's weight per image coordinate along an axis of `count` tiles of `tile` latent pixels. */
    fun axisWeights(count: Int, tile: Int): List<FloatArray> {
        val size = tile * scale
        val ramp = (overlap * scale).toFloat()
        return List(count) { k ->
            FloatArray(size) { d ->
                var v = 1f
                if (ramp > 0f && k > 0) v = minOf(v, (d.toFloat() + 0.5f) / ramp)
                if (ramp > 0f && k < count - 1) v = minOf(v, (size.toFloat() - d.toFloat() - 0.5f) / ramp)
                v
            }
        }
    }

    companion object {
        const val BLEND = "linear-ramp-v1"

        /** Tile starts along one axis of `length` latent pixels: spread evenly, the last flush with the edge. */
        fun origins(length: Int, tile: Int, overlap: Int): List<Int> {
            if (length <= tile) return listOf(0)
            val count = (length - overlap + (tile - overlap) - 1) / (tile - overlap)
            return List(count) { k -> (k.toLong() * (length - tile) / (count - 1)).toInt() }
        }
    }
}
