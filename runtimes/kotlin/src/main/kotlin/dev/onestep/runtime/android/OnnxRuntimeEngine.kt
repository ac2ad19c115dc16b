package dev.onestep.runtime.android

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import dev.onestep.runtime.ComponentSpec
import dev.onestep.runtime.DType
import dev.onestep.runtime.Engine
import dev.onestep.runtime.Manifest
import dev.onestep.runtime.Session
import dev.onestep.runtime.Tensor
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer
import java.nio.LongBuffer

/**
 * Runs `--target onnx` bundles with ONNX Runtime Android (com.microsoft.onnxruntime:onnxruntime-android).
 * Sessions open the model by path, so weights stored beside it (`<name>.onnx.data`) are found where the bundle
 * keeps them. [configure] adds execution providers or thread settings to each session's options; the default
 * is ONNX Runtime's CPU provider, which computes what the compiler's parity check measured, without the CPU
 * memory arena (as the compiler's sessions: the arena keeps every activation block it ever grew, 1 GB more at the
 * peak of an SD decoder at 512 px, for no speed), and without the memory pattern for int8 components (its one
 * planned block outgrew the live peak of W8A8 programs, 1.50 vs 1.29 GB for the SD decoder; README).
 */
class OnnxRuntimeEngine(private val configure: OrtSession.SessionOptions.() -> Unit = {}) : Engine {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()

    override fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session {
        val options = OrtSession.SessionOptions()
        try {
            options.setCPUArenaAllocator(false)
            options.setMemoryPatternOptimization(component.precision != "int8")
            options.configure()
            return OnnxRuntimeSession(env, component, env.createSession(File(bundle, component.file).absolutePath, options), options)
        } catch (e: Exception) {
            options.close()
            throw e
        }
    }
}

private class OnnxRuntimeSession(
    private val env: OrtEnvironment,
    private val component: ComponentSpec,
    private val session: OrtSession,
    private val options: OrtSession.SessionOptions,
) : Session {
    private val outputNames = component.outputs.map { it.name }.toSet()

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val feeds = LinkedHashMap<String, OnnxTensor>()
        try {
            for (spec in component.inputs) feeds[spec.name] = toOnnx(env, inputs.getValue(spec.name))
            session.run(feeds, outputNames).use { result ->
                return component.outputs.associate { spec ->
                    val value = result.get(spec.name).orElse(null) as? OnnxTensor
                        ?: throw IllegalStateException("${component.name}: ${component.file} returned no tensor ${spec.name}")
                    spec.name to fromOnnx(value, "${component.name} output ${spec.name}")
                }
            }
        } finally {
            feeds.values.forEach { it.close() }
        }
    }

    override fun close() {
        session.close()
        options.close()
    }
}

private fun toOnnx(env: OrtEnvironment, t: Tensor): OnnxTensor {
    val shape = LongArray(t.shape.size) { t.shape[it].toLong() }
    return when (t.dtype) {
        DType.FLOAT32 -> OnnxTensor.createTensor(env, FloatBuffer.wrap(t.floats!!), shape)
        DType.INT64 -> OnnxTensor.createTensor(env, LongBuffer.wrap(t.longs!!), shape)
        DType.INT32 -> t.longs!!.let { v -> OnnxTensor.createTensor(env, IntBuffer.wrap(IntArray(v.size) { Math.toIntExact(v[it]) }), shape) }
    }
}

// Converted by the element type the model actually returned, so Pipeline.conform reports a mismatch with the manifest.
private fun fromOnnx(value: OnnxTensor, what: String): Tensor {
    val info = value.info
    val shape = info.shape.let { s -> IntArray(s.size) { Math.toIntExact(s[it]) } }
    return when (info.type) {
        OnnxJavaType.FLOAT -> value.floatBuffer.let { b -> Tensor.float32(shape, FloatArray(b.remaining()).also { b.get(it) }) }
        OnnxJavaType.INT64 -> value.longBuffer.let { b -> Tensor.integer(DType.INT64, shape, LongArray(b.remaining()).also { b.get(it) }) }
        OnnxJavaType.INT32 -> value.intBuffer.let { b -> Tensor.integer(DType.INT32, shape, LongArray(b.remaining()) { b.get().toLong() }) }
        else -> throw IllegalStateException("$what: ONNX Runtime returned ${info.type}; runtimes read float32, int64 and int32")
    }
}
