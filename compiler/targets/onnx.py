"""ONNX target: torch.onnx.export(dynamo=True), checked by onnx.checker and ONNX Runtime.

Exporter choice (shared/PITFALLS.md): the dynamo exporter is the supported one; the legacy
TorchScript exporter is deprecated and emits graphs ONNX Runtime refuses for some VAEs.
Its optimizer folds constants (files about half the size) but can delete `x + eps` for
eps < 1e-8, so every exported file is run on real inputs and checked for NaN/Inf in verify.
Weights are written as external data (`<name>.onnx.data`) beside the .onnx file, for every size:
files over 2 GB (the protobuf limit) need it, and it keeps export memory near the weights' size.
"""
from __future__ import annotations

import importlib.util
import io
import contextlib
from pathlib import Path

import numpy as np

from ..errors import ExportError

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


class OnnxTarget:
    name = "onnx"
    suffix = ".onnx"

    def unavailable_reason(self) -> str | None:
        missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            return f"missing Python packages {', '.join(missing)}; run `make install`"
        return None

    def export(self, graph, out_dir: Path, opset: int) -> list[str]:
        import torch

        path = out_dir / f"{graph.name}{self.suffix}"
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
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"component {graph.name}", f"ONNX export failed: {msg}") from exc
        self._check(path, graph.name)
        return sorted(p.name for p in out_dir.iterdir() if p.name.startswith(f"{graph.name}{self.suffix}"))

    def _check(self, path: Path, name: str) -> None:
        import onnx

        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:
            raise ExportError(f"component {name}", f"onnx.checker rejected {path.name}: {str(exc)[:200]}") from exc

    def load(self, path: Path):
        import onnxruntime as ort

        check_external_data(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(str(path), f"ONNX Runtime could not load it: {str(exc)[:200]}") from exc
        names = [i.name for i in session.get_inputs()]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return session.run(None, {n: feeds[n] for n in names})

        return run

    def describe_io(self, path: Path) -> dict:
        import onnx

        model = onnx.load(str(path), load_external_data=False)

        def spec(values):
            out = []
            for v in values:
                t = v.type.tensor_type
                shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
                out.append({"name": v.name, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type)), "shape": shape})
            return out

        return {"inputs": spec(model.graph.input), "outputs": spec(model.graph.output), "opset": model.opset_import[0].version}


def check_external_data(path: Path) -> None:
    """ONNX external-data locations must stay inside the model's directory (ERRORS.md)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from ..errors import BundleError

    root = path.parent.resolve()
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            target = (root / location)
            if Path(location).is_absolute() or ".." in Path(location).parts or target.is_symlink() \
                    or not target.resolve().is_relative_to(root):
                raise BundleError(f"{path}: {tensor.name}", f"external data location {location!r} leaves the bundle")
