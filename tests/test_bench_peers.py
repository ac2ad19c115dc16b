"""`make bench-peers` and `make bench-upsampling` stay runnable: their toy-size modes go through
the same children (export, the reference and calibration samples, each target's own int8, the
interleaved chains with the GEMM peak) on the tiny seeded student; `--student shapes` compiles the
trained shapes student with its shipped recipes and times the bundles."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_peers_runs_at_toy_size(tmp_path):
    proc = run_benchmark("peers.py", "--tiny", "--repeats", "1", "--prompts", "2", "--work", tmp_path,
                         "--targets", "onnx,openvino,executorch", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for column in ("onnx fp32", "onnx int8", "onnx int8 8-bit", "openvino fp32", "openvino int8", "openvino int8 hybrid",
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
