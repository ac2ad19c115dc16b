"""`make bench-peers` and `make bench-upsampling` stay runnable: their toy-size modes go through
the same children (export, the reference and calibration samples, each target's own int8, the
interleaved chains with the GEMM peak) on the tiny seeded student; `--student shapes` compiles the
trained shapes student with its shipped recipes and times the bundles; benchmarks/ort_profile.py
shares a program's time by operator type; benchmarks/openvino_routes.py compares OpenVINO's two
frontends."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_peers_runs_at_toy_size(tmp_path):
    proc = run_benchmark("peers.py", "--tiny", "--repeats", "1", "--prompts", "2", "--work", tmp_path,
                         "--targets", "onnx,openvino,executorch", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for column in ("onnx fp32", "onnx int8", "onnx int8 8-bit", "onnx int8 elementwise", "openvino fp32", "openvino int8",
                   "openvino int8 8-bit", "openvino int8 hybrid",
                   "executorch fp32", "executorch int8"):
        assert column in out, out
    assert "peak fp32" in out and "GOP/s" in out and "largest remaining gap" in out and "goal:" in out, out


@pytest.mark.slow
def test_bench_upsampling_runs_at_toy_size(tmp_path):
    proc = run_benchmark("upsampling.py", "--tiny", "--repeats", "1", "--work", tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for runtime in ("onnxruntime", "openvino"):
        assert f"vae_decoder  {runtime}" in proc.stdout and "outputs agree" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_bench_peers_compiles_the_shapes_student_with_its_shipped_recipes(tmp_path):
    proc = run_benchmark("peers.py", "--student", "shapes", "--repeats", "1", "--work", tmp_path,
                         "--targets", "onnx,openvino", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for column in ("onnx fp32", "onnx int8", "openvino fp32", "openvino int8"):
        assert column in out, out
    assert "largest remaining gap (denoiser)" in out and "goal:" not in out, out
    for target in ("onnx", "openvino"):
        assert (tmp_path / target / "int8" / "manifest.json").is_file()


def test_ort_profile_shares_a_programs_time_by_op_type(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    proc = run_benchmark("ort_profile.py", tmp_path / "m.onnx", "--level", "extended", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "m.onnx: one call" in proc.stdout and "FusedConv" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_bench_openvino_routes_runs_at_toy_size(tmp_path):
    proc = run_benchmark("openvino_routes.py", "--tiny", "--repeats", "1", "--work", tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for route in ("ONNX frontend", "PyTorch frontend"):
        assert proc.stdout.count(route) == 2, proc.stdout
