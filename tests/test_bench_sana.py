"""`make bench-sana` stays runnable: its toy-size mode builds the student one component per
process, runs the real compile (ONNX, int8 text encoder and transformer) with its memory sampled
and its progress timestamped, and reads every number from that one compile."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_sana_runs_at_toy_size(tmp_path):
    proc = run_benchmark("sana_scale.py", "--tiny", "--work", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "compile exit 0" in out, out
    for name in ("text_encoder", "denoiser", "vae_decoder"):
        assert f"{name}: exporting" in out and f"\n{name:<14}" in out, out
    assert "denoiser: calibrating on 4 prompts" in out and "DC-AE decoder share" in out
