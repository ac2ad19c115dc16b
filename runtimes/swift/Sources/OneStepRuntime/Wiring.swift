import Foundation

/// Which value feeds which component input (manifest `wiring`). A source is
/// "<producer>.<output>": a tokenizer's ids ("tokenizer.input_ids"), the seeded noise
/// ("noise.sample") or an earlier component's output ("text_encoder.prompt_embeds").
public struct Wiring {
    public let order: [String]
    /// component -> (input, source) in the manifest's order, which is the order problems are reported in.
    public let inputs: [String: [(input: String, source: String)]]
    public let outputs: [String: [String]]
    public let image: String

    /// What a runtime could not follow, in the Python loader's words and order.
    /// `tokenSources`: what the bundle's tokenizers produce ("tokenizer.input_ids", ...).
    public func problems(_ tokenSources: Set<String>) -> [String] {
        var available: Set<String> = [Wiring.NOISE_SOURCE]
        available.formUnion(tokenSources)
        var found: [String] = []
        for name in order {
            for (input, source) in inputs[name] ?? [] {
                if !available.contains(source) { found.append("wiring.inputs.\(name).\(input): source '\(source)' is not produced before \(name)") }
            }
            for output in outputs[name] ?? [] { available.insert("\(name).\(output)") }
        }
        if !available.contains(image) { found.append("wiring.image: '\(image)' is not produced by any component") }
        return found
    }

    public static let NOISE_SOURCE = "noise.sample"

    /// nil when a key is missing or of the wrong type (the loader's "wiring: malformed").
    public static func parse(_ raw: Json.Object, _ components: [String: ComponentSpec]) -> Wiring? {
        guard let orderRaw = raw["order"] as? [Any?] else { return nil }
        var order: [String] = []
        for item in orderRaw {
            guard let name = item as? String else { return nil }
            order.append(name)
        }
        guard let inputsRaw = raw["inputs"] as? Json.Object else { return nil }
        var inputs: [String: [(input: String, source: String)]] = [:]
        var outputs: [String: [String]] = [:]
        for name in order {
            guard let m = inputsRaw[name] as? Json.Object else { return nil }
            var pairs: [(input: String, source: String)] = []
            for (k, v) in m.entries {
                guard let source = v as? String else { return nil }
                pairs.append((input: k, source: source))
            }
            inputs[name] = pairs
            guard let component = components[name] else { return nil }
            outputs[name] = component.outputs.map { $0.name }
        }
        guard let image = raw["image"] as? String else { return nil }
        return Wiring(order: order, inputs: inputs, outputs: outputs, image: image)
    }
}
