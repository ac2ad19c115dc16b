package dev.onestep.runtime

import java.io.DataInputStream
import java.io.DataOutputStream
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * An Engine that runs each component in the project's Python reference runtime
 * (`python -m compiler.testing.reference_engine`, one helper process per bundle), so the JVM test
 * exercises the real Pipeline on real compiled programs without an Android device.
 */
class PythonEngine(private val python: String, private val repo: File) : Engine, AutoCloseable {
    private var process: Process? = null
    private lateinit var input: DataInputStream
    private lateinit var output: DataOutputStream

    override fun open(bundle: File, component: ComponentSpec, manifest: Manifest): Session {
        if (process == null) {
            // the size of the manifest the pipeline follows: its programs (multi-size bundles)
            val size = Sizes.spell(manifest.image.height, manifest.image.width)
            val p = ProcessBuilder(python, "-m", "compiler.testing.reference_engine", "--bundle", bundle.path, "--size", size)
                .directory(repo).redirectError(ProcessBuilder.Redirect.INHERIT).start()
            input = DataInputStream(p.inputStream.buffered())
            output = DataOutputStream(p.outputStream.buffered())
            process = p
        }
        return object : Session {
            override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> = call(component, inputs)
        }
    }

    private fun call(component: ComponentSpec, inputs: Map<String, Tensor>): Map<String, Tensor> {
        val specs = component.inputs.map { it.name to inputs.getValue(it.name) }
        val header = specs.joinToString(",", "{\"component\":\"${component.name}\",\"tensors\":[", "]}") { (name, t) ->
            "{\"name\":\"$name\",\"dtype\":\"${t.dtype.manifestName}\",\"shape\":${t.shape.joinToString(",", "[", "]")}}"
        }.toByteArray(Charsets.UTF_8)
        output.writeInt(header.size)
        output.write(header)
        for ((_, t) in specs) output.write(bytes(t))
        output.flush()
        val reply = ByteArray(input.readInt()).also { input.readFully(it) }
        @Suppress("UNCHECKED_CAST")
        val doc = Json.parse(String(reply, Charsets.UTF_8)) as Map<String, Any?>
        doc["error"]?.let { throw IllegalStateException("reference engine: $it") }
        return (doc["tensors"] as List<Map<String, Any?>>).associate { spec ->
            val shape = (spec["shape"] as List<Long>).map { it.toInt() }.toIntArray()
            val dtype = DType.of(spec["dtype"] as String) ?: error("unsupported dtype ${spec["dtype"]}")
            (spec["name"] as String) to read(dtype, shape)
        }
    }

    private fun bytes(t: Tensor): ByteArray {
        val width = if (t.dtype == DType.INT64) 8 else 4
        val buf = ByteBuffer.allocate(t.count * width).order(ByteOrder.LITTLE_ENDIAN)
        when (t.dtype) {
            DType.FLOAT32 -> t.floats!!.forEach { buf.putFloat(it) }
            DType.INT64 -> t.longs!!.forEach { buf.putLong(it) }
            DType.INT32 -> t.longs!!.forEach { buf.putInt(it.toInt()) }
        }
        return buf.array()
    }

    private fun read(dtype: DType, shape: IntArray): Tensor {
        val count = shape.fold(1) { a, b -> a * b }
        val width = if (dtype == DType.INT64) 8 else 4
        val buf = ByteBuffer.wrap(ByteArray(count * width).also { input.readFully(it) }).order(ByteOrder.LITTLE_ENDIAN)
        return when (dtype) {
            DType.FLOAT32 -> Tensor.float32(shape, FloatArray(count) { buf.float })
            DType.INT64 -> Tensor.integer(dtype, shape, LongArray(count) { buf.long })
            DType.INT32 -> Tensor.integer(dtype, shape, LongArray(count) { buf.int.toLong() })
        }
    }

    override fun close() {
        process?.let {
            output.close()
            it.waitFor()
        }
    }
}
