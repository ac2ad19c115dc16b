import Foundation
import XCTest

/// The fixture cases by name, as Kotlin's TestHarness counts them: `make test-swift` compares the
/// names both runtimes ran (ONESTEP_CASE_LOG), so a case Kotlin checks cannot go missing in Swift.
enum FixtureCases {
    private static var results: [(name: String, passed: Bool)] = []

    static func record(_ name: String, passed: Bool) { results.append((name, passed)) }

    /// Prints "Swift: N passed, N failed" and writes the case log when asked.
    static func finish() {
        let failed = results.filter { !$0.passed }.count
        print("Swift: \(results.count - failed) passed, \(failed) failed")
        guard let path = ProcessInfo.processInfo.environment["ONESTEP_CASE_LOG"], !path.isEmpty else { return }
        let lines = results.map { "\($0.passed ? "PASS" : "FAIL") \($0.name)\n" }.joined()
        _ = FileManager.default.createFile(atPath: path, contents: Data(lines.utf8))
    }
}

extension XCTestCase {
    /// One named fixture case: failed when its body throws or any XCTest assertion inside it fails.
    func fixtureCase(_ name: String, _ body: () throws -> Void) {
        let before = testRun?.totalFailureCount ?? 0
        do {
            try body()
        } catch {
            XCTFail("\(name): \(error)")
        }
        FixtureCases.record(name, passed: (testRun?.totalFailureCount ?? 0) == before)
    }
}
