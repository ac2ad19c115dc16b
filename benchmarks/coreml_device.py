"""Core ML latency on a Mac (Neural Engine, GPU, CPU): what Linux cannot measure.

Run on macOS 14+ with Apple silicon, on the packages `benchmarks/coreml.py --work W` (or a
compiled bundle) left:

    python benchmarks/coreml_device.py W/fp16 W/w8 W/w8a8 W/palettize6 W/palettize4
    python benchmarks/coreml_device.py build/shapes-rf-int8-coreml

For every .mlpackage found, per compute-unit setting: load (compile) time and the median of
`--repeats` MLModel.predict calls on zero inputs of the package's own shapes, plus the ratio to
the fp16 package of the same component when one was given. Printed, not asserted.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

UNITS = ("CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY", "ALL")


def _feeds(model) -> dict:
    import numpy as np

    spec = model.get_spec()
    feeds = {}
    for f in spec.description.input:
        shape = tuple(int(d) for d in f.type.multiArrayType.shape)
        dtype = np.int32 if f.type.multiArrayType.dataType == 131104 else np.float32
        feeds[f.name] = np.zeros(shape, dtype=dtype)
    return feeds


def measure(package: Path, unit: str, repeats: int) -> tuple[float, float]:
    import coremltools as ct

    t0 = time.perf_counter()
    model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, unit))
    load_s = time.perf_counter() - t0
    feeds = _feeds(model)
    model.predict(feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(feeds)
        times.append(time.perf_counter() - t0)
    return load_s, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="folders holding .mlpackage directories")
    p.add_argument("--units", default=",".join(UNITS))
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    if platform.system() != "Darwin":
        print("coreml_device.py: Core ML runs only on macOS; run this on a Mac", file=sys.stderr)
        return 8
    fp16: dict[tuple[str, str], float] = {}
    print(f"{'package':<48} {'units':<12} {'load s':>8} {'median ms':>10} {'vs fp16':>8}")
    for folder in map(Path, args.folders):
        for package in sorted(folder.glob("*.mlpackage")):
            for unit in args.units.split(","):
                load_s, run_s = measure(package, unit, args.repeats)
                key = (package.name, unit)
                if folder.name == "fp16":
                    fp16[key] = run_s
                ratio = f"{fp16[key] / run_s:.2f}x" if key in fp16 and folder.name != "fp16" else ""
                print(f"{str(folder.name + '/' + package.name):<48} {unit:<12} {load_s:8.2f} {run_s * 1e3:10.2f} "
                      f"{ratio:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
