package dev.onestep.runtime.android

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEpDevice
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
 * Runs `--target onnx` and `--target qnn` bundles with ONNX Runtime Android (com.microsoft.onnxruntime:onnxruntime-android).
 * Sessions open the model by path, so weights stored beside it (`<name>.onnx.data`, a QNN context's `_qnn.bin`) are
 * found where the bundle keeps them. [configure] adds execution providers or thread settings to each session's
 * options; for ONNX bundles the default is ONNX Runtime's CPU provider, which computes what the compiler's parity
 * check measured, without the CPU memory arena (as the compiler's sessions: the arena keeps every activation block
 * it ever grew, 1 GB more at the peak of an SD decoder at 512 px, for no speed), and without the memory pattern for
 * int8 components (its one planned block outgrew the live peak of W8A8 programs, 1.50 vs 1.29 GB for the SD
 * decoder; README).
 *
 * A QNN bundle opens, per component, the HTP context compiled for [soc] (`Manifest.program`; on Android 12+ pass
 * `Build.SOC_MODEL`), on Qualcomm's QNN execution provider plugin (com.qualcomm.qti:onnxruntime-android-qnn) with
 * CPU fallback off, as the compiler compiled and simulated it: a device whose SoC the bundle was not compiled for
 * is a BundleError naming the SoCs it was, and an HTP that cannot take the program fails the open, never the CPU.
 */
class OnnxRuntimeEngine(
    private val soc: String? = null,
    private val configure: OrtSession.SessionOptions.() -> Unit = {},
) : Engine {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()

    override fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session {
        val file = manifest.program(component.name, soc)
        val options = OrtSession.SessionOptions()
        try {
            if (manifest.target == "qnn") {
                options.addExecutionProvider(qnnDevices(), QNN_OPTIONS)
                options.addConfigEntry("session.disable_cpu_ep_fallback", "1")
            } else {
                options.setCPUArenaAllocator(false)
                options.setMemoryPatternOptimization(component.precision != "int8")
            }
            options.configure()
            return OnnxRuntimeSession(env, component, env.createSession(File(bundle, file).absolutePath, options), options)
        } catch (e: Exception) {
            options.close()
            throw e
        }
    }

    // The plugin's library registers once per process; its devices are the HTP (and, on some SoCs, the GPU).
    private fun qnnDevices(): List<OrtEpDevice> = synchronized(OnnxRuntimeEngine::class.java) {
        if (env.epDevices.none { it.epName == QNN_EP }) env.registerExecutionProviderLibrary(QNN_EP, QNN_LIBRARY)
        env.epDevices.filter { it.epName == QNN_EP }.ifEmpty {
            throw IllegalStateException("ONNX Runtime found no $QNN_EP device: this is not a Snapdragon with an HTP")
        }
    }
}

// Qualcomm's plugin (ai.onnxruntime.qnnpluginep): the library its AAR ships and the name its EP registers under
private const val QNN_EP = "QNNExecutionProvider"
private const val QNN_LIBRARY = "libonnxruntime_providers_qnn.so"
// The HTP, as the compiler compiled the contexts for it; fp16 for float programs (the HTP computes no fp32)
private val QNN_OPTIONS = mapOf("backend_type" to "htp", "enable_htp_fp16_precision" to "1",
    "offload_graph_io_quantization" to "0")

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
