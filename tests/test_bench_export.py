"""`make bench-export` stays runnable: its toy-size mode goes through the same code paths
(child process per component, compiler.wrap graphs, ONNX target) in well under a minute."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_export_runs_at_toy_size():
    proc = run_benchmark("export.py", "--tiny", "--components", "vae_decoder,text_encoder", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vae_decoder" in proc.stdout and "text_encoder" in proc.stdout and "FAILED" not in proc.stdout
    assert "s/B" in proc.stdout and "x (" in proc.stdout
