"""torch module -> Core ML ML Program (.mlpackage), deterministically.

Path (shared/PITFALLS.md): `torch.export.export(...).run_decompositions({})` (ATEN dialect) into
`coremltools.convert`. The TorchScript path fails on these models with numpy 2.x.

Determinism: coremltools writes random UUIDs into the package's Manifest.json (item keys and
`rootModelIdentifier`); they are rewritten from the items' paths. The model spec's map fields
come out in an order that depends on the process's string-hash seed; the spec is rewritten with
protobuf's deterministic (key-sorted) serialization. So the same inputs and versions give a
byte-identical package in any process. The ExecuTorch debug-handle map coremltools adds when
executorch is installed is not part of the model and is not written.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

from ...errors import ExportError, first_line

SUFFIX = ".mlpackage"
MODEL_SPEC = "Data/com.apple.CoreML/model.mlmodel"
WEIGHTS_DIR = "Data/com.apple.CoreML/weights"


def _register_alias() -> None:
    """ATen ops torch 2.13 emits that coremltools 9.0 has no converter for, mapped to its own:
    `aten.alias` (CLIP's `position_ids[:, :L]`) is a no-op on values; the T5 and Gemma-2 attention
    masks of transformers 5 make `where` with a scalar branch, `new_ones` and `&` on bool masks."""
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    def new_ones(context, node):   # the dtype of the tensor it is called on (a bool mask stays bool)
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types

        inputs = ops._get_inputs(context, node)
        if types.is_bool(inputs[0].dtype):
            context.add(mb.cast(x=ops._make_fill_op(inputs[1], 1.0, node.name + "_fill"), dtype="bool", name=node.name))
        else:
            context.add(ops._make_fill_op(inputs[1], 1.0, node.name))

    def mask_and(context, node):
        """`a & b` (the converter looks "__and__" up as "and"): a bool mask and a mask that arrives
        as float 1.0/0.0 are combined as bools; integer operands keep coremltools' bitwise_and."""
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types

        a, b = ops._get_inputs(context, node)
        if not (types.is_bool(a.dtype) or types.is_bool(b.dtype)):
            return ops.bitwise_and(context, node)
        a, b = (x if types.is_bool(x.dtype) else mb.cast(x=x, dtype="bool") for x in (a, b))
        context.add(mb.logical_and(x=a, y=b, name=node.name))

    for name, func in (("alias", ops.noop), ("where.scalarother", ops.where), ("where.scalarself", ops.where),
                       ("where.scalar", ops.where), ("new_ones", new_ones)):
        if name not in _TORCH_OPS_REGISTRY:   # the converter's own check (get_func normalizes names)
            _TORCH_OPS_REGISTRY.set_func_by_name(func, name)
    for name in ("__and__", "and"):
        _TORCH_OPS_REGISTRY.set_func_by_name(mask_and, name)


@contextlib.contextmanager
def quiet():
    """coremltools prints progress bars and per-pass logs; our progress lines say what happens."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def deployment_target(name: str):
    import coremltools as ct

    return getattr(ct.target, name)


def convert(graph, deployment: str, compute_precision: str):
    """The wrapped graph as an in-memory MLModel with the manifest's input and output names."""
    import coremltools as ct
    import torch

    _register_alias()
    try:
        with torch.no_grad(), quiet():
            program = torch.export.export(graph.module, graph.example_inputs).run_decompositions({})
            placeholders = [n.name for n in program.graph.nodes if n.op == "placeholder"]
            missing = [n for n in graph.input_names if n not in placeholders]
            if missing:
                raise ExportError(f"component {graph.name}", f"torch.export lost inputs {missing}")
            # Named float32 outputs: the interface is the same on every target (fp16 programs would
            # otherwise return fp16), and the manifest's names are the program's.
            model = ct.convert(
                program, convert_to="mlprogram", minimum_deployment_target=deployment_target(deployment),
                compute_precision=ct.precision.FLOAT16 if compute_precision == "fp16" else ct.precision.FLOAT32,
                outputs=[ct.TensorType(name=name, dtype=np.float32) for name in graph.output_names],
                compute_units=ct.ComputeUnit.ALL, skip_model_load=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"component {graph.name}", f"Core ML conversion failed: {_one_line(exc)}") from exc
    return model


def weight_module_names(module) -> dict[str, str]:
    """torch.export names a parameter `p_<dotted path with _>`, and coremltools names its const
    after that (`p_unet_conv_in_weight_to_fp16`): mangled name -> torch module path."""
    return {"p_" + name.replace(".", "_"): name.rsplit(".", 1)[0] for name, _ in module.named_parameters()}


def module_of(const_name: str, names: dict[str, str]) -> str | None:
    for suffix in ("_to_fp16", "_to_fp32"):
        if const_name.endswith(suffix):
            const_name = const_name[: -len(suffix)]
    return names.get(const_name)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    op = re.search(r"(?:Unsupported fx node|convert function for op) '?([\w.]+)'?", text)
    return f"op {op.group(1)}: {first_line(exc)}" if op else first_line(exc)


def save(model, path: Path) -> list[str]:
    """Save `model` as a package at `path` with stable identifiers; returns every file written,
    relative to path's parent, sorted."""
    return write_package(path, lambda p: model.save(str(p)))


def write_package(path: Path, write) -> list[str]:
    """`write(path)` a package (a model's save, coremltools' save_multifunction) in place of any
    earlier one, then give it stable identifiers; every file written, relative to path's parent, sorted."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    with quiet():
        write(path)
    (path / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
    stabilize_spec(path / MODEL_SPEC)
    stabilize_manifest(path)
    return sorted(p.relative_to(path.parent).as_posix() for p in path.rglob("*") if p.is_file())


def stabilize_spec(spec_path: Path) -> None:
    """Protobuf writes map fields (op attributes, block inputs) in the order coremltools filled them,
    which follows Python's per-process string hashing; deterministic serialization sorts them."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(spec_path))
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))


def stabilize_manifest(package: Path) -> None:
    """Replace the random item identifiers of Manifest.json by digests of the item paths."""
    manifest = package / "Manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    items, mapping = {}, {}
    for key, item in data.get("itemInfoEntries", {}).items():
        stable = hashlib.sha256(item["path"].encode()).hexdigest()[:32].upper()
        stable = f"{stable[:8]}-{stable[8:12]}-{stable[12:16]}-{stable[16:20]}-{stable[20:]}"
        mapping[key] = stable
        items[stable] = item
    data["itemInfoEntries"] = dict(sorted(items.items()))
    if data.get("rootModelIdentifier") in mapping:
        data["rootModelIdentifier"] = mapping[data["rootModelIdentifier"]]
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_program(package: Path, function: str | None = None):
    """The MIL program inside a saved package (on any OS: no Core ML runtime needed). `function`:
    only that function of a multifunction package is loaded, since coremltools reads every
    function's weights into arrays of their own: three sizes of the SD UNet would be three copies."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    package = Path(package)
    spec = ct.utils.load_spec(str(package / MODEL_SPEC))
    if function is not None:
        for other in [f for f in spec.mlProgram.functions if f != function]:
            del spec.mlProgram.functions[other]
    with quiet():
        return milproto_load(spec, specification_version=spec.specificationVersion,
                             file_weights_dir=str(package / WEIGHTS_DIR))


def load_model(package: Path):
    """An MLModel for a saved package, without the Core ML runtime (Linux) -- for graph passes."""
    import coremltools as ct

    with quiet():
        return ct.models.MLModel(str(package), skip_model_load=True)


def float32_ops(package: Path) -> dict[str, int]:
    """Op types (and counts) an fp16 program still computes in fp32, besides the input/output casts:
    what coremltools' fp16 pass left alone, for people and runtimes to know. Read from the spec
    alone: the weights are not needed."""
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(Path(package) / MODEL_SPEC))
    main = spec.mlProgram.functions[spec.description.defaultFunctionName or "main"]
    counts: dict[str, int] = {}
    for op in main.block_specializations[main.opset].operations:
        if op.type in ("const", "cast") or op.type.startswith("constexpr_"):
            continue
        if any(o.type.tensorType.dataType == MIL_pb2.DataType.FLOAT32 for o in op.outputs):
            counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items()))


_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 131080: "int8"}


def default_function(package: Path) -> str:
    """The function a runtime gets without naming one: "main", or a multifunction package's default."""
    import coremltools as ct

    return ct.utils.load_spec(str(Path(package) / MODEL_SPEC)).description.defaultFunctionName or "main"


def description(spec, function: str | None = None):
    """The model description of `function` (a multifunction package's), or of the model's only one."""
    if function is None:
        return spec.description
    return next(f for f in spec.description.functions if f.name == function)


def describe_io(package: Path, function: str | None = None) -> dict:
    """Names, shapes and dtypes as the program really has them (token ids are int32 in Core ML)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(Path(package) / MODEL_SPEC))

    def features(items):
        return [{"name": f.name, "dtype": _ARRAY_DTYPES.get(f.type.multiArrayType.dataType,
                                                            str(f.type.multiArrayType.dataType)),
                 "shape": [int(d) for d in f.type.multiArrayType.shape]} for f in items]

    d = description(spec, function)
    return {"inputs": features(d.input), "outputs": features(d.output),
            "specification_version": spec.specificationVersion}
