"""`package` (and `compile --emit-app-package`): a verified bundle becomes an Android library
module (ONNX, ExecuTorch) or a Swift package (Core ML) an app adds in one step."""
from __future__ import annotations

import shutil

import pytest

from compiler.contract.verifier import read_verified_manifest
from compiler.errors import BundleError, Exit
from compiler.report import read_verified_record
from support import REPO, flip_byte, identity, tree_snapshot

KOTLIN = REPO / "runtimes/kotlin/src/main/kotlin/dev/onestep/runtime"


def test_onnx_bundle_becomes_an_android_library_module(bundles, run_cli, tmp_path):
    bundle = bundles("eps-turbo")
    out = tmp_path / "app"
    code, stdout, err = run_cli("package", "--bundle", bundle, "--out", out)
    assert code == Exit.OK, err
    assert "Android library module" in stdout and "OnnxRuntimeEngine" in stdout
    assert "the report (report.html, report.json) and timings.txt stay beside the bundle" in stdout
    gradle = (out / "build.gradle.kts").read_text()
    assert 'implementation("com.microsoft.onnxruntime:onnxruntime-android:' in gradle
    assert "executorch" not in gradle
    # The bundle in assets/ is what the runtime reads, byte for byte (the report and timings stay
    # beside the bundle), and still verifies where it lies.
    assets = out / "src/main/assets/bundle"
    assert tree_snapshot(assets) == identity(bundle) and "report.html" in tree_snapshot(bundle)
    assert read_verified_manifest(assets)["target"] == "onnx"
    with pytest.raises(BundleError, match="report.sha256"):   # `verify` needs the report beside the bundle
        read_verified_record(assets)
    # The runtime: every pure source, and of the engines only this target's.
    sources = out / "src/main/kotlin/dev/onestep/runtime"
    for f in KOTLIN.glob("*.kt"):
        assert (sources / f.name).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in (sources / "android").iterdir()) == ["AssetBundles.kt", "OnnxRuntimeEngine.kt"]
    # Deterministic: packaging again gives the same tree.
    again = tmp_path / "again"
    assert run_cli("package", "--bundle", bundle, "--out", again)[0] == Exit.OK
    assert tree_snapshot(again) == tree_snapshot(out)


def test_package_refuses_a_corrupt_bundle_and_writes_nothing(bundles, run_cli, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("eps-turbo"), bundle)
    flip_byte(bundle / "vae_decoder.onnx")
    code, _, err = run_cli("package", "--bundle", bundle, "--out", tmp_path / "app")
    assert code == Exit.BUNDLE and "vae_decoder.onnx" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_seeds_outside_the_runtimes_range_are_refused(bundles, run_cli, tmp_path):
    for bad in ("-1", str(2**64), "1.5"):
        code, _, err = run_cli("generate", "--bundle", bundles("eps-turbo"), "--prompt", "x", "--seed", bad,
                               "--out", tmp_path / "x.png")
        assert code == Exit.RECIPE and "--seed" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_the_android_module_links_the_onnx_runtime_parity_ran_with():
    """Parity is checked with the pinned onnxruntime; an app must run that same version."""
    import re
    import tomllib

    from compiler.targets.onnx import OnnxTarget

    pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups()
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    coordinate = f"com.microsoft.onnxruntime:onnxruntime-android:{pins['onnxruntime']}"
    assert OnnxTarget.app.dependencies == (coordinate,)
    assert coordinate in (REPO / "runtimes/kotlin/build.gradle.kts").read_text()
