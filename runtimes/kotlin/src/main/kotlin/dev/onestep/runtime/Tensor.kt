package dev.onestep.runtime

/** The element types bundles use at component boundaries (manifest `dtype`). */
enum class DType(val manifestName: String) {
    FLOAT32("float32"), INT64("int64"), INT32("int32");

    companion object {
        fun of(name: String): DType? = entries.firstOrNull { it.manifestName == name }
    }
}

/** A dense row-major tensor: floats for FLOAT32, longs for INT64 and INT32 (kept wide, narrowed by an engine). */
class Tensor private constructor(val dtype: DType, val shape: IntArray, val floats: FloatArray?, val longs: LongArray?) {
    val count: Int get() = shape.fold(1) { a, b -> a * b }

    init {
        val n = floats?.size ?: longs!!.size
        require(n == count) { "tensor data has $n elements, shape ${shape.contentToString()} needs $count" }
    }

    companion object {
        fun float32(shape: IntArray, data: FloatArray) = Tensor(DType.FLOAT32, shape, data, null)
        fun integer(dtype: DType, shape: IntArray, data: LongArray): Tensor {
            require(dtype != DType.FLOAT32) { "integer tensor needs an integer dtype" }
            return Tensor(dtype, shape, null, data)
        }
    }
}
