"""Smoke test of benchmarks/executorch_bench.py at toy sizes (the real-size run is `make bench-executorch`)."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_executorch_runs_at_toy_size(tmp_path):
    proc = run_benchmark("executorch_bench.py", "--tiny", "--work", tmp_path, "--components", "vae_decoder")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("vae_decoder")]
    assert [r[1] for r in rows] == ["fp32", "int8"], out
    assert "ONNX Runtime fp32 =" in out and "ONNX Runtime int8 =" in out and "int8 (w8a8) vs fp32" in out and "goals printed, not asserted" in out
    assert (tmp_path / "int8" / "vae_decoder.pte").is_file()
