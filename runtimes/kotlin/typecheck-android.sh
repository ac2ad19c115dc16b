#!/usr/bin/env bash
# Type-check the Android engines (src/main/kotlin/.../android) against the frameworks' real API
# sources, without the Android SDK or Maven (neither is reachable from the project's machines):
#
#   runtimes/kotlin/typecheck-android.sh SRC_DIR...
#
# Each SRC_DIR holds sources of an API the engines call, as checked out from its repository:
#   ONNX Runtime    java/src/main/java                          (ai.onnxruntime, Java)
#   ExecuTorch      extension/android/executorch_android/src/main/java   (org.pytorch.executorch, Kotlin since 1.4)
#   fbjni, SoLoader java/ of facebookincubator/fbjni, the nativeloader classes of facebook/SoLoader (ExecuTorch's own imports)
# Every .java file under them is compiled by javac, then every .kt file by the Kotlin compiler of
# build.sh, then the whole runtime, engines included. Android framework classes come from the
# three stubs in typecheck/stubs/ (only the members the engines and ExecuTorch call, with
# android.jar's signatures). Nothing is run: this proves the calls name real methods with the right
# types, not that they work on a phone. Prints `android engines: type-check passed` or the
# compiler's errors, and exits non-zero on them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 SRC_DIR... (see the header)" >&2; exit 2; }
"$HERE/build.sh" >/dev/null            # fetches the Kotlin compiler when missing
JARS="$HERE/../../.cache/kotlin-jupyter-kernel-0.19.0.944/run_kotlin_kernel/jars"
COMPILER_CP="$JARS/kotlin-jupyter-kernel-0.19.0-944-all.jar:$JARS/kotlin-stdlib-2.3.10-RC.jar:$JARS/kotlin-reflect-2.3.10-RC.jar:$JARS/kotlin-script-runtime-2.4.0-dev-6891.jar:$JARS/annotations-13.0.jar"
STDLIB="$JARS/kotlin-stdlib-2.3.10-RC.jar"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
kotlinc() { java -Xmx2g -cp "$COMPILER_CP" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler -nowarn -jvm-target 17 -no-stdlib -no-reflect "$@"; }

mapfile -t JAVA < <( (find "$@" -name '*.java'; find "$HERE/typecheck/stubs" -name '*.java') | LC_ALL=C sort)
javac -nowarn -encoding UTF-8 -d "$OUT/java" "${JAVA[@]}" 2>&1 | grep -v '^Note: ' >&2 || true
[ -d "$OUT/java" ] || { echo "android engines: the API's Java sources did not compile" >&2; exit 1; }
mapfile -t KT < <(find "$@" -name '*.kt' | LC_ALL=C sort)
if [ ${#KT[@]} -gt 0 ]; then
    kotlinc -cp "$STDLIB:$OUT/java" -d "$OUT/api" "${KT[@]}"
fi
mapfile -t OURS < <(find "$HERE/src/main/kotlin" -name '*.kt' | LC_ALL=C sort)
kotlinc -cp "$STDLIB:$OUT/java:$OUT/api" -d "$OUT/runtime" "${OURS[@]}"
echo "android engines: type-check passed (${#JAVA[@]} Java and ${#KT[@]} Kotlin API files, ${#OURS[@]} runtime files)"
