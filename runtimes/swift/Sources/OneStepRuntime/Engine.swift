import Foundation

/// Runs compiled components. The pure runtime never touches a framework: Core ML (CoreMLEngine)
/// implements this here, as ExecuTorch and ONNX Runtime do in the Kotlin runtime.
public protocol Engine {
    /// Opens one component of a verified bundle; called once per component, in wiring order.
    func open(bundle: URL, component: ComponentSpec, manifest: Manifest) throws -> any Session
}

/// One opened component.
public protocol Session: AnyObject {
    /// Inputs by name (the component's declared names, dtypes and shapes); returns every declared output by name.
    func run(_ inputs: [String: Tensor]) throws -> [String: Tensor]

    func close()
}

extension Session {
    public func close() {}
}
