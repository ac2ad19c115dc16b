package dev.onestep.runtime

import java.io.File
import java.security.MessageDigest
import kotlin.system.exitProcess

/** The pure runtime against runtimes/fixtures (written by runtimes/fixtures/generate.py from the Python reference). */
fun main(args: Array<String>) {
    val fixtures = File(args.getOrElse(0) { "runtimes/fixtures" })
    val t = TestHarness()
    tokenizerTests(t, fixtures)
    sentencePieceTests(t, fixtures)
    noiseTests(t, fixtures)
    imageTests(t, fixtures)
    tilingTests(t, fixtures)
    initImageTests(t, fixtures)
    bundleTests(t, fixtures)
    manifestTests(t, fixtures)
    pipelineTests(t, fixtures)
    jsonTests(t)
    exitProcess(t.finish())
}

@Suppress("UNCHECKED_CAST")
private fun readJson(file: File): Any? = Json.parse(file.readText(Charsets.UTF_8))

@Suppress("UNCHECKED_CAST")
private fun tokenizerTests(t: TestHarness, fixtures: File) {
    val doc = readJson(File(fixtures, "tokens.json")) as Map<String, Any?>
    val vocab = (readJson(File(fixtures, doc["vocab"] as String)) as Map<String, Any?>).mapValues { (it.value as Long).toInt() }
    val merges = ClipTokenizer.readMerges(File(fixtures, doc["merges"] as String).readText())
    val bos = (doc["bos_token_id"] as Long).toInt()
    val eos = (doc["eos_token_id"] as Long).toInt()
    for (case in doc["cases"] as List<Map<String, Any?>>) {
        val maxLength = (case["max_length"] as Long).toInt()
        t.test("tokens ${case["name"]} max_length=$maxLength") {
            val tok = ClipTokenizer(vocab, merges, maxLength, bos, eos, (case["pad_token_id"] as Long).toInt())
            val got = tok.encode(case["prompt"] as String)
            checkEqual((case["ids"] as List<Long>), got.ids.toList(), "ids")
            checkEqual(case["truncated"], got.truncated, "truncated")
        }
    }
}

/** T5 (PixArt's lower-cased prompt) and Gemma (SANA's instruction prefix) from their tokenizer.json, as the manifest entry says. */
@Suppress("UNCHECKED_CAST")
private fun sentencePieceTests(t: TestHarness, fixtures: File) {
    val doc = readJson(File(fixtures, "sentencepiece_tokens.json")) as Map<String, Map<String, Any?>>
    for ((name, fixture) in doc) {
        val e = fixture["entry"] as Map<String, Any?>
        val spec = TokenizerSpec(e["name"] as String, e["type"] as String, "", null, null, (e["max_length"] as Long).toInt(),
            (e["bos_token_id"] as Long?)?.toInt(), (e["eos_token_id"] as Long).toInt(), (e["pad_token_id"] as Long).toInt(),
            e["output"] as String, fixture["tokenizer_json"] as String, e["prefix"] as String, e["lowercase"] as Boolean,
            (e["prompt_length"] as Long).toInt(), e["mask_output"] as String?)
        val tok = SentencePieceTokenizer.load(fixtures, spec)
        for (case in fixture["cases"] as List<Map<String, Any?>>) {
            t.test("sentencepiece $name ${case["name"]}") {
                val got = tok.encode(case["prompt"] as String)
                checkEqual((case["ids"] as List<Long>), got.ids.toList(), "ids")
                checkEqual((case["attention_mask"] as List<Long>), got.mask.toList(), "attention mask")
                checkEqual(case["truncated"], got.truncated, "truncated")
            }
        }
    }
}

@Suppress("UNCHECKED_CAST")
private fun noiseTests(t: TestHarness, fixtures: File) {
    for (case in readJson(File(fixtures, "noise.json")) as List<Map<String, Any?>>) {
        val shape = (case["shape"] as List<Long>).map { it.toInt() }.toIntArray()
        t.test("noise seed ${case["seed"]} shape ${shape.contentToString()}") {
            val seed = NoiseSource.parseSeed(case["seed"] as String) ?: error("seed did not parse")
            val values = NoiseSource.tensor(seed, shape).floats!!
            (case["bits"] as List<Long>?)?.let { bits ->
                checkEqual(bits.map { it.toInt() }, values.map { it.toRawBits() }, "float32 bits")
            }
            checkEqual(case["sha256_f32le"], sha256(littleEndian(values)), "sha256 of float32 bytes")
        }
    }
    t.test("seeds outside [0, 2^64) are refused") {
        checkEqual(ULong.MAX_VALUE, NoiseSource.parseSeed("18446744073709551615"), "2^64 - 1")
        for (bad in listOf("18446744073709551616", "-1", "", "1e3", "0x10", " ")) check(NoiseSource.parseSeed(bad) == null) { "accepted '$bad'" }
    }
}

@Suppress("UNCHECKED_CAST")
private fun imageTests(t: TestHarness, fixtures: File) {
    val doc = readJson(File(fixtures, "image.json")) as Map<String, Any?>
    val img = doc["image"] as Map<String, Any?>
    val shape = (img["shape"] as List<Long>).map { it.toInt() }.toIntArray()
    val floats = (img["bits"] as List<Long>).map { Float.fromBits(it.toInt()) }.toFloatArray()
    val image = Png.pixels(Tensor.float32(shape, floats))
    t.test("8-bit conversion (round half up, NaN, inf, out of range)") {
        checkEqual((doc["pixels_hwc"] as List<Long>).map { it.toInt() }, image.rgb.map { it.toInt() and 0xff }, "pixels")
    }
    t.test("PNG bytes") {
        check(Png.encode(image).contentEquals(File(fixtures, doc["png"] as String).readBytes())) { "PNG differs from ${doc["png"]}" }
    }
    t.test("ARGB pixels") {
        val argb = image.argb()
        checkEqual(image.width * image.height, argb.size, "pixel count")
        checkEqual(0xff000000.toInt() or ((image.rgb[0].toInt() and 0xff) shl 16), argb[0] and 0xffff0000.toInt(), "first pixel")
    }
}

@Suppress("UNCHECKED_CAST")
private fun bundleTests(t: TestHarness, fixtures: File) {
    val root = File(fixtures, "bundles")
    val cases = readJson(File(root, "cases.json")) as Map<String, Map<String, Any?>>
    for ((name, verdict) in cases) {
        t.test("bundle $name") {
            val dir = File(root, name)
            var manifest: Manifest? = null
            val where = try {
                manifest = BundleVerifier.verify(dir)
                null
            } catch (e: BundleError) {
                e.where.replace(dir.path, "BUNDLE")
            }
            if (verdict["ok"] == true) checkEqual(null, where, "refused a valid bundle")
            else checkEqual(verdict["where"], where, "where")
            if (manifest != null) {   // a verified bundle may still hold a hostile tokenizer file
                val tokenizerWhere = try {
                    Tokenizers.load(dir, manifest.tokenizers[0])
                    null
                } catch (e: BundleError) {
                    e.where.replace(dir.path, "BUNDLE")
                }
                checkEqual(verdict["tokenizer_where"], tokenizerWhere, "tokenizer where")
            }
        }
    }
}

@Suppress("UNCHECKED_CAST")
private fun manifestTests(t: TestHarness, fixtures: File) {
    val files = File(fixtures, "manifests").listFiles { f -> f.name.endsWith(".json") }?.sortedBy { it.name } ?: emptyList()
    t.test("manifests of every target and family are present") { check(files.size >= 3) { "only ${files.size} manifests" } }
    for (file in files) {
        t.test("manifest ${file.name}") {
            val raw = Manifest.readRaw(file.readText(), file.path)
            val m = Manifest.parse(raw, file.path)
            val encoder = if (m.img2img != null) listOf("vae_encoder") else emptyList()
            checkEqual(listOf("text_encoder") + encoder + listOf("denoiser", "vae_decoder"), m.wiring.order, "order")
            checkEqual(m.tokenizers.sumOf { if (it.maskOutput != null) 2L else 1L }.toInt(),
                m.components.getValue("text_encoder").inputs.size, "one token input per tokenizer output")
            val runtimeSources = if (m.img2img != null) setOf(Img2Img.IMAGE_SOURCE, Img2Img.STEP_SOURCE) else emptySet()
            check(m.wiring.problems(m.tokenizers.flatMap { listOfNotNull(it.output, it.maskOutput) }.toSet() + runtimeSources).isEmpty()) { "wiring problems" }
            m.img2img?.let { spec ->   // text-to-image and every strength have a step row; others are refused
                checkEqual(0f, spec.row(null)[1], "text-to-image ignores the picture")
                for (s in spec.strengths) checkEqual(s.step.toList(), spec.row(s.strength).toList(), "row of ${s.strength}")
                check(runCatching { spec.row(0.3) }.isFailure) { "a strength the bundle does not ship was accepted" }
            }
            checkEqual(m.noise.shape.toList(), m.components.getValue("denoiser").inputs.first { it.name == "noise" }.shape.toList(), "noise shape")
            for (size in m.sizes) {   // each size: its own noise shape and programs, the same wiring
                val at = m.at(size.height, size.width)
                checkEqual(at.noise.shape.toList(), at.components.getValue("denoiser").inputs.first { it.name == "noise" }.shape.toList(), "noise shape at ${size.width}x${size.height}")
                val decoder = at.components.getValue("vae_decoder")
                if (decoder.tiling == null) checkEqual(listOf(size.height, size.width), decoder.outputs[0].shape.takeLast(2), "image of ${size.width}x${size.height}")
                checkEqual(m.wiring.order, at.wiring.order, "wiring")
            }
            if (m.sizes.size > 1) {
                val programs = m.sizes.map { m.at(it.height, it.width).components.getValue("denoiser").let { c -> c.file to c.function } }
                check(programs.toSet().size == m.sizes.size) { "one denoiser program (file, function) per size" }
                val refused = runCatching { m.at(8, 8) }.exceptionOrNull()
                check(refused is IllegalArgumentException && "it ships" in refused.message!!) { "a size the bundle does not ship was accepted" }
            }
            if (m.target == "coreml") check(m.computeUnits != null) { "Core ML bundle without compute units" }
            if (m.target == "qnn") {   // each SoC's own HTP context; a SoC the bundle was not compiled for is refused
                val socs = ((m.targets["qnn"] as Map<*, *>)["soc_models"] as Map<*, *>).keys.map { it as String }
                check(socs.isNotEmpty()) { "no SoC" }
                for (soc in socs) for (name in m.wiring.order) checkEqual("$name.$soc.onnx", m.program(name, soc), "program")
                val refused = try { m.program("denoiser", "SM0000"); null } catch (e: BundleError) { e }
                check(refused != null && "compiled for" in refused.reason) { "an unknown SoC was accepted" }
            } else {
                checkEqual(m.components.getValue("denoiser").file, m.program("denoiser", null), "program")
            }
        }
    }
}

/** The pipeline follows the wiring: a recording engine sees the tokens, noise and upstream outputs the manifest names. */
private fun pipelineTests(t: TestHarness, fixtures: File) {
    val bundle = File(fixtures, "bundles/valid")
    t.test("pipeline feeds each input from its wired source") {
        val seen = HashMap<String, Map<String, Tensor>>()
        val engine = object : Engine {
            override fun open(bundle: File, component: ComponentSpec, manifest: Manifest) = object : Session {
                override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
                    seen[component.name] = inputs
                    return component.outputs.associate { o ->
                        val n = o.shape.fold(1) { a, b -> a * b }
                        o.name to Tensor.float32(o.shape, FloatArray(n) { (it % 7) / 6f })
                    }
                }
            }
        }
        val pipeline = Pipeline.open(bundle, engine)
        val result = pipeline.generate("a red circle", 7uL)
        val m = pipeline.manifest
        val ids = ClipTokenizer.load(bundle, m.tokenizers[0]).encode("a red circle").ids
        checkEqual(ids.toList(), seen.getValue("text_encoder").getValue("input_ids").longs!!.toList(), "token ids")
        checkEqual(NoiseSource.gaussian(7uL, 256).toList(), seen.getValue("denoiser").getValue("noise").floats!!.toList(), "noise")
        checkEqual(FloatArray(16 * 32) { (it % 7) / 6f }.toList(), seen.getValue("denoiser").getValue("prompt_embeds").floats!!.toList(), "embeds")
        checkEqual(16, result.image.width, "width")
        checkEqual(listOf("tokenize", "text_encoder", "denoiser", "vae_decoder", "image"), result.stages.map { it.name }, "stages")
    }
    t.test("reduceMemory holds one component at a time and makes the same image") {
        var live = 0
        var peak = 0
        var opened = 0
        val engine = object : Engine {
            override fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session {
                opened++
                peak = maxOf(peak, ++live)
                return object : Session {
                    override fun run(inputs: Map<String, Tensor>) = component.outputs.associate { o ->
                        o.name to Tensor.float32(o.shape, FloatArray(o.shape.fold(1) { a, b -> a * b }) { (it % 7) / 6f })
                    }
                    override fun close() { live-- }
                }
            }
        }
        val lean = Pipeline.open(bundle, engine, reduceMemory = true)
        checkEqual(0, opened, "components opened before generate")
        val image = lean.generate("a red circle", 7uL).image
        lean.generate("a red circle", 8uL)
        checkEqual(6, opened, "components opened by two calls")
        checkEqual(1, peak, "components open at once")
        checkEqual(0, live, "components left open")
        Pipeline.open(bundle, engine).use { eager ->
            checkEqual(3, peak, "components open at once without reduceMemory")
            check(eager.generate("a red circle", 7uL).image.rgb.contentEquals(image.rgb)) { "another image" }
        }
        checkEqual(0, live, "components left open after close")
    }
    t.test("token ids become int32 where the manifest declares int32") {
        val spec = TensorSpec("input_ids", DType.INT32, intArrayOf(1, 2))
        val out = Pipeline.conform(Tensor.integer(DType.INT64, intArrayOf(1, 2), longArrayOf(5, 6)), spec, "x")
        checkEqual(DType.INT32, out.dtype, "dtype")
    }
    t.test("a refused bundle opens no component") {
        var opened = 0
        val engine = object : Engine {
            override fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session { opened++; error("unreachable") }
        }
        try {
            Pipeline.open(File(fixtures, "bundles/flipped_byte_component"), engine)
            error("opened a corrupt bundle")
        } catch (e: BundleError) {
            checkEqual(0, opened, "components opened")
        }
    }
}

private fun jsonTests(t: TestHarness) {
    t.test("JSON: strict") {
        for (bad in listOf("{\"a\":1,\"a\":2}", "[1,]", "01", "{\"a\":1} x", "\"\\x\"", "NaN", "{'a':1}", "\"\\u+041\"")) {
            check(runCatching { Json.parse(bad) }.isFailure) { "accepted $bad" }
        }
        checkEqual(listOf(1L, -2.5, "é\n", true, null, 9.3e20), Json.parse("[1, -2.5, \"\\u00e9\\n\", true, null, 9.3e20]"), "values")
        checkEqual(18446744073709551615.0, Json.parse("18446744073709551615"), "integers past Long become Double")
    }
    t.test("JSON: nesting and size bounded") {
        checkEqual(1, (Json.parse("[".repeat(Json.MAX_DEPTH) + "]".repeat(Json.MAX_DEPTH)) as List<*>).size, "at the limit")
        for (deep in listOf(Json.MAX_DEPTH + 1, 100_000)) {
            val e = runCatching { Json.parse("[".repeat(deep) + "]".repeat(deep)) }.exceptionOrNull()
            check(e is Json.Error && "nested deeper than ${Json.MAX_DEPTH} levels" in e.message!!) { "depth $deep: $e" }
        }
        val file = File.createTempFile("bounded", ".json").apply { deleteOnExit(); writeText("{\"a\": [1, 2, 3]}") }
        checkEqual(mapOf("a" to listOf(1L, 2L, 3L)), Json.readFile(file, file.length()), "within the size limit")
        val e = runCatching { Json.readFile(file, file.length() - 1) }.exceptionOrNull()
        check(e is BundleError && e.where == file.path) { "over the size limit: $e" }
    }
}

/** Pictures by the fixture's rule, fitted and made tensors as init_image.json says Python does. */
@Suppress("UNCHECKED_CAST")
private fun initImageTests(t: TestHarness, fixtures: File) {
    val doc = readJson(File(fixtures, "init_image.json")) as Map<String, Any?>
    for (case in doc["cases"] as List<Map<String, Any?>>) {
        val (h, w) = (case["source"] as List<Long>).map { it.toInt() }
        val (oh, ow) = (case["image"] as List<Long>).map { it.toInt() }
        t.test("init image ${h}x$w fitted to ${oh}x$ow") {
            val rgb = ByteArray(h * w * 3) { i ->
                val (y, x, c) = Triple(i / 3 / w, i / 3 % w, i % 3)
                ((31 * y + 17 * x + 101 * c + (x * y) % 7) % 256).toByte()
            }
            val fitted = Img2Img.fit(Picture(w, h, rgb), oh, ow)
            checkEqual((case["first_pixels"] as List<Long>).map { it.toInt() }, fitted.take(24).map { it.toInt() and 0xFF }, "first pixels")
            checkEqual(case["sha256_rgb"], sha256(fitted), "sha256 of the pixels")
            val tensor = Img2Img.toTensor(fitted, oh, ow)
            checkEqual(case["tensor_sha256_f32le"], sha256(littleEndian(tensor.floats!!)), "sha256 of the tensor")
        }
    }
}

/** Tile origins and the blend against tiling.json, with the fixture's stand-in decoder as the session. */
@Suppress("UNCHECKED_CAST")
private fun tilingTests(t: TestHarness, fixtures: File) {
    val doc = readJson(File(fixtures, "tiling.json")) as Map<String, Any?>
    for (case in doc["origins"] as List<Map<String, Any?>>) {
        val (length, tile, overlap) = listOf("length", "tile", "overlap").map { (case[it] as Long).toInt() }
        t.test("tile origins length=$length tile=$tile overlap=$overlap") {
            checkEqual((case["origins"] as List<Long>).map { it.toInt() }, TilePlan.origins(length, tile, overlap), "origins")
        }
    }
    t.test("tiles blend into the fixture's image") {
        val p = doc["plan"] as Map<String, Any?>
        fun ints(key: String) = (p[key] as List<Long>).map { it.toInt() }
        val tile = ints("tile")
        val plan = TilePlan(p["input"] as String, ints("latent_shape").toIntArray(), tile[0], tile[1],
            (p["overlap"] as Long).toInt(), (p["scale"] as Long).toInt(), ints("rows"), ints("cols"))
        var calls = 0
        val decoder = object : Session {
            override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
                val x = inputs.getValue("latents")
                val (h, w) = x.shape[2] to x.shape[3]
                val k = calls++.toFloat() / 8f
                val out = FloatArray(3 * 4 * h * w) { i ->
                    val c = i / (4 * h * w)
                    val y = i / (2 * w) % (2 * h)
                    val xx = i % (2 * w)
                    x.floats!![(c * h + y / 2) * w + xx / 2] + k
                }
                return mapOf("image" to Tensor.float32(intArrayOf(1, 3, 2 * h, 2 * w), out))
            }
        }
        val shape = plan.latentShape
        val latents = FloatArray(shape.fold(1) { a, b -> a * b }) { (it % 17).toFloat() / 8f - 1f }
        val image = plan.run(decoder, mapOf("latents" to Tensor.float32(shape, latents)), "image")
        val expected = doc["image"] as Map<String, Any?>
        checkEqual((expected["shape"] as List<Long>).map { it.toInt() }, image.shape.toList(), "shape")
        checkEqual((expected["first_bits"] as List<Long>).map { it.toInt() }, image.floats!!.take(16).map { it.toRawBits() }, "first bits")
        checkEqual(expected["sha256_f32le"], sha256(littleEndian(image.floats!!)), "sha256 of float32 bytes")
        checkEqual(plan.rows.size * plan.cols.size, calls, "one decoder call per tile")
    }
}

private fun littleEndian(values: FloatArray): ByteArray {
    val buf = java.nio.ByteBuffer.allocate(values.size * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN)
    values.forEach { buf.putFloat(it) }
    return buf.array()
}

private fun sha256(bytes: ByteArray) = MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it.toInt() and 0xff) }
