#!/usr/bin/env bash
# Compile the Kotlin runtime and its tests for the JVM here, without Gradle or Maven (neither is
# reachable from this machine): kotlinc from the npm registry plus the installed OpenJDK 17.
# The Android engines (src/main/kotlin/.../android) need the Android SDK and are left out.
# Prints the jar's path; rebuilds only when a source or the compiler version changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KOTLIN_VERSION=2.4.20
TOOLS="$ROOT/.cache/kotlin-$KOTLIN_VERSION"
KOTLINC="$TOOLS/node_modules/kotlin-compiler/bin/kotlinc"
OUT="$ROOT/build/kotlin"
JAR="$OUT/onestep-runtime-tests.jar"

if ! command -v java >/dev/null; then
    echo "runtimes/kotlin: java not found; install OpenJDK 17 (apt-get install openjdk-17-jdk-headless)" >&2
    exit 8
fi
if [ ! -x "$KOTLINC" ]; then
    echo "runtimes/kotlin: installing kotlin-compiler $KOTLIN_VERSION from npm into .cache/" >&2
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" "kotlin-compiler@$KOTLIN_VERSION" >&2
    chmod +x "$TOOLS"/node_modules/kotlin-compiler/bin/*
fi
cd "$ROOT/runtimes/kotlin"
SOURCES=$( (find src/main/kotlin -name '*.kt' -not -path '*/android/*'; find src/test/kotlin -name '*.kt') | LC_ALL=C sort)
STAMP=$( (echo "$KOTLIN_VERSION"; cat $SOURCES) | sha256sum | cut -d' ' -f1)
if [ -f "$JAR" ] && [ "$(cat "$JAR.stamp" 2>/dev/null)" = "$STAMP" ]; then
    echo "$JAR"
    exit 0
fi
mkdir -p "$OUT"
rm -f "$JAR" "$JAR.stamp"
JAVA_OPTS="-Xmx2g" "$KOTLINC" -nowarn -jvm-target 17 -include-runtime -d "$JAR" $SOURCES >&2
echo "$STAMP" > "$JAR.stamp"
echo "$JAR"
