import Foundation

/// Seeded standard-normal noise, "splitmix64-box-muller-v1" (compiler/contract/noise.py), identical to
/// the Python reference for every seed in [0, 2^64): for element i, pair k = i / 2,
/// a = splitmix64(seed, 2k), b = splitmix64(seed, 2k + 1), u1 = ((a >> 11) + 1) 2^-53,
/// u2 = (b >> 11) 2^-53, r = sqrt(-2 ln u1), element 2k = r cos(2 pi u2), 2k + 1 = r sin(2 pi u2),
/// computed in Double and rounded to Float. The platform's log/cos/sin may differ from another's
/// in the last bit of a Double, which survives rounding to Float about once in 2^29 elements.
public enum NoiseSource {
    public static let ALGORITHM = "splitmix64-box-muller-v1"
    private static let GOLDEN: UInt64 = 0x9E37_79B9_7F4A_7C15
    private static let M1: UInt64 = 0xBF58_476D_1CE4_E5B9
    private static let M2: UInt64 = 0x94D0_49BB_1331_11EB
    private static let TWO_POW_M53 = 1.0 / Double(UInt64(1) << 53)

    public static func splitmix64(seed: UInt64, counter: UInt64) -> UInt64 {
        var z = seed &+ (counter &+ 1) &* GOLDEN
        z = (z ^ (z >> 30)) &* M1
        z = (z ^ (z >> 27)) &* M2
        return z ^ (z >> 31)
    }

    public static func gaussian(seed: UInt64, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let k = UInt64(i / 2)
            let a = splitmix64(seed: seed, counter: 2 &* k)
            let b = splitmix64(seed: seed, counter: 2 &* k &+ 1)
            let u1 = Double((a >> 11) + 1) * TWO_POW_M53
            let u2 = Double(b >> 11) * TWO_POW_M53
            let r = sqrt(-2.0 * log(u1))
            let theta = 2.0 * Double.pi * u2
            out[i] = Float(r * cos(theta))
            if i + 1 < count { out[i + 1] = Float(r * sin(theta)) }
            i += 2
        }
        return out
    }

    public static func tensor(seed: UInt64, shape: [Int]) -> Tensor {
        Tensor.float32(shape: shape, data: gaussian(seed: seed, count: shape.reduce(1, *)))
    }

    /// A seed as typed by a person: a decimal integer in [0, 2^64 - 1]; nil otherwise.
    public static func parseSeed(_ text: String) -> UInt64? {
        let digits = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if digits.isEmpty || !digits.unicodeScalars.allSatisfy({ $0.value >= 0x30 && $0.value <= 0x39 }) { return nil }
        return UInt64(digits)
    }
}
