package dev.onestep.demo

import android.app.Application
import android.graphics.Bitmap
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.compose.ui.graphics.ImageBitmap
import androidx.compose.ui.graphics.asImageBitmap
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import dev.onestep.runtime.Manifest
import dev.onestep.runtime.NoiseSource
import dev.onestep.runtime.Pipeline
import dev.onestep.runtime.android.AssetBundles
import dev.onestep.runtime.android.ExecuTorchEngine
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** The bundle as the screen describes it: its manifest's name, target and family, and each component's precision in run order. */
class BundleInfo(val name: String, val target: String, val family: String, val precisions: List<Pair<String, String>>) {
    companion object {
        fun of(m: Manifest) = BundleInfo(m.name, m.target, m.family, m.wiring.order.map { it to m.components.getValue(it).precision })
    }
}

data class DemoState(
    // The first prompt and the seed `make demo` generates with, so the image can be compared with build/demo/.
    val prompt: String = "two green circles",
    val seedText: String = "0",
    val bundle: BundleInfo? = null,
    val busy: Boolean = true,
    val image: ImageBitmap? = null,
    val millis: List<Pair<String, Double>> = emptyList(),
    val truncated: Boolean = false,
    val message: String? = "Verifying the bundle…",
) {
    val seed: ULong? get() = NoiseSource.parseSeed(seedText)
}

class DemoViewModel(application: Application) : AndroidViewModel(application) {
    // Off the main thread, and one task at a time: opening, generating and closing never overlap
    // (ExecuTorch refuses to close a module while it runs).
    private val worker = Dispatchers.Default.limitedParallelism(1)
    private var pipeline: Pipeline? = null  // touched only on worker

    var state by mutableStateOf(DemoState())
        private set

    init {
        viewModelScope.launch {
            state = try {
                val dir = withContext(Dispatchers.IO) { AssetBundles.extract(getApplication()) }
                val info = withContext(worker) { Pipeline.open(dir, ExecuTorchEngine()).also { pipeline = it }.let { BundleInfo.of(it.manifest) } }
                state.copy(bundle = info, busy = false, message = null)
            } catch (e: Exception) {
                state.copy(busy = false, message = "Could not open the bundle (android_demo/README.md): ${e.message}")
            }
        }
    }

    fun onPrompt(text: String) {
        state = state.copy(prompt = text)
    }

    fun onSeed(text: String) {
        state = state.copy(seedText = text)
    }

    fun generate() {
        val seed = state.seed ?: return
        val prompt = state.prompt
        state = state.copy(busy = true, message = null)
        viewModelScope.launch {
            state = try {
                val (image, result) = withContext(worker) {
                    val r = checkNotNull(pipeline).generate(prompt, seed)
                    Bitmap.createBitmap(r.image.argb(), r.image.width, r.image.height, Bitmap.Config.ARGB_8888).asImageBitmap() to r
                }
                state.copy(busy = false, image = image, millis = result.stages.map { it.name to it.millis }, truncated = result.truncated)
            } catch (e: Exception) {
                state.copy(busy = false, message = "Generation failed: ${e.message}")
            }
        }
    }

    override fun onCleared() {
        // viewModelScope is cancelled by now; this queues behind a generation still running on the worker.
        CoroutineScope(worker).launch { pipeline?.close() }
    }
}
