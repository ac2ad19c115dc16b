import Foundation

/// The element types bundles use at component boundaries (manifest `dtype`).
public enum DType: CaseIterable {
    case float32, int64, int32

    public var manifestName: String {
        switch self {
        case .float32: return "float32"
        case .int64: return "int64"
        case .int32: return "int32"
        }
    }

    public static func of(_ name: String) -> DType? { allCases.first { $0.manifestName == name } }
}

/// A dense row-major tensor: floats for FLOAT32, longs for INT64 and INT32 (kept wide, narrowed by an engine).
public struct Tensor {
    public let dtype: DType
    public let shape: [Int]
    public let floats: [Float]?
    public let longs: [Int64]?

    public var count: Int { shape.reduce(1, *) }

    private init(_ dtype: DType, _ shape: [Int], _ floats: [Float]?, _ longs: [Int64]?) {
        self.dtype = dtype
        self.shape = shape
        self.floats = floats
        self.longs = longs
        let n = floats?.count ?? longs!.count
        precondition(n == count, "tensor data has \(n) elements, shape \(shape) needs \(count)")
    }

    public static func float32(shape: [Int], data: [Float]) -> Tensor { Tensor(.float32, shape, data, nil) }

    public static func integer(_ dtype: DType, shape: [Int], data: [Int64]) -> Tensor {
        precondition(dtype != .float32, "integer tensor needs an integer dtype")
        return Tensor(dtype, shape, nil, data)
    }
}
