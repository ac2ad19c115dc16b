"""torch.onnx.export(dynamo=True), checked by onnx.checker and by loading it in ONNX Runtime.

Exporter choice (shared/PITFALLS.md): the dynamo exporter is the supported one; the legacy
TorchScript exporter is deprecated and emits graphs ONNX Runtime refuses for some VAEs.
Its optimizer folds constants (files about half the size) but its `x + 0 -> x` rule matches any
constant within 1e-8 of zero, deleting the `x + 1e-15` of DC-AE / SANA linear attention: 0/0 = NaN
on the first all-zero ReLU row (shared/PITFALLS.md). Exports run without that rule
(keep_tiny_epsilons), and every exported file is still run on real inputs and checked for NaN/Inf.
torchlib lowers every `squeeze(dim)` to Squeeze(axes=[dim]), which ONNX Runtime refuses when
the dim is not 1 (a no-op in torch: PixArtTransformer2DModel squeezes [B, N, C] at 1), so those
are dropped from the exported program first (drop_noop_squeezes).
Weights are written as external data (`<name>.onnx.data`) beside the .onnx file, for every size:
files over 2 GB (the protobuf limit) need it, and it keeps export memory near the weights' size.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ...errors import ExportError, first_line
from .. import Artifact, package_files

SUFFIX = ".onnx"
_DTYPES = {1: "float32", 7: "int64", 10: "float16", 3: "int8", 2: "uint8", 6: "int32"}
STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _strip_stack_traces(model) -> None:
    """The exporter records each node's Python stack trace, absolute paths included, so the
    same model compiled from another checkout would differ byte for byte. Name scopes (the
    torch module path of each node, used to name layers) are kept. Done on the exporter's
    in-memory IR before saving: re-reading a saved file would hold a second copy of the weights."""
    import onnx_ir as ir

    for graph in (model.graph, *model.functions.values()):
        for node in ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.pop(STACK_TRACE, None)


@contextlib.contextmanager
def keep_tiny_epsilons():
    """onnxscript's optimizer without its add-zero rules (x + 0, 0 + x), for the export's duration.
    Private API: onnxscript is pinned, and the rule set's layout is checked before it is changed."""
    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import _no_op

    rules = list(_no_op.rules.rules)
    # [x*1, 1*x, x+0, 0+x, x-0, x/1, Dropout(ratio=0), Dropout(inference)]: the rules are anonymous
    if len(rules) != 8:
        raise ExportError("onnxscript", f"its no-op rewrite rules changed ({len(rules)}, expected 8): "
                                        f"re-check compiler/targets/onnx/export.keep_tiny_epsilons")
    add_zero = set(rules[2:4])
    saved = rewriter._DEFAULT_REWRITE_RULES
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in saved if r not in add_zero)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = saved
        _forget_matched_nodes(saved)


def _forget_matched_nodes(rules) -> None:
    """Each rule's matcher keeps the last node and graph it looked at, and through them the whole
    exported graph, whose initializers are the torch weights: a compile that releases a component after
    exporting it would hold them until the next export (10.5 GB for a Gemma-2-2B)."""
    for rule in rules:
        matcher = getattr(rule, "_matcher", None)
        for attribute in ("_current_node", "_graph"):
            if hasattr(matcher, attribute):
                setattr(matcher, attribute, None)


def drop_noop_squeezes(module, example_inputs):
    """torch.export the module, minus each aten.squeeze.dim whose static size is not 1."""
    import torch

    program = torch.export.export(module, example_inputs)
    changed = False
    for node in list(program.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.squeeze.dim:
            src, dim = node.args[0], node.args[1]
            if src.meta["val"].shape[dim] != 1:
                node.replace_all_uses_with(src)
                program.graph.erase_node(node)
                changed = True
    if changed:
        program.graph_module.recompile()
    return program


def export(graph, out_dir: Path, opset: int, phases: bool = True) -> Artifact:
    """`phases`: nearest 2x upsamplings read by a 3x3 convolution exported as their four phase
    convolutions (targets/upsampling.py)."""
    import torch

    from ..upsampling import phase_upsampling

    path = out_dir / f"{graph.name}{SUFFIX}"
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), keep_tiny_epsilons(), \
                (phase_upsampling(graph.module) if phases else contextlib.nullcontext()):
            program = torch.onnx.export(
                drop_noop_squeezes(graph.module, graph.example_inputs), graph.example_inputs, dynamo=True,
                opset_version=opset, optimize=True,
                input_names=graph.input_names, output_names=graph.output_names, verbose=False,
            )
            _strip_stack_traces(program.model)
            # Always external data: an inline save serializes the weights into a proto and its
            # bytes, two more copies (5.97 vs 1.88 GB peak RSS for a 340M text encoder).
            program.save(str(path), external_data=True)
    except Exception as exc:
        raise ExportError(f"component {graph.name}", f"ONNX export failed: {first_line(exc)}") from exc
    _check(path, graph.name)
    from .run import session_runner

    session_runner(path)  # ORT must accept the file now, not after calibration
    return Artifact(graph.name, path.name, package_files(out_dir, path.name))


def _check(path: Path, name: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"component {name}", f"onnx.checker rejected {path.name}: {str(exc)[:200]}") from exc


def describe_io(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def spec(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
            out.append({"name": v.name, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type)), "shape": shape})
        return out

    return {"inputs": spec(model.graph.input), "outputs": spec(model.graph.output),
            # the default domain's: an EPContext model (QNN) lists other domains first
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}
