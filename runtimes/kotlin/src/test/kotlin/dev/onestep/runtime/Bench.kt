package dev.onestep.runtime

import java.io.File

/**
 * Tokenizer, noise, SHA-256 and PNG throughput on this JVM, for benchmarks/runtimes.py (which
 * times Swift's onestep-bench and the Python reference on the same inputs in the same run).
 * Prints one JSON line.
 *
 *     java -cp JAR dev.onestep.runtime.BenchKt TOKENIZER_DIR PROMPTS_FILE MAX_LENGTH SECONDS SHAPE...
 */
fun main(args: Array<String>) {
    val dir = File(args[0])
    val prompts = File(args[1]).readLines().map { it.trim() }.filter { it.isNotEmpty() && !it.startsWith("#") }
    val maxLength = args[2].toInt()
    val seconds = args[3].toDouble()
    val loadStart = System.nanoTime()
    @Suppress("UNCHECKED_CAST")
    val vocab = (Json.parse(File(dir, "vocab.json").readText()) as Map<String, Any?>).mapValues { (it.value as Long).toInt() }
    val merges = ClipTokenizer.readMerges(File(dir, "merges.txt").readText())
    val bos = vocab.getValue("<|startoftext|>")
    val eos = vocab.getValue("<|endoftext|>")
    val tokenizer = ClipTokenizer(vocab, merges, maxLength, bos, eos, eos)
    tokenizer.encode(prompts[0])
    val firstMs = (System.nanoTime() - loadStart) / 1e6
    // One tokenizer, as an app keeps it (its word cache warm, like the Rust tokenizer's in Python).
    val tokenizerRate = rate(seconds) { prompts.forEach { tokenizer.encode(it) }; prompts.size }
    val noise = args.drop(4).map { spec ->
        val shape = spec.split('x').map { it.toInt() }.toIntArray()
        val n = shape.fold(1) { a, b -> a * b }
        "\"$spec\": ${rate(seconds) { NoiseSource.gaussian(42uL, n); n }}"
    }
    // SHA-256 over 16 MiB chunks, as BundleVerifier hashes a file; MB/s of input.
    val chunk = ByteArray(16 shl 20) { it.toByte() }
    val shaRate = rate(seconds) { java.security.MessageDigest.getInstance("SHA-256").digest(chunk); chunk.size } / 1e6
    // PNG of a 512 px image of noise (incompressible, the worst case); MB/s of RGB input.
    val pixels = NoiseSource.gaussian(42uL, 3 * 512 * 512).map { it * 0.25f + 0.5f }.toFloatArray()
    val image = Png.pixels(Tensor.float32(intArrayOf(1, 3, 512, 512), pixels))
    val pngRate = rate(seconds) { Png.encode(image); image.rgb.size } / 1e6
    println("{\"load_and_first_prompt_ms\": $firstMs, \"prompts_per_s\": $tokenizerRate, \"noise_values_per_s\": {${noise.joinToString(", ")}}, " +
        "\"sha256_mb_per_s\": $shaRate, \"png_encode_mb_per_s\": $pngRate}")
}

/** Items per second, after a warm-up of the same length (the JIT compiles the hot loops). */
private fun rate(seconds: Double, pass: () -> Int): Double {
    for (phase in 0..1) {
        var items = 0L
        val start = System.nanoTime()
        while (System.nanoTime() - start < seconds * 1e9) items += pass()
        if (phase == 1) return items / ((System.nanoTime() - start) / 1e9)
    }
    error("unreachable")
}
