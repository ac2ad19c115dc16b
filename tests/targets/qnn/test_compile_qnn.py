"""`compile --target qnn` (issue 27): a tiny SD-layout student to Snapdragon HTP context binaries for
two SoCs, W8A16 denoiser, float components in fp16 on the HTP, CPU fallback off; every compiled
program run on QNN's HTP simulator (x86) against the graph it came from; `generate` and `verify`
on the simulator; rebuilt on another CPU, the same bytes but for the quantized component's context
binaries (the same program); a refused op is exit 5."""
from __future__ import annotations

import json
import platform

import numpy as np
import pytest

from compiler.errors import Exit, ExportError
from support import (REPO, bundle_record, check_runtime_manifest, compile_on_another_cpu, compile_quietly, identity,
                     write_recipe)

if platform.system() != "Linux" or platform.machine() != "x86_64":
    pytest.skip("QNN's HTP backend (onnxruntime-qnn) ships for Linux x86-64 and Windows only", allow_module_level=True)

QNN = ("components:\n"
       "  denoiser: {precision: int8, quantization: {scheme: w8a16}}\n"
       f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 1}}\n"
       "targets:\n"
       "  qnn: {soc_models: [SM8750, SM8650], simulate: first}\n")
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")


@pytest.fixture(scope="module")
def qnn_bundle(students, tmp_path_factory):
    root = tmp_path_factory.mktemp("qnn")
    recipe = write_recipe(root / "r.yaml", "eps-turbo", extra=QNN)
    code, err = compile_quietly("qnn", recipe, students["eps-turbo"], root / "bundle")
    assert code == Exit.OK, err
    return root / "bundle"


def test_every_component_ships_as_htp_context_binaries_for_each_soc(qnn_bundle):
    m = bundle_record(qnn_bundle)
    check_runtime_manifest(qnn_bundle, "qnn-eps-turbo")   # the Kotlin and Swift runtimes pick each SoC's program from it
    block = m["targets"]["qnn"]
    assert block["cpu_fallback"] is False and sorted(block["soc_models"]) == ["SM8650", "SM8750"]
    assert block["soc_models"]["SM8750"] == {"soc_model": 69, "htp_arch": "v79",
                                             "programs": {n: f"{n}.SM8750.onnx" for n in COMPONENTS}}
    for name in COMPONENTS:
        c = m["components"][name]
        assert c["file"] == f"{name}.SM8750.onnx"
        assert c["files"] == sorted(f"{name}.{soc}{ext}" for soc in ("SM8650", "SM8750") for ext in (".onnx", "_qnn.bin"))
        for soc in ("SM8650", "SM8750"):      # everything on the HTP
            part = block["partition"][name][soc]
            assert part["htp_nodes"] == part["nodes"] > 0
    # no graph ships: the EPContext models name their context binaries, which hold the weights
    assert not any(f.endswith(".onnx.data") for f in m["files"])
    assert m["components"]["denoiser"]["precision"] == "int8" and m["components"]["vae_decoder"]["precision"] == "fp16"
    assert m["quantization"]["components"]["denoiser"]["scheme"] == "w8a16"
    assert "QUInt16" in m["quantization"]["components"]["denoiser"]["tool"]
    assert all(run["passed"] for run in m["parity"])


def test_the_simulator_agrees_with_the_graphs_the_contexts_came_from(qnn_bundle):
    checks = bundle_record(qnn_bundle)["device_checks"]
    assert sorted(checks) == sorted(COMPONENTS) and all(list(c) == ["SM8750"] for c in checks.values())
    # fp16 on the HTP vs fp32 on the CPU, and the W8A16 graph's integer arithmetic on both
    for name, floor in (("text_encoder", 50.0), ("denoiser", 50.0), ("vae_decoder", 50.0)):
        assert min(o["psnr_db"] for o in checks[name]["SM8750"]["outputs"]) > floor, (name, checks[name])


def test_generate_and_verify_run_the_bundle_on_the_simulator(qnn_bundle, students, run_cli, tmp_path):
    png = tmp_path / "a.png"
    code, out, err = run_cli("generate", "--bundle", qnn_bundle, "--prompt", "a red fox", "--seed", 3, "--out", png)
    assert code == Exit.OK and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", err
    assert "computed by the QNN HTP simulator (x86), SM8750 programs" in out
    code, out, err = run_cli("verify", "--bundle", qnn_bundle, "--model", students["eps-turbo"], "--quiet",
                             "--shipped-only", "--num-prompts", 1, "--json", tmp_path / "v.json")
    assert code == Exit.OK, err
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["passed"] and result["runs"][0]["label"] == "qnn int8"


def test_the_android_module_links_ort_the_qnn_plugin_and_its_runtime_at_the_checked_versions(qnn_bundle, run_cli,
                                                                                            tmp_path):
    """The plugin declares neither ONNX Runtime nor QNN's libraries: the module links all three, at
    the versions parity and the context compile ran with, and ships every SoC's binary uncompressed."""
    import importlib.metadata

    import onnxruntime_qnn.build_and_package_info as qnn_build

    code, _, err = run_cli("package", "--bundle", qnn_bundle, "--out", tmp_path / "app")
    assert code == Exit.OK, err
    gradle = (tmp_path / "app" / "build.gradle.kts").read_text()
    for coordinate in (f"com.microsoft.onnxruntime:onnxruntime-android:{importlib.metadata.version('onnxruntime')}",
                       f"com.qualcomm.qti:onnxruntime-android-qnn:{importlib.metadata.version('onnxruntime-qnn')}",
                       f"com.qualcomm.qti:qnn-runtime:{qnn_build.qnn_version}"):
        assert f'implementation("{coordinate}")' in gradle
    assert '"bin"' in gradle
    engines = sorted(p.name for p in (tmp_path / "app").rglob("android/*.kt"))
    assert engines == ["AssetBundles.kt", "OnnxRuntimeEngine.kt"]
    assets = tmp_path / "app" / "src" / "main" / "assets" / "bundle"
    assert (assets / "denoiser.SM8650_qnn.bin").read_bytes() == (qnn_bundle / "denoiser.SM8650_qnn.bin").read_bytes()


@pytest.mark.slow
def test_rebuilt_on_another_cpu_only_the_quantized_context_binaries_differ_and_compute_the_same(qnn_bundle, students,
                                                                                                  tmp_path):
    """Float graphs compile to the same bytes wherever and whenever; QNN's HTP preparation of a
    quantized graph is not byte-reproducible (two compiles of one W8A16 graph in fresh processes
    differ in about half their bytes: docs/targets.md, QNN), so those binaries, and the manifest
    hashing them, are the named exception: they must hold the same program, output for output."""
    from compiler.targets.qnn.htp import simulator_runner

    again = tmp_path / "again"
    compile_on_another_cpu("qnn", qnn_bundle.parent / "r.yaml", students["eps-turbo"], again)
    a, b = identity(qnn_bundle), identity(again)
    assert sorted(a) == sorted(b)
    differ = {name for name in a if a[name] != b[name]}
    assert differ <= {"denoiser.SM8750_qnn.bin", "denoiser.SM8650_qnn.bin", "manifest.json", "manifest.sha256"}, differ
    assert all(len(a[f]) == len(b[f]) for f in differ)
    rng = np.random.default_rng(0)
    feed = {"prompt_embeds": rng.standard_normal((1, 16, 32)).astype(np.float32),
            "noise": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)}
    first, second = (simulator_runner(bundle / "denoiser.SM8750.onnx", "SM8750")(feed)[0] for bundle in (qnn_bundle, again))
    assert np.array_equal(first, second)


def test_an_op_the_htp_does_not_take_is_refused_by_name(tmp_path):
    """Unique has no HTP implementation: exit 5 naming it, and no context file left behind."""
    import onnx
    from onnx import TensorProto, helper

    from compiler.targets.qnn.htp import compile_context

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                               helper.make_node("Unique", ["r"], ["y"], name="unique_values")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), tmp_path / "m.onnx")
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError) as exc:
        compile_context(tmp_path / "m.onnx", tmp_path / "out" / "m.SM8750.onnx", "SM8750")
    assert exc.value.code == Exit.EXPORT and "Unique x1" in exc.value.message and "unique_values" in exc.value.message
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("target", ["onnx", "coreml", "executorch"])
def test_w8a16_means_the_same_everywhere_and_other_targets_refuse_it_before_any_work(target, students, run_cli,
                                                                                     tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=QNN.split("targets:")[0])
    code, _, err = run_cli("compile", "--target", target, "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "out")
    assert code == Exit.RECIPE and "'w8a16' is not available for target" in err, err
    assert not (tmp_path / "out").exists()


def test_unknown_socs_are_refused_with_the_known_ones(run_cli, students, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra="targets:\n  qnn: {soc_models: [SM9999]}\n")
    code, _, err = run_cli("compile", "--target", "qnn", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "out")
    assert code == Exit.RECIPE and "targets.qnn.soc_models" in err and "SM8750" in err, err
    assert len(err.strip().splitlines()) == 1


def test_the_simulator_runs_what_its_budget_has_room_for_and_says_why_not_the_rest(tmp_path):
    """Each program's simulator time is estimated from its graph's time on ONNX Runtime CPU: a
    program whose estimate does not fit what is left of simulate_budget_s is reported, not run."""
    import onnx
    from onnx import TensorProto, helper

    from compiler.progress import Progress
    from compiler.targets.onnx import OnnxTarget
    from compiler.targets.qnn import SIMULATOR_SLOWDOWN, _Simulator
    from compiler.targets.qnn.htp import compile_context

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), tmp_path / "m.onnx")
    compile_context(tmp_path / "m.onnx", tmp_path / "m.SM8750.onnx", "SM8750")
    feed = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)}
    cpu_runs = []

    def cpu_runner(path):
        cpu_runs.append(path)
        return OnnxTarget().runner(path)

    roomy = _Simulator(3600.0, lambda name: feed, cpu_runner, Progress(quiet=True))
    ran = roomy.check("denoiser", "fp16", tmp_path / "m.onnx", tmp_path / "m.SM8750.onnx", "SM8750")
    assert min(o["psnr_db"] for o in ran["outputs"]) > 60 and roomy.left_s < 3600.0
    again = roomy.check("denoiser", "fp16", tmp_path / "m.onnx", tmp_path / "m.SM8750.onnx", "SM8750")
    assert "outputs" in again and len(cpu_runs) == 1        # the graph's expected outputs computed once
    broke = _Simulator(0.0, lambda name: feed, cpu_runner, Progress(quiet=True))
    skipped = broke.check("denoiser", "fp16", tmp_path / "m.onnx", tmp_path / "m.SM8750.onnx", "SM8750")
    assert set(skipped) == {"skipped"} and f"x {SIMULATOR_SLOWDOWN}" in skipped["skipped"]
    assert "0 s left of simulate_budget_s" in skipped["skipped"]
