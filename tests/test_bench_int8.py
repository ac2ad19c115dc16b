"""`make bench-int8` stays runnable: its toy-size mode goes through the same code paths (child
processes for export, calibration at two prompt counts and latency; compiler.wrap graphs, ONNX
target, compiler.quantize.quantize_component) on the tiny seeded student."""
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_int8_runs_at_toy_size():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "int8.py"), "--tiny", "--prompts", "2,4",
                           "--repeats", "2"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "FAILED" not in out, out
    for component in ("text_encoder", "denoiser", "vae_decoder"):
        assert component in out
    assert "speed-up" in out and "bytes/param" in out and "peak RSS" in out
    assert "machine:" in out and "onnxruntime" in out
