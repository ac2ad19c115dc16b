package dev.onestep.runtime

import java.io.File
import kotlin.system.exitProcess

/**
 * prompt + seeds -> PNGs with the Kotlin Pipeline and the Python reference engine
 * (tests/test_runtime_kotlin.py compares the bytes with `generate`'s). One pipeline and one
 * engine process for every seed, as an app keeps them; writes OUT_PREFIX-<seed>.png.
 *
 *     java [-Dinit.image=PNG -Dstrength=S] [-Dsize=WxH] -cp JAR dev.onestep.runtime.EndToEndKt BUNDLE PROMPT PYTHON REPO OUT_PREFIX SEED...
 *
 * With `init.image` (image-to-image bundles) the PNG is decoded by the JVM's ImageIO into RGB
 * bytes, as an Android app hands a Bitmap's pixels to the Pipeline. With `size` (multi-size bundles)
 * the pipeline runs that size's programs.
 */
fun main(args: Array<String>) {
    if (args.size < 6) {
        System.err.println("usage: EndToEnd BUNDLE PROMPT PYTHON REPO OUT_PREFIX SEED...")
        exitProcess(2)
    }
    val (bundle, prompt, python, repo, prefix) = args
    val seeds = args.drop(5).map { text ->
        NoiseSource.parseSeed(text) ?: run {
            System.err.println("seed: '$text' is not an integer in [0, 2^64)")
            exitProcess(2)
        }
    }
    val picture = System.getProperty("init.image")?.let { readPicture(File(it)) }
    val strength = System.getProperty("strength")?.toDouble()
    val size = System.getProperty("size")?.split("x")?.map { it.toInt() }
    val engine = PythonEngine(python, File(repo))
    try {
        Pipeline.open(File(bundle), engine, width = size?.get(0), height = size?.get(1)).use { pipeline ->
            for (seed in seeds) {
                val result = pipeline.generate(prompt, seed, picture, strength)
                File("$prefix-$seed.png").writeBytes(Png.encode(result.image))
                println("seed $seed: " + result.stages.joinToString(", ") { "${it.name} ${"%.1f".format(it.millis)} ms" })
            }
        }
    } catch (e: BundleError) {
        System.err.println("${e.where}: ${e.reason}")
        exitProcess(7)
    } finally {
        engine.close()
    }
}

private fun readPicture(file: File): Picture {
    val image = javax.imageio.ImageIO.read(file) ?: error("$file: not a picture ImageIO reads")
    val rgb = ByteArray(image.width * image.height * 3)
    for (y in 0 until image.height) for (x in 0 until image.width) {
        val argb = image.getRGB(x, y)
        val i = (y * image.width + x) * 3
        rgb[i] = (argb shr 16).toByte(); rgb[i + 1] = (argb shr 8).toByte(); rgb[i + 2] = argb.toByte()
    }
    return Picture(image.width, image.height, rgb)
}
