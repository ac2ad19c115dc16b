"""`make bench-qnn` stays runnable: its toy-size mode takes every component through the QNN
target (export, W8A16 quantization, a context compile per SoC with its own RSS sampled), simulates
the text encoder, chains the graphs end to end and prints every table and goal line."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_qnn_runs_at_toy_size(tmp_path):
    proc = run_benchmark("qnn_bench.py", "--tiny", "--work", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for name in ("text_encoder", "denoiser", "vae_decoder"):
        for soc in ("SM8750", "SM8650"):
            assert f"\n{name:<13} {soc:<7}" in out, out
    assert "QNN HTP simulator (SM8750 programs" in out and "\ntext_encoder " in out
    assert "W8A16 UNet context binary (SM8750)" in out and "end to end vs torch fp32" in out
