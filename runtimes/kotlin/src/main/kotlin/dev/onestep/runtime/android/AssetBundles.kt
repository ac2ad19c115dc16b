package dev.onestep.runtime.android

import android.content.Context
import java.io.File

/**
 * Bundles shipped in an APK's assets must become real files before a runtime can memory-map
 * their programs. Copies assets/<name>/ to filesDir/bundles/<name>/ once per manifest.sha256
 * (a changed bundle is copied again, into a fresh folder renamed into place); the Pipeline then
 * verifies every hash as usual.
 */
object AssetBundles {
    fun extract(context: Context, name: String = "bundle"): File {
        val dest = File(context.filesDir, "bundles/$name")
        val digest = context.assets.open("$name/manifest.sha256").use { it.readBytes() }
        val current = File(dest, "manifest.sha256")
        if (current.isFile && current.readBytes().contentEquals(digest)) return dest
        val staging = File(context.filesDir, "bundles/.$name.staging")
        staging.deleteRecursively()
        copy(context, name, staging)
        dest.deleteRecursively()
        if (!staging.renameTo(dest)) throw IllegalStateException("cannot move $staging to $dest")
        return dest
    }

    private fun copy(context: Context, path: String, to: File) {
        val children = context.assets.list(path) ?: emptyArray()
        if (children.isEmpty()) {
            to.parentFile?.mkdirs()
            context.assets.open(path).use { input -> to.outputStream().use { input.copyTo(it) } }
            return
        }
        to.mkdirs()
        for (child in children.sorted()) copy(context, "$path/$child", File(to, child))
    }
}
