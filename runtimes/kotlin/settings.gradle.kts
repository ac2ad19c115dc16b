// Only when Gradle runs in this folder (the module alone). As android_demo's `:runtime` this file is not read:
// the app's root build puts the same plugins on the classpath.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
    plugins {
        id("com.android.library") version "8.13.2"
        id("org.jetbrains.kotlin.android") version "2.4.20"
    }
}

dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "onestep-runtime"
