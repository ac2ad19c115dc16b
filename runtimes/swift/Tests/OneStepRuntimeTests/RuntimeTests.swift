import Foundation
import XCTest
@testable import OneStepRuntime
#if canImport(CoreML)
import CoreML
#endif

/// The pure runtime against runtimes/fixtures (written by runtimes/fixtures/generate.py from the
/// Python reference): the same cases as the Kotlin runtime's RuntimeTests.kt.
final class RuntimeTests: XCTestCase {
    override class func tearDown() {
        FixtureCases.finish()
        super.tearDown()
    }

    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../fixtures").standardizedFileURL

    private func fixture(_ path: String) -> URL { RuntimeTests.fixtures.appendingPathComponent(path) }

    private func readJson(_ url: URL) throws -> Any? { try Json.parse(String(decoding: Data(contentsOf: url), as: UTF8.self)) }

    private func int(_ value: Any?) -> Int { Int(value as! Int64) }

    // MARK: tokens

    func testTokens() throws {
        let doc = try readJson(fixture("tokens.json")) as! Json.Object
        let vocabDoc = try readJson(fixture(doc["vocab"] as! String)) as! Json.Object
        var vocab: [String: Int] = [:]
        for (key, value) in vocabDoc.entries { vocab[key] = int(value) }
        let merges = try ClipTokenizer.readMerges(String(decoding: Data(contentsOf: fixture(doc["merges"] as! String)), as: UTF8.self))
        let bos = int(doc["bos_token_id"])
        let eos = int(doc["eos_token_id"])
        let cases = doc["cases"] as! [Any?]
        XCTAssertGreaterThan(cases.count, 0)
        for item in cases {
            let c = item as! Json.Object
            let maxLength = int(c["max_length"])
            let name = "tokens \(c["name"] as! String) max_length=\(maxLength)"
            fixtureCase(name) {
                let tokenizer = try ClipTokenizer(vocab: vocab, merges: merges, maxLength: maxLength, bosTokenId: bos,
                                                  eosTokenId: eos, padTokenId: int(c["pad_token_id"]))
                let got = tokenizer.encode(c["prompt"] as! String)
                XCTAssertEqual((c["ids"] as! [Any?]).map { $0 as! Int64 }, got.ids, "\(name): ids")
                XCTAssertEqual(c["truncated"] as? Bool, got.truncated, "\(name): truncated")
            }
        }
    }

    /// T5 (PixArt's lower-cased prompt) and Gemma (SANA's instruction prefix) from their tokenizer.json, as the manifest entry says.
    func testSentencePieceTokens() throws {
        let doc = try readJson(fixture("sentencepiece_tokens.json")) as! Json.Object
        XCTAssertEqual(doc.keys.sorted(), ["gemma", "t5"])
        for (name, value) in doc.entries {
            let fixtureDoc = value as! Json.Object
            let e = fixtureDoc["entry"] as! Json.Object
            var spec = TokenizerSpec(name: e["name"] as! String, type: e["type"] as! String, folder: "", vocab: nil, merges: nil,
                                     maxLength: int(e["max_length"]), bosTokenId: (e["bos_token_id"] as? Int64).map { Int($0) },
                                     eosTokenId: int(e["eos_token_id"]), padTokenId: int(e["pad_token_id"]),
                                     output: e["output"] as! String)
            spec.tokenizerJson = fixtureDoc["tokenizer_json"] as? String
            spec.prefix = e["prefix"] as! String
            spec.lowercase = e["lowercase"] as! Bool
            spec.promptLength = int(e["prompt_length"])
            spec.maskOutput = e["mask_output"] as? String
            let tokenizer = try SentencePieceTokenizer.load(bundle: RuntimeTests.fixtures, spec: spec)
            for item in fixtureDoc["cases"] as! [Any?] {
                let c = item as! Json.Object
                let label = "sentencepiece \(name) \(c["name"] as! String)"
                fixtureCase(label) {
                    let got = tokenizer.encode(c["prompt"] as! String)
                    XCTAssertEqual((c["ids"] as! [Any?]).map { $0 as! Int64 }, got.ids, "\(label): ids")
                    XCTAssertEqual((c["attention_mask"] as! [Any?]).map { $0 as! Int64 }, got.mask, "\(label): attention mask")
                    XCTAssertEqual(c["truncated"] as? Bool, got.truncated, "\(label): truncated")
                }
            }
        }
    }

    func testLowercaseIsPerCodePointWithoutFinalSigma() {
        XCTAssertEqual(Array(ClipTokenizer.lowercase("\u{130}").unicodeScalars), Array("i\u{307}".unicodeScalars))
        XCTAssertEqual(ClipTokenizer.lowercase("ΟΔΥΣΣΕΥΣ"), "οδυσσευσ")
    }

    func testMergesSkipVersionLineAndCarriageReturns() {
        XCTAssertEqual(ClipTokenizer.readMerges("#version: 0.2\r\na b\r\n\r\nab c\n"), ["a b", "ab c"])
    }

    // MARK: noise

    func testNoise() throws {
        let cases = try readJson(fixture("noise.json")) as! [Any?]
        XCTAssertGreaterThan(cases.count, 0)
        for item in cases {
            let c = item as! Json.Object
            let shape = (c["shape"] as! [Any?]).map { int($0) }
            let name = "noise seed \(c["seed"] as! String) shape \(shape)"
            fixtureCase(name) {
                guard let seed = NoiseSource.parseSeed(c["seed"] as! String) else {
                    XCTFail("\(name): seed did not parse")
                    return
                }
                let values = NoiseSource.tensor(seed: seed, shape: shape).floats!
                if let bits = c["bits"] as? [Any?] {
                    XCTAssertEqual(bits.map { UInt32(truncatingIfNeeded: $0 as! Int64) }, values.map { $0.bitPattern }, "\(name): float32 bits")
                }
                XCTAssertEqual(c["sha256_f32le"] as? String, sha256(littleEndian(values)), "\(name): sha256 of float32 bytes")
            }
        }
    }

    func testSeedsOutsideTheRangeAreRefused() {
        fixtureCase("seeds outside [0, 2^64) are refused") {
            XCTAssertEqual(NoiseSource.parseSeed("18446744073709551615"), UInt64.max)
            for bad in ["18446744073709551616", "-1", "", "1e3", "0x10", " "] {
                XCTAssertNil(NoiseSource.parseSeed(bad), "accepted '\(bad)'")
            }
        }
    }

    // MARK: tiling

    /// The fixture's stand-in decoder: first 3 channels, each pixel to a 2x2 block, plus the call index / 8.
    private final class BlockDecoder: Session {
        var calls = 0

        func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
            let x = inputs["latents"]!
            let h = x.shape[2], w = x.shape[3]
            let k = Float(calls) / 8
            calls += 1
            let out = (0..<(3 * 4 * h * w)).map { i -> Float in
                let c = i / (4 * h * w), y = i / (2 * w) % (2 * h), xx = i % (2 * w)
                return x.floats![(c * h + y / 2) * w + xx / 2] + k
            }
            return ["image": Tensor.float32(shape: [1, 3, 2 * h, 2 * w], data: out)]
        }

        func close() {}
    }

    func testTiling() throws {
        let doc = try readJson(fixture("tiling.json")) as! Json.Object
        for item in doc["origins"] as! [Any?] {
            let c = item as! Json.Object
            let length = int(c["length"]), tile = int(c["tile"]), overlap = int(c["overlap"])
            fixtureCase("tile origins length=\(length) tile=\(tile) overlap=\(overlap)") {
                XCTAssertEqual((c["origins"] as! [Any?]).map { int($0) }, TilePlan.origins(length, tile, overlap), "origins")
            }
        }
        fixtureCase("tiles blend into the fixture's image") { try blendTiles(doc) }
    }

    private func blendTiles(_ doc: Json.Object) throws {
        let p = doc["plan"] as! Json.Object
        let ints = { (key: String) in (p[key] as! [Any?]).map { self.int($0) } }
        let plan = TilePlan(input: p["input"] as! String, latentShape: ints("latent_shape"), tileHeight: ints("tile")[0],
                            tileWidth: ints("tile")[1], overlap: int(p["overlap"]), scale: int(p["scale"]),
                            rows: ints("rows"), cols: ints("cols"))
        let decoder = BlockDecoder()
        let latents = (0..<plan.latentShape.reduce(1, *)).map { Float($0 % 17) / 8 - 1 }
        let image = try plan.run(decoder, ["latents": Tensor.float32(shape: plan.latentShape, data: latents)], output: "image")
        let expected = doc["image"] as! Json.Object
        XCTAssertEqual((expected["shape"] as! [Any?]).map { int($0) }, image.shape)
        XCTAssertEqual((expected["first_bits"] as! [Any?]).map { UInt32(truncatingIfNeeded: $0 as! Int64) },
                       image.floats!.prefix(16).map { $0.bitPattern })
        XCTAssertEqual(expected["sha256_f32le"] as? String, sha256(littleEndian(image.floats!)))
        XCTAssertEqual(decoder.calls, plan.rows.count * plan.cols.count, "one decoder call per tile")
    }

    // MARK: init image

    func testInitImage() throws {
        let doc = try readJson(fixture("init_image.json")) as! Json.Object
        for item in doc["cases"] as! [Any?] {
            let c = item as! Json.Object
            let source = (c["source"] as! [Any?]).map { int($0) }, image = (c["image"] as! [Any?]).map { int($0) }
            let (h, w, oh, ow) = (source[0], source[1], image[0], image[1])
            fixtureCase("init image \(h)x\(w) fitted to \(oh)x\(ow)") {
                let rgb = (0..<(h * w * 3)).map { i -> UInt8 in
                    let y = i / 3 / w, x = i / 3 % w, ch = i % 3
                    return UInt8((31 * y + 17 * x + 101 * ch + (x * y) % 7) % 256)
                }
                let fitted = Img2Img.fit(try Picture(width: w, height: h, rgb: rgb), height: oh, width: ow)
                XCTAssertEqual((c["first_pixels"] as! [Any?]).map { int($0) }, fitted.prefix(24).map { Int($0) }, "first pixels")
                XCTAssertEqual(c["sha256_rgb"] as? String, sha256(fitted), "sha256 of the pixels")
                let tensor = Img2Img.toTensor(fitted, height: oh, width: ow)
                XCTAssertEqual(c["tensor_sha256_f32le"] as? String, sha256(littleEndian(tensor.floats!)), "sha256 of the tensor")
            }
        }
    }

    // MARK: image

    private func fixtureImage() throws -> (doc: Json.Object, image: Image) {
        let doc = try readJson(fixture("image.json")) as! Json.Object
        let img = doc["image"] as! Json.Object
        let shape = (img["shape"] as! [Any?]).map { int($0) }
        let floats = (img["bits"] as! [Any?]).map { Float(bitPattern: UInt32(truncatingIfNeeded: $0 as! Int64)) }
        let image = try Png.pixels(Tensor.float32(shape: shape, data: floats))
        return (doc, image)
    }

    func testEightBitConversion() throws {
        let (doc, image) = try fixtureImage()
        fixtureCase("8-bit conversion (round half up, NaN, inf, out of range)") {
            XCTAssertEqual((doc["pixels_hwc"] as! [Any?]).map { UInt8($0 as! Int64) }, image.rgb, "pixels")
        }
    }

    func testPngBytes() throws {
        let (doc, image) = try fixtureImage()
        fixtureCase("PNG bytes") { XCTAssertEqual(Png.encode(image), try Data(contentsOf: fixture(doc["png"] as! String))) }
    }

    func testArgbPixels() throws {
        let (_, image) = try fixtureImage()
        fixtureCase("ARGB pixels") {
            let argb = image.argb()
            XCTAssertEqual(argb.count, image.width * image.height)
            XCTAssertEqual(argb[0] & 0xffff_0000, 0xff00_0000 | (UInt32(image.rgb[0]) << 16))
        }
    }

    // MARK: bundles

    func testBundles() throws {
        let root = fixture("bundles")
        let cases = try readJson(root.appendingPathComponent("cases.json")) as! Json.Object
        XCTAssertGreaterThan(cases.count, 1)
        for (name, value) in cases.entries {
            let verdict = value as! Json.Object
            let dir = root.appendingPathComponent(name)
            fixtureCase("bundle \(name)") {
                var location: String? = nil
                var manifest: Manifest? = nil
                do {
                    manifest = try BundleVerifier.verify(bundle: dir)
                } catch let error as BundleError {
                    location = error.where.replacingOccurrences(of: dir.path, with: "BUNDLE")
                }
                if verdict["ok"] as? Bool == true {
                    XCTAssertNil(location, "bundle \(name): refused a valid bundle")
                } else {
                    XCTAssertEqual(verdict["where"] as? String, location, "bundle \(name): where")
                }
                if let manifest {   // a verified bundle may still hold a hostile tokenizer file
                    var tokenizerLocation: String? = nil
                    do {
                        _ = try Tokenizers.load(bundle: dir, spec: manifest.tokenizers[0])
                    } catch let error as BundleError {
                        tokenizerLocation = error.where.replacingOccurrences(of: dir.path, with: "BUNDLE")
                    }
                    XCTAssertEqual(verdict["tokenizer_where"] as? String, tokenizerLocation, "bundle \(name): tokenizer where")
                }
            }
        }
    }

    // MARK: manifests

    func testManifestsOfEveryTargetAndFamily() throws {
        let folder = fixture("manifests")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".json") }.sorted()
        fixtureCase("manifests of every target and family are present") {
            XCTAssertGreaterThanOrEqual(files.count, 3, "only \(files.count) manifests")
        }
        for file in files {
            fixtureCase("manifest \(file)") { try checkManifest(folder.appendingPathComponent(file), file) }
        }
    }

    private func checkManifest(_ url: URL, _ file: String) throws {
        let raw = try Manifest.readRaw(String(decoding: Data(contentsOf: url), as: UTF8.self), where: url.path)
        let m = try Manifest.parse(raw, where: url.path)
        let encoder = m.img2img == nil ? [] : ["vae_encoder"]
        XCTAssertEqual(m.wiring.order, ["text_encoder"] + encoder + ["denoiser", "vae_decoder"], "\(file): order")
        let outputs = m.tokenizers.map { $0.maskOutput == nil ? 1 : 2 }.reduce(0, +)
        XCTAssertEqual(outputs, m.components["text_encoder"]!.inputs.count, "\(file): one token input per tokenizer output")
        var sources = Set<String>()
        for t in m.tokenizers {
            sources.insert(t.output)
            if let mask = t.maskOutput { sources.insert(mask) }
        }
        if let spec = m.img2img {   // text-to-image and every strength have a step row; others are refused
            sources.formUnion([Img2Img.IMAGE_SOURCE, Img2Img.STEP_SOURCE])
            XCTAssertEqual(try spec.row(nil)[1], 0, "\(file): text-to-image ignores the picture")
            for s in spec.strengths { XCTAssertEqual(try spec.row(s.strength), s.step, "\(file): row of \(s.strength)") }
            XCTAssertThrowsError(try spec.row(0.3), "\(file): a strength the bundle does not ship was accepted")
        }
        XCTAssertEqual(m.wiring.problems(sources), [], "\(file): wiring problems")
        XCTAssertEqual(m.noise.shape, m.components["denoiser"]!.inputs.first(where: { $0.name == "noise" })!.shape, "\(file): noise shape")
        for size in m.sizes {   // each size: its own noise shape and programs, the same wiring
            let at = try m.at(height: size.height, width: size.width)
            let label = "\(file): \(Sizes.spell(size.height, size.width))"
            XCTAssertEqual(at.noise.shape, at.components["denoiser"]!.inputs.first(where: { $0.name == "noise" })!.shape, "\(label) noise shape")
            let decoder = at.components["vae_decoder"]!
            if decoder.tiling == nil { XCTAssertEqual(Array(decoder.outputs[0].shape.suffix(2)), [size.height, size.width], "\(label) image") }
            XCTAssertEqual(at.wiring.order, m.wiring.order, "\(label) wiring")
        }
        if m.sizes.count > 1 {
            let programs = try Set(m.sizes.map { size -> String in
                let c = try m.at(height: size.height, width: size.width).components["denoiser"]!
                return "\(c.file)#\(c.function ?? "")"
            })
            XCTAssertEqual(programs.count, m.sizes.count, "\(file): one denoiser program (file, function) per size")
            XCTAssertThrowsError(try m.at(height: 8, width: 8)) { error in
                XCTAssertTrue("\(error)".contains("it ships"), "\(file): \(error)")
            }
        }
        if m.target == "coreml" { XCTAssertNotNil(m.computeUnits, "\(file): Core ML bundle without compute units") }
        if m.target == "qnn" {   // each SoC's own HTP context; a SoC the bundle was not compiled for is refused
            let socs = ((m.targets["qnn"] as! Json.Object)["soc_models"] as! Json.Object).keys
            XCTAssertFalse(socs.isEmpty, "\(file): no SoC")
            for soc in socs {
                for name in m.wiring.order { XCTAssertEqual(try m.program(name, soc: soc), "\(name).\(soc).onnx") }
            }
            XCTAssertThrowsError(try m.program("denoiser", soc: "SM0000")) { error in
                XCTAssertTrue((error as! BundleError).reason.contains("compiled for"), "\(file): \(error)")
            }
        } else {
            XCTAssertEqual(try m.program("denoiser", soc: nil), m.components["denoiser"]!.file, "\(file): program")
        }
    }

    // MARK: pipeline

    /// An engine whose sessions record their inputs and answer every output with a known ramp; it
    /// counts the sessions opened and open at once.
    private final class RecordingEngine: Engine {
        var seen: [String: [String: Tensor]] = [:]
        var opened = 0, live = 0, peak = 0

        func open(bundle: URL, component: ComponentSpec, manifest: Manifest) throws -> any Session {
            opened += 1
            live += 1
            peak = max(peak, live)
            return RecordingSession(engine: self, component: component)
        }
    }

    private final class RecordingSession: Session {
        let engine: RecordingEngine
        let component: ComponentSpec

        init(engine: RecordingEngine, component: ComponentSpec) {
            self.engine = engine
            self.component = component
        }

        func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
            engine.seen[component.name] = inputs
            var out: [String: Tensor] = [:]
            for o in component.outputs {
                out[o.name] = Tensor.float32(shape: o.shape, data: ramp(o.shape.reduce(1, *)))
            }
            return out
        }

        func close() { engine.live -= 1 }
    }

    func testPipelineFeedsEachInputFromItsWiredSource() throws {
        fixtureCase("pipeline feeds each input from its wired source") { try pipelineFeedsWiredSources() }
    }

    private func pipelineFeedsWiredSources() throws {
        let bundle = fixture("bundles/valid")
        let engine = RecordingEngine()
        let pipeline = try Pipeline.open(bundle: bundle, engine: engine)
        defer { pipeline.close() }
        let result = try pipeline.generate(prompt: "a red circle", seed: 7)
        let m = pipeline.manifest
        let ids = try ClipTokenizer.load(bundle: bundle, spec: m.tokenizers[0]).encode("a red circle").ids
        XCTAssertEqual(ids, engine.seen["text_encoder"]?["input_ids"]?.longs, "token ids")
        XCTAssertEqual(NoiseSource.gaussian(seed: 7, count: 256), engine.seen["denoiser"]?["noise"]?.floats, "noise")
        XCTAssertEqual(ramp(16 * 32), engine.seen["denoiser"]?["prompt_embeds"]?.floats, "embeds")
        XCTAssertEqual(result.image.width, 16, "width")
        XCTAssertEqual(result.stages.map { $0.name }, ["tokenize", "text_encoder", "denoiser", "vae_decoder", "image"], "stages")
    }

    func testReduceMemoryHoldsOneComponentAtATime() throws {
        fixtureCase("reduceMemory holds one component at a time and makes the same image") {
            let bundle = fixture("bundles/valid")
            let engine = RecordingEngine()
            let lean = try Pipeline.open(bundle: bundle, engine: engine, reduceMemory: true)
            XCTAssertEqual(engine.opened, 0, "components opened before generate")
            let image = try lean.generate(prompt: "a red circle", seed: 7).image
            _ = try lean.generate(prompt: "a red circle", seed: 8)
            XCTAssertEqual(engine.opened, 6, "components opened by two calls")
            XCTAssertEqual(engine.peak, 1, "components open at once")
            XCTAssertEqual(engine.live, 0, "components left open")
            let eager = try Pipeline.open(bundle: bundle, engine: engine)
            XCTAssertEqual(engine.peak, 3, "components open at once without reduceMemory")
            XCTAssertEqual(try eager.generate(prompt: "a red circle", seed: 7).image.rgb, image.rgb, "another image")
            eager.close()
            XCTAssertEqual(engine.live, 0, "components left open after close")
        }
    }

    func testTokenIdsBecomeInt32WhereTheManifestDeclaresInt32() throws {
        fixtureCase("token ids become int32 where the manifest declares int32") {
            let spec = TensorSpec(name: "input_ids", dtype: .int32, shape: [1, 2])
            let out = try Pipeline.conform(Tensor.integer(.int64, shape: [1, 2], data: [5, 6]), spec, "x")
            XCTAssertEqual(out.dtype, .int32)
            XCTAssertEqual(out.longs, [5, 6])
        }
    }

    func testARefusedBundleOpensNoComponent() {
        fixtureCase("a refused bundle opens no component") {
            let engine = RecordingEngine()
            XCTAssertThrowsError(try Pipeline.open(bundle: fixture("bundles/flipped_byte_component"), engine: engine)) { error in
                XCTAssertTrue(error is BundleError, "\(error)")
            }
            XCTAssertEqual(engine.opened, 0, "components opened")
        }
    }

    // MARK: JSON

    func testJsonIsStrict() throws {
        fixtureCase("JSON: strict") { try jsonIsStrict() }
    }

    func testJsonIsBounded() throws {
        fixtureCase("JSON: nesting and size bounded") {
            let limit = Json.MAX_DEPTH
            XCTAssertEqual((try Json.parse(String(repeating: "[", count: limit) + String(repeating: "]", count: limit)) as? [Any?])?.count, 1,
                           "at the limit")
            for deep in [limit + 1, 100_000] {
                XCTAssertThrowsError(try Json.parse(String(repeating: "[", count: deep) + String(repeating: "]", count: deep))) { error in
                    XCTAssertTrue("\(error)".contains("nested deeper than \(limit) levels"), "depth \(deep): \(error)")
                }
            }
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("bounded-\(UUID().uuidString).json")
            try Data("{\"a\": [1, 2, 3]}".utf8).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            let size = Int64(try Data(contentsOf: file).count)
            XCTAssertEqual(((try Json.readFile(file, maxBytes: size) as? Json.Object)?["a"] as? [Any?])?.count, 3, "within the size limit")
            XCTAssertThrowsError(try Json.readFile(file, maxBytes: size - 1)) { error in
                XCTAssertEqual((error as? BundleError)?.where, file.path, "over the size limit")
            }
        }
    }

    private func jsonIsStrict() throws {
        for bad in ["{\"a\":1,\"a\":2}", "[1,]", "01", "{\"a\":1} x", "\"\\x\"", "NaN", "{'a':1}", "\"\\u+041\""] {
            XCTAssertThrowsError(try Json.parse(bad), "accepted \(bad)")
        }
        let values = try Json.parse("[1, -2.5, \"\\u00e9\\n\", true, null, 9.3e20]") as! [Any?]
        XCTAssertEqual(values.count, 6)
        XCTAssertEqual(values[0] as? Int64, 1)
        XCTAssertEqual(values[1] as? Double, -2.5)
        XCTAssertEqual(values[2] as? String, "é\n")
        XCTAssertEqual(values[3] as? Bool, true)
        XCTAssertNil(values[4])
        XCTAssertEqual(values[5] as? Double, 9.3e20)
        XCTAssertEqual(try Json.parse("18446744073709551615") as? Double, 18446744073709551615.0, "integers past Int64 become Double")
        XCTAssertEqual(try Json.parse("\"\\ud83e\\udd8a\"") as? String, "\u{1F98A}", "surrogate pair escapes")
        let obj = try Json.parse("{\"b\":1,\"a\":null,\"c\":2}") as! Json.Object
        XCTAssertEqual(obj.keys, ["b", "a", "c"], "key order kept")
        XCTAssertTrue(obj.containsKey("a"))
        XCTAssertNil(obj["a"])
    }

    #if canImport(CoreML)
    func testCoreMLComputeUnitsComeFromTheManifest() throws {
        XCTAssertEqual(try CoreMLEngine.computeUnits(nil), .all)
        XCTAssertEqual(try CoreMLEngine.computeUnits("cpu_and_ne"), .cpuAndNeuralEngine)
        XCTAssertEqual(try CoreMLEngine.computeUnits("cpu_and_gpu"), .cpuAndGPU)
        XCTAssertEqual(try CoreMLEngine.computeUnits("cpuOnly"), .cpuOnly)
        XCTAssertThrowsError(try CoreMLEngine.computeUnits("gpu"))
    }
    #endif

    // MARK: compiled model cache (Swift only: Core ML compiles a package on the device)

    func testCompiledModelCacheCompilesOncePerKeyAndDropsStaleEntries() throws {
        let fm = FileManager.default
        let root = fm.temporaryDirectory.appendingPathComponent("cache-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: root) }
        let cache = CompiledModelCache(directory: root.appendingPathComponent("compiled"))
        var compiles = 0
        func compile(_ text: String) -> () throws -> URL {
            return {
                compiles += 1
                let out = root.appendingPathComponent("tmp-\(compiles).mlmodelc")
                try fm.createDirectory(at: out, withIntermediateDirectories: true)
                try Data(text.utf8).write(to: out.appendingPathComponent("model.mil"))
                return out
            }
        }
        func contents(_ url: URL) throws -> String { String(decoding: try Data(contentsOf: url.appendingPathComponent("model.mil")), as: UTF8.self) }
        func entries() throws -> [String] { try fm.contentsOfDirectory(atPath: cache.directory.path).sorted() }

        let first = try cache.compiled(component: "b.unet", key: "k1", compile: compile("v1"))
        let again = try cache.compiled(component: "b.unet", key: "k1", compile: compile("never"))
        XCTAssertEqual(compiles, 1, "an unchanged package is compiled once, across opens")
        XCTAssertEqual(first.path, again.path)
        XCTAssertEqual(try contents(again), "v1")
        _ = try cache.compiled(component: "b.unet_2", key: "k1", compile: compile("other component"))
        // a crash mid-compile left a partial entry: never taken for a compiled model, removed
        try fm.createDirectory(at: cache.directory.appendingPathComponent(".b.unet-k2.partial-x"), withIntermediateDirectories: true)
        let changed = try cache.compiled(component: "b.unet", key: "k2", compile: compile("v2"))
        XCTAssertEqual(compiles, 3)
        XCTAssertEqual(try contents(changed), "v2")
        XCTAssertEqual(try entries(), ["b.unet-k2.mlmodelc", "b.unet_2-k1.mlmodelc"], "the stale key and the partial entry are gone")
        XCTAssertThrowsError(try cache.compiled(component: "b.vae", key: "k1") { throw RuntimeError("compile failed") })
        XCTAssertEqual(try entries(), ["b.unet-k2.mlmodelc", "b.unet_2-k1.mlmodelc"], "a failed compile leaves nothing")

        let manifest = try BundleVerifier.verify(bundle: fixture("bundles/valid"))
        let denoiser = manifest.components["denoiser"]!, decoder = manifest.components["vae_decoder"]!
        XCTAssertEqual(CompiledModelCache.key(component: denoiser, manifest: manifest),
                       CompiledModelCache.key(component: denoiser, manifest: manifest))
        XCTAssertNotEqual(CompiledModelCache.key(component: denoiser, manifest: manifest),
                          CompiledModelCache.key(component: decoder, manifest: manifest), "keyed by the files' hashes")
        XCTAssertEqual(CompiledModelCache.slot(manifest: manifest, component: denoiser), "fixture.denoiser")
    }

    // MARK: checksums (Swift only: the Kotlin runtime takes them from the JDK)

    /// FIPS 180-4's vectors for the SHA-256 the runtime uses (CryptoKit's on Apple platforms) and the portable one.
    func testChecksums() {
        checkSha256(Sha256.self)
        checkSha256(PortableSha256.self)
        var crc = CRC32()
        crc.update(Array("123456789".utf8))
        XCTAssertEqual(crc.value, 0xCBF4_3926)
        var adler = Adler32()
        adler.update(Array("Wikipedia".utf8))
        XCTAssertEqual(adler.value, 0x11E6_0398)
    }
}

private func ramp(_ n: Int) -> [Float] { (0..<n).map { Float($0 % 7) / 6 } }

protocol StreamingSha256 {
    init()
    mutating func update(_ bytes: [UInt8])
    func digest() -> [UInt8]
}

extension Sha256: StreamingSha256 {}
extension PortableSha256: StreamingSha256 {}

private func checkSha256<H: StreamingSha256>(_ type: H.Type) {
    func whole(_ text: String) -> String {
        var h = H()
        h.update(Array(text.utf8))
        return hex(h.digest())
    }
    XCTAssertEqual(whole(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "\(type)")
    XCTAssertEqual(whole("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "\(type)")
    XCTAssertEqual(whole("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "\(type)")
    // Fed in uneven chunks across block boundaries: the streaming path, as files are hashed.
    var sha = H()
    let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
    var start = 0
    var step = 1
    while start < million.count {
        let end = min(start + step, million.count)
        sha.update(Array(million[start..<end]))
        start = end
        step = step * 3 % 1000 + 1
    }
    XCTAssertEqual(hex(sha.digest()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "\(type) streamed")
}

private func littleEndian(_ values: [Float]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * 4)
    for v in values {
        let bits = v.bitPattern
        out.append(UInt8(truncatingIfNeeded: bits))
        out.append(UInt8(truncatingIfNeeded: bits >> 8))
        out.append(UInt8(truncatingIfNeeded: bits >> 16))
        out.append(UInt8(truncatingIfNeeded: bits >> 24))
    }
    return out
}

private func sha256(_ bytes: [UInt8]) -> String {
    var sha = Sha256()
    sha.update(bytes)
    return hex(sha.digest())
}

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
