"""`make bench-e2e` stays runnable: its toy-size mode goes through the same children (int8.py's
export and denoiser calibration, the decoder's W8A8 through quantize_component, one process per
chain) on the tiny seeded student."""

import pytest

from support import run_benchmark


@pytest.mark.slow
def test_bench_e2e_runs_at_toy_size(tmp_path):
    proc = run_benchmark("end_to_end.py", "--tiny", "--prompts", "2", "--repeats", "1", "--work", tmp_path,
                         timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "FAILED" not in out, out
    for chain in ("fp32", "w8 text encoder", "int8 UNet only", "sd-turbo-int8", "+ tiny decoder"):
        assert f"\n{chain} " in out, out
    assert "int8 decoder (W8A8" in out and "goals (printed, never asserted)" in out
