// Tokenizer, noise, SHA-256 and PNG throughput of the Swift runtime, for benchmarks/runtimes.py
// (which runs Kotlin's Bench and the Python reference on the same inputs in the same run). Built in
// release mode; prints one JSON line, the same keys as Kotlin's Bench.
//
//     onestep-bench TOKENIZER_DIR PROMPTS_FILE MAX_LENGTH SECONDS SHAPE...
import Foundation
import OneStepRuntime

let args = CommandLine.arguments
if args.count < 5 {
    FileHandle.standardError.write(Data("usage: onestep-bench TOKENIZER_DIR PROMPTS_FILE MAX_LENGTH SECONDS SHAPE...\n".utf8))
    exit(2)
}
let dir = URL(fileURLWithPath: args[1])
let prompts = String(decoding: try Data(contentsOf: URL(fileURLWithPath: args[2])), as: UTF8.self)
    .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
let maxLength = Int(args[3])!
let seconds = Double(args[4])!

func now() -> Double { ProcessInfo.processInfo.systemUptime }

/// Items per second, after a warm-up pass of the same length.
func rate(_ pass: () throws -> Int) rethrows -> Double {
    var result = 0.0
    for phase in 0..<2 {
        var items = 0
        let start = now()
        while now() - start < seconds { items += try pass() }
        if phase == 1 { result = Double(items) / (now() - start) }
    }
    return result
}

let loadStart = now()
let vocabDoc = try Json.readFile(dir.appendingPathComponent("vocab.json"), maxBytes: Json.MAX_TOKENIZER_BYTES) as! Json.Object
var vocab: [String: Int] = [:]
for (key, value) in vocabDoc.entries { vocab[key] = Int(value as! Int64) }
let merges = try ClipTokenizer.readMerges(String(decoding: Data(contentsOf: dir.appendingPathComponent("merges.txt")), as: UTF8.self))
let eos = vocab["<|endoftext|>"]!
let tokenizer = try ClipTokenizer(vocab: vocab, merges: merges, maxLength: maxLength, bosTokenId: vocab["<|startoftext|>"]!,
                                  eosTokenId: eos, padTokenId: eos)
_ = tokenizer.encode(prompts[0])
let firstMs = (now() - loadStart) * 1000
// One tokenizer, as an app keeps it.
let promptRate = rate { for p in prompts { _ = tokenizer.encode(p) }; return prompts.count }
var noise: [String] = []
for spec in args.dropFirst(5) {
    let n = spec.split(separator: "x").map { Int($0)! }.reduce(1, *)
    noise.append("\"\(spec)\": \(rate { _ = NoiseSource.gaussian(seed: 42, count: n); return n })")
}
// SHA-256 over 16 MiB chunks, as BundleVerifier hashes a file; MB/s of input.
let chunk = Data((0..<(16 << 20)).map { UInt8(truncatingIfNeeded: $0) })
let shaRate = rate { var sha = Sha256(); sha.update(chunk); _ = sha.digest(); return chunk.count } / 1e6
// PNG of a 512 px image of noise (incompressible, the worst case); MB/s of RGB input.
let image = try Png.pixels(Tensor.float32(shape: [1, 3, 512, 512],
                                          data: NoiseSource.gaussian(seed: 42, count: 3 * 512 * 512).map { $0 * 0.25 + 0.5 }))
let pngRate = rate { _ = Png.encode(image); return image.rgb.count } / 1e6
print("{\"load_and_first_prompt_ms\": \(firstMs), \"prompts_per_s\": \(promptRate), \"noise_values_per_s\": {\(noise.joined(separator: ", "))}, "
      + "\"sha256_mb_per_s\": \(shaRate), \"png_encode_mb_per_s\": \(pngRate)}")
