"""`make bench-tiled` stays runnable: its toy-size mode goes through the same children (export
whole and tile programs, W8A8 calibrated whole and per tile, one process per variant, the
SDXL-size memory estimate)."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_tiled_runs_at_toy_size(tmp_path):
    proc = run_benchmark("tiled_decoding.py", "--tiny", "--prompts", "2", "--repeats", "1", "--work", tmp_path,
                         timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "FAILED" not in out, out
    for variant, tiles in (("fp32", 1), ("fp32 tiled", 4), ("int8", 1), ("int8 tiled", 4), ("tiny", 1)):
        assert f"\n{variant:<14}{tiles:>6}" in out, out
    assert "SDXL-size int8 compile (onnx)" in out
