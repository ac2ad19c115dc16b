package dev.onestep.runtime

import java.io.File

/**
 * prompt + seed -> image for any bundle, by following its manifest: tokenizers and noise
 * produce the first values, components run in `wiring.order`, each input taken from the source
 * the wiring names, and `wiring.image` becomes 8-bit pixels. The same chain as `generate`.
 *
 * `reduceMemory` opens each component when its turn comes and closes it right after (Apple's
 * ml-stable-diffusion `reduceMemory`): the peak is the largest component plus activations instead
 * of every component at once, and each call pays the components' load time (in its stage's time).
 */
class Pipeline private constructor(
    val bundle: File,
    val manifest: Manifest,
    private val tokenizers: List<Tokenizer>,
    private val engine: Engine,
    val reduceMemory: Boolean,
    private val sessions: MutableMap<String, Session>,
) : AutoCloseable {

    /** Milliseconds one stage took: "tokenize" (with the noise), each component, "image". */
    class Stage(val name: String, val millis: Double)

    /** An image, whether the prompt was cut to the tokenizer's length, and the stages in run order. */
    class Result(val image: Image, val truncated: Boolean, val stages: List<Stage>)

    /**
     * `picture` (image-to-image bundles, manifest `img2img`): the image to start from, fitted to the
     * bundle's size; `strength`: one the bundle ships (null: its first). Without a picture the
     * encoder does not run and its output is zeros: the text-to-image step does not read it.
     */
    fun generate(prompt: String, seed: ULong, picture: Picture? = null, strength: Double? = null): Result {
        val spec = manifest.img2img
        require(picture == null || spec != null) { "this bundle has no image-to-image (manifest img2img)" }
        val step = spec?.row(if (picture == null) null else strength ?: spec.strengths.first().strength)
        val stages = ArrayList<Stage>()
        val values = HashMap<String, Tensor>()
        var truncated = false
        timed(stages, "tokenize") {
            manifest.tokenizers.zip(tokenizers).forEach { (spec, tokenizer) ->
                val tokens = tokenizer.encode(prompt)
                truncated = truncated || tokens.truncated
                values[spec.output] = Tensor.integer(DType.INT64, intArrayOf(1, spec.maxLength), tokens.ids)
                spec.maskOutput?.let { values[it] = Tensor.integer(DType.INT64, intArrayOf(1, spec.maxLength), tokens.mask) }
            }
            values[manifest.noise.output] = NoiseSource.tensor(seed, manifest.noise.shape)
            if (spec != null) {
                values[Img2Img.STEP_SOURCE] = Tensor.float32(intArrayOf(Img2Img.STEP_SIZE), step!!)
                picture?.let { values[Img2Img.IMAGE_SOURCE] = spec.tensor(it) }
            }
        }
        for (name in manifest.wiring.order) {
            val component = manifest.components.getValue(name)
            if (picture == null && name == spec?.encoder) {
                for (o in component.outputs) values["$name.${o.name}"] = Tensor.float32(o.shape, FloatArray(o.shape.fold(1) { a, b -> a * b }))
                continue
            }
            val plan = component.tiling
            val feeds = component.inputs.associate { spec ->
                val source = manifest.wiring.inputs.getValue(name).getValue(spec.name)
                spec.name to conform(values.getValue(source), plan?.wholeInput(spec) ?: spec, "$name input ${spec.name} (from $source)")
            }
            val out = timed(stages, name) {
                val session = sessions.getOrPut(name) { engine.open(bundle, component, manifest) }
                try {
                    if (plan == null) session.run(feeds)
                    else component.outputs.single().name.let { mapOf(it to plan.run(session, feeds, it)) }
                } finally {
                    if (reduceMemory) sessions.remove(name)?.close()
                }
            }
            for (spec in component.outputs) {
                val t = out[spec.name] ?: throw IllegalStateException("$name returned no output ${spec.name}")
                values["$name.${spec.name}"] = conform(t, plan?.wholeOutput(spec) ?: spec, "$name output ${spec.name}")
            }
        }
        val image = timed(stages, "image") { Png.pixels(values.getValue(manifest.wiring.image)) }
        return Result(image, truncated, stages)
    }

    override fun close() {
        sessions.values.forEach { it.close() }
        sessions.clear()
    }

    companion object {
        /** Verifies the whole bundle (BundleVerifier) before opening a tokenizer or a component; opens
         *  every component now unless `reduceMemory`. `width` x `height`: one of the sizes a multi-size
         *  bundle ships (Manifest.sizes; default its first), whose programs this pipeline runs. */
        fun open(bundle: File, engine: Engine, reduceMemory: Boolean = false, width: Int? = null, height: Int? = null): Pipeline {
            val verified = BundleVerifier.verify(bundle)
            val manifest = if (width == null || height == null) verified else verified.at(height, width)
            val tokenizers = manifest.tokenizers.map { Tokenizers.load(bundle, it) }
            val sessions = LinkedHashMap<String, Session>()
            if (!reduceMemory) {
                try {
                    for (name in manifest.wiring.order) sessions[name] = engine.open(bundle, manifest.components.getValue(name), manifest)
                } catch (e: Exception) {
                    sessions.values.forEach { it.close() }
                    throw e
                }
            }
            return Pipeline(bundle, manifest, tokenizers, engine, reduceMemory, sessions)
        }

        /** The tensor in the dtype and shape the manifest declares (token ids become int32 for Core ML-style inputs). */
        internal fun conform(t: Tensor, spec: TensorSpec, what: String): Tensor {
            require(t.shape.contentEquals(spec.shape)) { "$what: shape ${t.shape.contentToString()} != manifest ${spec.shape.contentToString()}" }
            return when {
                t.dtype == spec.dtype -> t
                t.dtype != DType.FLOAT32 && spec.dtype != DType.FLOAT32 -> Tensor.integer(spec.dtype, t.shape, t.longs!!)
                else -> throw IllegalArgumentException("$what: dtype ${t.dtype.manifestName} != manifest ${spec.dtype.manifestName}")
            }
        }

        private inline fun <T> timed(stages: MutableList<Stage>, name: String, block: () -> T): T {
            val t0 = System.nanoTime()
            val out = block()
            stages.add(Stage(name, (System.nanoTime() - t0) / 1e6))
            return out
        }
    }
}
