"""Several ONNX graphs of one component (one per image size) over one external-data file.

A component compiled at several sizes gives graphs whose weights are the same tensors (the
quantized ones too: per-channel weight scales come from the weights alone); only what depends on
the size differs (shapes, a size-dependent constant, a calibrated bias). Each size keeps its own
fixed-shape graph, so ONNX Runtime plans and runs it exactly as a one-size bundle's, and every
tensor of at least INLINE_BYTES is written once to `<component>.onnx.data`, found by content:
the graphs point into it by offset (the ONNX external-data convention ONNX Runtime reads).
"""
from __future__ import annotations

from pathlib import Path

from .. import Artifact
from ..content_store import ContentStore
from .export import SUFFIX

INLINE_BYTES = 1024          # smaller tensors stay in the graph (onnx's own size_threshold)


def share_weights(name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path) -> tuple[Artifact, dict[str, str]]:
    """parts: (size key, root, artifact) per size -> the shared artifact in out_dir, and per size key
    the graph file a runtime loads."""
    import onnx

    data_name = f"{name}{SUFFIX}.data"
    programs = {}
    with open(out_dir / data_name, "wb") as data:
        store = ContentStore(data)
        for key, root, artifact in parts:
            src = root / artifact.main
            model = onnx.load(str(src), load_external_data=False)
            for tensor in _initializers(model.graph):
                if tensor.data_type == onnx.TensorProto.STRING:
                    continue
                raw = _raw_bytes(tensor, src.parent)
                if len(raw) < INLINE_BYTES:
                    _inline(tensor, raw)
                    continue
                _point(tensor, data_name, *store.put(raw))
            programs[key] = f"{name}.{key}{SUFFIX}"
            onnx.save_model(model, str(out_dir / programs[key]))
    files = sorted([data_name, *programs.values()])
    return Artifact(name, programs[parts[0][0]], files), programs


def _initializers(graph):
    """Every initializer, subgraphs' (If/Loop bodies) included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _initializers(sub)


def _raw_bytes(tensor, folder: Path) -> bytes:
    import onnx
    from onnx import numpy_helper

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        with open(folder / info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            return f.read(int(info["length"])) if "length" in info else f.read()
    if tensor.raw_data:
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()   # typed fields (float_data, int32_data, ...)


def _clear(tensor) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "external_data"):
        tensor.ClearField(field)


def _inline(tensor, raw: bytes) -> None:
    import onnx

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return
    _clear(tensor)
    tensor.data_location = onnx.TensorProto.DEFAULT
    tensor.raw_data = raw


def _point(tensor, location: str, offset: int, length: int) -> None:
    import onnx

    _clear(tensor)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
