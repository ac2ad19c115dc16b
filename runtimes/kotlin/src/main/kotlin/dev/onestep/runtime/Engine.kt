package dev.onestep.runtime

import java.io.File

/**
 * Runs compiled components. The pure runtime never touches a framework: ExecuTorch (Android
 * `Module`), ONNX Runtime (Android) and Core ML (Swift) implement this, as does the JVM test
 * engine that calls the Python reference runtime.
 */
interface Engine {
    /** Opens one component of a verified bundle; called once per component, in wiring order. */
    fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session
}

/** One opened component. */
interface Session : AutoCloseable {
    /** Inputs by name (the component's declared names, dtypes and shapes); returns every declared output by name. */
    fun run(inputs: Map<String, Tensor>): Map<String, Tensor>

    override fun close() {}
}
