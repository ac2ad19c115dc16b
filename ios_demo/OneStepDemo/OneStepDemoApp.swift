import SwiftUI

@main
struct OneStepDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
