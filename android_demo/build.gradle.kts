// Plugin versions for both modules (the runtime's build file names its plugins without versions).
// Kotlin matches the kotlinc that runtimes/kotlin/build.sh tests the runtime with.
plugins {
    id("com.android.application") version "8.13.2" apply false
    id("com.android.library") version "8.13.2" apply false
    id("org.jetbrains.kotlin.android") version "2.4.20" apply false
    id("org.jetbrains.kotlin.plugin.compose") version "2.4.20" apply false
}
