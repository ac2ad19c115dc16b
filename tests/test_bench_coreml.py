"""Smoke test of benchmarks/coreml.py at toy sizes (the real-size run is `make bench-coreml`)."""
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_coreml_runs_at_toy_size(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "coreml.py"), "--tiny", "--work", str(tmp_path),
                          "--components", "denoiser", "--schemes", "fp16,w8"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("denoiser")]
    assert len(rows) == 3, out                       # conversion, fp16, w8
    assert "FAILED" not in out and "goals printed, not asserted" in out
    assert (tmp_path / "w8" / "denoiser.mlpackage").is_dir()
