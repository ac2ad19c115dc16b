"""Green on every machine (issue 24): what a bundle bakes must not depend on the CPU's vector unit.
torch picks its kernels by CPU, and ATEN_CPU_CAPABILITY=default reproduces a machine without
AVX2 on this one (shared/PITFALLS.md, "Numerics that depend on the CPU")."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from support import REPO, RUNTIME_MANIFESTS


def _constants(students, capability: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    root = next(iter(students.values())).parent
    done = subprocess.run([sys.executable, str(REPO / "tests/baked_constants.py"), str(root)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_every_familys_baked_constants_are_the_same_under_two_cpu_capabilities(students):
    plain = _constants(students, "default")
    own = _constants(students, None)
    assert plain["capability"] == "DEFAULT"
    assert plain["constants"] == own["constants"], f"{own['capability']} bakes other constants than DEFAULT"
    # and they are the ones the runtimes' fixture manifests carry (written on whichever machine ran `make fixtures`)
    for path in sorted(RUNTIME_MANIFESTS.glob("onnx-*.json")):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        kind = path.stem.removeprefix("onnx-")
        if kind in own["constants"]:
            assert manifest["sampler"] == own["constants"][kind], path.name


def test_calibrated_ranges_go_outward_onto_a_grid_that_absorbs_another_cpus_last_bits():
    """compiler/quantization.py stable_range: never narrower, at most 1/32 wider, 6 significant
    bits; a relative drift of 1e-6 (another CPU's kernels) changes a range only where an extreme
    lies that close to a grid point (about 1e-6 / (1/64) of them)."""
    import numpy as np

    from compiler.quantization import RANGE_BITS, stable_range

    rng = np.random.default_rng(0)
    lows, highs = -rng.lognormal(0, 3, 20000), rng.lognormal(0, 3, 20000)
    moved = 0
    for lo, hi in zip(lows.tolist(), highs.tolist()):
        a, b = stable_range(lo, hi)
        assert a <= lo and b >= hi and (b - hi) <= hi / 2**(RANGE_BITS - 1) and (lo - a) <= -lo / 2**(RANGE_BITS - 1)
        for v in (a, b):
            mantissa, _ = np.frexp(v)
            assert float(mantissa * 2**RANGE_BITS).is_integer()
        moved += stable_range(lo * (1 + 1e-6), hi * (1 + 1e-6)) != (a, b)
    assert moved < 20000 * 2 * 1e-6 * 2**RANGE_BITS * 2       # ~0.013% expected; 0.05% allowed
    assert stable_range(0.0, 0.0) == (0.0, 0.0) and stable_range(0.25, 0.5) == (0.25, 0.5)
