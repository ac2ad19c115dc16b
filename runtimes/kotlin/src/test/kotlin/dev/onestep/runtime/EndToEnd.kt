package dev.onestep.runtime

import java.io.File
import kotlin.system.exitProcess

/**
 * prompt + seed -> PNG with the Kotlin Pipeline and the Python reference engine
 * (tests/test_runtime_kotlin.py compares the bytes with `generate`'s):
 *
 *     java -cp JAR dev.onestep.runtime.EndToEndKt BUNDLE PROMPT SEED OUT.png PYTHON REPO
 */
fun main(args: Array<String>) {
    if (args.size != 6) {
        System.err.println("usage: EndToEnd BUNDLE PROMPT SEED OUT.png PYTHON REPO")
        exitProcess(2)
    }
    val (bundle, prompt, seedText, out, python, repo) = args
    val seed = NoiseSource.parseSeed(seedText) ?: run {
        System.err.println("seed: '$seedText' is not an integer in [0, 2^64)")
        exitProcess(2)
    }
    val engine = PythonEngine(python, File(repo))
    try {
        Pipeline.open(File(bundle), engine).use { pipeline ->
            val result = pipeline.generate(prompt, seed)
            File(out).writeBytes(Png.encode(result.image))
            println(result.stages.joinToString(", ") { "${it.name} ${"%.1f".format(it.millis)} ms" })
        }
    } catch (e: BundleError) {
        System.err.println("${e.where}: ${e.reason}")
        exitProcess(7)
    } finally {
        engine.close()
    }
}

private operator fun <T> Array<T>.component6() = this[5]
