// prompt + seed -> PNG with the Swift Pipeline; prints milliseconds per stage. Exit 7 for a refused
// bundle, as `generate` and the Kotlin EndToEnd do.
//
//     onestep-generate BUNDLE PROMPT SEED OUT.png                          Core ML (macOS, iOS)
//     onestep-generate --reference PYTHON REPO BUNDLE PROMPT SEED OUT.png  the Python reference engine
//     ... OUT.png --init-rgb PIXELS WIDTHxHEIGHT STRENGTH                    image-to-image bundles
//     ... OUT.png --size WIDTHxHEIGHT                                       a size of a multi-size bundle
//
// --init-rgb takes the picture as raw 8-bit RGB bytes, row-major (an app passes a CGImage's
// pixels to Pipeline.generate; Foundation on Linux decodes no PNG).
// With --reference each component runs in the project's Python reference runtime over a pipe
// (PythonEngine): on Linux, where there is no Core ML, tests/test_runtime_swift.py compares this
// PNG with `generate`'s byte for byte. The macOS workflow compares the Core ML one's pixels.
import Foundation
import OneStepReferenceEngine
import OneStepRuntime

func fail(_ message: String, _ code: Int32) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(code)
}

let usage = "usage: onestep-generate [--reference PYTHON REPO] BUNDLE PROMPT SEED OUT.png [--init-rgb PIXELS WxH STRENGTH] [--size WxH]"
var args = Array(CommandLine.arguments.dropFirst())
var picture: Picture? = nil
var strength: Double? = nil
if let i = args.firstIndex(of: "--init-rgb") {
    let size = i + 2 < args.count ? args[i + 2].split(separator: "x").compactMap { Int($0) } : []
    guard i + 3 < args.count, size.count == 2, let s = Double(args[i + 3]),
          let rgb = FileManager.default.contents(atPath: args[i + 1]) else { fail(usage, 2) }
    do { picture = try Picture(width: size[0], height: size[1], rgb: [UInt8](rgb)) } catch { fail("--init-rgb: \(error)", 2) }
    strength = s
    args.removeSubrange(i...(i + 3))
}
var size: (width: Int, height: Int)? = nil
if let i = args.firstIndex(of: "--size") {
    let wh = i + 1 < args.count ? args[i + 1].split(separator: "x").compactMap { Int($0) } : []
    guard wh.count == 2 else { fail(usage, 2) }
    size = (width: wh[0], height: wh[1])
    args.removeSubrange(i...(i + 1))
}
var engine: any Engine
var reference: PythonEngine? = nil
if args.first == "--reference" {
    if args.count != 7 { fail(usage, 2) }
    reference = PythonEngine(python: args[1], repo: URL(fileURLWithPath: args[2]))
    engine = reference!
    args.removeFirst(3)
} else {
    #if canImport(CoreML)
    if args.count != 4 { fail(usage, 2) }
    engine = CoreMLEngine()
    #else
    fail("onestep-generate: Core ML exists on macOS and iOS only; here pass --reference PYTHON REPO\n\(usage)", 2)
    #endif
}
guard let seed = NoiseSource.parseSeed(args[2]) else { fail("seed: '\(args[2])' is not an integer in [0, 2^64)", 2) }
do {
    let pipeline = try Pipeline.open(bundle: URL(fileURLWithPath: args[0]), engine: engine, size: size)
    let result = try pipeline.generate(prompt: args[1], seed: seed, picture: picture, strength: strength)
    pipeline.close()
    reference?.close()
    try Png.encode(result.image).write(to: URL(fileURLWithPath: args[3]))
    print(result.stages.map { "\($0.name) \(String(format: "%.1f", $0.millis)) ms" }.joined(separator: ", "))
} catch let error as BundleError {
    reference?.close()
    fail("\(error.where): \(error.reason)", 7)
} catch {
    reference?.close()
    fail("onestep-generate: \(error)", 1)
}
