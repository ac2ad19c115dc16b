// swift-tools-version:5.9
// The Swift mirror of runtimes/kotlin (runtimes/README.md): the pure runtime and the Core ML engine
// (the library an app links), their tests against runtimes/fixtures, the Python reference engine
// (tests only: Linux has no Core ML) and a command-line generator over either engine.
import PackageDescription

let package = Package(
    name: "OneStepRuntime",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "OneStepRuntime", targets: ["OneStepRuntime"]),
        .executable(name: "onestep-generate", targets: ["onestep-generate"]),
    ],
    targets: [
        .target(name: "OneStepRuntime", path: "Sources/OneStepRuntime"),
        .target(name: "OneStepReferenceEngine", dependencies: ["OneStepRuntime"], path: "Sources/OneStepReferenceEngine"),
        .executableTarget(name: "onestep-generate", dependencies: ["OneStepRuntime", "OneStepReferenceEngine"],
                          path: "Sources/onestep-generate"),
        .executableTarget(name: "onestep-bench", dependencies: ["OneStepRuntime"], path: "Sources/onestep-bench"),
        .testTarget(name: "OneStepRuntimeTests", dependencies: ["OneStepRuntime"], path: "Tests/OneStepRuntimeTests"),
    ]
)
