import Foundation

/// Multi-size bundles (manifest `sizes`, compiler/contract/sizes.py): the first entry is the default
/// size the rest of the manifest describes; each names the components whose program or tile plan
/// depends on the size. `atRaw` is the manifest at one size, which Manifest.parse checks and the
/// Pipeline runs as a one-size bundle.
public enum Sizes {
    /// A size as `generate --size` and the runtimes spell it: width x height.
    public static func spell(_ height: Int, _ width: Int) -> String { "\(width)x\(height)" }

    /// (height, width) of every size the raw manifest lists (structureProblem checked first).
    static func of(_ raw: Json.Object) -> [(height: Int, width: Int)] {
        (raw["sizes"] as! [Any?]).map { s in
            let o = s as! Json.Object
            return (height: Int(o["height"] as! Int64), width: Int(o["width"] as! Int64))
        }
    }

    /// The manifest at one of its listed sizes: that size's image, noise shape, programs and tile plans, without `sizes`.
    static func atRaw(_ raw: Json.Object, _ height: Int, _ width: Int) -> Json.Object {
        let entry = (raw["sizes"] as! [Any?]).map { $0 as! Json.Object }
            .first { ($0["height"] as? Int64) == Int64(height) && ($0["width"] as? Int64) == Int64(width) }!
        var out = raw.removing("sizes")
        var image = raw["image"] as! Json.Object
        image.put("height", Int64(height))
        image.put("width", Int64(width))
        out.put("image", image)
        var noise = raw["noise"] as! Json.Object
        noise.put("shape", entry["noise_shape"])
        out.put("noise", noise)
        let changed = entry["components"] as! Json.Object
        var components = Json.Object()
        for (name, c) in (raw["components"] as! Json.Object).entries {
            var merged = c as! Json.Object
            if let own = changed[name] as? Json.Object { for (k, v) in own.entries { merged.put(k, v) } }
            components.put(name, merged)
        }
        out.put("components", components)
        if var block = raw["img2img"] as? Json.Object, var picture = block["image"] as? Json.Object {
            picture.put("height", Int64(height))
            picture.put("width", Int64(width))
            block.put("image", picture)
            out.put("img2img", block)
        }
        return out
    }

    /// (key, problem) of a malformed `sizes` list, as the Python loader words it; nil when well formed.
    static func structureProblem(_ raw: Json.Object) -> (key: String, problem: String)? {
        guard let sizes = raw["sizes"] as? [Any?], sizes.count >= 2 else {
            return ("sizes", "must list at least two sizes (a one-size bundle has no sizes)")
        }
        var seen = Set<[Int64]>()
        let components = raw["components"] as! Json.Object
        for (i, value) in sizes.enumerated() {
            let key = "sizes[\(i)]"
            guard let s = value as? Json.Object, let h = s["height"] as? Int64, let w = s["width"] as? Int64,
                  (1...65536).contains(h), (1...65536).contains(w) else {
                return (key, "needs height and width as positive integers")
            }
            if !seen.insert([h, w]).inserted { return (key, "\(w)x\(h) is listed twice") }
            guard s["noise_shape"] is [Any?], let own = s["components"] as? Json.Object else {
                return (key, "needs noise_shape (a list) and components (an object)")
            }
            for (name, c) in own.entries {
                guard let top = components[name] as? Json.Object, let c = c as? Json.Object else {
                    return ("\(key).components.\(name)", "is not a component of the bundle")
                }
                let files = (top["files"] as? [Any?]) ?? []
                guard let file = c["file"] as? String, files.contains(where: { f in
                    guard let f = f as? String else { return false }
                    return f == file || f.utf8.starts(with: "\(file)/".utf8)
                }) else {
                    return ("\(key).components.\(name).file", "\(Manifest.pyRepr(c["file"])) is not a file (or folder) of the component")
                }
            }
        }
        let image = raw["image"] as! Json.Object
        let first = sizes[0] as! Json.Object
        if (first["height"] as? Int64) != (image["height"] as? Int64) || (first["width"] as? Int64) != (image["width"] as? Int64)
            || !sameInts(first["noise_shape"], (raw["noise"] as! Json.Object)["shape"]) {
            return ("sizes[0]", "is not the default size (image and noise.shape)")
        }
        return nil
    }

    /// Two JSON lists of the same integers (Kotlin's List equality on parsed numbers).
    private static func sameInts(_ a: Any?, _ b: Any?) -> Bool {
        guard let a = a as? [Any?], let b = b as? [Any?], a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in (x as? Int64) != nil && (x as? Int64) == (y as? Int64) }
    }
}
