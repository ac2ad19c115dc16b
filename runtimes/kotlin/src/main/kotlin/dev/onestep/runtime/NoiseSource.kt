package dev.onestep.runtime

/**
 * Seeded standard-normal noise, "splitmix64-box-muller-v1" (compiler/contract/noise.py), identical to
 * the Python reference for every seed in [0, 2^64): for element i, pair k = i / 2,
 * a = splitmix64(seed, 2k), b = splitmix64(seed, 2k + 1), u1 = ((a >>> 11) + 1) 2^-53,
 * u2 = (b >>> 11) 2^-53, r = sqrt(-2 ln u1), element 2k = r cos(2 pi u2), 2k + 1 = r sin(2 pi u2),
 * computed in double and rounded to float. StrictMath keeps it the same on every JVM and Android device.
 */
object NoiseSource {
    const val ALGORITHM = "splitmix64-box-muller-v1"
    private const val GOLDEN = 0x9E3779B97F4A7C15uL
    private const val M1 = 0xBF58476D1CE4E5B9uL
    private const val M2 = 0x94D049BB133111EBuL
    private const val TWO_POW_M53 = 1.0 / (1L shl 53)

    fun splitmix64(seed: ULong, counter: ULong): ULong {
        var z = seed + (counter + 1uL) * GOLDEN
        z = (z xor (z shr 30)) * M1
        z = (z xor (z shr 27)) * M2
        return z xor (z shr 31)
    }

    fun gaussian(seed: ULong, count: Int): FloatArray {
        val out = FloatArray(count)
        var i = 0
        while (i < count) {
            val k = (i / 2).toULong()
            val a = splitmix64(seed, 2uL * k)
            val b = splitmix64(seed, 2uL * k + 1uL)
            val u1 = ((a shr 11).toLong() + 1L).toDouble() * TWO_POW_M53
            val u2 = (b shr 11).toLong().toDouble() * TWO_POW_M53
            val r = StrictMath.sqrt(-2.0 * StrictMath.log(u1))
            val theta = 2.0 * Math.PI * u2
            out[i] = (r * StrictMath.cos(theta)).toFloat()
            if (i + 1 < count) out[i + 1] = (r * StrictMath.sin(theta)).toFloat()
            i += 2
        }
        return out
    }

    fun tensor(seed: ULong, shape: IntArray): Tensor = Tensor.float32(shape, gaussian(seed, shape.fold(1) { a, b -> a * b }))

    /** A seed as typed by a person: a decimal integer in [0, 2^64 - 1]; null otherwise. */
    fun parseSeed(text: String): ULong? = text.trim().takeIf { it.isNotEmpty() && it.all { c -> c in '0'..'9' } }?.toULongOrNull()
}
