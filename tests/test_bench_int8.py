"""`make bench-int8` stays runnable: its toy-size mode goes through the same code paths (child
processes for export, calibration at two prompt counts and latency; compiler.wrap graphs, ONNX
target, compiler.quantize.quantize_component) on the tiny seeded student."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_int8_runs_at_toy_size(tmp_path):
    proc = run_benchmark("int8.py", "--tiny", "--prompts", "2,4", "--repeats", "2", "--work", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "FAILED" not in out, out
    for component in ("text_encoder", "denoiser", "vae_decoder"):
        assert component in out
    assert "speed-up" in out and "bytes/param" in out and "peak RSS" in out
    assert "machine:" in out and "onnxruntime" in out

    # the text encoder format comparison runs on the files that run left, and so does a rerun
    # that reuses its export
    proc = run_benchmark("text_encoder_int8.py", "--work", tmp_path, "--repeats", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for variant in ("fp32", "w8", "w8 int8-dot", "dynamic int8"):
        assert f"\n{variant} " in proc.stdout, proc.stdout
    proc = run_benchmark("int8.py", "--tiny", "--prompts", "2", "--repeats", "1", "--work", tmp_path, "--reuse-export",
                         timeout=600)
    assert proc.returncode == 0 and "reusing the fp32 export" in proc.stdout, proc.stderr[-2000:]
