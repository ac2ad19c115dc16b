import Foundation

/// One tensor at a component boundary.
public struct TensorSpec {
    public let name: String
    public let dtype: DType
    public let shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// A compiled component: its program file (or folder, for Core ML packages), its I/O, and its tile plan when it decodes tile by tile.
public struct ComponentSpec {
    public let name: String
    public let file: String
    public let files: [String]
    public let precision: String
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]
    public var tiling: TilePlan? = nil
    /// The program in `file` to run when the file holds several (a multi-size Core ML package's function).
    public var function: String? = nil
}

/// A tokenizer: its type (`clip-bpe`: vocab + merges; `sentencepiece`: tokenizer.json, with the
/// family's prefix, lower-casing and prompt length), how long, which special ids, and the sources
/// it produces (ids, and the padding mask where the family reads one).
public struct TokenizerSpec {
    public let name: String
    public let type: String
    public let folder: String
    public let vocab: String?
    public let merges: String?
    public let maxLength: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int
    public let padTokenId: Int
    public let output: String
    public var tokenizerJson: String? = nil
    public var prefix: String = ""
    public var lowercase: Bool = false
    public var promptLength: Int? = nil
    public var maskOutput: String? = nil
}

public struct NoiseSpec {
    public let algorithm: String
    public let shape: [Int]
    public let output: String
}

public struct ImageSpec {
    public let height: Int
    public let width: Int
    public let channels: Int
}

public struct FileEntry {
    public let sha256: String
    public let size: Int64
}

/// manifest.json, schema 2 (runtimes/README.md). `parse` checks what a runtime relies on and
/// reports the first problem the way the Python loader does; file contents are checked by
/// BundleVerifier, which calls these steps in the loader's order.
///
/// Parameters named `where` in Kotlin are `where location` here: `where` is a Swift keyword.
public struct Manifest {
    public let schemaVersion: Int
    public let name: String
    public let target: String
    public let family: String
    public let image: ImageSpec
    public let noise: NoiseSpec
    public let tokenizers: [TokenizerSpec]
    public let components: [String: ComponentSpec]
    public let wiring: Wiring
    public let files: [String: FileEntry]
    public let targets: Json.Object
    public var img2img: Img2Img? = nil
    /// The manifest at each size of a multi-size bundle (manifest `sizes`), the default first; empty for one size.
    private var views: [Manifest] = []

    /// Every size the bundle ships, the default first.
    public var sizes: [ImageSpec] { views.isEmpty ? [image] : views.map { $0.image } }

    /// The manifest at one of the bundle's sizes: its image, noise shape, programs and tile plans
    /// (the Pipeline runs it as a one-size bundle); a size it does not ship is refused, naming those it does.
    public func at(height: Int, width: Int) throws -> Manifest {
        if views.isEmpty && image.height == height && image.width == width { return self }
        guard let view = views.first(where: { $0.image.height == height && $0.image.width == width }) else {
            throw RuntimeError("\(Sizes.spell(height, width)) is not a size of this bundle (it ships " +
                               sizes.map { Sizes.spell($0.height, $0.width) }.joined(separator: ", ") + ")")
        }
        return view
    }

    /// Core ML compute units the compiler chose ("all", "cpu_and_ne", ...), when the bundle has them.
    public var computeUnits: String? { (targets[target] as? Json.Object)?["compute_units"] as? String }

    /// The file `component` loads on a device whose SoC is `soc`: its `file`, or in a QNN bundle the
    /// HTP context compiled for that SoC (`targets.qnn.soc_models.<soc>.programs`); a SoC the bundle
    /// was not compiled for is a BundleError naming the ones it was.
    public func program(_ component: String, soc: String?) throws -> String {
        guard target == "qnn", let socs = (targets["qnn"] as? Json.Object)?["soc_models"] as? Json.Object else {
            return components[component]!.file
        }
        guard let programs = (socs[soc ?? ""] as? Json.Object)?["programs"] as? Json.Object else {
            throw BundleError("manifest.json: targets.qnn.soc_models",
                              "no program for SoC \(soc ?? "(unknown)"); compiled for \(socs.keys.joined(separator: ", "))")
        }
        guard let file = programs[component] as? String, components[component]!.files.contains(file) else {
            throw BundleError("manifest.json: targets.qnn.soc_models.\(soc!).programs.\(component)", "not a file of the component")
        }
        return file
    }

    public static let SCHEMA_VERSION = 2
    /// tokenizer type -> the bundle files its manifest entry names (the first: in the tokenizer's folder)
    private static let TOKENIZER_FILES: [(type: String, keys: [String])] = [
        (type: Tokenizers.CLIP, keys: ["vocab", "merges"]), (type: Tokenizers.SENTENCEPIECE, keys: ["tokenizer_json"])]
    private static let REQUIRED: [(key: String, kind: String)] = [
        ("schema_version", "int"), ("target", "str"), ("family", "str"), ("components", "dict"),
        ("files", "dict"), ("tokenizers", "list"), ("noise", "dict"), ("wiring", "dict"),
        ("sampler", "dict"), ("image", "dict"),
    ]

    /// JSON, an object, and the schema this runtime reads.
    public static func readRaw(_ text: String, where location: String) throws -> Json.Object {
        let value: Any?
        do {
            value = try Json.parse(text)
        } catch let e as Json.Error {
            throw BundleError(location, "not valid JSON (\(e.message))")
        }
        guard let raw = value as? Json.Object else { throw BundleError(location, "manifest must be a JSON object") }
        let version = raw["schema_version"]
        if (version as? Int64) != Int64(SCHEMA_VERSION) {
            throw BundleError("\(location): schema_version", "is \(pyRepr(version)), this loader reads \(SCHEMA_VERSION): " +
                "the bundle was written by another compiler version; compile it again")
        }
        return raw
    }

    public static func requireKeys(_ raw: Json.Object, where location: String) throws {
        for (key, kind) in REQUIRED {
            let v = raw[key]
            let ok: Bool
            switch kind {
            case "int": ok = v is Int64
            case "str": ok = v is String
            case "dict": ok = v is Json.Object
            default: ok = v is [Any?]
            }
            if !ok { throw BundleError("\(location): \(key)", "missing or not a \(kind) (schema invalid)") }
        }
    }

    public static func fileTable(_ raw: Json.Object, where location: String) throws -> [String: FileEntry] {
        var table: [String: FileEntry] = [:]
        for (k, v) in (raw["files"] as! Json.Object).entries {
            let e = v as? Json.Object
            guard let sha = e?["sha256"] as? String, let size = e?["size"] as? Int64 else {
                throw BundleError("\(location): files.\(k)", "needs sha256 and size")
            }
            table[k] = FileEntry(sha256: sha, size: size)
        }
        return table
    }

    /// The typed manifest, after checking every path it names is a file of the table and the wiring can be followed;
    /// a multi-size manifest must be all that at each of its sizes.
    public static func parse(_ raw: Json.Object, where location: String) throws -> Manifest {
        var top = try parseOne(raw, where: location)
        if !raw.containsKey("sizes") { return top }
        if let (key, problem) = Sizes.structureProblem(raw) { throw BundleError("\(location): \(key)", problem) }
        top.views = try Sizes.of(raw).enumerated().map { i, size in
            try parseOne(Sizes.atRaw(raw, size.height, size.width), where: "\(location): sizes[\(i)]")
        }
        return top
    }

    private static func parseOne(_ raw: Json.Object, where location: String) throws -> Manifest {
        try requireKeys(raw, where: location)
        let files = try fileTable(raw, where: location)
        var folders = Set<String>()
        for path in files.keys {
            if let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) { folders.insert(String(decoding: path.utf8[..<slash], as: UTF8.self)) }
        }
        var components: [String: ComponentSpec] = [:]
        let componentsRaw = raw["components"] as! Json.Object
        for name in componentsRaw.keys.sorted() {
            components[name] = try component(name, componentsRaw[name], files, where: "\(location): components.\(name)")
        }
        var tokenizers: [TokenizerSpec] = []
        for (i, t) in (raw["tokenizers"] as! [Any?]).enumerated() {
            tokenizers.append(try tokenizer(t, files, folders, where: "\(location): tokenizers[\(i)]"))
        }
        let noiseRaw = raw["noise"] as! Json.Object
        if (noiseRaw["algorithm"] as? String) != NoiseSource.ALGORITHM {
            throw BundleError("\(location): noise.algorithm", "\(pyRepr(noiseRaw["algorithm"])): runtimes implement '\(NoiseSource.ALGORITHM)'")
        }
        guard let wiring = Wiring.parse(raw["wiring"] as! Json.Object, components) else {
            throw BundleError("\(location): wiring", "malformed")
        }
        var sources = Set<String>()
        for t in tokenizers {
            sources.insert(t.output)
            if let mask = t.maskOutput { sources.insert(mask) }
        }
        var img2img: Img2Img? = nil
        if raw.keys.contains("img2img") {
            guard let block = raw["img2img"] as? Json.Object, let parsed = Img2Img.parse(block) else {
                throw BundleError("\(location): img2img", "malformed")
            }
            if components[parsed.encoder] == nil {
                throw BundleError("\(location): img2img.encoder", "\(pyRepr(parsed.encoder)) is not a component of the bundle")
            }
            sources.formUnion([Img2Img.IMAGE_SOURCE, Img2Img.STEP_SOURCE])
            img2img = parsed
        }
        var problems = wiring.problems(sources)
        for name in components.keys.sorted() {
            let wired = Set((wiring.inputs[name] ?? []).map { $0.input })
            if !wiring.order.contains(name) || wired != Set(components[name]!.inputs.map { $0.name }) {
                problems.append("wiring.inputs.\(name): does not name a source for each input of the component")
            }
        }
        if let p = problems.first {
            let head = p.range(of: ":").map { String(p[..<$0.lowerBound]) } ?? p
            let tail = p.range(of: ": ").map { String(p[$0.upperBound...]) } ?? p
            throw BundleError("\(location): \(head)", tail)
        }
        let noiseShape = try shape(noiseRaw["shape"], where: "\(location): noise.shape")
        let noise = NoiseSpec(algorithm: NoiseSource.ALGORITHM, shape: noiseShape,
                              output: noiseRaw["output"] as? String ?? "noise.sample")
        let img = raw["image"] as! Json.Object
        let height = try int(img["height"], where: "\(location): image.height")
        let width = try int(img["width"], where: "\(location): image.width")
        let channels = try int(img["channels"], where: "\(location): image.channels")
        let image = ImageSpec(height: height, width: width, channels: channels)
        let targets = raw["targets"] as? Json.Object ?? Json.Object()
        return Manifest(schemaVersion: Int(raw["schema_version"] as! Int64), name: raw["name"] as? String ?? "",
                        target: raw["target"] as! String, family: raw["family"] as! String, image: image, noise: noise,
                        tokenizers: tokenizers, components: components, wiring: wiring, files: files, targets: targets,
                        img2img: img2img)
    }

    private static func component(_ name: String, _ value: Any?, _ files: [String: FileEntry], where location: String) throws -> ComponentSpec {
        guard let c = value as? Json.Object else { throw BundleError("\(location).files", "must list files of the files table") }
        guard let listed = c["files"] as? [Any?], !listed.isEmpty, listed.allSatisfy({ isFile($0, of: files) }) else {
            throw BundleError("\(location).files", "must list files of the files table")
        }
        let main = c["file"]
        let isFolder = listed.contains { item in
            guard let m = main as? String, let f = item as? String else { return false }
            return f.utf8.starts(with: "\(m)/".utf8)
        }
        if !isFile(main, of: files) && !isFolder {
            throw BundleError("\(location).file", "\(pyRepr(main)) is not a checked file or folder of the bundle")
        }
        if c.containsKey("function") && ((c["function"] as? String) ?? "").isEmpty {
            throw BundleError("\(location).function", "must be the name of a program in the file")
        }
        let inputs = try tensors(c["inputs"], where: "\(location).inputs")
        let outputs = try tensors(c["outputs"], where: "\(location).outputs")
        let tiling = c.containsKey("tiling") ? try self.tiling(c["tiling"], inputs, outputs, where: "\(location).tiling") : nil
        var spec = ComponentSpec(name: name, file: main as! String, files: listed.map { $0 as! String },
                                 precision: c["precision"] as? String ?? "", inputs: inputs, outputs: outputs, tiling: tiling)
        spec.function = c["function"] as? String
        return spec
    }

    /// The tile plan, checked as compiler/contract/tiling.py manifest_problem checks it, with its messages.
    private static func tiling(_ value: Any?, _ inputs: [TensorSpec], _ outputs: [TensorSpec], where location: String) throws -> TilePlan {
        guard let t = value as? Json.Object else { throw BundleError(location, "must be an object") }
        if (t["blend"] as? String) != TilePlan.BLEND {
            throw BundleError(location, "blend \(pyRepr(t["blend"])): runtimes implement '\(TilePlan.BLEND)'")
        }
        let overlap = (t["overlap"] as? Int64).flatMap { $0 >= 0 && $0 <= Int64(Int32.max) ? Int($0) : nil }
        guard let latent = sizes(t["latent_shape"]), latent.count >= 2, let tile = sizes(t["tile"]), tile.count == 2,
              let scale = sizes([t["scale"]])?.first, let overlap = overlap else {
            throw BundleError(location, "needs latent_shape, tile (2 sizes), overlap and scale as positive integers")
        }
        let th = tile[0], tw = tile[1]
        let h = latent[latent.count - 2], w = latent[latent.count - 1]
        if th > h || tw > w || 2 * overlap > min(th, tw) {
            throw BundleError(location, "tile must fit the latent and overlap at most half a tile")
        }
        let rows = TilePlan.origins(h, th, overlap), cols = TilePlan.origins(w, tw, overlap)
        guard sameInts(t["rows"], rows), sameInts(t["cols"], cols) else {
            throw BundleError(location, "rows and cols are not the tile origins of the latent shape, tile and overlap")
        }
        let input = t["input"] as? String
        guard let spec = inputs.first(where: { $0.name == input }), spec.shape == Array(latent.dropLast(2)) + [th, tw] else {
            throw BundleError(location, "input \(pyRepr(t["input"])) is not an input of the component of the tile's shape")
        }
        guard outputs.count == 1, outputs[0].shape.count >= 2, Array(outputs[0].shape.suffix(2)) == [th * scale, tw * scale] else {
            throw BundleError(location, "the component must have one output, of the tile's shape times scale")
        }
        let planes = outputs[0].shape.dropLast(2).reduce(Int64(1)) { $0 * Int64($1) }
        if planes * Int64(h * scale) * Int64(w * scale) > Int64(Int32.max) { throw BundleError(location, "the whole image is too large") }
        return TilePlan(input: spec.name, latentShape: latent, tileHeight: th, tileWidth: tw, overlap: overlap, scale: scale,
                        rows: rows, cols: cols)
    }

    /// Kotlin's `value == list.map { it.toLong() }`: a JSON list holding exactly these integers.
    private static func sameInts(_ value: Any?, _ expected: [Int]) -> Bool {
        guard let list = value as? [Any?], list.count == expected.count else { return false }
        return zip(list, expected).allSatisfy { ($0.0 as? Int64) == Int64($0.1) }
    }

    /// A list of sizes in (0, 2^31), or nil.
    private static func sizes(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any?] else { return nil }
        var out: [Int] = []
        for d in list {
            guard let v = d as? Int64, v >= 1, v <= Int64(Int32.max) else { return nil }
            out.append(Int(v))
        }
        return out
    }

    private static func tensors(_ value: Any?, where location: String) throws -> [TensorSpec] {
        guard let list = value as? [Any?] else { throw BundleError(location, "must be a list of named tensors") }
        var out: [TensorSpec] = []
        for t in list {
            let m = t as? Json.Object
            guard let name = m?["name"] as? String else { throw BundleError(location, "must be a list of named tensors") }
            guard let dtype = DType.of(m?["dtype"] as? String ?? "") else {
                throw BundleError("\(location).\(name).dtype", "\(pyRepr(m?["dtype"])) is not one of float32, int64, int32")
            }
            let dims = try shape(m?["shape"], where: "\(location).\(name).shape")
            out.append(TensorSpec(name: name, dtype: dtype, shape: dims))
        }
        return out
    }

    private static func tokenizer(_ value: Any?, _ files: [String: FileEntry], _ folders: Set<String>, where location: String) throws -> TokenizerSpec {
        guard let t = value as? Json.Object else { throw BundleError(location, "must be an object") }
        let type = t["type"] as? String
        guard let keys = TOKENIZER_FILES.first(where: { $0.type == type })?.keys else {
            let known = TOKENIZER_FILES.map { "'\($0.type)'" }.joined(separator: ", ")
            throw BundleError("\(location).type", "\(pyRepr(t["type"])): runtimes implement \(known)")
        }
        for key in keys {
            if !isFile(t[key], of: files) { throw BundleError("\(location).\(key)", "\(pyRepr(t[key])) is not a checked file of the bundle") }
        }
        let folder = t["folder"]
        guard let f = folder as? String, folders.contains(f), (t[keys[0]] as! String).utf8.starts(with: "\(f)/".utf8) else {
            throw BundleError("\(location).folder", "\(pyRepr(folder)) is not the folder holding its \(keys[0])")
        }
        let sentencepiece = type == Tokenizers.SENTENCEPIECE
        // a sentencepiece tokenizer may have no BOS (T5): null there
        let bos = sentencepiece && t["bos_token_id"] == nil ? nil : try count(t["bos_token_id"], where: "\(location).bos_token_id")
        let maxLength = try count(t["max_length"], where: "\(location).max_length")
        let eos = try count(t["eos_token_id"], where: "\(location).eos_token_id")
        let pad = try count(t["pad_token_id"], where: "\(location).pad_token_id")
        if sentencepiece && (!(t["prefix"] is String) || !(t["lowercase"] is Bool) || ((t["prompt_length"] as? Int64) ?? -1) < 0) {
            throw BundleError("\(location).prefix", "a sentencepiece tokenizer needs prefix (text), lowercase (bool) and prompt_length")
        }
        guard let name = t["name"] as? String else { throw BundleError("\(location).name", "missing") }
        var spec = TokenizerSpec(name: name, type: type!, folder: f, vocab: t["vocab"] as? String, merges: t["merges"] as? String,
                                 maxLength: maxLength, bosTokenId: bos, eosTokenId: eos, padTokenId: pad,
                                 output: t["output"] as? String ?? "\(name).input_ids")
        spec.tokenizerJson = t["tokenizer_json"] as? String
        spec.prefix = t["prefix"] as? String ?? ""
        spec.lowercase = t["lowercase"] as? Bool ?? false
        spec.promptLength = (t["prompt_length"] as? Int64).map { Int($0) }
        spec.maskOutput = t["mask_output"] as? String
        return spec
    }

    /// A non-negative integer that fits an Int32 (Kotlin's Int).
    private static func count(_ value: Any?, where location: String) throws -> Int {
        guard let v = value as? Int64, v >= 0, v <= Int64(Int32.max) else { throw BundleError(location, "must be a non-negative integer") }
        return Int(v)
    }

    /// Kotlin's `value in files`: only a string can be a key of the table.
    private static func isFile(_ value: Any?, of files: [String: FileEntry]) -> Bool {
        guard let path = value as? String else { return false }
        return files[path] != nil
    }

    private static func int(_ value: Any?, where location: String) throws -> Int {
        guard let v = value as? Int64 else { throw BundleError(location, "must be an integer") }
        if v < 0 || v > Int64(Int32.max) { throw BundleError(location, "out of range") }
        return Int(v)
    }

    private static func shape(_ value: Any?, where location: String) throws -> [Int] {
        guard let list = value as? [Any?] else { throw BundleError(location, "must be a list of sizes") }
        var out: [Int] = []
        for item in list { out.append(try int(item, where: location)) }
        return out
    }

    /// Python's repr of a JSON value, so messages read the same as the Python loader's.
    static func pyRepr(_ v: Any?) -> String {
        guard let v = v else { return "None" }
        if let s = v as? String { return "'\(s)'" }
        if let b = v as? Bool { return b ? "True" : "False" }
        if let list = v as? [Any?] { return "[" + list.map { pyRepr($0) }.joined(separator: ", ") + "]" }
        if let obj = v as? Json.Object {
            return "{" + obj.entries.map { "'\($0.key)': \(pyRepr($0.value))" }.joined(separator: ", ") + "}"
        }
        return "\(v)"
    }
}
