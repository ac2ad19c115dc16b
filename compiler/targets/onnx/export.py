"""torch.onnx.export(dynamo=True), checked by onnx.checker and by loading it in ONNX Runtime.

Exporter choice (shared/PITFALLS.md): the dynamo exporter is the supported one; the legacy
TorchScript exporter is deprecated and emits graphs ONNX Runtime refuses for some VAEs.
Its optimizer folds constants (files about half the size) but can delete `x + eps` for
eps < 1e-8, so every exported file is run on real inputs and checked for NaN/Inf in verify.
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


def export(graph, out_dir: Path, opset: int) -> Artifact:
    import torch

    path = out_dir / f"{graph.name}{SUFFIX}"
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            program = torch.onnx.export(
                graph.module, graph.example_inputs, dynamo=True, opset_version=opset, optimize=True,
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
            "opset": model.opset_import[0].version}
