package dev.onestep.runtime

/**
 * A bundle that must not be run, with `where` naming the file and field at fault, in the same
 * form as the Python loader's message (compiler/contract/verifier.py), so the fixtures check both.
 */
class BundleError(val where: String, val reason: String) : Exception("$where: $reason")
