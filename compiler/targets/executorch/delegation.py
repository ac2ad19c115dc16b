"""What XNNPACK took of a lowered program, measured, and the recipe's minimum enforced.

Every operator left outside a delegate runs on ExecuTorch's portable kernels (plain C++ loops,
no SIMD, one thread) and splits the graph: each split is another delegate call with its own
input and output copies. The report counts operators in and out of delegates by type, the
number of delegated segments, and the share of FLOPs inside delegates (conv, linear and matmul
at 2 x MACs, every other op at one per output element, views free).
"""
from __future__ import annotations

import math
from collections import Counter

from ...errors import ExportError

DELEGATE_CALL = "executorch_call_delegate"
FREE = ("getitem", "view_copy", "alias", "squeeze_copy", "unsqueeze_copy", "_assert", "sym_size")


def _name(node) -> str:
    target = node.target
    parts = getattr(target, "__name__", str(target)).split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]    # namespace.op.overload -> op


def _numel(value) -> int:
    shape = getattr(value, "shape", None)
    return math.prod(shape) if shape is not None else 0


def node_flops(node) -> int:
    name = _name(node)
    if node.op != "call_function" or any(name.startswith(f) for f in FREE):
        return 0
    out = node.meta.get("val")
    if isinstance(out, (tuple, list)):
        out = out[0] if out else None
    n_out = _numel(out)
    args = [a.meta.get("val") if hasattr(a, "meta") else None for a in node.args]
    if name == "convolution" and args[1] is not None:
        w = args[1].shape
        if node.args[6]:  # transposed: every input element meets C_out/groups x kernel weights
            return 2 * _numel(args[0]) * w[1] * math.prod(w[2:])
        return 2 * n_out * w[1] * math.prod(w[2:])
    if name in ("linear", "addmm", "mm", "bmm") and args[0] is not None:
        a = args[1] if name == "addmm" else args[0]
        return 2 * n_out * a.shape[-1]
    return n_out


def report(edge_program) -> dict:
    """The delegation report of a lowered program (exir EdgeProgramManager's exported program)."""
    gm = edge_program.graph_module
    delegated, portable, segments = Counter(), Counter(), 0
    flops_in, flops_out = 0, 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _name(node) == DELEGATE_CALL:
            segments += 1
            lowered = getattr(gm, node.args[0].target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and _name(inner) != "getitem":
                    delegated[_name(inner)] += 1
                    flops_in += node_flops(inner)
        elif _name(node) != "getitem":
            portable[_name(node)] += 1
            flops_out += node_flops(node)
    total = flops_in + flops_out
    return {"backend": "XnnpackBackend", "delegated_segments": segments,
            "delegated_ops": sum(delegated.values()), "portable_ops": sum(portable.values()),
            "delegated_flop_share": round(flops_in / total, 6) if total else 1.0,
            "flops": total, "delegated_by_type": dict(sorted(delegated.items())),
            "portable_by_type": dict(sorted(portable.items()))}


def enforce(rep: dict, component: str, minimum: float) -> None:
    if rep["delegated_flop_share"] + 1e-12 < minimum:
        left = ", ".join(f"{op} x{n}" for op, n in sorted(rep["portable_by_type"].items(), key=lambda x: -x[1]))
        raise ExportError(f"component {component}",
                          f"XNNPACK took {rep['delegated_flop_share']:.1%} of its FLOPs (minimum {minimum:.0%}, "
                          f"targets.executorch.min_delegated_flop_share); left on portable kernels: {left}")

