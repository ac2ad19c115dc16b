import Foundation

/// 8-bit RGB pixels, row-major, three bytes per pixel.
public struct Image {
    public let width: Int
    public let height: Int
    public let rgb: [UInt8]

    public init(width: Int, height: Int, rgb: [UInt8]) {
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// Opaque 0xAARRGGBB pixels, the Kotlin runtime's Android Bitmap layout (a CGImage takes `rgb` with 3 bytes per pixel).
    public func argb() -> [UInt32] {
        var out = [UInt32](repeating: 0, count: width * height)
        for p in 0..<(width * height) {
            let r = UInt32(rgb[3 * p])
            let g = UInt32(rgb[3 * p + 1])
            let b = UInt32(rgb[3 * p + 2])
            out[p] = 0xff00_0000 | (r << 16) | (g << 8) | b
        }
        return out
    }
}

/// Image conversion and PNG bytes exactly as compiler/contract/png.py writes them: v = x * 255 + 0.5 in
/// float, NaN -> 0, clamped to [0, 255], truncated; PNG with filter 0 rows and stored deflate
/// blocks, so every platform writes the same bytes.
public enum Png {
    private static let SIGNATURE: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 13, 10, 26, 10]
    private static let STORED_BLOCK = 65535

    /// [1, 3, H, W] floats in [0, 1] -> pixels.
    public static func pixels(_ image: Tensor) throws -> Image {
        let s = image.shape
        guard image.dtype == .float32, s.count == 4, s[0] == 1, s[1] == 3, let x = image.floats else {
            throw RuntimeError("image must be float32 [1, 3, H, W], got \(image.dtype.manifestName) \(s)")
        }
        let h = s[2]
        let w = s[3]
        var rgb = [UInt8](repeating: 0, count: h * w * 3)
        for c in 0..<3 {
            for y in 0..<h {
                for col in 0..<w {
                    rgb[(y * w + col) * 3 + c] = UInt8(to8bit(x[(c * h + y) * w + col]))
                }
            }
        }
        return Image(width: w, height: h, rgb: rgb)
    }

    public static func to8bit(_ x: Float) -> Int {
        let v = x * 255 + 0.5
        return v.isNaN ? 0 : Int(min(max(v, 0), 255))
    }

    public static func encode(_ image: Image) -> Data {
        let row = 1 + image.width * 3
        var raw = [UInt8](repeating: 0, count: image.height * row)
        for y in 0..<image.height {
            raw[(y * row + 1)..<((y + 1) * row)] = image.rgb[(y * image.width * 3)..<((y + 1) * image.width * 3)]
        }
        var ihdr: [UInt8] = []
        int32(&ihdr, UInt32(image.width))
        int32(&ihdr, UInt32(image.height))
        ihdr += [8, 2, 0, 0, 0]
        var out = SIGNATURE
        chunk(&out, "IHDR", ihdr)
        chunk(&out, "IDAT", storedZlib(raw))
        chunk(&out, "IEND", [])
        return Data(out)
    }

    private static func storedZlib(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        let blocks = data.isEmpty ? 1 : (data.count + STORED_BLOCK - 1) / STORED_BLOCK
        for i in 0..<blocks {
            let start = i * STORED_BLOCK
            let len = min(STORED_BLOCK, data.count - start)
            out.append(i == blocks - 1 ? 1 : 0)
            out.append(UInt8(len & 0xff))
            out.append(UInt8(len >> 8))
            let nlen = len ^ 0xffff
            out.append(UInt8(nlen & 0xff))
            out.append(UInt8(nlen >> 8))
            out += data[start..<(start + len)]
        }
        var adler = Adler32()
        adler.update(data)
        int32(&out, adler.value)
        return out
    }

    private static func chunk(_ out: inout [UInt8], _ kind: String, _ body: [UInt8]) {
        let tag = Array(kind.utf8)
        int32(&out, UInt32(body.count))
        out += tag
        out += body
        var crc = CRC32()
        crc.update(tag)
        crc.update(body)
        int32(&out, crc.value)
    }

    private static func int32(_ out: inout [UInt8], _ v: UInt32) {
        out.append(UInt8(truncatingIfNeeded: v >> 24))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }
}
