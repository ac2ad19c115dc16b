#!/usr/bin/env bash
# Build and test the Swift package on Linux (`make test-swift`): `swift build` (the library and
# onestep-generate), `swift test` (XCTest against runtimes/fixtures; its own closing lines), then
# the fixture cases Swift ran compared by name with the ones Kotlin ran (`make test-kotlin` wrote
# build/kotlin-cases.txt). Everything but the Core ML engine compiles here (shared/PITFALLS.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v swift >/dev/null; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        PATH=/opt/swift/usr/bin:$PATH
    else
        echo "runtimes/swift: swift not found; the project's machines have Swift 6.3.1 at /opt/swift" >&2
        exit 8
    fi
fi
SCRATCH="$ROOT/build/swift"
cd "$ROOT/runtimes/swift"
swift build --quiet --scratch-path "$SCRATCH"
rm -f "$ROOT/build/swift-cases.txt"
# XCTest prints two lines per test method; keep failures and the closing lines
ONESTEP_CASE_LOG="$ROOT/build/swift-cases.txt" swift test --quiet --scratch-path "$SCRATCH" 2>&1 \
    | grep -v -E "^Test Case '.*' (started|passed)"
KOTLIN="$ROOT/build/kotlin-cases.txt"
if [ ! -f "$KOTLIN" ]; then
    echo "runtimes/swift: $KOTLIN missing: run make test-kotlin first" >&2
    exit 1
fi
if ! diff <(cut -d' ' -f2- "$KOTLIN" | LC_ALL=C sort) <(cut -d' ' -f2- "$ROOT/build/swift-cases.txt" | LC_ALL=C sort) >&2; then
    echo "runtimes/swift: the fixture cases Swift ran differ from Kotlin's (< Kotlin only, > Swift only)" >&2
    exit 1
fi
echo "fixture cases: Kotlin $(wc -l < "$KOTLIN"), Swift $(wc -l < "$ROOT/build/swift-cases.txt"), the same names"
