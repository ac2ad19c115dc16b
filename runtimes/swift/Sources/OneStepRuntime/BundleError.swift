import Foundation

/// A bundle that must not be run, with `where` naming the file and field at fault, in the same
/// form as the Python loader's message (compiler/contract/verifier.py), so the fixtures check both.
public struct BundleError: Error, CustomStringConvertible, LocalizedError {
    public let `where`: String
    public let reason: String

    public init(_ location: String, _ reason: String) {
        self.where = location
        self.reason = reason
    }

    public var description: String { "\(self.where): \(reason)" }
    public var errorDescription: String? { description }
}

/// What the Kotlin runtime throws as the JDK's IllegalArgumentException or IllegalStateException
/// (require, error): a caller's or an engine's mistake rather than the bundle's. Swift has no
/// standard error type for these.
public struct RuntimeError: Error, CustomStringConvertible, LocalizedError {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }
}
