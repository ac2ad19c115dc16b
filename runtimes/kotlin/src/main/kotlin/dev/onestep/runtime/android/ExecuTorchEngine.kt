package dev.onestep.runtime.android

import dev.onestep.runtime.ComponentSpec
import dev.onestep.runtime.DType
import dev.onestep.runtime.Engine
import dev.onestep.runtime.Manifest
import dev.onestep.runtime.Session
import dev.onestep.runtime.Tensor
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.DType as EtDType
import org.pytorch.executorch.Tensor as EtTensor

/**
 * Runs `--target executorch` bundles with ExecuTorch's Android `Module` (org.pytorch:executorch-android, at the
 * version of the compiler's executorch in pyproject.toml, which exported the programs). A program's method takes
 * its inputs and returns its outputs by position, so names are mapped through the order the manifest lists them
 * in, the order the compiler exported them in (`<file>.io.json` beside each program records the same, and the
 * method: "forward").
 *
 * [loadMode] is one of Module.LOAD_MODE_*: memory-mapping (the default) lets the OS page weights in from the
 * bundle's files instead of copying whole programs onto the heap.
 */
class ExecuTorchEngine(private val loadMode: Int = Module.LOAD_MODE_MMAP) : Engine {
    override fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session {
        val module = Module.load(File(bundle, component.file).absolutePath, loadMode)
        try {
            // Loading now makes a program this runtime cannot run fail Pipeline.open, not the first generate.
            module.loadMethod(component.function ?: METHOD)
        } catch (e: Exception) {
            module.close()
            throw e
        }
        return ExecuTorchSession(component, module)
    }
}

/** A program's only method; a component naming a `function` (one program of several in its file) runs that one. */
private const val METHOD = "forward"

private class ExecuTorchSession(private val component: ComponentSpec, private val module: Module) : Session {

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val args = component.inputs.map { EValue.from(toExecuTorch(inputs.getValue(it.name))) }
        val out = module.execute(component.function ?: METHOD, *args.toTypedArray())
        check(out.size == component.outputs.size) {
            "${component.name}: ${component.file} returned ${out.size} values, the manifest declares ${component.outputs.size}"
        }
        return component.outputs.withIndex().associate { (i, spec) ->
            spec.name to fromExecuTorch(out[i].toTensor(), "${component.name} output ${spec.name}")
        }
    }

    // Module.close() refuses while a method runs; Pipeline's caller owns that ordering (one thread per pipeline).
    override fun close() = module.close()
}

private fun toExecuTorch(t: Tensor): EtTensor {
    val shape = LongArray(t.shape.size) { t.shape[it].toLong() }
    return when (t.dtype) {
        DType.FLOAT32 -> EtTensor.fromBlob(t.floats!!, shape)
        DType.INT64 -> EtTensor.fromBlob(t.longs!!, shape)
        DType.INT32 -> t.longs!!.let { v -> EtTensor.fromBlob(IntArray(v.size) { Math.toIntExact(v[it]) }, shape) }
    }
}

// Converted by the dtype the program actually returned, so Pipeline.conform reports a mismatch with the manifest.
private fun fromExecuTorch(t: EtTensor, what: String): Tensor {
    val shape = t.shape().let { s -> IntArray(s.size) { Math.toIntExact(s[it]) } }
    return when (val dtype = t.dtype()) {
        EtDType.FLOAT -> Tensor.float32(shape, t.dataAsFloatArray)
        EtDType.INT64 -> Tensor.integer(DType.INT64, shape, t.dataAsLongArray)
        EtDType.INT32 -> t.dataAsIntArray.let { v -> Tensor.integer(DType.INT32, shape, LongArray(v.size) { v[it].toLong() }) }
        else -> throw IllegalStateException("$what: ExecuTorch returned $dtype; runtimes read float32, int64 and int32")
    }
}
