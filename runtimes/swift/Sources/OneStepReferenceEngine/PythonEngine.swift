import Foundation
import OneStepRuntime

/// An Engine that runs each component in the project's Python reference runtime
/// (`python -m compiler.testing.reference_engine`, one helper process per bundle), so the real Pipeline
/// runs real compiled programs on Linux, where there is no Core ML: `onestep-generate --reference`
/// and tests/test_runtime_swift.py compare its PNG with `generate`'s byte for byte. The mirror of
/// Kotlin's PythonEngine (src/test); not part of the OneStepRuntime library an app links.
///
/// Frames on the helper's stdin/stdout: a 4-byte big-endian header length, a UTF-8 JSON header,
/// then each tensor's little-endian bytes in header order (compiler/testing/reference_engine.py).
public final class PythonEngine: Engine {
    private let python: String
    private let repo: URL
    private var process: Process?
    private var input: FileHandle?
    private var output: FileHandle?

    public init(python: String, repo: URL) {
        self.python = python
        self.repo = repo
    }

    public func open(bundle: URL, component: ComponentSpec, manifest: Manifest) throws -> any Session {
        if process == nil {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python)
            // the size of the manifest the pipeline follows: its programs (multi-size bundles)
            p.arguments = ["-m", "compiler.testing.reference_engine", "--bundle", bundle.path,
                           "--size", Sizes.spell(manifest.image.height, manifest.image.width)]
            p.currentDirectoryURL = repo
            let stdin = Pipe(), stdout = Pipe()
            p.standardInput = stdin
            p.standardOutput = stdout
            p.standardError = FileHandle.standardError
            try p.run()
            process = p
            input = stdin.fileHandleForWriting
            output = stdout.fileHandleForReading
        }
        return ReferenceSession(engine: self, component: component)
    }

    fileprivate func call(_ component: ComponentSpec, _ inputs: [String: Tensor]) throws -> [String: Tensor] {
        guard let input, let output else { throw RuntimeError("reference engine: not started") }
        let tensors = try component.inputs.map { spec -> (String, Tensor) in
            guard let t = inputs[spec.name] else { throw RuntimeError("reference engine: no input \(spec.name)") }
            return (spec.name, t)
        }
        let header = "{\"component\":\"\(component.name)\",\"tensors\":[" + tensors.map { name, t in
            "{\"name\":\"\(name)\",\"dtype\":\"\(t.dtype.manifestName)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))]}"
        }.joined(separator: ",") + "]}"
        var frame = bigEndian(UInt32(header.utf8.count))
        frame.append(contentsOf: header.utf8)
        for (_, t) in tensors { frame.append(contentsOf: PythonEngine.bytes(t)) }
        try input.write(contentsOf: frame)
        let size = try PythonEngine.readExactly(output, 4).reduce(0) { ($0 << 8) | Int($1) }
        let reply = try PythonEngine.readExactly(output, size)
        guard let doc = try Json.parse(String(decoding: reply, as: UTF8.self)) as? Json.Object else {
            throw RuntimeError("reference engine: reply is not a JSON object")
        }
        if let error = doc["error"] as? String { throw RuntimeError("reference engine: \(error)") }
        var out: [String: Tensor] = [:]
        for item in doc["tensors"] as? [Any?] ?? [] {
            guard let spec = item as? Json.Object, let name = spec["name"] as? String,
                  let dtype = DType.of(spec["dtype"] as? String ?? ""),
                  let shape = (spec["shape"] as? [Any?])?.compactMap({ ($0 as? Int64).map { Int($0) } }) else {
                throw RuntimeError("reference engine: malformed tensor in reply")
            }
            out[name] = try PythonEngine.read(output, dtype, shape)
        }
        return out
    }

    /// Ends the helper: closing its stdin ends its loop.
    public func close() {
        guard let process else { return }
        try? input?.close()
        process.waitUntilExit()
        self.process = nil
    }

    private static func bytes(_ t: Tensor) -> [UInt8] {
        var out: [UInt8] = []
        switch t.dtype {
        case .float32: for v in t.floats! { out.append(contentsOf: littleEndian(UInt64(v.bitPattern), 4)) }
        case .int64: for v in t.longs! { out.append(contentsOf: littleEndian(UInt64(bitPattern: v), 8)) }
        case .int32: for v in t.longs! { out.append(contentsOf: littleEndian(UInt64(UInt32(truncatingIfNeeded: v)), 4)) }
        }
        return out
    }

    private static func read(_ handle: FileHandle, _ dtype: DType, _ shape: [Int]) throws -> Tensor {
        let count = shape.reduce(1, *)
        let width = dtype == .int64 ? 8 : 4
        let data = try readExactly(handle, count * width)
        func word(_ i: Int) -> UInt64 {
            var v: UInt64 = 0
            for k in (0..<width).reversed() { v = (v << 8) | UInt64(data[i * width + k]) }
            return v
        }
        switch dtype {
        case .float32: return Tensor.float32(shape: shape, data: (0..<count).map { Float(bitPattern: UInt32(word($0))) })
        case .int64: return Tensor.integer(.int64, shape: shape, data: (0..<count).map { Int64(bitPattern: word($0)) })
        case .int32: return Tensor.integer(.int32, shape: shape, data: (0..<count).map { Int64(Int32(bitPattern: UInt32(word($0)))) })
        }
    }

    private static func readExactly(_ handle: FileHandle, _ n: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n)
        while out.count < n {
            guard let chunk = try handle.read(upToCount: n - out.count), !chunk.isEmpty else {
                throw RuntimeError("reference engine: the helper ended inside a frame")
            }
            out.append(contentsOf: chunk)
        }
        return out
    }

    private static func littleEndian(_ v: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    private func bigEndian(_ v: UInt32) -> [UInt8] { (0..<4).reversed().map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

private final class ReferenceSession: Session {
    let engine: PythonEngine
    let component: ComponentSpec

    init(engine: PythonEngine, component: ComponentSpec) {
        self.engine = engine
        self.component = component
    }

    func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] { try engine.call(component, inputs) }
}
