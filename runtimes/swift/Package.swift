// swift-tools-version:5.9
// The Swift mirror of runtimes/kotlin (runtimes/README.md): the pure runtime, the Core ML engine,
// their tests against runtimes/fixtures, and a command-line generator for the macOS workflow.
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
        .executableTarget(name: "onestep-generate", dependencies: ["OneStepRuntime"], path: "Sources/onestep-generate"),
        .testTarget(name: "OneStepRuntimeTests", dependencies: ["OneStepRuntime"], path: "Tests/OneStepRuntimeTests"),
    ]
)
