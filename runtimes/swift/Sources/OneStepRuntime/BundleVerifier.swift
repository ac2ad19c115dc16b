import Foundation

/// Proves a bundle is what the compiler wrote before anything in it is opened: manifest.json
/// against manifest.sha256, then every file against its sha256 and size, every path inside the
/// bundle, no unlisted file, and the manifest's references and wiring. Same rules, order and
/// `where` as compiler/contract/verifier.py's read_verified_manifest (fixtures/bundles/cases.json).
public enum BundleVerifier {
    public static let MANIFEST = "manifest.json"
    public static let MANIFEST_DIGEST = "manifest.sha256"
    public static let TIMINGS = "timings.txt"
    /// For people and `verify`, beside the manifest and outside its table (what compile measured
    /// differs between CPUs); an app's copy leaves them out (`package`), a runtime reads none.
    public static let REPORT = "report.html"
    public static let REPORT_DATA = "report.json"
    public static let REPORT_DIGEST = "report.sha256"
    /// `compile --sign-key`'s signature over manifest.json: an app that pins a key checks it (runtimes/README.md).
    public static let SIGNATURE = "manifest.sig"
    private static let UNHASHED = [MANIFEST, MANIFEST_DIGEST, SIGNATURE, REPORT, REPORT_DATA, REPORT_DIGEST, TIMINGS]

    public static func verify(bundle: URL) throws -> Manifest {
        let path = bundle.appendingPathComponent(MANIFEST)
        let location = path.path
        if !isFile(path) { throw BundleError(location, "missing; not a bundle directory") }
        let size = try fileSize(path)
        if size > Json.MAX_MANIFEST_BYTES {
            throw BundleError(location, "\(size) bytes, more than the \(Json.MAX_MANIFEST_BYTES) this runtime reads")
        }
        let data = try Data(contentsOf: path)
        // String(decoding:) turns malformed UTF-8 into U+FFFD; getting the same bytes back proves
        // there was none, as Kotlin's REPORTing decoder does.
        let text = String(decoding: data, as: UTF8.self)
        if !text.utf8.elementsEqual(data) { throw BundleError(location, "not valid JSON (not UTF-8)") }
        let raw = try Manifest.readRaw(text, where: location)
        try checkDigest(bundle, data)
        try Manifest.requireKeys(raw, where: location)
        let root = bundle.absoluteURL.resolvingSymlinksInPath()
        let table = raw["files"] as! Json.Object
        for rel in table.keys.sorted() {
            let file = try inside(root, rel, where: location)
            if !isFile(file) { throw BundleError("\(location): files.\(rel)", "listed file is missing") }
            let entry = table[rel] as? Json.Object
            let size = try fileSize(file)
            if entry == nil || (entry?["size"] as? Int64) != size {
                throw BundleError(bundle.appendingPathComponent(rel).path, "size \(size) != manifest \(Manifest.pyRepr(entry?["size"]))")
            }
            let digest = try sha256(file)
            if digest != (entry?["sha256"] as? String) {
                throw BundleError(bundle.appendingPathComponent(rel).path, "sha256 does not match manifest.json (file modified or corrupt)")
            }
        }
        // Compared as UTF-8 bytes: Swift's String equality is canonical equivalence, and a file
        // whose name only looks like a listed one ("e" + U+0301 for "é") was never checked.
        let listed = Set((table.keys + UNHASHED).map { Array($0.utf8) })
        let present = presentFiles(root).sorted()
        if let unlisted = present.first(where: { !listed.contains(Array($0.utf8)) }) {
            throw BundleError(bundle.appendingPathComponent(unlisted).path, "file not listed in manifest.json")
        }
        return try Manifest.parse(raw, where: location)
    }

    private static func checkDigest(_ bundle: URL, _ data: Data) throws {
        let digest = bundle.appendingPathComponent(MANIFEST_DIGEST)
        if !isFile(digest) { throw BundleError(digest.path, "missing; the manifest cannot be checked (bundle incomplete or edited)") }
        var sha = Sha256()
        sha.update(data)
        let expected = Data("\(hex(sha.digest()))  \(MANIFEST)\n".utf8)
        let actual = try Data(contentsOf: digest)
        if actual != expected {
            throw BundleError(bundle.appendingPathComponent(MANIFEST).path, "sha256 does not match \(MANIFEST_DIGEST) (manifest modified or corrupt)")
        }
    }

    /// A manifest path as a file under `root`, refusing absolute paths, "..", backslashes and symlinks that leave.
    private static func inside(_ root: URL, _ rel: String, where location: String) throws -> URL {
        // Byte by byte: a combining mark after '/', '\' or ".." makes one Character of it, which
        // Character comparisons would not see.
        let bytes = Array(rel.utf8)
        let slash = UInt8(ascii: "/")
        let segments = bytes.split(separator: slash, omittingEmptySubsequences: false)
        if bytes.first == slash || segments.contains(where: { $0.elementsEqual("..".utf8) }) || bytes.contains(UInt8(ascii: "\\")) {
            throw BundleError("\(location): files.\(rel)", "path leaves the bundle directory")
        }
        let file = root.appendingPathComponent(rel)
        if isSymbolicLink(file) || !file.resolvingSymlinksInPath().pathComponents.starts(with: root.pathComponents) {
            throw BundleError("\(location): files.\(rel)", "path resolves outside the bundle directory")
        }
        return file
    }

    public static func sha256(_ file: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        var sha = Sha256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            sha.update(chunk)
        }
        return hex(sha.digest())
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Every file and symlink under `root`, relative, as Kotlin's walkTopDown and Python's rglob
    /// see them (symlinked folders are listed, not followed).
    private static func presentFiles(_ root: URL) -> [String] {
        guard let walk = FileManager.default.enumerator(atPath: root.path) else { return [] }
        var out: [String] = []
        while let rel = walk.nextObject() as? String {
            let url = root.appendingPathComponent(rel)
            if isFile(url) || isSymbolicLink(url) { out.append(rel) }
        }
        return out
    }

    /// A regular file, following symlinks (java.io.File.isFile).
    private static func isFile(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    private static func isSymbolicLink(_ url: URL) -> Bool {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)) != nil
    }

    private static func fileSize(_ url: URL) throws -> Int64 {
        let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
        return (attributes[.size] as? NSNumber)?.int64Value ?? -1
    }
}
