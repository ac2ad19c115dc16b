#!/usr/bin/env bash
# Compile the Kotlin runtime and its tests for the JVM here, without Gradle or Maven (Maven Central
# is not reachable from the project's machines): JetBrains' Kotlin compiler (K2JVMCompiler) from
# a pinned PyPI wheel, run by the installed OpenJDK 17. PyPI is reachable wherever the rest of the
# project installs; npm is not (shared/PITFALLS.md, "Toolchains for the runtimes").
# The Android engines (src/main/kotlin/.../android) need the Android SDK and are left out.
# Prints the classpath to run the tests with (the jar, then kotlin-stdlib); rebuilds only when a
# source or the compiler changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-python3}
# kotlin-jupyter-kernel's wheel carries the whole Kotlin compiler (2.3.10) and its stdlib as jars.
WHEEL=kotlin_jupyter_kernel-0.19.0.944-py3-none-any.whl
WHEEL_SHA256=dc654a426a28e6621aeb0bd7772d268a9a877aabae4a17b73383752a416281a3
TOOLS="$ROOT/.cache/kotlin-jupyter-kernel-0.19.0.944"
JARS="$TOOLS/run_kotlin_kernel/jars"
COMPILER_CP="$JARS/kotlin-jupyter-kernel-0.19.0-944-all.jar:$JARS/kotlin-stdlib-2.3.10-RC.jar:$JARS/kotlin-reflect-2.3.10-RC.jar:$JARS/kotlin-script-runtime-2.4.0-dev-6891.jar:$JARS/annotations-13.0.jar"
STDLIB="$JARS/kotlin-stdlib-2.3.10-RC.jar"
OUT="$ROOT/build/kotlin"
JAR="$OUT/onestep-runtime-tests.jar"

if ! command -v java >/dev/null; then
    echo "runtimes/kotlin: java not found; install OpenJDK 17 (apt-get install openjdk-17-jdk-headless)" >&2
    exit 8
fi
if [ ! -f "$STDLIB" ]; then
    echo "runtimes/kotlin: fetching the Kotlin compiler ($WHEEL) from PyPI into .cache/" >&2
    DOWNLOAD=$(mktemp -d)
    trap 'rm -rf "$DOWNLOAD"' EXIT
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DOWNLOAD" kotlin-jupyter-kernel==0.19.0.944 >&2
    echo "$WHEEL_SHA256  $DOWNLOAD/$WHEEL" | sha256sum --check --quiet >&2
    rm -rf "$TOOLS.partial"
    mkdir -p "$TOOLS.partial"
    "$PY" -m zipfile -e "$DOWNLOAD/$WHEEL" "$TOOLS.partial" >&2
    rm -rf "$TOOLS"
    mv "$TOOLS.partial" "$TOOLS"
fi
cd "$ROOT/runtimes/kotlin"
SOURCES=$( (find src/main/kotlin -name '*.kt' -not -path '*/android/*'; find src/test/kotlin -name '*.kt') | LC_ALL=C sort)
STAMP=$( (echo "$WHEEL_SHA256"; cat $SOURCES) | sha256sum | cut -d' ' -f1)
if [ -f "$JAR" ] && [ "$(cat "$JAR.stamp" 2>/dev/null)" = "$STAMP" ]; then
    echo "$JAR:$STDLIB"
    exit 0
fi
mkdir -p "$OUT"
rm -f "$JAR" "$JAR.stamp"
java -Xmx2g -cp "$COMPILER_CP" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -nowarn -jvm-target 17 -no-stdlib \
    -no-reflect -cp "$STDLIB" -d "$JAR" $SOURCES >&2
echo "$STAMP" > "$JAR.stamp"
echo "$JAR:$STDLIB"
