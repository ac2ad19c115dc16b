import SwiftUI

// Only SwiftUI here: OneStepRuntime has an `Image` type too, and this file draws with SwiftUI's.
struct ContentView: View {
    @StateObject private var model = DemoModel()

    var body: some View {
        NavigationStack {
            Form {
                Section("Prompt") {
                    TextField("Prompt", text: $model.prompt, axis: .vertical)
                }
                Section("Seed") {
                    seedField
                    if model.seed == nil {
                        Text("A whole number from 0 to 18446744073709551615")
                            .foregroundStyle(.red)
                    }
                }
                Section {
                    Button(model.busy ? "Working…" : "Generate") {
                        Task { await model.generate() }
                    }
                    .disabled(!model.canGenerate)
                    if let message = model.message {
                        Text(message)
                    }
                }
                if let image = model.image {
                    Section("Image") {
                        // Nearest-neighbour: the demo bundle draws 64x64 pixels, shown as they are.
                        Image(decorative: image, scale: 1)
                            .interpolation(.none)
                            .resizable()
                            .aspectRatio(contentMode: .fit)
                    }
                }
                if let generated = model.generated {
                    Section("Timings") {
                        if generated.truncated {
                            Text("The prompt was longer than the tokenizer takes and was cut.")
                        }
                        ForEach(generated.timings) { LabeledContent($0.label, value: $0.value) }
                    }
                }
                if let bundle = model.bundle {
                    Section("Bundle \(bundle.name) (\(bundle.target), \(bundle.family))") {
                        ForEach(bundle.precisions) { LabeledContent($0.label, value: $0.value) }
                    }
                }
            }
            .navigationTitle("OneStep")
        }
        .task { await model.open() }
    }

    @ViewBuilder private var seedField: some View {
        #if os(iOS)
        TextField("Seed", text: $model.seedText).keyboardType(.numberPad)
        #else
        TextField("Seed", text: $model.seedText)
        #endif
    }
}
