"""ONNX Runtime CPU sessions: how this machine computes an ONNX artifact's outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BundleError, ExportError


def session_runner(path: Path):
    import onnxruntime as ort

    opts = session_options(check_external_data(path))
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(str(path), f"ONNX Runtime could not load it: {str(exc)[:200]}") from exc
    return runner_of(session)


def session_options(model):
    """How parity and `generate` open the graph `model` (its weights not needed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # ORT's CPU arena keeps every activation block it ever grew: without it the SD decoder at
    # 512 px peaks 1.0 GB lower (2.37 -> 1.34 GB added) at the same speed (benchmarks/end_to_end.py)
    opts.enable_cpu_mem_arena = False
    # Its memory pattern plans one block for a program's activations: for W8A8 programs (float and
    # int8 copies of each activation) that block outgrew the live peak, 1.50 vs 1.29 GB for the SD
    # decoder and 2.11 vs 1.83 GB for the int8 UNet; fp32 programs peak lower with it (README).
    opts.enable_mem_pattern = not any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    return opts


def runner_of(session):
    """A Runner over an ONNX Runtime session: the feeds it names, all its outputs."""
    names = [i.name for i in session.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(None, {n: feeds[n] for n in names})

    return run


def check_external_data(path: Path):
    """ONNX external-data locations must stay inside the model's directory (ERRORS.md). Returns
    the graph, without its weights."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    root = path.parent.resolve()
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            target = (root / location)
            if Path(location).is_absolute() or ".." in Path(location).parts or target.is_symlink() \
                    or not target.resolve().is_relative_to(root):
                raise BundleError(f"{path}: {tensor.name}", f"external data location {location!r} leaves the bundle")
    return model
