"""Our ONNX export (targets/onnx/export.py, with its fixes and checks) read by OpenVINO's ONNX
frontend (`openvino.convert_model`) and saved as IR: `<name>.xml` (the graph) + `<name>.bin`
(the weights), fp32 (OpenVINO's default of fp16-compressed weights is off: the weights ship as
checked).

The ONNX route, not `convert_model(torch module)`: the frontend reads the very graph the ONNX target
checks, with its torch module names (OpenVINO names each op after its ONNX node, and `layer_names`
keeps node -> torch module for the recipe's per-layer overrides).

Deterministic bytes: OpenVINO names an op it creates `<Type>_<n>` from a per-process counter, so
the same model converted after another in one process would be saved under other names. Those
names are replaced by their position in the graph before saving (`canonical_names`).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ...errors import ExportError, first_line
from .. import Artifact

WEIGHT_OPS = ("Convolution", "GroupConvolution", "MatMul")
_AUTO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")


def export(graph, out_dir: Path, onnx_target) -> Artifact:
    """The component as `<name>.xml` + `<name>.bin` in out_dir, via an ONNX file exported (and
    checked) in a scratch folder beside it."""
    with tempfile.TemporaryDirectory(prefix=f".{graph.name}-onnx-", dir=out_dir) as scratch:
        onnx_artifact = onnx_target.export(graph, Path(scratch), onnx_target.Options())
        return from_onnx(Path(scratch) / onnx_artifact.main, out_dir, graph.name)


def from_onnx(src: Path, out_dir: Path, name: str) -> Artifact:
    """The ONNX file `src` as IR `<name>.xml` + `<name>.bin` in out_dir."""
    import onnx
    import openvino as ov

    from ..onnx.quantize import weight_layers

    torch_names = {l.node: l.name for l in weight_layers(onnx.load(str(src), load_external_data=False))}
    try:
        model = ov.convert_model(str(src))
    except Exception as exc:
        raise ExportError(name, f"OpenVINO could not read the ONNX export: {first_line(exc)}") from exc
    return save(model, out_dir, name, layer_names(model, torch_names))


def save(model, out_dir: Path, name: str, names: dict[str, str]) -> Artifact:
    import openvino as ov

    canonical_names(model)
    ov.save_model(model, str(out_dir / f"{name}.xml"), compress_to_fp16=False)
    return Artifact(name, f"{name}.xml", [f"{name}.bin", f"{name}.xml"], layer_names=names)


def canonical_names(model) -> None:
    """Ops named by OpenVINO's per-process counter (`Constant_45324`) -> `<Type>#<position>`. The
    form is not the counter's: a model saved so and quantized keeps its names, and only the ops NNCF
    added are renamed (layers are found by name in both)."""
    taken = {op.get_friendly_name() for op in model.get_ops()}
    for i, op in enumerate(model.get_ordered_ops()):
        old = op.get_friendly_name()
        if _AUTO_NAME.match(old):
            new = f"{op.get_type_name()}#{i}"
            while new in taken:
                new += "'"
            taken.discard(old)
            taken.add(new)
            op.set_friendly_name(new)


def weight_ops(model) -> list:
    """(op, weight Constant) of every Convolution / GroupConvolution / MatMul whose second input is
    a constant (through OpenVINO's Convert / Reshape / Transpose / decompression Multiply)."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHT_OPS:
            continue
        const = constant_source(op.input_value(1).get_node())
        if const is not None:
            out.append((op, const))
    return out


def constant_source(node):
    """The Constant a weight comes from through OpenVINO's and NNCF's conversions (decompression,
    layout, fake quantization), or None for an activation."""
    while node.get_type_name() in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract", "FakeQuantize"):
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def layer_names(model, torch_names: dict[str, str]) -> dict[str, str]:
    """OpenVINO op name -> torch module path: OpenVINO names a weight op after its ONNX node (a
    Conv with bias becomes `<node>/WithoutBiases` and an Add named `<node>`)."""
    out = {}
    for op, _ in weight_ops(model):
        name = op.get_friendly_name()
        node = name.split("/")[0]
        if node in torch_names:
            out[name] = torch_names[node]
    return out


def weights_file(xml: Path) -> Path:
    """The .bin an IR reads its weights from: `<component>.bin` beside it, for the one IR of a
    one-size bundle (`denoiser.xml`) and each size's of a multi-size one (`denoiser.640x384.xml`,
    shared_weights.py). Component names have no dot."""
    return xml.parent / f"{xml.name.split('.', 1)[0]}.bin"


def read_ir(xml: Path):
    """The IR at `xml` with its weights (weights_file), as an openvino.Model."""
    import openvino as ov

    return ov.Core().read_model(str(xml), str(weights_file(Path(xml))))


def describe_io(path: Path) -> dict:
    model = read_ir(path)
    dtypes = {"f32": "float32", "i64": "int64", "i32": "int32", "f16": "float16"}

    def spec(ports):
        return [{"name": p.get_any_name(), "dtype": dtypes.get(p.get_element_type().get_type_name(),
                                                              p.get_element_type().get_type_name()),
                 "shape": [d.get_length() if d.is_static else "?" for d in p.get_partial_shape()]} for p in ports]

    return {"inputs": spec(model.inputs), "outputs": spec(model.outputs)}
