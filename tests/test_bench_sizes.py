"""`make bench-sizes` stays runnable: its toy-size mode exports each size, shares the weights
and times both programs of every size, on ONNX, OpenVINO and Core ML (no latency there)."""

import pytest

from support import run_benchmark


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "openvino", "coreml"])
def test_bench_sizes_runs_at_toy_size(tmp_path, target):
    proc = run_benchmark("sizes.py", "--tiny", "--repeats", "1", "--target", target, "--work", tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for name in ("denoiser", "vae_decoder"):
        assert f"  {name}: one size" in out and "shared =" in out, out
    for key in ("32x32", "40x24", "24x40"):
        assert f"{key}:" in out and "equals its own export bit for bit: yes" in out, out
    assert ("fixed-shape" in out) == (target != "coreml"), out
