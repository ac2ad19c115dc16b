"""`package`: a verified bundle becomes what an app adds in one step.

Core ML bundles become a Swift package (the runtime's sources plus the bundle as a resource);
ONNX and ExecuTorch bundles become an Android library module (the runtime's sources, the
target's engine, its framework dependency and the bundle in assets/). Which one, and which
engine, is the target's `app` data. The output is written atomically and is byte-identical for
the same bundle and runtime sources."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .bundle import atomic_output
from .contract.manifest import FOR_PEOPLE
from .contract.verifier import read_verified_manifest
from .errors import EnvironmentError_, RecipeError
from .targets.registry import target_class

RUNTIMES = Path(__file__).resolve().parents[1] / "runtimes"
KOTLIN_SOURCES = Path("src/main/kotlin/dev/onestep/runtime")
BUNDLE_DIR = "bundle"

SWIFT_MANIFEST = """// swift-tools-version:5.9
// Written by `package` from the bundle {name!r} ({target}); add it to an app with File > Add Package Dependencies > Add Local.
import PackageDescription

let package = Package(
    name: "{module}",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [.library(name: "{module}", targets: ["{module}", "OneStepRuntime"])],
    targets: [
        .target(name: "OneStepRuntime"),
        .target(name: "{module}", dependencies: ["OneStepRuntime"], resources: [.copy("{bundle}")]),
    ]
)
"""

SWIFT_ACCESSOR = """import Foundation
import OneStepRuntime

/// The compiled bundle shipped in this package: `Pipeline.open(bundle: {module}.bundleURL, engine: {engine}())`.
public enum {module} {{
    public static var bundleURL: URL {{ Bundle.module.url(forResource: "{bundle}", withExtension: nil)! }}
}}
"""

GRADLE = """// Written by `package` from the bundle {name!r} ({target}). Add it to an app's settings.gradle.kts with
// include(":{module}"); project(":{module}").projectDir = file("<path to this folder>")
plugins {{
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}}

android {{
    namespace = "dev.onestep.model.{package}"
    compileSdk = 35
    defaultConfig {{ minSdk = 26 }}
    compileOptions {{
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }}
    // Programs are memory-mapped from files: keep them uncompressed in the APK.
    androidResources {{ noCompress += listOf("pte", "onnx", "data", "bin", "json", "txt") }}
}}

kotlin {{ compilerOptions {{ jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17) }} }}

dependencies {{
{dependencies}
}}
"""


def phone_app(target: str, where: str):
    """The target's AppRuntime; exit 2 for a target whose bundles are not for phones (OpenVINO: PCs)."""
    app = target_class(target).app
    if app.platform not in ("swift", "android"):
        raise RecipeError(where, f"{target} bundles run on {app.platform.upper()}s, not phones: an app loads them with "
                                 f"{app.engine} ({', '.join(app.dependencies)}); there is no app package to write")
    return app


def write_app_package(bundle: Path, out: Path, force: bool = False) -> dict:
    manifest = read_verified_manifest(bundle)
    app = phone_app(manifest["target"], f"{bundle}: target")
    name = manifest["name"]
    module = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name) if p) + "Model"
    with atomic_output(out, force) as staging:
        if app.platform == "swift":
            sources = _runtime(RUNTIMES / "swift" / "Sources" / "OneStepRuntime")
            _copy_tree(sources, staging / "Sources" / "OneStepRuntime", "*.swift")
            (staging / "Package.swift").write_text(SWIFT_MANIFEST.format(name=name, target=manifest["target"],
                                                                         module=module, bundle=BUNDLE_DIR))
            own = staging / "Sources" / module
            own.mkdir(parents=True)
            (own / f"{module}.swift").write_text(SWIFT_ACCESSOR.format(module=module, engine=app.engine,
                                                                       bundle=BUNDLE_DIR))
            _copy_bundle(bundle, own / BUNDLE_DIR)
        else:
            sources = _runtime(RUNTIMES / "kotlin" / KOTLIN_SOURCES)
            dst = staging / KOTLIN_SOURCES
            _copy_tree(sources, dst, "*.kt", skip=("android",))
            for f in sorted((sources / "android").glob("*.kt")):
                if f.stem in (app.engine, "AssetBundles"):
                    (dst / "android").mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, dst / "android" / f.name)
            package = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "bundle"
            links = "\n".join(f'    implementation("{d}")' for d in app.dependencies)
            (staging / "build.gradle.kts").write_text(GRADLE.format(name=name, target=manifest["target"], module=module,
                                                                    package=package, dependencies=links))
            _copy_bundle(bundle, staging / "src" / "main" / "assets" / BUNDLE_DIR)
    total = _bytes(bundle)
    return {"kind": "Swift package" if app.platform == "swift" else "Android library module", "module": module,
            "engine": app.engine, "out": out, "bundle_bytes": total,
            "shipped_bytes": total - sum(_bytes(bundle / f) for f in FOR_PEOPLE)}


def _copy_bundle(bundle: Path, dst: Path) -> None:
    """What the runtime reads, no more: the report and timings stay beside the bundle (an int8
    ExecuTorch report with its thumbnails is megabytes that every download and open would carry)."""
    _copy_tree(bundle, dst, skip=FOR_PEOPLE)


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _runtime(path: Path) -> Path:
    if not path.is_dir():
        raise EnvironmentError_(str(path), "runtime sources not found: `package` needs the project checkout "
                                           "(pip install -e .), which ships runtimes/")
    return path


def _copy_tree(src: Path, dst: Path, pattern: str = "*", skip: tuple[str, ...] = ()) -> None:
    for f in sorted(src.rglob(pattern)):
        rel = f.relative_to(src)
        if not f.is_file() or rel.parts[0] in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst / rel)
