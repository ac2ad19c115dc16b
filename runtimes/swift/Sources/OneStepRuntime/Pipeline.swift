import Foundation

/// prompt + seed -> image for any bundle, by following its manifest: tokenizers and noise
/// produce the first values, components run in `wiring.order`, each input taken from the source
/// the wiring names, and `wiring.image` becomes 8-bit pixels. The same chain as `generate`.
///
/// `reduceMemory` opens each component when its turn comes and closes it right after (Apple's
/// ml-stable-diffusion `reduceMemory`): the peak is the largest component plus activations instead
/// of every component at once, and each call pays the components' load time (in its stage's time).
public final class Pipeline {
    public let bundle: URL
    public let manifest: Manifest
    private let tokenizers: [any Tokenizer]
    private let engine: any Engine
    public let reduceMemory: Bool
    private var sessions: [String: any Session]

    private init(bundle: URL, manifest: Manifest, tokenizers: [any Tokenizer], engine: any Engine, reduceMemory: Bool,
                 sessions: [String: any Session]) {
        self.bundle = bundle
        self.manifest = manifest
        self.tokenizers = tokenizers
        self.engine = engine
        self.reduceMemory = reduceMemory
        self.sessions = sessions
    }

    /// Milliseconds one stage took: "tokenize" (with the noise), each component, "image".
    public struct Stage {
        public let name: String
        public let millis: Double
    }

    /// An image, whether the prompt was cut to the tokenizer's length, and the stages in run order.
    public struct Result {
        public let image: Image
        public let truncated: Bool
        public let stages: [Stage]
    }

    /// `picture` (image-to-image bundles, manifest `img2img`): the image to start from, fitted to the
    /// bundle's size; `strength`: one the bundle ships (nil: its first). Without a picture the
    /// encoder does not run and its output is zeros: the text-to-image step does not read it.
    public func generate(prompt: String, seed: UInt64, picture: Picture? = nil, strength: Double? = nil) throws -> Result {
        let spec = manifest.img2img
        if picture != nil && spec == nil { throw RuntimeError("this bundle has no image-to-image (manifest img2img)") }
        let step = try spec?.row(picture == nil ? nil : strength ?? spec!.strengths[0].strength)
        var stages: [Stage] = []
        var values: [String: Tensor] = [:]
        var truncated = false
        Pipeline.timed(&stages, "tokenize") {
            for (spec, tokenizer) in zip(manifest.tokenizers, tokenizers) {
                let tokens = tokenizer.encode(prompt)
                truncated = truncated || tokens.truncated
                values[spec.output] = Tensor.integer(.int64, shape: [1, spec.maxLength], data: tokens.ids)
                if let mask = spec.maskOutput {
                    values[mask] = Tensor.integer(.int64, shape: [1, spec.maxLength], data: tokens.mask)
                }
            }
            values[manifest.noise.output] = NoiseSource.tensor(seed: seed, shape: manifest.noise.shape)
            if let spec = spec {
                values[Img2Img.STEP_SOURCE] = Tensor.float32(shape: [Img2Img.STEP_SIZE], data: step!)
                if let picture = picture { values[Img2Img.IMAGE_SOURCE] = spec.tensor(picture) }
            }
        }
        // Manifest.parse proved that every component, wired input and source named below exists.
        for name in manifest.wiring.order {
            let component = manifest.components[name]!
            if picture == nil && name == spec?.encoder {
                for o in component.outputs {
                    values["\(name).\(o.name)"] = Tensor.float32(shape: o.shape, data: [Float](repeating: 0, count: o.shape.reduce(1, *)))
                }
                continue
            }
            let plan = component.tiling
            let wired = manifest.wiring.inputs[name]!
            var feeds: [String: Tensor] = [:]
            for spec in component.inputs {
                let source = wired.first(where: { $0.input == spec.name })!.source
                feeds[spec.name] = try Pipeline.conform(values[source]!, plan?.wholeInput(spec) ?? spec,
                                                        "\(name) input \(spec.name) (from \(source))")
            }
            let out = try Pipeline.timed(&stages, name) { () throws -> [String: Tensor] in
                let session = try sessions[name] ?? engine.open(bundle: bundle, component: component, manifest: manifest)
                sessions[name] = session
                defer {
                    if reduceMemory {
                        session.close()
                        sessions[name] = nil
                    }
                }
                guard let plan = plan else { return try session.run(feeds) }
                let output = component.outputs[0].name
                return [output: try plan.run(session, feeds, output: output)]
            }
            for spec in component.outputs {
                guard let t = out[spec.name] else { throw RuntimeError("\(name) returned no output \(spec.name)") }
                values["\(name).\(spec.name)"] = try Pipeline.conform(t, plan?.wholeOutput(spec) ?? spec,
                                                                       "\(name) output \(spec.name)")
            }
        }
        let image = try Pipeline.timed(&stages, "image") { try Png.pixels(values[manifest.wiring.image]!) }
        return Result(image: image, truncated: truncated, stages: stages)
    }

    public func close() {
        for name in manifest.wiring.order { sessions[name]?.close() }
        sessions = [:]
    }

    /// Verifies the whole bundle (BundleVerifier) before opening a tokenizer or a component; opens
    /// every component now unless `reduceMemory`. `size`: one of the sizes a multi-size bundle ships
    /// (Manifest.sizes; default its first), whose programs this pipeline runs.
    public static func open(bundle: URL, engine: any Engine, reduceMemory: Bool = false,
                            size: (width: Int, height: Int)? = nil) throws -> Pipeline {
        let verified = try BundleVerifier.verify(bundle: bundle)
        let manifest = try size.map { try verified.at(height: $0.height, width: $0.width) } ?? verified
        var tokenizers: [any Tokenizer] = []
        for spec in manifest.tokenizers { tokenizers.append(try Tokenizers.load(bundle: bundle, spec: spec)) }
        var sessions: [String: any Session] = [:]
        if !reduceMemory {
            do {
                for name in manifest.wiring.order {
                    sessions[name] = try engine.open(bundle: bundle, component: manifest.components[name]!, manifest: manifest)
                }
            } catch {
                for session in sessions.values { session.close() }
                throw error
            }
        }
        return Pipeline(bundle: bundle, manifest: manifest, tokenizers: tokenizers, engine: engine, reduceMemory: reduceMemory,
                        sessions: sessions)
    }

    /// The tensor in the dtype and shape the manifest declares (token ids become int32 for Core ML-style inputs).
    static func conform(_ t: Tensor, _ spec: TensorSpec, _ what: String) throws -> Tensor {
        if t.shape != spec.shape { throw RuntimeError("\(what): shape \(t.shape) != manifest \(spec.shape)") }
        if t.dtype == spec.dtype { return t }
        if t.dtype != .float32 && spec.dtype != .float32 { return Tensor.integer(spec.dtype, shape: t.shape, data: t.longs!) }
        throw RuntimeError("\(what): dtype \(t.dtype.manifestName) != manifest \(spec.dtype.manifestName)")
    }

    private static func timed<T>(_ stages: inout [Stage], _ name: String, _ block: () throws -> T) rethrows -> T {
        let t0 = ProcessInfo.processInfo.systemUptime
        let out = try block()
        stages.append(Stage(name: name, millis: (ProcessInfo.processInfo.systemUptime - t0) * 1000))
        return out
    }
}
