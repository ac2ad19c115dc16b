"""Where an ONNX Runtime program spends its time: ONNX Runtime's own profiler over one call after a
warm-up, kernel time per operator type.

    python benchmarks/ort_profile.py bundle/vae_decoder.onnx [--level extended] [--threads 2] [--top 15]

Inputs are zeros for integer inputs (token ids) and seeded normal noise otherwise, at the graph's
shapes (a symbolic dimension as 1). The session is the one parity and `generate` open
(compiler/targets/onnx/run.py), at ONNX Runtime's default optimization level unless `--level`
names another: `extended` leaves out the layout passes (for int8 programs, the NHWC pass that puts
a Transpose around each QLinearConv). One call, so read it as shares, not as a latency measurement
(`make bench-peers` times programs side by side).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _inputs(session) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = (np.zeros(shape, np.int64 if "int64" in i.type else np.int32) if "int" in i.type
                         else rng.standard_normal(shape).astype(np.float32))
    return feeds


def profile(path: Path, level: str, threads: int) -> tuple[float, Counter, Counter]:
    """(the profiled call's ms, kernel ms per op type, nodes per op type)."""
    import onnxruntime as ort

    from compiler.targets.onnx.run import check_external_data, session_options

    opts = session_options(check_external_data(path))
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / "ort_profile")
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = _inputs(session)
    for _ in range(2):                      # the first call warms up; the second is read
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    call = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    start, end = call["ts"], call["ts"] + call["dur"]
    ms, count = Counter(), Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and start <= e["ts"] <= end:
            ms[e["args"]["op_name"]] += e["dur"] / 1e3
            count[e["args"]["op_name"]] += 1
    return call["dur"] / 1e3, ms, count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="an .onnx file (its external data beside it)")
    p.add_argument("--level", choices=sorted(LEVELS), default="all", help="graph optimization level (default all)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: ONNX Runtime's choice)")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    total, ms, count = profile(args.model, args.level, args.threads)
    kernels = sum(ms.values())
    print(f"{args.model.name}: one call {total:.0f} ms, kernels {kernels:.0f} ms (level {args.level})")
    for op, t in ms.most_common(args.top):
        print(f"  {op:28} {t:9.1f} ms {100 * t / kernels:5.1f}%  x{count[op]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
