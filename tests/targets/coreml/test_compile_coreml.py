"""`compile --target coreml` end to end on tiny seeded students of every family: fp16 packages and
int8-weight (w8) components in one compile per family, w8a8 and palettized components on a UNet
family, checked on this machine by the ML Program evaluator (Core ML itself runs only on macOS).
Each bundle is compiled once per session. A Core ML compile of a tiny student takes over a minute
(coremltools runs its ~100 graph passes, with validation, on every conversion and every weight
compression, and their cost follows the op count, not the size), so `make test` compiles the SD
layout (fp16 + w8) and checks that the checker catches a wrong lowering; the other families, the
low-bit schemes (w8a8, palettes), a corrupted weight and the rebuild are `make test-slow`."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler.errors import Exit
from support import (CASES, REPO, bundle_record, identity, check_runtime_manifest, compile_quietly, family_of, flip_byte, tree_snapshot,
                      write_recipe)

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
CALIBRATION = f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 5}}\n"
W8 = "{precision: int8, quantization: {scheme: w8}}"
# one compile covers the fp16 export of every component (first parity pass) and w8 (second)
W8_COMPONENTS = "components: {{text_encoder: {w8}, denoiser: {w8}, vae_decoder: {{subfolder: {decoder}}}}}\n"
# random tiny weights are harder to palettize than trained ones: the text encoder needs the fallback
LOW_BIT = ("components: {text_encoder: {precision: int8, quantization: {scheme: palettize6, "
           "max_float_weight_fraction: 0.5}}, "
           "denoiser: {precision: int8, quantization: {scheme: w8a8, max_float_weight_fraction: 0.1}}, "
           "vae_decoder: {precision: int8, quantization: {scheme: palettize4, max_float_weight_fraction: 0.3}}}\n")


def _compile(recipe: Path, model: Path, out: Path, *extra: str) -> tuple[int, str]:
    return compile_quietly("coreml", recipe, model, out, *extra)


def _recipe(path: Path, case: str) -> Path:
    kind, decoder = CASES[case]
    return write_recipe(path, family_of(kind), extra=W8_COMPONENTS.format(w8=W8, decoder=decoder) + CALIBRATION)


@pytest.fixture(scope="session")
def coreml_bundles(students, tmp_path_factory):
    root = tmp_path_factory.mktemp("coreml")
    built: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in built:
            if case == "low-bit":
                recipe = write_recipe(root / "low-bit.yaml", "eps-turbo", extra=LOW_BIT + CALIBRATION)
                model = students["eps-turbo"]
            else:
                recipe, model = _recipe(root / f"{case}.yaml", case), students[CASES[case][0]]
            code, err = _compile(recipe, model, root / case)
            assert code == Exit.OK, err
            built[case] = root / case
        return built[case]

    return get


def _manifest(bundle: Path) -> dict:
    return bundle_record(bundle)


def _program(package: Path):
    from compiler.targets.coreml.convert import load_program

    return load_program(package)


def _op_types(package: Path) -> set[str]:
    return {op.op_type for op in _program(package).functions["main"].operations}


FAST = ("eps-turbo",)    # the other layouts (SDXL included) are `make test-slow`: the suite has a 15-minute budget


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_every_family_compiles_to_coreml_fp16_and_w8_within_tolerance(coreml_bundles, case):
    bundle = coreml_bundles(case)
    m = _manifest(bundle)
    check_runtime_manifest(bundle, f"coreml-{case}")
    assert m["target"] == "coreml"
    block = m["targets"]["coreml"]
    assert block["compute_precision"] == "fp16" and block["minimum_deployment_target"] == "iOS17"
    assert "evaluator" in block["checker"] and block["format"] == "mlprogram"
    assert set(block["ops_kept_in_fp32"]) == set(COMPONENTS)     # what the fp16 pass left in fp32, per component
    assert [p["label"] for p in m["parity"]] == ["coreml fp16", "coreml int8"]
    for run in m["parity"]:
        assert run["passed"] is True
        for name, check in run["checks"].items():
            assert check["passed"] and check["worst"]["finite"], (run["label"], name)
            assert check["worst"]["psnr_db"] >= check["tolerance"]["min_psnr_db"]
    assert {n: c["precision"] for n, c in m["components"].items()} == {
        "text_encoder": "int8", "denoiser": "int8", "vae_decoder": "fp16"}
    for name in ("text_encoder", "denoiser"):
        q = m["quantization"]["components"][name]
        assert q["scheme"] == "w8" and q["weights"] == "int8"
        # weight_threshold=0 and an explicit config per layer: no weight is left float silently
        assert q["coverage"]["float_layers"] == 0 and q["coverage"]["quantized_weight_share"] == 1.0
        assert q["sizes"]["shipped_bytes"] < q["sizes"]["float_bytes"]
        assert "constexpr_affine_dequantize" in _op_types(bundle / f"{name}.mlpackage") or \
            "constexpr_blockwise_shift_scale" in _op_types(bundle / f"{name}.mlpackage")
    assert m["tools"]["coremltools"] == "9.0"


@pytest.mark.parametrize("case", ["eps-turbo", pytest.param("eps-turbo-xl", marks=pytest.mark.slow)])
def test_manifest_io_and_files_equal_the_programs(coreml_bundles, case):
    import coremltools as ct

    bundle = coreml_bundles(case)
    m = _manifest(bundle)
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert set(m["files"]) == on_disk - {"manifest.json", "manifest.sha256", "report.html", "report.json",
                                         "report.sha256"}
    for rel, entry in m["files"].items():
        assert entry["sha256"] == hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
    dual = case == "eps-turbo-xl"
    expected_inputs = {"text_encoder": ["input_ids", "input_ids_2"] if dual else ["input_ids"],
                       "denoiser": ["prompt_embeds", "noise"] + (["pooled_prompt_embeds"] if dual else []),
                       "vae_decoder": ["latents"]}
    for name, c in m["components"].items():
        assert c["file"] == f"{name}.mlpackage" and (bundle / c["file"]).is_dir()
        assert all(f.startswith(c["file"] + "/") for f in c["files"]) and set(c["files"]) <= set(m["files"])
        spec = ct.utils.load_spec(str(bundle / c["file"] / "Data/com.apple.CoreML/model.mlmodel"))
        assert [i["name"] for i in c["inputs"]] == [f.name for f in spec.description.input] == expected_inputs[name]
        assert [o["name"] for o in c["outputs"]] == [f.name for f in spec.description.output]
        assert [i["shape"] for i in c["inputs"]] == [list(f.type.multiArrayType.shape) for f in spec.description.input]
    assert [i["dtype"] for i in m["components"]["text_encoder"]["inputs"]] == ["int32"] * (2 if dual else 1)
    # fp16 programs, float32 interfaces: what the runtimes bind to is the same on every target
    assert {o["dtype"] for c in m["components"].values() for o in c["outputs"]} == {"float32"}
    assert m["components"]["vae_decoder"]["outputs"][0]["name"] == "image"


@pytest.mark.slow
def test_w8a8_and_palettized_components(coreml_bundles):
    bundle = coreml_bundles("low-bit")
    m = _manifest(bundle)
    block = m["targets"]["coreml"]
    # palettes per grouped channel need iOS18: raised from the default, and the manifest says why
    assert block["minimum_deployment_target"] == "iOS18" and "raised" in block["deployment_target_reason"]
    q = m["quantization"]["components"]
    assert q["denoiser"]["scheme"] == "w8a8" and q["denoiser"]["calibration_prompts"] == 4
    assert q["text_encoder"]["weights"] == "lut6" and q["vae_decoder"]["weights"] == "lut4"
    assert {n: c["weights"] for n, c in m["components"].items()} == {
        "text_encoder": "lut6", "denoiser": "int8", "vae_decoder": "lut4"}
    for name in COMPONENTS:
        assert q[name]["coverage"]["quantized_weight_share"] >= 0.5
        assert any("output_sqnr_db" in l for l in q[name]["layers"]), name
    # the fallback ran on the Core ML target as on ONNX: worst-first, recorded, within its budget
    te = q["text_encoder"]
    if te["fallback"]:
        assert te["check_on_calibration_prompts"]["after_fallback"]["passed"] is True
        floated = [l for l in te["layers"] if l["precision"] == "fp32"]
        assert [l["name"] for l in floated] == te["fallback"]
        assert all(l["reason"].startswith("fallback") for l in floated)
    denoiser_ops = _op_types(bundle / "denoiser.mlpackage")
    assert {"quantize", "dequantize"} <= denoiser_ops       # int8 activations Core ML runs (iOS17+)
    assert "constexpr_lut_to_dense" in _op_types(bundle / "vae_decoder.mlpackage")
    sizes = q["vae_decoder"]["sizes"]
    assert sizes["shipped_bytes"] < sizes["float_bytes"]
    assert all(run["passed"] for run in m["parity"])


@pytest.mark.slow
def test_rebuild_in_another_process_is_byte_identical(coreml_bundles, students, tmp_path):
    """The low-bit bundle (k-means palettes, calibrated int8 activations) rebuilt in a fresh process
    with another hash seed and working directory: every hashed file and the manifest are equal."""
    first = coreml_bundles("low-bit")
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=LOW_BIT + CALIBRATION)
    again = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "compiler.commands.compile", "--target", "coreml", "--recipe", str(recipe),
                    "--model", str(students["eps-turbo"]), "--out", str(again), "--quiet"],
                   check=True, cwd=tmp_path, env=env, capture_output=True)
    a, b = tree_snapshot(first), tree_snapshot(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_generate_and_verify_work_on_a_coreml_bundle(coreml_bundles, students, run_cli, tmp_path):
    bundle = coreml_bundles("eps-turbo")
    png = tmp_path / "a.png"
    code, out, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--seed", 3, "--out", png)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", err
    # --shipped-only: the float pass re-converts every component; tests/test_quantize.py runs both passes
    code, out, err = run_cli("verify", "--bundle", bundle, "--model", students["eps-turbo"], "--quiet",
                             "--shipped-only")
    assert code == 0 and "passes" in out, err
    # one flipped byte in a package is refused before anything is evaluated
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(bundle, copy)
    flip_byte(copy / "denoiser.mlpackage/Data/com.apple.CoreML/weights/weight.bin")
    code, _, err = run_cli("generate", "--bundle", copy, "--prompt", "x", "--out", tmp_path / "b.png")
    assert code == Exit.BUNDLE and "weight.bin" in err


# ------------------------------------------------------------------ the check is real

def _largest_blob(weights: Path) -> tuple[int, int]:
    """(offset, size) of the largest tensor in a Core ML weight.bin: each blob has a 64-byte
    metadata record starting with the sentinel 0xDEADBEEF, then dtype, size and offset."""
    import struct

    data = weights.read_bytes()
    blobs = []
    for pos in range(64, len(data) - 24, 64):
        sentinel, _, size, offset = struct.unpack_from("<IIQQ", data, pos)
        if sentinel == 0xDEADBEEF:
            blobs.append((size, offset))
    size, offset = max(blobs)
    return offset, size


@pytest.mark.slow
def test_checker_catches_a_corrupted_weight(students, tmp_path, monkeypatch):
    """A package whose weights differ from the torch model's (here: the denoiser's largest weight
    overwritten after saving) fails the fp16 parity gate, naming the component: the check evaluates
    the package, not the torch model it came from."""
    from compiler.targets.coreml import convert

    real = convert.save

    def corrupting_save(model, path):
        files = real(model, path)
        if Path(path).name == "denoiser.mlpackage":
            weights = Path(path) / convert.WEIGHTS_DIR / "weight.bin"
            offset, size = _largest_blob(weights)
            data = bytearray(weights.read_bytes())
            data[offset:offset + size] = b"\x00\x3c" * (size // 2)    # every value of it fp16 1.0
            weights.write_bytes(bytes(data))
        return files

    monkeypatch.setattr(convert, "save", corrupting_save)
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo")
    code, err = _compile(recipe, students["eps-turbo"], tmp_path / "o")
    assert code == Exit.PARITY and "denoiser (fp16) coreml fp16" in err, err
    assert not (tmp_path / "o").exists()


def test_checker_catches_a_wrong_lowering_of_one_op(students, tmp_path, monkeypatch):
    """If the converter lowered torch's silu as relu, the evaluated program no longer matches torch:
    the decoder (GroupNorm + SiLU blocks) misses its fp16 gate."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    from compiler.load import load_student
    from compiler.metrics import compare
    from compiler.recipe import load_recipe
    from compiler.targets.coreml import CoreMLTarget
    from compiler.parity import TOLERANCES
    from compiler.wrap import wrap

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", "eps-turbo"))
    graph = wrap(load_student(str(students["eps-turbo"]), "eps-turbo", "vae"), recipe).graphs["vae_decoder"]
    latents = np.random.default_rng(0).standard_normal(graph.example_inputs[0].shape).astype(np.float32)
    with torch.no_grad():
        expected = graph.module(torch.from_numpy(latents)).numpy()
    target, options = CoreMLTarget(), recipe.target_options("coreml")

    def check(folder: Path) -> float:
        folder.mkdir()
        artifact = target.export(graph, folder, options)
        return compare(expected, target.runner(folder / artifact.main, options)({"latents": latents})[0],
                       data_range=1.0).psnr_db

    gate = TOLERANCES[("vae_decoder", "fp16")].min_psnr_db
    assert check(tmp_path / "right") >= gate

    def wrong_silu(context, node):
        x = _get_inputs(context, node, expected=1)[0]
        context.add(mb.relu(x=x, name=node.name))

    monkeypatch.setitem(_TORCH_OPS_REGISTRY.name_to_func_mapping, "silu", wrong_silu)
    assert check(tmp_path / "wrong") < gate


# ------------------------------------------------------------------ refusals (shared/ERRORS.md)

def test_scheme_the_deployment_target_cannot_run_is_refused_before_work(students, tmp_path, run_cli):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=(
        "components: {denoiser: {precision: int8, quantization: {scheme: w8a8}}}\n"
        "targets: {coreml: {minimum_deployment_target: iOS16}}\n"))
    code, _, err = run_cli("compile", "--target", "coreml", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o")
    assert code == Exit.RECIPE and "iOS16" in err and "w8a8" in err and "iOS17" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_core_ml_check_on_linux_is_an_environment_error(students, tmp_path, run_cli):
    if sys.platform == "darwin":
        pytest.skip("Core ML exists here")
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra="targets: {coreml: {check: core-ml}}\n")
    code, _, err = run_cli("compile", "--target", "coreml", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o")
    assert code == Exit.ENVIRONMENT and "macOS" in err and not (tmp_path / "o").exists()


def test_missing_coremltools_is_exit_8_naming_it(students, tmp_path, run_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo")
    code, _, err = run_cli("compile", "--target", "coreml", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o")
    assert code == Exit.ENVIRONMENT and "coremltools" in err and "Traceback" not in err


def test_conversion_failure_is_exit_5_naming_component_and_op(students, tmp_path, run_cli, monkeypatch):
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    from compiler.targets.coreml import convert

    monkeypatch.setattr(convert, "_register_alias", lambda: None)
    monkeypatch.delitem(_TORCH_OPS_REGISTRY.name_to_func_mapping, "alias", raising=False)
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo")
    code, _, err = run_cli("compile", "--target", "coreml", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o", "--quiet")
    assert code == Exit.EXPORT and "text_encoder" in err and "alias" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_coreml_bundle_becomes_a_swift_package(coreml_bundles, run_cli, tmp_path):
    bundle = coreml_bundles("eps-turbo")
    out = tmp_path / "app"
    code, stdout, err = run_cli("package", "--bundle", bundle, "--out", out)
    assert code == Exit.OK, err
    assert "Swift package TinyEpsTurboModel" in stdout and "CoreMLEngine" in stdout
    manifest = (out / "Package.swift").read_text()
    assert 'resources: [.copy("bundle")]' in manifest and 'name: "TinyEpsTurboModel"' in manifest
    swift = REPO / "runtimes/swift/Sources/OneStepRuntime"
    for f in swift.glob("*.swift"):
        assert (out / "Sources/OneStepRuntime" / f.name).read_bytes() == f.read_bytes()
    assert "Bundle.module" in (out / "Sources/TinyEpsTurboModel/TinyEpsTurboModel.swift").read_text()
    assert tree_snapshot(out / "Sources/TinyEpsTurboModel/bundle") == identity(bundle)
