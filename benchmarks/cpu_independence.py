"""The same bundle from every CPU (`make bench-cpus`): one tiny seeded student and recipe compiled
twice per target, fp32 and int8, once with torch's kernels for a CPU without AVX2
(ATEN_CPU_CAPABILITY=default) and once with this machine's own, each in its own process.

Printed per target and precision: the files that identify the bundle (everything but the report
beside it and timings.txt) that are identical and that differ; and, for int8, how many calibrated
activation ranges differed before they were put on the grid (compiler/quantization.py
stable_range) and how many after. The second count is the one that can change bytes: a range
whose extreme lies within another CPU's last-bit drift of a grid point.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine  # noqa: E402

INT8 = ("components:\n"
        "  text_encoder: {precision: int8, quantization: {scheme: w8}}\n"
        "  denoiser: {precision: int8, quantization: {scheme: w8a8, max_float_weight_fraction: 0.3}}\n"
        "  vae_decoder: {precision: int8, quantization: {scheme: w8a8, max_float_weight_fraction: 0.3}}\n"
        f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 1}}\n")

# Runs in the child: compile, logging every range before and after stable_range.
CHILD = """
import json, os, sys
sys.path.insert(0, {repo!r})
from compiler import quantization
import compiler.targets.{target}.quantize as target_quantize
log = []
def logged(lo, hi):
    out = quantization.stable_range(lo, hi)
    log.append([float(lo), float(hi), *out])
    return out
target_quantize.stable_range = logged
from compiler.commands import compile as command
code = command.main(sys.argv[1:])
open(os.environ["RANGES_LOG"], "w").write(json.dumps(log))
sys.exit(code)
"""


def recipe(path: Path, int8: bool) -> Path:
    path.write_text(f"version: 1\nname: cpus\nfamily: eps-turbo\nimage: {{height: 32, width: 32}}\n"
                    f"parity: {{prompts: {REPO / 'tests/fixtures/heldout-tiny.txt'}, num_prompts: 2, seed: 3}}\n"
                    + (INT8 if int8 else ""))
    return path


def compile_under(capability: str | None, target: str, recipe_path: Path, model: Path, out: Path) -> list:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["RANGES_LOG"] = str(out) + ".ranges.json"
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), target=target), "--target", target,
                           "--recipe", str(recipe_path), "--model", str(model), "--out", str(out), "--quiet"],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"compile {target} under {capability or 'own'} failed: {done.stderr[-1500:]}")
    return json.loads(Path(str(out) + ".ranges.json").read_text())


def identity(bundle: Path) -> dict[str, bytes]:
    from compiler.contract.manifest import FOR_PEOPLE

    return {p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted(bundle.rglob("*"))
            if p.is_file() and p.relative_to(bundle).as_posix() not in FOR_PEOPLE}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="onnx,coreml,executorch")
    p.add_argument("--precisions", default="fp32,int8")
    args = p.parse_args()
    from compiler.testing.seeded_students import TinySpec, build

    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpus-") as tmp:
        root = Path(tmp)
        model = build(root / "student", TinySpec(kind="eps-turbo", tiny_vae=False))
        for target in args.targets.split(","):
            for int8 in [p == "int8" for p in args.precisions.split(",")]:
                r = recipe(root / f"{target}-{int8}.yaml", int8)
                plain = compile_under("default", target, r, model, root / f"{target}-{int8}-default")
                own = compile_under(None, target, r, model, root / f"{target}-{int8}-own")
                a, b = identity(root / f"{target}-{int8}-default"), identity(root / f"{target}-{int8}-own")
                differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                raw = sum(1 for x, y in zip(plain, own) if x[:2] != y[:2])
                kept = sum(1 for x, y in zip(plain, own) if x[2:] != y[2:])
                rows.append((target, "int8" if int8 else "fp32", len(a) - len(differ), differ, len(plain), raw, kept))
                print(f"{target:<11}{'int8' if int8 else 'fp32':<6}identical {len(a) - len(differ):>3}  "
                      f"differing {', '.join(differ) or 'none'}"
                      + (f"  | ranges {len(plain)}: {raw} differ as calibrated, {kept} on the grid" if int8 else ""),
                      flush=True)
    same = all(not differ for *_, differ, _, _, _ in rows)
    print(f"\nverdict: {'every hashed byte the same under both capabilities' if same else 'bytes differ (above)'}")


if __name__ == "__main__":
    main()
