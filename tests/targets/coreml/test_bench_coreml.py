"""Smoke test of benchmarks/coreml.py at toy sizes (the real-size run is `make bench-coreml`)."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_coreml_runs_at_toy_size(tmp_path):
    proc = run_benchmark("coreml.py", "--tiny", "--work", tmp_path, "--components", "denoiser", "--schemes", "fp16,w8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("denoiser")]
    assert len(rows) == 3, out                       # conversion, fp16, w8
    assert "FAILED" not in out and "goals printed, not asserted" in out
    assert (tmp_path / "w8" / "denoiser.mlpackage").is_dir()
