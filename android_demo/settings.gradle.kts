pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "OneStepDemo"
include(":app")
// The runtime itself, not a copy: the app runs exactly the sources `make test` checks.
include(":runtime")
project(":runtime").projectDir = file("../runtimes/kotlin")
