import Foundation

/// An app's picture: 8-bit RGB, row-major, `width * height * 3` bytes (on iOS, a CGImage's pixels
/// with alpha dropped).
public struct Picture {
    public let width: Int
    public let height: Int
    public let rgb: [UInt8]

    public init(width: Int, height: Int, rgb: [UInt8]) throws {
        guard width > 0, height > 0, rgb.count == width * height * 3 else {
            throw RuntimeError("a picture needs width * height * 3 bytes of RGB")
        }
        self.width = width
        self.height = height
        self.rgb = rgb
    }
}

/// One strength a bundle ships: the diffusers img2img call it matches and the denoiser's step row.
public struct Strength {
    public let strength: Double
    public let numInferenceSteps: Int
    public let step: [Float]
}

/// Image-to-image (manifest `img2img`): the picture fitted to the image size by the integer rule of
/// compiler/contract/init_image.py, bit for bit, and the denoiser's `step` row per strength.
public struct Img2Img {
    public static let IMAGE_SOURCE = "init_image.pixels"
    public static let STEP_SOURCE = "sampler.step"
    public static let STEP_SIZE = 6
    private static let one: Int64 = 1 << 16

    public let height: Int
    public let width: Int
    public let encoder: String
    public let textToImage: [Float]
    public let strengths: [Strength]

    /// The step row for `strength` (nil: text-to-image); a strength the bundle does not ship is an error naming those it does.
    public func row(_ strength: Double?) throws -> [Float] {
        guard let strength = strength else { return textToImage }
        guard let s = strengths.first(where: { abs($0.strength - strength) <= 1e-6 }) else {
            throw RuntimeError("strength \(strength) is not in this bundle (it ships "
                               + strengths.map { String($0.strength) }.joined(separator: ", ") + ")")
        }
        return s.step
    }

    /// The encoder's input: the picture fitted, as float32 [1, 3, H, W] in [0, 1].
    public func tensor(_ picture: Picture) -> Tensor {
        Img2Img.toTensor(Img2Img.fit(picture, height: height, width: width), height: height, width: width)
    }

    /// Centre crop to the aspect ratio, a k x k box average when the crop is k >= 2 times the
    /// image, then bilinear in 16-bit fixed point: `height * width * 3` RGB bytes.
    public static func fit(_ p: Picture, height outH: Int, width outW: Int) -> [UInt8] {
        var cw: Int, ch: Int
        if Int64(p.width) * Int64(outH) > Int64(p.height) * Int64(outW) {
            cw = max(1, Int(Int64(p.height) * Int64(outW) / Int64(outH))); ch = p.height
        } else {
            cw = p.width; ch = max(1, Int(Int64(p.width) * Int64(outH) / Int64(outW)))
        }
        let k = min(cw / outW, ch / outH)
        let box = k >= 2 ? k : 1
        cw = cw / box * box
        ch = ch / box * box
        let x0 = (p.width - cw) / 2, y0 = (p.height - ch) / 2
        let sw = cw / box, sh = ch / box
        var src = [Int64](repeating: 0, count: sw * sh * 3)
        for y in 0..<sh {
            for x in 0..<sw {
                for c in 0..<3 {
                    var sum: Int64 = 0
                    for dy in 0..<box {
                        for dx in 0..<box { sum += Int64(p.rgb[((y0 + y * box + dy) * p.width + x0 + x * box + dx) * 3 + c]) }
                    }
                    src[(y * sw + x) * 3 + c] = box == 1 ? sum : (sum + Int64(box * box / 2)) / Int64(box * box)
                }
            }
        }
        let xs = positions(outW, sw), ys = positions(outH, sh)
        var out = [UInt8](repeating: 0, count: outH * outW * 3)
        for y in 0..<outH {
            let ya = Int(ys[y] >> 16), yb = min(Int(ys[y] >> 16) + 1, sh - 1), fy = ys[y] & (one - 1)
            for x in 0..<outW {
                let xa = Int(xs[x] >> 16), xb = min(Int(xs[x] >> 16) + 1, sw - 1), fx = xs[x] & (one - 1)
                for c in 0..<3 {
                    let top = src[(ya * sw + xa) * 3 + c] * (one - fx) + src[(ya * sw + xb) * 3 + c] * fx
                    let bottom = src[(yb * sw + xa) * 3 + c] * (one - fx) + src[(yb * sw + xb) * 3 + c] * fx
                    out[(y * outW + x) * 3 + c] = UInt8((top * (one - fy) + bottom * fy + (1 << 31)) >> 32)
                }
            }
        }
        return out
    }

    /// Source position of each output column (or row) in 16-bit fixed point, half-pixel centres, clamped.
    private static func positions(_ count: Int, _ size: Int) -> [Int64] {
        (0..<count).map { i in
            min(max((2 * Int64(i) + 1) * Int64(size) * one / (2 * Int64(count)) - one / 2, 0), Int64(size - 1) * one)
        }
    }

    /// RGB bytes -> float32 [1, 3, H, W], each value / 255.
    public static func toTensor(_ pixels: [UInt8], height: Int, width: Int) -> Tensor {
        let plane = height * width
        var data = [Float](repeating: 0, count: 3 * plane)
        for i in 0..<plane {
            for c in 0..<3 { data[c * plane + i] = Float(pixels[i * 3 + c]) / 255 }
        }
        return Tensor.float32(shape: [1, 3, height, width], data: data)
    }

    /// The manifest's `img2img` block; nil when a key is missing or of the wrong type.
    static func parse(_ raw: Json.Object) -> Img2Img? {
        guard let image = raw["image"] as? Json.Object, let height = image["height"] as? Int64,
              let width = image["width"] as? Int64, let encoder = raw["encoder"] as? String,
              let t2i = row(raw["text_to_image"]), let list = raw["strengths"] as? [Any?] else { return nil }
        var strengths: [Strength] = []
        for item in list {
            guard let m = item as? Json.Object, let s = number(m["strength"]),
                  let steps = m["num_inference_steps"] as? Int64, let step = row(m["step"]) else { return nil }
            strengths.append(Strength(strength: s, numInferenceSteps: Int(steps), step: step))
        }
        return Img2Img(height: Int(height), width: Int(width), encoder: encoder, textToImage: t2i, strengths: strengths)
    }

    private static func row(_ value: Any?) -> [Float]? {
        guard let list = value as? [Any?], list.count == STEP_SIZE else { return nil }
        var out: [Float] = []
        for v in list {
            guard let d = number(v) else { return nil }
            out.append(Float(d))
        }
        return out
    }

    private static func number(_ v: Any?) -> Double? {
        if let d = v as? Double { return d }
        if let i = v as? Int64 { return Double(i) }
        return nil
    }
}
