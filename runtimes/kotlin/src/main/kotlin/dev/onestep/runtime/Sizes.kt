package dev.onestep.runtime

/**
 * Multi-size bundles (manifest `sizes`, compiler/contract/sizes.py): the first entry is the default
 * size the rest of the manifest describes; each names the components whose program or tile plan
 * depends on the size. `atRaw` is the manifest at one size, which Manifest.parse checks and the
 * Pipeline runs as a one-size bundle.
 */
object Sizes {
    /** A size as `generate --size` and the runtimes spell it: width x height. */
    fun spell(height: Int, width: Int) = "${width}x$height"

    /** (height, width) of every size the raw manifest lists (structureProblem checked first). */
    fun of(raw: Map<String, Any?>): List<Pair<Int, Int>> =
        (raw["sizes"] as List<*>).map { s -> (s as Map<*, *>).let { (it["height"] as Long).toInt() to (it["width"] as Long).toInt() } }

    /** The manifest at one of its listed sizes: that size's image, noise shape, programs and tile plans, without `sizes`. */
    fun atRaw(raw: Map<String, Any?>, height: Int, width: Int): Map<String, Any?> {
        val entry = (raw["sizes"] as List<*>).map { it as Map<*, *> }
            .first { it["height"] == height.toLong() && it["width"] == width.toLong() }
        val out = LinkedHashMap(raw)
        out.remove("sizes")
        out["image"] = LinkedHashMap(raw["image"] as Map<*, *>).also { it["height"] = height.toLong(); it["width"] = width.toLong() }
        out["noise"] = LinkedHashMap(raw["noise"] as Map<*, *>).also { it["shape"] = entry["noise_shape"] }
        val changed = entry["components"] as Map<*, *>
        out["components"] = (raw["components"] as Map<*, *>).entries.associate { (name, c) ->
            name to LinkedHashMap(c as Map<*, *>).also { merged -> (changed[name] as? Map<*, *>)?.let { merged.putAll(it) } }
        }
        (raw["img2img"] as? Map<*, *>)?.let { block ->
            out["img2img"] = LinkedHashMap(block).also { b ->
                b["image"] = LinkedHashMap(block["image"] as Map<*, *>).also { it["height"] = height.toLong(); it["width"] = width.toLong() }
            }
        }
        return out
    }

    /** (key, problem) of a malformed `sizes` list, as the Python loader words it; null when well formed. */
    fun structureProblem(raw: Map<String, Any?>): Pair<String, String>? {
        val sizes = raw["sizes"] as? List<*>
        if (sizes == null || sizes.size < 2) return "sizes" to "must list at least two sizes (a one-size bundle has no sizes)"
        val seen = HashSet<Pair<Long, Long>>()
        val components = raw["components"] as Map<*, *>
        for ((i, value) in sizes.withIndex()) {
            val key = "sizes[$i]"
            val s = value as? Map<*, *>
            val h = s?.get("height") as? Long
            val w = s?.get("width") as? Long
            if (s == null || h == null || w == null || h !in 1..65536L || w !in 1..65536L) {
                return key to "needs height and width as positive integers"
            }
            if (!seen.add(h to w)) return key to "${w}x$h is listed twice"
            if (s["noise_shape"] !is List<*> || s["components"] !is Map<*, *>) {
                return key to "needs noise_shape (a list) and components (an object)"
            }
            for ((name, c) in s["components"] as Map<*, *>) {
                val top = components[name] as? Map<*, *>
                if (top == null || c !is Map<*, *>) return "$key.components.$name" to "is not a component of the bundle"
                val listed = (top["files"] as? List<*>) ?: emptyList<Any?>()
                val file = c["file"]
                if (file !in listed && listed.none { file is String && it is String && it.startsWith("$file/") }) {
                    return "$key.components.$name.file" to "${Manifest.pyRepr(file)} is not a file (or folder) of the component"
                }
            }
        }
        val image = raw["image"] as Map<*, *>
        val first = sizes[0] as Map<*, *>
        if (first["height"] != image["height"] || first["width"] != image["width"] ||
            first["noise_shape"] != (raw["noise"] as Map<*, *>)["shape"]) {
            return "sizes[0]" to "is not the default size (image and noise.shape)"
        }
        return null
    }
}
