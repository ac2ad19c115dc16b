"""`compile --target openvino` (issue 30): a tiny SD-layout student to OpenVINO IR, int8 through NNCF
(W8A8 denoiser and decoder, weight-only int8 text encoder), one layer kept float by the recipe as
NNCF's ignored scope; parity on OpenVINO's CPU plugin; `generate` and `verify` on the bundle; the
same bytes when compiled again in the same process and under another CPU's torch kernels; the
sensitivity-ranked fallback; what OpenVINO bundles refuse."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compiler.errors import Exit
from support import (REPO, TRANSFORMER_TEXT, assert_same_identity, bundle_record, compile_on_another_cpu,
                     compiled, identity, outlier_linear_attention, write_recipe)

INT8 = ("components:\n"
        "  text_encoder: {precision: int8, quantization: {scheme: w8}}\n"
        "  denoiser: {precision: int8, quantization: {scheme: w8a8, nodes: {unet.conv_in: null}}}\n"
        "  vae_decoder: {precision: int8, quantization: {scheme: w8a8}}\n"
        f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 1}}\n")
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")


@pytest.fixture(scope="module")
def openvino_bundle(students, tmp_path_factory):
    return compiled("openvino", students["eps-turbo"], tmp_path_factory.mktemp("openvino"), INT8)


def _int8_weights(xml) -> set[str]:
    """Names of the weight ops whose weight is stored int8 in the IR."""
    import openvino as ov

    from compiler.targets.openvino.export import weight_ops

    return {op.get_friendly_name() for op, const in weight_ops(ov.Core().read_model(str(xml)))
            if const.get_element_type().get_type_name() == "i8"}


def test_every_component_ships_as_openvino_ir_quantized_by_nncf(openvino_bundle):
    m = bundle_record(openvino_bundle)
    for name in COMPONENTS:
        c = m["components"][name]
        assert c["file"] == f"{name}.xml" and c["files"] == [f"{name}.bin", f"{name}.xml"] and c["precision"] == "int8"
        assert all(f in m["files"] for f in c["files"])           # hashed
    assert m["targets"]["openvino"] == {"device": "CPU", "reduce_range": True,
                                        "config": {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
                                        "checker": "openvino 2026.4.1 CPU plugin (INFERENCE_PRECISION_HINT f32)",
                                        "checked_on": "CPU", "device_checked": True}
    q = m["quantization"]["components"]
    assert q["denoiser"]["tool"].startswith("nncf.quantize") and q["text_encoder"]["tool"].startswith("nncf.compress")
    assert all(p["passed"] for p in m["parity"])
    # layers carry their torch module names; the recipe's float layer is the only float one
    layers = {l["name"]: l for l in q["denoiser"]["layers"]}
    assert layers["unet.conv_in"]["precision"] == "fp32" and "recipe" in layers["unet.conv_in"]["reason"]
    assert all(l["precision"] == "int8" for n, l in layers.items() if n != "unet.conv_in")
    int8 = _int8_weights(openvino_bundle / "denoiser.xml")
    assert layers["unet.conv_in"]["node"] not in int8
    assert {l["node"] for n, l in layers.items() if n != "unet.conv_in"} <= int8
    assert {l["node"] for l in q["text_encoder"]["layers"]} <= _int8_weights(openvino_bundle / "text_encoder.xml")
    # sensitivity measured per layer, in the int8 model, for the fallback to rank
    measured = [l for l in layers.values() if "output_sqnr_db" in l]
    assert len(measured) >= len(layers) // 2 and all(10 < l["output_sqnr_db"] < 80 for l in measured)
    fp32_weight_bytes = 4 * sum(l["params"] for l in layers.values())
    assert (openvino_bundle / "denoiser.bin").stat().st_size < 0.4 * fp32_weight_bytes   # int8 weights on disk


def _input_range(fq) -> tuple[float, float]:
    """A FakeQuantize's input low and high (per tensor)."""
    return tuple(float(fq.input_value(i).get_node().get_data().reshape(-1)[0]) for i in (1, 2))


def test_activation_ranges_lie_on_the_grid_every_cpu_agrees_on(openvino_bundle):
    """Each activation FakeQuantize's range comes from quantization.stable_range's grid: a range
    from 0 tops out on it, and every range has zero on one of its levels."""
    import openvino as ov

    from compiler.quantization import stable_range
    from compiler.targets.openvino.export import constant_source

    model = ov.Core().read_model(str(openvino_bundle / "denoiser.xml"))
    ranges = [_input_range(fq) for fq in model.get_ordered_ops()
              if fq.get_type_name() == "FakeQuantize" and constant_source(fq.input_value(0).get_node()) is None]
    assert len(ranges) > 20 and any(lo < 0 for lo, _ in ranges)
    for lo, hi in ranges:
        if lo == 0:
            assert stable_range(0.0, hi)[1] == hi
        scale = (hi - lo) / 255
        assert math.isclose(-lo / scale, round(-lo / scale), abs_tol=1e-3)


@pytest.mark.parametrize("lo, hi", [(0.0, 3.99974), (-3.15922, 3.13454), (-0.28570, 3.99974), (-1e-3, 2.4)])
def test_a_range_moved_by_another_cpus_last_bits_lands_on_the_same_grid_point(lo, hi):
    from compiler.targets.openvino.quantize import _on_grid

    if lo < 0 and abs(-lo / hi - 128 / 127) < 1e-3:
        lo = -hi * 128 / 127                        # NNCF's signed symmetric range
    got = _on_grid(lo, hi, 256)
    for step in (1, -1):     # a range from exactly 0 (after a ReLU) stays so on every CPU
        moved_lo = lo if lo == 0 else float(np.nextafter(lo, lo - step))
        assert _on_grid(moved_lo, float(np.nextafter(hi, hi + step)), 256) == got
    new_lo, new_hi = got
    assert new_lo <= lo and new_hi >= hi                         # widened, never clipped
    scale = (new_hi - new_lo) / 255
    assert math.isclose(-new_lo / scale, round(-new_lo / scale), abs_tol=1e-3)   # zero is a level


def test_generate_runs_the_bundle_with_openvino(openvino_bundle, run_cli, tmp_path):
    code, out, err = run_cli("generate", "--bundle", openvino_bundle, "--prompt", "a red square", "--seed", 3,
                             "--out", tmp_path / "x.png")
    assert code == 0 and "computed by openvino" in out + err, out + err
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow   # CI's 15 minutes: verify re-makes the float export; its gate is tested on ONNX in the fast suite
def test_verify_passes_the_bundle_with_openvino(openvino_bundle, students, run_cli):
    code, out, err = run_cli("verify", "--bundle", openvino_bundle, "--model", students["eps-turbo"])
    assert code == 0 and "passes" in out + err, out + err


def test_converted_and_quantized_again_in_one_process_the_ir_is_the_same(tmp_path):
    """OpenVINO names the ops it makes by a per-process counter (`Constant_4532`): converted and
    quantized a second time in this process they would be named otherwise, and
    export.canonical_names keeps that from the bytes (the whole bundle again: test-slow)."""
    import re

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compiler.targets.openvino.export import from_onnx
    from compiler.targets.openvino.quantize import OpenVinoQuantizer

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["latents", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                               helper.make_node("Relu", ["c"], ["out"], name="relu")], "g",
                              [helper.make_tensor_value_info("latents", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 16, 16])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    samples = [{"latents": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)} for _ in range(2)]
    built = []
    for run in ("first", "again"):
        fp32, int8 = tmp_path / run / "fp32", tmp_path / run / "int8"
        fp32.mkdir(parents=True)
        int8.mkdir()
        artifact = from_onnx(tmp_path / "m.onnx", fp32, "denoiser")
        quantizer = OpenVinoQuantizer("denoiser", "w8a8", fp32 / artifact.main, int8 / artifact.main, artifact.layer_names)
        quantizer.layers()
        quantizer.calibrate(iter(samples))
        quantizer.build([])
        built.append({f"{d}/{p.name}": p.read_bytes() for d in ("fp32", "int8") for p in sorted((tmp_path / run / d).iterdir())})
    assert sorted(built[0]) == ["fp32/denoiser.bin", "fp32/denoiser.xml", "int8/denoiser.bin", "int8/denoiser.xml"]
    assert built[0] == built[1]
    for name in ("fp32/denoiser.xml", "int8/denoiser.xml"):
        assert not re.search(rb'name="[A-Za-z]+_[0-9]+"', built[0][name]), name   # no counter's name left


def test_weights_take_7_bits_unless_reduce_range_is_off(tmp_path):
    """`reduce_range` (default true) ships every W8A8 weight in 7 bits (NNCF's overflow fix), so x86
    CPUs without VNNI, whose u8 x s8 kernels add pairs of products in saturating int16, compute what
    the others do; false ships all 8 bits (NNCF leaves only the first layer 7-bit). Read from the
    int8 weight constants of the saved IR; the manifest records the option, and a recipe's
    non-boolean is refused naming it."""
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    from compiler.errors import RecipeError
    from compiler.recipe import load_recipe
    from compiler.targets.openvino import OpenVinoOptions, OpenVinoTarget
    from compiler.targets.openvino.export import from_onnx
    from compiler.targets.openvino.quantize import OpenVinoQuantizer

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), n) for n in ("w1", "w2")]
    graph = helper.make_graph([helper.make_node("Conv", ["latents", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
                               helper.make_node("Relu", ["c"], ["r"], name="relu"),
                               helper.make_node("Conv", ["r", "w2"], ["out"], pads=[1, 1, 1, 1], name="conv2")], "g",
                              [helper.make_tensor_value_info("latents", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    artifact = from_onnx(tmp_path / "m.onnx", tmp_path, "denoiser")
    samples = [{"latents": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)} for _ in range(2)]
    widest = {}
    for reduce_range in (True, False):
        out = tmp_path / str(reduce_range)
        out.mkdir()
        quantizer = OpenVinoQuantizer("denoiser", "w8a8", tmp_path / artifact.main, out / artifact.main,
                                      artifact.layer_names, reduce_range)
        quantizer.layers()
        quantizer.calibrate(iter(samples))
        quantizer.build([])
        assert ("in 7 bits" in quantizer.tool) is reduce_range
        model = ov.Core().read_model(str(out / artifact.main))
        widest[reduce_range] = sorted(int(np.abs(op.get_data().astype(np.int32)).max()) for op in model.get_ops()
                                      if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8)
        block = OpenVinoTarget().manifest_block(OpenVinoOptions(reduce_range=reduce_range), {}, tmp_path)
        assert block["reduce_range"] is reduce_range
    assert len(widest[True]) == 2 and max(widest[True]) <= 64           # both convolutions' weights
    assert min(widest[False]) <= 64 < max(widest[False]) <= 127         # the first layer 7-bit, the other 8
    with pytest.raises(RecipeError, match="targets.openvino.reduce_range"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", extra="targets: {openvino: {reduce_range: 7}}\n"))


@pytest.mark.slow   # CI's 15 minutes: the fast suite converts and quantizes twice in one process (above)
def test_compiled_again_in_one_process_the_bundle_is_the_same(openvino_bundle, students, tmp_path):
    again = compiled("openvino", students["eps-turbo"], tmp_path, INT8, out="again")
    assert identity(again) == identity(openvino_bundle)


@pytest.mark.slow   # CI's 15 minutes: the activation ranges' grid is checked above, in the fast suite
def test_compiled_under_another_cpus_kernels_the_bundle_is_the_same(openvino_bundle, students, tmp_path):
    """The calibration samples differ in their last bits under another CPU's torch kernels; the
    activation ranges NNCF measures from them land on the same grid points."""
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=INT8)
    compile_on_another_cpu("openvino", recipe, students["eps-turbo"], tmp_path / "other-cpu")
    assert_same_identity(tmp_path / "other-cpu", openvino_bundle)


@pytest.mark.slow   # CI's 15 minutes: the fast suite has the recipe's float layer through the same ignored scope
def test_fallback_keeps_the_outlier_layer_float_through_nncfs_ignored_scope(student_copy, tmp_path):
    """support.outlier_linear_attention: int8 misses the tolerance until the layer the local error
    ranks first is kept float, which NNCF leaves out of its scope."""
    folder = student_copy("trigflow-scm")
    layer = outlier_linear_attention(folder)
    extra = TRANSFORMER_TEXT + (
        "components:\n"
        "  denoiser: {precision: int8, quantization: {scheme: w8a8, max_float_weight_fraction: 0.3}}\n"
        f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 1}}\n")
    out = compiled("openvino", folder, tmp_path, extra, kind="trigflow-scm")
    q = bundle_record(out)["quantization"]["components"]["denoiser"]
    assert q["check_on_calibration_prompts"]["before_fallback"]["passed"] is False
    assert q["check_on_calibration_prompts"]["after_fallback"]["passed"] is True
    assert q["fallback"][0] == layer, q["fallback"]
    node = next(l["node"] for l in q["layers"] if l["name"] == layer)
    assert node not in _int8_weights(out / "denoiser.xml")


def test_devices_other_than_the_cpu_ship_unchecked_on_them_and_say_so(students, run_cli, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra="targets: {openvino: {device: NPU}}\n")
    code, out, err = run_cli("compile", "--target", "openvino", "--recipe", recipe, "--model", students["eps-turbo"],
                             "--out", tmp_path / "npu", "--dry-run")
    assert code == 0 and json.loads(out)["plan"]["target_options"] == {"device": "NPU", "reduce_range": True}
    from compiler.targets.registry import get_target

    block = get_target("openvino").manifest_block(get_target("openvino").Options(device="NPU"), {}, tmp_path)
    assert block["device"] == "NPU" and block["device_checked"] is False and block["checked_on"] == "CPU"
    bad = write_recipe(tmp_path / "bad.yaml", "eps-turbo", extra="targets: {openvino: {device: TPU}}\n")
    code, _, err = run_cli("compile", "--target", "openvino", "--recipe", bad, "--model", students["eps-turbo"],
                           "--out", tmp_path / "tpu")
    assert code == Exit.RECIPE and "targets.openvino.device" in err and "TPU" in err


def test_openvino_bundles_are_for_pcs_and_package_says_so(openvino_bundle, students, run_cli, tmp_path):
    code, _, err = run_cli("package", "--bundle", openvino_bundle, "--out", tmp_path / "app")
    assert code == Exit.RECIPE and "run on PCs, not phones" in err and not (tmp_path / "app").exists()
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo")
    code, _, err = run_cli("compile", "--target", "openvino", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "b", "--emit-app-package")
    assert code == Exit.RECIPE and "--emit-app-package" in err and not (tmp_path / "b").exists()


def _conv_ir(folder, height: int, width: int):
    """A seeded 3x3 convolution (its 37 KB weight the same at every size) and a size-dependent
    Reshape, saved as the IR `denoiser.xml` in folder, as the target's export saves one."""
    import openvino as ov
    from openvino import opset13 as ops

    from compiler.targets import Artifact
    from compiler.targets.openvino.export import save

    weight = np.random.default_rng(0).standard_normal((32, 32, 3, 3)).astype(np.float32)
    x = ops.parameter([1, 32, height, width], np.float32, name="latents")
    conv = ops.convolution(x, ops.constant(weight), [1, 1], [1, 1], [1, 1], [1, 1])
    flat = ops.reshape(conv, ops.constant(np.array([1, 32 * height * width], np.int64)), False)
    folder.mkdir()
    artifact = save(ov.Model([flat], [x], "denoiser"), folder, "denoiser", {})
    return folder, artifact


def test_each_sizes_ir_points_into_one_weights_file(tmp_path):
    """Two sizes' IRs over one .bin: the weight stored once, each size's shape constant its own;
    each shared IR computes exactly what its own did; sharing again writes the same bytes."""
    from compiler.targets.openvino.run import compiled_runner
    from compiler.targets.openvino.shared_weights import share_weights

    parts = [(key, *_conv_ir(tmp_path / key, h, w)) for key, (h, w) in (("32x32", (32, 32)), ("40x24", (24, 40)))]
    one = (tmp_path / "32x32" / "denoiser.bin").stat().st_size
    for out in ("a", "b"):
        (tmp_path / out).mkdir()
        artifact, programs = share_weights("denoiser", parts, tmp_path / out)
        assert programs == {"32x32": "denoiser.32x32.xml", "40x24": "denoiser.40x24.xml"}
        assert artifact.main == "denoiser.32x32.xml"
        assert artifact.files == ["denoiser.32x32.xml", "denoiser.40x24.xml", "denoiser.bin"]
    assert one < (tmp_path / "a" / "denoiser.bin").stat().st_size <= one + 128   # + the second shape constant
    for f in artifact.files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for key, folder, own in parts:
        feeds = {"latents": np.random.default_rng(1).standard_normal((1, 32, *map(int, key.split("x")[::-1])),
                                                                        dtype=np.float32)}
        want = compiled_runner(folder / own.main)(feeds)[0]
        assert np.array_equal(compiled_runner(tmp_path / "a" / programs[key])(feeds)[0], want)


def test_activation_ranges_span_every_calibration_sample_not_their_mean(tmp_path):
    """NNCF's default for a per-tensor activation is the mean of each sample's min and max
    (MEAN_MINMAX), which clips whatever a held-out prompt pushes past the average sample: the
    trained shapes student's worst held-out image read 28.4 dB with it, 39.3 with MinMax. The
    target asks for MinMax, as every target calibrates: the range covers the largest sample."""
    import openvino as ov

    from compiler.targets.openvino.quantize import OpenVinoQuantizer

    folder, artifact = _conv_ir(tmp_path / "fp32", 8, 8)
    (tmp_path / "int8").mkdir()
    rng = np.random.default_rng(1)
    samples = [{"latents": rng.standard_normal((1, 32, 8, 8)).astype(np.float32) * scale} for scale in (1, 1, 1, 10)]
    quantizer = OpenVinoQuantizer("denoiser", "w8a8", folder / artifact.main, tmp_path / "int8" / artifact.main,
                                  artifact.layer_names)
    quantizer.layers()
    quantizer.calibrate(iter(samples))
    quantizer.build([])
    model = ov.Core().read_model(str(tmp_path / "int8" / artifact.main))
    [fq] = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
            and op.input_value(0).get_node().get_type_name() == "Parameter"]
    lo, hi = _input_range(fq)
    assert lo <= min(s["latents"].min() for s in samples) and hi >= max(s["latents"].max() for s in samples)
