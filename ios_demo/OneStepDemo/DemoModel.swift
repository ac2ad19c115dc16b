import Combine
import CoreGraphics
import Foundation
import OneStepRuntime

/// One line of the screen: a stage and its milliseconds, or a component and its precision.
struct LabeledValue: Identifiable, Sendable {
    let label: String
    let value: String
    var id: String { label }
}

/// The bundle as the screen describes it: its manifest's name, target and family, and each component's
/// precision in run order.
struct BundleSummary: Sendable {
    let name: String
    let target: String
    let family: String
    let precisions: [LabeledValue]
}

/// One generation, copied out of the runtime's result so it can cross to the main actor.
struct Generated: Sendable {
    let width: Int
    let height: Int
    let rgb: Data
    let truncated: Bool
    let timings: [LabeledValue]
}

enum DemoError: Error, LocalizedError {
    case notOpen
    var errorDescription: String? { "the bundle is not open" }
}

/// Owns the pipeline away from the main actor: opening verifies every file's hash and loads the models,
/// generating runs them, both far too slow for the UI. Being an actor also runs one request at a time.
actor Generator {
    private var pipeline: Pipeline?

    func open(bundle: URL) throws -> BundleSummary {
        let pipeline = try Pipeline.open(bundle: bundle, engine: CoreMLEngine())
        self.pipeline = pipeline
        let manifest = pipeline.manifest
        let precisions = manifest.wiring.order.map {
            LabeledValue(label: $0, value: manifest.components[$0]?.precision ?? "")
        }
        return BundleSummary(name: manifest.name, target: manifest.target, family: manifest.family,
                             precisions: precisions)
    }

    func generate(prompt: String, seed: UInt64) throws -> Generated {
        guard let pipeline else { throw DemoError.notOpen }
        let result = try pipeline.generate(prompt: prompt, seed: seed)
        var timings: [LabeledValue] = []
        for stage in result.stages {
            timings.append(LabeledValue(label: stage.name, value: String(format: "%.1f ms", stage.millis)))
        }
        return Generated(width: result.image.width, height: result.image.height, rgb: Data(result.image.rgb),
                         truncated: result.truncated, timings: timings)
    }
}

@MainActor
final class DemoModel: ObservableObject {
    // The first prompt and the seed `make demo` generates with, so the image can be compared with build/demo/.
    @Published var prompt = "two green circles"
    @Published var seedText = "0"
    @Published private(set) var bundle: BundleSummary?
    @Published private(set) var generated: Generated?
    @Published private(set) var image: CGImage?
    @Published private(set) var busy = true
    @Published private(set) var message: String? = "Verifying the bundle…"

    private let generator = Generator()
    private var opening = false

    var seed: UInt64? { NoiseSource.parseSeed(seedText) }
    var canGenerate: Bool { !busy && bundle != nil && seed != nil }

    func open() async {
        guard !opening else { return }
        opening = true
        defer { busy = false }
        guard let url = Foundation.Bundle.main.url(forResource: "bundle", withExtension: nil) else {
            message = "The app has no folder named bundle: add the compiled bundle as a folder reference (ios_demo/README.md)."
            return
        }
        do {
            bundle = try await generator.open(bundle: url)
            message = nil
        } catch {
            message = "Could not open the bundle: \(describe(error))"
        }
    }

    func generate() async {
        guard let seed, !busy else { return }
        busy = true
        message = nil
        defer { busy = false }
        do {
            let generated = try await generator.generate(prompt: prompt, seed: seed)
            self.generated = generated
            image = makeCGImage(width: generated.width, height: generated.height, rgb: generated.rgb)
        } catch {
            message = "Generation failed: \(describe(error))"
        }
    }
}

/// The runtime's errors name the file and field at fault; show that text, not NSError's generic wording.
private func describe(_ error: Error) -> String {
    (error as? LocalizedError)?.errorDescription ?? String(describing: error)
}
