"""Where an ExecuTorch program spends its time: one call with ETDump on, the time per XNNPACK
operator type and the slowest operators.

    python benchmarks/etdump_profile.py bundle/vae_decoder.pte [--top 15]

Inputs are zeros for integer inputs (token ids) and seeded normal noise otherwise, at the shapes
in the program's `.pte.io.json`. ExecuTorch's pip runtime records every XNNPACK operator inside a
delegate as its own event, so the table shows, for example, convolutions against the layout
transposes around them. One call, so read it as shares, not as a latency measurement
(`make bench-executorch` times programs side by side).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRAMEWORK_EVENTS = {"Method::execute", "DELEGATE_CALL", "Program::load_method", "Method::init", "OPERATOR_CALL"}


def _inputs(program: Path) -> list:
    import torch

    from compiler.targets.executorch.run import describe_io

    generator = torch.Generator().manual_seed(0)
    feeds = []
    for spec in describe_io(program)["inputs"]:
        dtype = getattr(torch, spec["dtype"])
        feeds.append(torch.zeros(spec["shape"], dtype=dtype) if not dtype.is_floating_point
                     else torch.randn(spec["shape"], generator=generator).to(dtype))
    return feeds


def events(program: Path) -> list[tuple[str, float]]:
    """(operator name, milliseconds) for every timed event of one call, in execution order."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    from compiler.targets.executorch.run import _native_stderr_silenced

    with _native_stderr_silenced():      # cpuinfo's probe messages at the first delegate's load
        module = portable_lib._load_for_executorch(str(program), enable_etdump=True)
    module.forward(_inputs(program))
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(dump))
        with warnings.catch_warnings():     # no debug buffer was asked for: timings only
            warnings.simplefilter("ignore")
            inspector = Inspector(etdump_path=str(dump))
        return [(e.name, e.perf_data.avg) for block in inspector.event_blocks for e in block.events
                if e.perf_data is not None and e.name not in FRAMEWORK_EVENTS]


def by_type(timed: list[tuple[str, float]]) -> list[tuple[str, int, float]]:
    """(operator type, count, milliseconds), slowest type first; `Convolution ... #12` is one type."""
    totals: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for name, ms in timed:
        kind = re.sub(r" #\d+$", "", name)
        totals[kind][0] += 1
        totals[kind][1] += ms
    return sorted(((k, c, t) for k, (c, t) in totals.items()), key=lambda row: -row[2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("program", type=Path, help="a .pte with its .pte.io.json beside it (as in a bundle)")
    p.add_argument("--top", type=int, default=15, help="how many of the slowest operators to list")
    args = p.parse_args(argv)
    from compiler.cli import _quiet_libraries

    _quiet_libraries()
    timed = events(args.program)
    total = sum(ms for _, ms in timed) or 1.0
    print(f"{args.program}: {len(timed)} operator events, {total:.1f} ms in one call")
    print(f"{'ms':>10} {'share':>7} {'count':>6}  operator type")
    for kind, count, ms in by_type(timed):
        print(f"{ms:10.1f} {ms / total:7.1%} {count:6d}  {kind}")
    print(f"\nslowest {args.top}:")
    for name, ms in sorted(timed, key=lambda row: -row[1])[:args.top]:
        print(f"{ms:10.1f} {ms / total:7.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
