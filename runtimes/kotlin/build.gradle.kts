// The runtime as an Android library module (runtimes/README.md). Used as `:runtime` by android_demo/ (its
// settings.gradle.kts), or built on its own from this folder (settings.gradle.kts here pins the plugins).
//
// Not how the tests run: on the development machine there is no Android SDK and no Maven, and build.sh compiles
// src/main (without android/) and src/test with kotlinc and runs the tests' own main() against the fixtures and
// the Python reference engine (`make test-kotlin`). They are not JUnit tests, so Gradle builds no unit tests here
// and `./gradlew test` runs nothing.
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.onestep.runtime"
    compileSdk = 35
    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    // A target, not a toolchain: builds with whichever JDK runs Gradle (Android Studio's own is newer than 17).
    compilerOptions { jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17) }
}

// src/test is build.sh's main() harness (see above), not JUnit: skip compiling and running it.
tasks.configureEach {
    if (name.contains("UnitTest")) enabled = false
}

dependencies {
    // compileOnly: each engine needs its framework, and an app ships only the one its bundles were compiled for
    // (the ExecuTorch version must be the one that exported the programs; the compiler pins executorch==1.5.1).
    compileOnly("org.pytorch:executorch-android:1.5.1")
    compileOnly("com.microsoft.onnxruntime:onnxruntime-android:1.32.0")
}
