package dev.onestep.runtime

/**
 * Which value feeds which component input (manifest `wiring`). A source is
 * "<producer>.<output>": a tokenizer's ids ("tokenizer.input_ids"), the seeded noise
 * ("noise.sample") or an earlier component's output ("text_encoder.prompt_embeds").
 */
class Wiring(
    val order: List<String>,
    val inputs: Map<String, Map<String, String>>,
    val outputs: Map<String, List<String>>,
    val image: String,
) {
    /** What a runtime could not follow, in the Python loader's words and order. `tokenSources`: what the
     *  runtime produces before any component runs besides the noise (tokenizers' ids and masks; an
     *  img2img bundle's picture and step row). */
    fun problems(tokenSources: Set<String>): List<String> {
        val available = mutableSetOf(NOISE_SOURCE)
        available.addAll(tokenSources)
        val found = mutableListOf<String>()
        for (name in order) {
            for ((input, source) in inputs[name] ?: emptyMap()) {
                if (source !in available) found.add("wiring.inputs.$name.$input: source '$source' is not produced before $name")
            }
            outputs[name]?.forEach { available.add("$name.$it") }
        }
        if (image !in available) found.add("wiring.image: '$image' is not produced by any component")
        return found
    }

    companion object {
        const val NOISE_SOURCE = "noise.sample"

        /** null when a key is missing or of the wrong type (the loader's "wiring: malformed"). */
        fun parse(raw: Map<*, *>, components: Map<String, ComponentSpec>): Wiring? {
            val order = (raw["order"] as? List<*>)?.map { it as? String ?: return null } ?: return null
            val inputsRaw = raw["inputs"] as? Map<*, *> ?: return null
            val inputs = LinkedHashMap<String, Map<String, String>>()
            val outputs = LinkedHashMap<String, List<String>>()
            for (name in order) {
                val m = inputsRaw[name] as? Map<*, *> ?: return null
                inputs[name] = m.entries.associate { (k, v) -> (k as String) to (v as? String ?: return null) }
                outputs[name] = components[name]?.outputs?.map { it.name } ?: return null
            }
            val image = raw["image"] as? String ?: return null
            return Wiring(order, inputs, outputs, image)
        }
    }
}
