package dev.onestep.runtime

import java.io.File
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.nio.file.Files
import java.security.MessageDigest

/**
 * Proves a bundle is what the compiler wrote before anything in it is opened: manifest.json
 * against manifest.sha256, then every file against its sha256 and size, every path inside the
 * bundle, no unlisted file, and the manifest's references and wiring. Same rules, order and
 * `where` as compiler/contract/verifier.py's read_verified_manifest (fixtures/bundles/cases.json).
 */
object BundleVerifier {
    const val MANIFEST = "manifest.json"
    const val MANIFEST_DIGEST = "manifest.sha256"
    const val TIMINGS = "timings.txt"
    /** For people and `verify`, beside the manifest and outside its table (what compile measured
     *  differs between CPUs); an app's copy leaves them out (`package`), a runtime reads none. */
    const val REPORT = "report.html"
    const val REPORT_DATA = "report.json"
    const val REPORT_DIGEST = "report.sha256"
    /** `compile --sign-key`'s signature over manifest.json: an app that pins a key checks it (runtimes/README.md). */
    const val SIGNATURE = "manifest.sig"
    private val UNHASHED = setOf(MANIFEST, MANIFEST_DIGEST, SIGNATURE, REPORT, REPORT_DATA, REPORT_DIGEST, TIMINGS)

    fun verify(bundle: File): Manifest {
        val path = File(bundle, MANIFEST)
        val where = path.path
        if (!path.isFile) throw BundleError(where, "missing; not a bundle directory")
        if (path.length() > Json.MAX_MANIFEST_BYTES) {
            throw BundleError(where, "${path.length()} bytes, more than the ${Json.MAX_MANIFEST_BYTES} this runtime reads")
        }
        val data = path.readBytes()
        val text = try {
            Charsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                .decode(java.nio.ByteBuffer.wrap(data)).toString()
        } catch (e: CharacterCodingException) {
            throw BundleError(where, "not valid JSON (not UTF-8)")
        }
        val raw = Manifest.readRaw(text, where)
        checkDigest(bundle, data)
        Manifest.requireKeys(raw, where)
        val root = bundle.canonicalFile
        val table = raw["files"] as Map<*, *>
        for (rel in table.keys.map { it as String }.sorted()) {
            val file = inside(root, rel, where)
            if (!file.isFile) throw BundleError("$where: files.$rel", "listed file is missing")
            val entry = table[rel] as? Map<*, *>
            val size = file.length()
            if (entry == null || entry["size"] != size) {
                throw BundleError(File(bundle, rel).path, "size $size != manifest ${Manifest.pyRepr(entry?.get("size"))}")
            }
            if (sha256(file) != entry["sha256"]) {
                throw BundleError(File(bundle, rel).path, "sha256 does not match manifest.json (file modified or corrupt)")
            }
        }
        val listed = table.keys.map { it as String }.toSet() + UNHASHED
        // Files.walk does not follow symlinked folders (as Python's rglob); a symlink itself is reported.
        val present = Files.walk(root.toPath()).use { paths ->
            paths.filter { it != root.toPath() && (Files.isRegularFile(it) || Files.isSymbolicLink(it)) }
                .map { root.toPath().relativize(it).joinToString("/") }.toList()
        }.sorted()
        present.firstOrNull { it !in listed }?.let { throw BundleError(File(bundle, it).path, "file not listed in manifest.json") }
        return Manifest.parse(raw, where)
    }

    private fun checkDigest(bundle: File, data: ByteArray) {
        val digest = File(bundle, MANIFEST_DIGEST)
        if (!digest.isFile) throw BundleError(digest.path, "missing; the manifest cannot be checked (bundle incomplete or edited)")
        val expected = "${hex(MessageDigest.getInstance("SHA-256").digest(data))}  $MANIFEST\n".toByteArray(Charsets.US_ASCII)
        if (!digest.readBytes().contentEquals(expected)) {
            throw BundleError(File(bundle, MANIFEST).path, "sha256 does not match $MANIFEST_DIGEST (manifest modified or corrupt)")
        }
    }

    /** A manifest path as a file under `root`, refusing absolute paths, "..", backslashes and symlinks that leave. */
    private fun inside(root: File, rel: String, where: String): File {
        if (rel.startsWith("/") || rel.split('/').contains("..") || '\\' in rel) {
            throw BundleError("$where: files.$rel", "path leaves the bundle directory")
        }
        val file = File(root, rel)
        if (Files.isSymbolicLink(file.toPath()) || !file.canonicalFile.toPath().startsWith(root.toPath())) {
            throw BundleError("$where: files.$rel", "path resolves outside the bundle directory")
        }
        return file
    }

    fun sha256(file: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val buf = ByteArray(1 shl 20)
            while (true) {
                val n = input.read(buf)
                if (n < 0) break
                md.update(buf, 0, n)
            }
        }
        return hex(md.digest())
    }

    private fun hex(bytes: ByteArray) = bytes.joinToString("") { "%02x".format(it.toInt() and 0xff) }
}
