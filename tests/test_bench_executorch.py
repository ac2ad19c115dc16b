"""Smoke test of benchmarks/executorch_bench.py at toy sizes (the real-size run is `make bench-executorch`)."""
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_executorch_runs_at_toy_size(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "executorch_bench.py"), "--tiny", "--work", str(tmp_path),
                          "--components", "vae_decoder"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("vae_decoder")]
    assert [r[1] for r in rows] == ["fp32", "int8"], out
    assert "ONNX Runtime fp32" in out and "int8 (w8a8) vs fp32" in out and "goals printed, not asserted" in out
    assert (tmp_path / "int8" / "vae_decoder.pte").is_file()
