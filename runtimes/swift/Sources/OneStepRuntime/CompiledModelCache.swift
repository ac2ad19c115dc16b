import Foundation

/// Compiled models kept across launches. Core ML compiles an .mlpackage on the device before it
/// can load it (seconds for a text encoder, minutes for a UNet on a phone); doing that at every
/// open, and deleting the result at close, made every launch pay it. Each compiled model is kept
/// under `directory` as `<component>-<key>.mlmodelc`, the key a digest of the component's files'
/// sha256 from the verified manifest: an unchanged bundle loads at once, a changed one is compiled
/// again and the component's older entries are removed. A compile lands under a temporary name and
/// is renamed into place, so a crash mid-compile never leaves an entry that looks complete.
///
/// The compile is a closure (`MLModel.compileModel` in CoreMLEngine), so this logic is tested on
/// Linux, where Core ML does not exist.
public final class CompiledModelCache {
    public let directory: URL
    private let suffix = ".mlmodelc"

    public init(directory: URL) {
        self.directory = directory
    }

    /// The entry's name before its key: the bundle's name and the component, in file-name-safe
    /// characters, so two bundles of one app keep their own entries.
    public static func slot(manifest: Manifest, component: ComponentSpec) -> String {
        let safe = "\(manifest.name).\(component.name)".unicodeScalars.map { c -> String in
            CharacterSet.alphanumerics.contains(c) && c.isASCII || "._".unicodeScalars.contains(c) ? String(c) : "_"
        }
        return safe.joined()
    }

    /// The component's cache key: SHA-256 over its files' paths and sha256, in the manifest's order.
    public static func key(component: ComponentSpec, manifest: Manifest) -> String {
        var sha = Sha256()
        for file in component.files {
            sha.update(Array("\(file) \(manifest.files[file]?.sha256 ?? "")\n".utf8))
        }
        return sha.digest().prefix(16).map { String(format: "%02x", $0) }.joined()
    }

    /// The compiled model for `component` with `key`: the cached one, or `compile()`'s result moved
    /// into the cache (compile returns a folder this cache may take over).
    public func compiled(component: String, key: String, compile: () throws -> URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let entry = directory.appendingPathComponent("\(component)-\(key)\(suffix)")
        if !fm.fileExists(atPath: entry.path) {
            let fresh = try compile()
            let staging = directory.appendingPathComponent(".\(component)-\(key).partial-\(UUID().uuidString)")
            try fm.moveItem(at: fresh, to: staging)
            do {
                try fm.moveItem(at: staging, to: entry)
            } catch where fm.fileExists(atPath: entry.path) {
                try? fm.removeItem(at: staging)   // another process put the same entry in place first
            }
        }
        for name in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? [] where isStale(name, component, entry) {
            try? fm.removeItem(at: directory.appendingPathComponent(name))
        }
        return entry
    }

    /// The component's other keys, and partial compiles of it left by a crash.
    private func isStale(_ name: String, _ component: String, _ entry: URL) -> Bool {
        name != entry.lastPathComponent && (name.hasPrefix("\(component)-") && name.hasSuffix(suffix)
                                            || name.hasPrefix(".\(component)-") && name.contains(".partial-"))
    }
}
