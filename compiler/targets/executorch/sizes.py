"""Several image sizes of one component as one `.pte` with a method per size.

Each size's ATen program (the one its `.pte` was lowered from, int8 ones after quantization, kept
by lower_and_write in multi-size compiles) is loaded back and all are lowered together by
`to_edge_transform_and_lower({method: program})`: XNNPACK puts every weight in the program's named
data store, keyed by content, so a tensor the sizes share is stored once. The methods are named
`size_<W>x<H>`, the first size's first; each method's delegation is measured and enforced as a
one-size program's is.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import Artifact, size_program
from . import delegation
from .export import SUFFIX, _failure, kept_program, quiet
from .run import io_path, load_program, write_methods_io


def share_weights(name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path, options) -> tuple[Artifact, dict]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    methods = {size_program(key): root for key, root, _ in parts}
    try:
        with torch.no_grad(), quiet():
            programs = {m: torch.export.load(str(kept_program(root, name))) for m, root in methods.items()}
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
            reports = {m: delegation.report(edge.exported_program(m)) for m in methods}
            for report in reports.values():
                delegation.enforce(report, name, options.min_delegated_flop_share)
            executorch_program = edge.to_executorch()
    except Exception as exc:
        raise _failure(name, "ExecuTorch lowering of the sizes' methods (XNNPACK)", exc) from exc
    path = out_dir / f"{name}{SUFFIX}"
    path.write_bytes(executorch_program.buffer)
    ios = {m: json.loads(io_path(root / f"{name}{SUFFIX}").read_text(encoding="utf-8")) for m, root in methods.items()}
    write_methods_io(path, {m: {"inputs": io["inputs"], "outputs": io["outputs"]} for m, io in ios.items()})
    for m in methods:
        load_program(path, name, method_name=m)
    files = sorted([path.name, io_path(path).name])
    first = next(iter(reports))
    return (Artifact(name, path.name, files, facts={"delegation": reports[first]}),
            {key: {"file": path.name, "function": size_program(key)} for key, _, _ in parts})
