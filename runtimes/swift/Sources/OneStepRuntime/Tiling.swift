import Foundation

/// Tiled decoding (manifest `components.<name>.tiling`, runtimes/README.md): the component's
/// program takes one tile of the latent; the whole image is its tiles blended with linear ramps
/// over their overlaps, in float32 and in the order compiler/contract/tiling.py computes it, so every
/// runtime writes the same pixels.
public struct TilePlan {
    public let input: String
    public let latentShape: [Int]
    public let tileHeight: Int
    public let tileWidth: Int
    public let overlap: Int
    public let scale: Int
    public let rows: [Int]
    public let cols: [Int]

    public static let BLEND = "linear-ramp-v1"

    /// The component's input as the pipeline feeds it: the whole latent.
    public func wholeInput(_ spec: TensorSpec) -> TensorSpec {
        spec.name == input ? TensorSpec(name: spec.name, dtype: spec.dtype, shape: latentShape) : spec
    }

    /// The component's output as the pipeline receives it: the whole image.
    public func wholeOutput(_ spec: TensorSpec) -> TensorSpec {
        var shape = spec.shape
        shape[shape.count - 2] = latentShape[latentShape.count - 2] * scale
        shape[shape.count - 1] = latentShape[latentShape.count - 1] * scale
        return TensorSpec(name: spec.name, dtype: spec.dtype, shape: shape)
    }

    /// The whole image from a session that decodes one tile into its single output `output`.
    public func run(_ session: any Session, _ feeds: [String: Tensor], output: String) throws -> Tensor {
        guard let latents = feeds[input]?.floats else { throw RuntimeError("\(input): tiled input must be float32") }
        let lead = latentShape.count - 2
        let h = latentShape[lead], w = latentShape[lead + 1]
        let planes = latentShape[0..<lead].reduce(1, *)
        var tileShape = latentShape
        tileShape[lead] = tileHeight
        tileShape[lead + 1] = tileWidth
        let wy = axisWeights(rows.count, tileHeight), wx = axisWeights(cols.count, tileWidth)
        let height = h * scale, width = w * scale
        let th = tileHeight * scale, tw = tileWidth * scale
        var weight = [Float](repeating: 0, count: height * width)
        var total: [Float] = []
        var shape: [Int] = []
        for (i, r) in rows.enumerated() {
            for (j, c) in cols.enumerated() {
                var tile = [Float](repeating: 0, count: planes * tileHeight * tileWidth)
                for p in 0..<planes {
                    for y in 0..<tileHeight {
                        let from = (p * h + r + y) * w + c, to = (p * tileHeight + y) * tileWidth
                        tile[to..<(to + tileWidth)] = latents[from..<(from + tileWidth)]
                    }
                }
                var tileFeeds = feeds
                tileFeeds[input] = Tensor.float32(shape: tileShape, data: tile)
                guard let out = try session.run(tileFeeds)[output] else { throw RuntimeError("tile returned no output \(output)") }
                guard let o = out.floats else { throw RuntimeError("\(output): tiled output must be float32") }
                let outPlanes = o.count / (th * tw)
                if total.isEmpty {
                    total = [Float](repeating: 0, count: outPlanes * height * width)
                    shape = out.shape
                    shape[shape.count - 2] = height
                    shape[shape.count - 1] = width
                }
                for y in 0..<th {
                    for x in 0..<tw {
                        let wgt = wy[i][y] * wx[j][x]
                        let at = (r * scale + y) * width + c * scale + x
                        weight[at] += wgt
                        for p in 0..<outPlanes { total[p * height * width + at] += wgt * o[(p * th + y) * tw + x] }
                    }
                }
            }
        }
        for k in total.indices { total[k] = total[k] / weight[k % (height * width)] }
        return Tensor.float32(shape: shape, data: total)
    }

    /// Each tile's weight per image coordinate along an axis of `count` tiles of `tile` latent pixels.
    public func axisWeights(_ count: Int, _ tile: Int) -> [[Float]] {
        let size = tile * scale
        let ramp = Float(overlap * scale)
        return (0..<count).map { k in
            (0..<size).map { d in
                var v: Float = 1
                if ramp > 0 && k > 0 { v = min(v, (Float(d) + 0.5) / ramp) }
                if ramp > 0 && k < count - 1 { v = min(v, (Float(size) - Float(d) - 0.5) / ramp) }
                return v
            }
        }
    }

    /// Tile starts along one axis of `length` latent pixels: spread evenly, the last flush with the edge.
    public static func origins(_ length: Int, _ tile: Int, _ overlap: Int) -> [Int] {
        if length <= tile { return [0] }
        let count = (length - overlap + (tile - overlap) - 1) / (tile - overlap)
        return (0..<count).map { k in k * (length - tile) / (count - 1) }
    }
}
