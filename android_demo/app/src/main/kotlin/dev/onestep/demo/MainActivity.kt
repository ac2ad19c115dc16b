package dev.onestep.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.enableEdgeToEdge
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.aspectRatio
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.FilterQuality
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.unit.dp
import androidx.lifecycle.viewmodel.compose.viewModel

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        enableEdgeToEdge()
        setContent { MaterialTheme { DemoScreen(viewModel()) } }
    }
}

@Composable
fun DemoScreen(model: DemoViewModel) {
    val s = model.state
    Scaffold { insets ->
        Column(
            Modifier.padding(insets).verticalScroll(rememberScrollState()).padding(16.dp),
            verticalArrangement = Arrangement.spacedBy(12.dp),
        ) {
            OutlinedTextField(s.prompt, model::onPrompt, Modifier.fillMaxWidth(), label = { Text("Prompt") })
            OutlinedTextField(
                s.seedText, model::onSeed, Modifier.fillMaxWidth(),
                label = { Text("Seed") },
                singleLine = true,
                isError = s.seed == null,
                supportingText = if (s.seed == null) {
                    { Text("A whole number from 0 to 18446744073709551615") }
                } else null,
                keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Number),
            )
            Button(onClick = model::generate, enabled = !s.busy && s.bundle != null && s.seed != null) {
                Text(if (s.busy) "Working…" else "Generate")
            }
            s.message?.let { Text(it) }
            s.image?.let {
                // Nearest-neighbour: the demo bundle draws 64x64 pixels, shown as they are.
                Image(it, "Generated image", Modifier.fillMaxWidth().aspectRatio(it.width.toFloat() / it.height), filterQuality = FilterQuality.None)
            }
            if (s.truncated) Text("The prompt was longer than the tokenizer takes and was cut.")
            if (s.millis.isNotEmpty()) {
                Text("Timings", style = MaterialTheme.typography.titleMedium)
                s.millis.forEach { (stage, ms) -> Line(stage, "%.1f ms".format(ms)) }
            }
            s.bundle?.let { b ->
                Text("Bundle ${b.name} (${b.target}, ${b.family})", style = MaterialTheme.typography.titleMedium)
                b.precisions.forEach { (component, precision) -> Line(component, precision) }
            }
        }
    }
}

@Composable
private fun Line(label: String, value: String) {
    Row(Modifier.fillMaxWidth()) {
        Text(label, Modifier.weight(1f))
        Text(value)
    }
}
