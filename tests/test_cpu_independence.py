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
