// prompt + seed -> PNG with the Swift Pipeline and Core ML (the macOS workflow compares its
// pixels with `generate`'s); prints milliseconds per stage. Exit 7 for a refused bundle, as
// `generate` and the Kotlin EndToEnd do.
//
//     onestep-generate BUNDLE PROMPT SEED OUT.png
import Foundation
import OneStepRuntime

func fail(_ message: String, _ code: Int32) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(code)
}

#if canImport(CoreML)
let args = CommandLine.arguments
if args.count != 5 { fail("usage: onestep-generate BUNDLE PROMPT SEED OUT.png", 2) }
guard let seed = NoiseSource.parseSeed(args[3]) else { fail("seed: '\(args[3])' is not an integer in [0, 2^64)", 2) }
do {
    let pipeline = try Pipeline.open(bundle: URL(fileURLWithPath: args[1]), engine: CoreMLEngine())
    defer { pipeline.close() }
    let result = try pipeline.generate(prompt: args[2], seed: seed)
    try Png.encode(result.image).write(to: URL(fileURLWithPath: args[4]))
    print(result.stages.map { "\($0.name) \(String(format: "%.1f", $0.millis)) ms" }.joined(separator: ", "))
} catch let error as BundleError {
    fail("\(error.where): \(error.reason)", 7)
} catch {
    fail("onestep-generate: \(error)", 1)
}
#else
fail("onestep-generate: needs Core ML (macOS or iOS)", 2)
#endif
