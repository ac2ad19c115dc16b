#if canImport(CoreML)
import CoreML
import Foundation

/// Runs Core ML bundles: each component's .mlpackage is compiled on the device once
/// (MLModel.compileModel, kept across launches by CompiledModelCache, keyed by the package's
/// hashes) and loaded with the compute units the compiler chose (manifest
/// `targets.coreml.compute_units`). Token ids go in as int32, everything else as float32, as the
/// manifest declares them. On the Neural Engine and the GPU Core ML computes in float16, so images
/// match `generate`'s closely, not bit for bit.
public final class CoreMLEngine: Engine {
    public let cache: CompiledModelCache

    /// `cacheDirectory` defaults to the app's Caches folder (the system may empty it; then the
    /// next open compiles again).
    public init(cacheDirectory: URL? = nil) {
        let caches = FileManager.default.urls(for: .cachesDirectory, in: .userDomainMask)[0]
        cache = CompiledModelCache(directory: cacheDirectory ?? caches.appendingPathComponent("OneStepRuntime/CompiledModels"))
    }

    public func open(bundle: URL, component: ComponentSpec, manifest: Manifest) throws -> any Session {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = try CoreMLEngine.computeUnits(manifest.computeUnits)
        if let function = component.function {   // one size of a multi-size bundle's multifunction package
            guard #available(macOS 15.0, iOS 18.0, *) else {
                throw RuntimeError("\(component.name): function \(function) of a multifunction package needs iOS 18 / macOS 15")
            }
            configuration.functionName = function
        }
        let compiled = try cache.compiled(component: CompiledModelCache.slot(manifest: manifest, component: component),
                                          key: CompiledModelCache.key(component: component, manifest: manifest)) {
            try MLModel.compileModel(at: bundle.appendingPathComponent(component.file))
        }
        return CoreMLSession(component: component, model: try MLModel(contentsOf: compiled, configuration: configuration))
    }

    /// The compiler writes "all", "cpu_and_ne", "cpu_and_gpu" or "cpu_only"; MLComputeUnits'
    /// own spellings are taken too. No entry means Core ML's default, all units.
    static func computeUnits(_ name: String?) throws -> MLComputeUnits {
        switch name ?? "all" {
        case "all": return .all
        case "cpu_only", "cpuOnly": return .cpuOnly
        case "cpu_and_gpu", "cpuAndGPU": return .cpuAndGPU
        case "cpu_and_ne", "cpuAndNeuralEngine": return .cpuAndNeuralEngine
        default: throw RuntimeError("compute units '\(name ?? "")' are not all, cpu_only, cpu_and_gpu or cpu_and_ne")
        }
    }
}

/// One loaded Core ML model (its compiled copy stays in the cache for the next launch).
final class CoreMLSession: Session {
    private let component: ComponentSpec
    private let model: MLModel

    init(component: ComponentSpec, model: MLModel) {
        self.component = component
        self.model = model
    }

    func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        var features: [String: MLFeatureValue] = [:]
        for spec in component.inputs {
            guard let t = inputs[spec.name] else { throw RuntimeError("\(component.name): no input \(spec.name)") }
            let array = try multiArray(t, spec)
            features[spec.name] = MLFeatureValue(multiArray: array)
        }
        let result = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        var out: [String: Tensor] = [:]
        for spec in component.outputs {
            guard let array = result.featureValue(for: spec.name)?.multiArrayValue else {
                throw RuntimeError("\(component.name) returned no output \(spec.name)")
            }
            out[spec.name] = tensor(array, spec)
        }
        return out
    }

    /// Core ML has no int64 arrays: integer inputs go in as int32 (Core ML bundles declare them so).
    private func multiArray(_ t: Tensor, _ spec: TensorSpec) throws -> MLMultiArray {
        let shape = spec.shape.map { NSNumber(value: $0) }
        if spec.dtype == .float32 {
            guard let values = t.floats else { throw RuntimeError("\(component.name) input \(spec.name): float32 expected") }
            let array = try MLMultiArray(shape: shape, dataType: .float32)
            array.withUnsafeMutableBufferPointer(ofType: Float.self) { pointer, strides in
                for (i, offset) in offsets(spec.shape, strides).enumerated() { pointer[offset] = values[i] }
            }
            return array
        }
        guard let values = t.longs else { throw RuntimeError("\(component.name) input \(spec.name): integers expected") }
        let array = try MLMultiArray(shape: shape, dataType: .int32)
        array.withUnsafeMutableBufferPointer(ofType: Int32.self) { pointer, strides in
            for (i, offset) in offsets(spec.shape, strides).enumerated() { pointer[offset] = Int32(truncatingIfNeeded: values[i]) }
        }
        return array
    }

    /// An output in the array's own shape (Pipeline.conform checks it against the manifest),
    /// float32 unless the manifest declares integers.
    private func tensor(_ array: MLMultiArray, _ spec: TensorSpec) -> Tensor {
        let shape = array.shape.map { $0.intValue }
        let count = shape.reduce(1, *)
        let places = offsets(shape, array.strides.map { $0.intValue })
        if spec.dtype == .float32 {
            var values = [Float](repeating: 0, count: count)
            switch array.dataType {
            case .float32:
                array.withUnsafeBufferPointer(ofType: Float.self) { pointer, _ in
                    for (i, offset) in places.enumerated() { values[i] = pointer[offset] }
                }
            case .double:
                array.withUnsafeBufferPointer(ofType: Double.self) { pointer, _ in
                    for (i, offset) in places.enumerated() { values[i] = Float(pointer[offset]) }
                }
            default:
                // float16 among others: NSNumber per element, slow but needs no Float16 (absent on Intel Macs).
                for i in 0..<count { values[i] = array[multiIndex(i, shape)].floatValue }
            }
            return Tensor.float32(shape: shape, data: values)
        }
        var values = [Int64](repeating: 0, count: count)
        if array.dataType == .int32 {
            array.withUnsafeBufferPointer(ofType: Int32.self) { pointer, _ in
                for (i, offset) in places.enumerated() { values[i] = Int64(pointer[offset]) }
            }
        } else {
            for i in 0..<count { values[i] = array[multiIndex(i, shape)].int64Value }
        }
        return Tensor.integer(spec.dtype, shape: shape, data: values)
    }
}

/// Element offsets, in row-major order, of an array with these strides (Core ML may pad rows).
private func offsets(_ shape: [Int], _ strides: [Int]) -> [Int] {
    var out = [0]
    for (size, stride) in zip(shape, strides) {
        var next: [Int] = []
        next.reserveCapacity(out.count * size)
        for base in out {
            for k in 0..<size { next.append(base + k * stride) }
        }
        out = next
    }
    return out
}

/// The multi-index of row-major element `linear`.
private func multiIndex(_ linear: Int, _ shape: [Int]) -> [NSNumber] {
    var rest = linear
    var out = [NSNumber](repeating: 0, count: shape.count)
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        out[axis] = NSNumber(value: rest % shape[axis])
        rest /= shape[axis]
    }
    return out
}
#endif
