package dev.onestep.runtime

/** One tensor at a component boundary. */
class TensorSpec(val name: String, val dtype: DType, val shape: IntArray)

/** A compiled component: its program file (or folder, for Core ML packages), its I/O, and its tile plan when it decodes tile by tile. */
class ComponentSpec(
    val name: String, val file: String, val files: List<String>, val precision: String,
    val inputs: List<TensorSpec>, val outputs: List<TensorSpec>, val tiling: TilePlan? = null,
    /** The program in [file] to run when the file holds several (a multi-size Core ML package's function). */
    val function: String? = null,
)

/**
 * A tokenizer: its type (`clip-bpe`: vocab + merges; `sentencepiece`: tokenizer.json, with the
 * family's prefix, lower-casing and prompt length), how long, which special ids, and the sources
 * it produces (ids, and the padding mask where the family reads one).
 */
class TokenizerSpec(
    val name: String, val type: String, val folder: String, val vocab: String?, val merges: String?,
    val maxLength: Int, val bosTokenId: Int?, val eosTokenId: Int, val padTokenId: Int, val output: String,
    val tokenizerJson: String? = null, val prefix: String = "", val lowercase: Boolean = false,
    val promptLength: Int = maxLength, val maskOutput: String? = null,
)

class NoiseSpec(val algorithm: String, val shape: IntArray, val output: String)

class ImageSpec(val height: Int, val width: Int, val channels: Int)

class FileEntry(val sha256: String, val size: Long)

/**
 * manifest.json, schema 2 (runtimes/README.md). `parse` checks what a runtime relies on and
 * reports the first problem the way the Python loader does; file contents are checked by
 * BundleVerifier, which calls these steps in the loader's order.
 */
class Manifest(
    val schemaVersion: Int, val name: String, val target: String, val family: String,
    val image: ImageSpec, val noise: NoiseSpec, val tokenizers: List<TokenizerSpec>,
    val components: Map<String, ComponentSpec>, val wiring: Wiring, val files: Map<String, FileEntry>,
    val targets: Map<String, Any?>, val img2img: Img2Img? = null,
    /** The manifest at each size of a multi-size bundle (manifest `sizes`), the default first; empty for one size. */
    private val views: List<Manifest> = emptyList(),
) {
    /** Every size the bundle ships, the default first. */
    val sizes: List<ImageSpec> get() = if (views.isEmpty()) listOf(image) else views.map { it.image }

    /**
     * The manifest at one of the bundle's sizes: its image, noise shape, programs and tile plans
     * (the Pipeline runs it as a one-size bundle); a size it does not ship is refused, naming those it does.
     */
    fun at(height: Int, width: Int): Manifest {
        if (views.isEmpty() && image.height == height && image.width == width) return this
        return views.firstOrNull { it.image.height == height && it.image.width == width }
            ?: throw IllegalArgumentException("${Sizes.spell(height, width)} is not a size of this bundle (it ships " +
                sizes.joinToString(", ") { Sizes.spell(it.height, it.width) } + ")")
    }

    /** Core ML compute units the compiler chose ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only"), when the bundle has them. */
    val computeUnits: String? get() = (targets[target] as? Map<*, *>)?.get("compute_units") as? String

    /**
     * The file `component` loads on a device whose SoC is `soc`: its `file`, or in a QNN bundle the
     * HTP context compiled for that SoC (`targets.qnn.soc_models.<soc>.programs`); a SoC the bundle
     * was not compiled for is a BundleError naming the ones it was.
     */
    fun program(component: String, soc: String?): String {
        val socs = (targets["qnn"] as? Map<*, *>)?.get("soc_models") as? Map<*, *>
        if (target != "qnn" || socs == null) return components.getValue(component).file
        val programs = (socs[soc] as? Map<*, *>)?.get("programs") as? Map<*, *>
            ?: throw BundleError("manifest.json: targets.qnn.soc_models",
                "no program for SoC ${soc ?: "(unknown)"}; compiled for ${socs.keys.joinToString(", ")}")
        val file = programs[component] as? String
        if (file == null || components.getValue(component).files.none { it == file }) {
            throw BundleError("manifest.json: targets.qnn.soc_models.$soc.programs.$component", "not a file of the component")
        }
        return file
    }

    companion object {
        const val SCHEMA_VERSION = 2
        /** tokenizer type -> the bundle files its manifest entry names (the first: in the tokenizer's folder) */
        private val TOKENIZER_FILES = linkedMapOf(Tokenizers.CLIP to listOf("vocab", "merges"),
            Tokenizers.SENTENCEPIECE to listOf("tokenizer_json"))
        private val REQUIRED = linkedMapOf(
            "schema_version" to "int", "target" to "str", "family" to "str", "components" to "dict",
            "files" to "dict", "tokenizers" to "list", "noise" to "dict", "wiring" to "dict",
            "sampler" to "dict", "image" to "dict",
        )

        /** JSON, an object, and the schema this runtime reads. */
        fun readRaw(text: String, where: String): Map<String, Any?> {
            val value = try {
                Json.parse(text)
            } catch (e: Json.Error) {
                throw BundleError(where, "not valid JSON (${e.message})")
            }
            val raw = value as? Map<String, Any?> ?: throw BundleError(where, "manifest must be a JSON object")
            val version = raw["schema_version"]
            if (version != SCHEMA_VERSION.toLong()) {
                throw BundleError("$where: schema_version", "is ${pyRepr(version)}, this loader reads $SCHEMA_VERSION: " +
                    "the bundle was written by another compiler version; compile it again")
            }
            return raw
        }

        fun requireKeys(raw: Map<String, Any?>, where: String) {
            for ((key, kind) in REQUIRED) {
                val v = raw[key]
                val ok = when (kind) {
                    "int" -> v is Long
                    "str" -> v is String
                    "dict" -> v is Map<*, *>
                    else -> v is List<*>
                }
                if (!ok) throw BundleError("$where: $key", "missing or not a $kind (schema invalid)")
            }
        }

        fun fileTable(raw: Map<String, Any?>, where: String): Map<String, FileEntry> =
            (raw["files"] as Map<*, *>).entries.associate { (k, v) ->
                val e = v as? Map<*, *>
                val sha = e?.get("sha256") as? String
                val size = e?.get("size") as? Long
                if (sha == null || size == null) throw BundleError("$where: files.$k", "needs sha256 and size")
                k as String to FileEntry(sha, size)
            }

        /**
         * The typed manifest, after checking every path it names is a file of the table and the wiring can be followed;
         * a multi-size manifest must be all that at each of its sizes.
         */
        fun parse(raw: Map<String, Any?>, where: String): Manifest {
            val top = parseOne(raw, where, emptyList())
            if (!raw.containsKey("sizes")) return top
            Sizes.structureProblem(raw)?.let { (key, problem) -> throw BundleError("$where: $key", problem) }
            val views = Sizes.of(raw).mapIndexed { i, (h, w) -> parseOne(Sizes.atRaw(raw, h, w), "$where: sizes[$i]", emptyList()) }
            return parseOne(raw, where, views)
        }

        private fun parseOne(raw: Map<String, Any?>, where: String, views: List<Manifest>): Manifest {
            requireKeys(raw, where)
            val files = fileTable(raw, where)
            val folders = files.keys.filter { '/' in it }.map { it.substringBeforeLast('/') }.toSet()
            val components = sortedMapOf<String, ComponentSpec>()
            for ((name, value) in (raw["components"] as Map<*, *>).entries.sortedBy { it.key as String }) {
                components[name as String] = component(name, value, files, "$where: components.$name")
            }
            val tokenizers = (raw["tokenizers"] as List<*>).mapIndexed { i, t -> tokenizer(t, files, folders, "$where: tokenizers[$i]") }
            val noiseRaw = raw["noise"] as Map<*, *>
            if (noiseRaw["algorithm"] != NoiseSource.ALGORITHM) {
                throw BundleError("$where: noise.algorithm", "${pyRepr(noiseRaw["algorithm"])}: runtimes implement '${NoiseSource.ALGORITHM}'")
            }
            val wiring = Wiring.parse(raw["wiring"] as Map<*, *>, components) ?: throw BundleError("$where: wiring", "malformed")
            val sources = tokenizers.flatMap { listOfNotNull(it.output, it.maskOutput) }.toMutableSet()
            val img2img = if (!raw.containsKey("img2img")) null else {
                val parsed = (raw["img2img"] as? Map<*, *>)?.let { Img2Img.parse(it) }
                    ?: throw BundleError("$where: img2img", "malformed")
                if (parsed.encoder !in components) {
                    throw BundleError("$where: img2img.encoder", "${pyRepr(parsed.encoder)} is not a component of the bundle")
                }
                sources += listOf(Img2Img.IMAGE_SOURCE, Img2Img.STEP_SOURCE)
                parsed
            }
            val problems = wiring.problems(sources).toMutableList()
            for ((name, c) in components) {
                val wired = wiring.inputs[name]?.keys ?: emptySet()
                if (name !in wiring.order || wired != c.inputs.map { it.name }.toSet()) {
                    problems.add("wiring.inputs.$name: does not name a source for each input of the component")
                }
            }
            if (problems.isNotEmpty()) {
                val p = problems[0]
                throw BundleError("$where: ${p.substringBefore(':')}", p.substringAfter(": "))
            }
            val noise = NoiseSpec(NoiseSource.ALGORITHM, shape(noiseRaw["shape"], "$where: noise.shape"),
                noiseRaw["output"] as? String ?: "noise.sample")
            val img = raw["image"] as Map<*, *>
            val image = ImageSpec(int(img["height"], "$where: image.height"), int(img["width"], "$where: image.width"),
                int(img["channels"], "$where: image.channels"))
            @Suppress("UNCHECKED_CAST")
            val targets = (raw["targets"] as? Map<String, Any?>) ?: emptyMap()
            return Manifest((raw["schema_version"] as Long).toInt(), raw["name"] as? String ?: "", raw["target"] as String,
                raw["family"] as String, image, noise, tokenizers, components, wiring, files, targets, img2img, views)
        }

        private fun component(name: String, value: Any?, files: Map<String, FileEntry>, where: String): ComponentSpec {
            val c = value as? Map<*, *> ?: throw BundleError("$where.files", "must list files of the files table")
            val listed = c["files"] as? List<*>
            if (listed == null || listed.isEmpty() || listed.any { it !in files }) {
                throw BundleError("$where.files", "must list files of the files table")
            }
            val main = c["file"]
            if (main !in files && listed.none { main is String && (it as String).startsWith("$main/") }) {
                throw BundleError("$where.file", "${pyRepr(main)} is not a checked file or folder of the bundle")
            }
            if (c.containsKey("function") && (c["function"] as? String).isNullOrEmpty()) {
                throw BundleError("$where.function", "must be the name of a program in the file")
            }
            val inputs = tensors(c["inputs"], "$where.inputs")
            val outputs = tensors(c["outputs"], "$where.outputs")
            val tiling = if (c.containsKey("tiling")) tiling(c["tiling"], inputs, outputs, "$where.tiling") else null
            return ComponentSpec(name, main as String, listed.map { it as String }, c["precision"] as? String ?: "",
                inputs, outputs, tiling, c["function"] as? String)
        }

        /** The tile plan, checked as compiler/contract/tiling.py manifest_problem checks it, with its messages. */
        private fun tiling(value: Any?, inputs: List<TensorSpec>, outputs: List<TensorSpec>, where: String): TilePlan {
            val t = value as? Map<*, *> ?: throw BundleError(where, "must be an object")
            if (t["blend"] != TilePlan.BLEND) throw BundleError(where, "blend ${pyRepr(t["blend"])}: runtimes implement '${TilePlan.BLEND}'")
            val latent = sizes(t["latent_shape"])
            val tile = sizes(t["tile"])
            val scale = sizes(listOf(t["scale"]))?.first()
            val overlap = (t["overlap"] as? Long)?.takeIf { it in 0..Int.MAX_VALUE.toLong() }?.toInt()
            if (latent == null || latent.size < 2 || tile == null || tile.size != 2 || scale == null || overlap == null) {
                throw BundleError(where, "needs latent_shape, tile (2 sizes), overlap and scale as positive integers")
            }
            val (th, tw) = tile
            val h = latent[latent.size - 2]
            val w = latent[latent.size - 1]
            if (th > h || tw > w || 2L * overlap > minOf(th, tw)) {
                throw BundleError(where, "tile must fit the latent and overlap at most half a tile")
            }
            val rows = TilePlan.origins(h, th, overlap)
            val cols = TilePlan.origins(w, tw, overlap)
            if (t["rows"] != rows.map { it.toLong() } || t["cols"] != cols.map { it.toLong() }) {
                throw BundleError(where, "rows and cols are not the tile origins of the latent shape, tile and overlap")
            }
            val input = t["input"] as? String
            val spec = inputs.firstOrNull { it.name == input }
            if (spec == null || !spec.shape.contentEquals((latent.dropLast(2) + listOf(th, tw)).toIntArray())) {
                throw BundleError(where, "input ${pyRepr(t["input"])} is not an input of the component of the tile's shape")
            }
            val out = outputs.singleOrNull()?.shape
            if (out == null || out.size < 2 || out[out.size - 2].toLong() != th.toLong() * scale || out[out.size - 1].toLong() != tw.toLong() * scale) {
                throw BundleError(where, "the component must have one output, of the tile's shape times scale")
            }
            val planes = out.copyOfRange(0, out.size - 2).fold(1L) { a, b -> a * b }
            if (planes * h * scale * w * scale > Int.MAX_VALUE) throw BundleError(where, "the whole image is too large")
            return TilePlan(input!!, latent.toIntArray(), th, tw, overlap, scale, rows, cols)
        }

        /** A list of sizes in (0, 2^31), or null. */
        private fun sizes(value: Any?): List<Int>? {
            val list = value as? List<*> ?: return null
            return list.map { d -> (d as? Long)?.takeIf { it in 1..Int.MAX_VALUE.toLong() }?.toInt() ?: return null }
        }

        private fun tensors(value: Any?, where: String): List<TensorSpec> {
            val list = value as? List<*> ?: throw BundleError(where, "must be a list of named tensors")
            return list.map { t ->
                val m = t as? Map<*, *>
                val name = m?.get("name") as? String ?: throw BundleError(where, "must be a list of named tensors")
                val dtype = DType.of(m["dtype"] as? String ?: "") ?: throw BundleError("$where.$name.dtype",
                    "${pyRepr(m["dtype"])} is not one of float32, int64, int32")
                TensorSpec(name, dtype, shape(m["shape"], "$where.$name.shape"))
            }
        }

        private fun tokenizer(value: Any?, files: Map<String, FileEntry>, folders: Set<String>, where: String): TokenizerSpec {
            val t = value as? Map<*, *> ?: throw BundleError(where, "must be an object")
            val type = t["type"]
            val keys = TOKENIZER_FILES[type] ?: throw BundleError("$where.type",
                "${pyRepr(type)}: runtimes implement ${TOKENIZER_FILES.keys.joinToString(", ") { "'$it'" }}")
            for (key in keys) {
                if (t[key] !is String || t[key] !in files) throw BundleError("$where.$key", "${pyRepr(t[key])} is not a checked file of the bundle")
            }
            val folder = t["folder"]
            if (folder !is String || folder !in folders || !(t[keys[0]] as String).startsWith("$folder/")) {
                throw BundleError("$where.folder", "${pyRepr(folder)} is not the folder holding its ${keys[0]}")
            }
            val sentencepiece = type == Tokenizers.SENTENCEPIECE
            // a sentencepiece tokenizer may have no BOS (T5): null there
            val bos = if (sentencepiece && t["bos_token_id"] == null) null else count(t["bos_token_id"], "$where.bos_token_id")
            val maxLength = count(t["max_length"], "$where.max_length")
            val eos = count(t["eos_token_id"], "$where.eos_token_id")
            val pad = count(t["pad_token_id"], "$where.pad_token_id")
            if (sentencepiece && (t["prefix"] !is String || t["lowercase"] !is Boolean || (t["prompt_length"] as? Long ?: -1) < 0)) {
                throw BundleError("$where.prefix", "a sentencepiece tokenizer needs prefix (text), lowercase (bool) and prompt_length")
            }
            val name = t["name"] as? String ?: throw BundleError("$where.name", "missing")
            return TokenizerSpec(name, type as String, folder, t["vocab"] as? String, t["merges"] as? String, maxLength, bos, eos,
                pad, t["output"] as? String ?: "$name.input_ids", t["tokenizer_json"] as? String,
                t["prefix"] as? String ?: "", t["lowercase"] == true, (t["prompt_length"] as? Long)?.toInt() ?: maxLength,
                t["mask_output"] as? String)
        }

        /** A non-negative integer that fits an Int. */
        private fun count(value: Any?, where: String): Int {
            val v = value as? Long
            if (v == null || v < 0 || v > Int.MAX_VALUE) throw BundleError(where, "must be a non-negative integer")
            return v.toInt()
        }

        private fun int(value: Any?, where: String): Int {
            val v = value as? Long ?: throw BundleError(where, "must be an integer")
            if (v < 0 || v > Int.MAX_VALUE) throw BundleError(where, "out of range")
            return v.toInt()
        }

        private fun shape(value: Any?, where: String): IntArray {
            val list = value as? List<*> ?: throw BundleError(where, "must be a list of sizes")
            return IntArray(list.size) { int(list[it], where) }
        }

        /** Python's repr of a JSON value, so messages read the same as the Python loader's. */
        internal fun pyRepr(v: Any?): String = when (v) {
            null -> "None"
            is String -> "'$v'"
            is Boolean -> if (v) "True" else "False"
            else -> v.toString()
        }
    }
}
