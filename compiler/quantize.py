"""Stage 4, quantize: 8-bit post-training quantization of the exported ONNX components.

Tools are ONNX Runtime's own (onnxruntime.quantization); nothing here rounds a weight by hand.

- `w8a8` (denoiser default): `quantize_static`, QDQ format, per-channel symmetric int8
  weights, uint8 activations (MinMax ranges). Only ops that carry a weight (Conv, and
  MatMul/Gemm with a constant operand) are candidates: quantizing the attention
  activation x activation MatMuls made the UNet slower on AVX2 CPUs (shared/PITFALLS.md).
  Because every candidate gets Q/DQ on its output as well as its inputs, ONNX Runtime
  fuses them into QLinearConv / QLinearMatMul kernels at session load.
- `w8` (text encoder default): weight-only int8 (`MatMulNBits`, bits=8, symmetric,
  blocks along K); activations stay float, so no calibration is needed.

Calibration is streamed: each calibration prompt goes through the fp32 torch wrapped graph
(tokenizer -> text encoder -> denoiser at the baked timestep, with seeded portable noise) and
only the feeds of the component being calibrated are handed to ORT's MinMax calibrator,
whose augmented graph reduces every calibrated tensor to a min and a max scalar inside the
session: what is kept per prompt is two floats per tensor, so peak memory does not grow
with the number of prompts.

Accuracy-aware fallback: the quantized component is checked against fp32 on a few
calibration prompts (never the held-out ones, which stay for the final verdict). On a miss,
layers are ranked by their local quantization SQNR (activation and weight, measured in
context, as onnxruntime.quantization.qdq_loss_debug does) and the worst are kept in float,
one at a time, within the recipe's `max_float_weight_fraction`; without that permission
a miss is a ParityError (exit 6).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from . import noise
from .errors import CalibrationError, ParityError, RecipeError
from .metrics import compare
from .prompts import tokenize
from .recipe import Component, Quantization
from .verify import Check

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
DEFAULT_SCHEME = {"text_encoder": "w8", "denoiser": "w8a8", "vae_decoder": "w8a8"}
CHECK_PROMPTS = 2          # calibration prompts used to decide on fallback
WEIGHT_ONLY_BLOCK = 128    # MatMulNBits: one scale per 128 weights along K (ORT pads a K that is not a multiple)


@dataclass
class Layer:
    """One weight-carrying op: what it is, what it weighs, how it ended up."""
    node: str
    name: str                  # torch module path (from the exporter's name scopes) or node name
    op_type: str
    params: int
    flops: int
    precision: str = "fp32"    # int8 | fp32
    reason: str = ""           # why it is float: recipe override / fallback / not a candidate
    act_sqnr_db: Optional[float] = None     # input activation after Q/DQ vs before
    output_sqnr_db: Optional[float] = None  # layer output, int8 vs the same op in float

    @property
    def sensitivity_db(self) -> Optional[float]:
        return self.output_sqnr_db

    def as_dict(self) -> dict:
        d = {"node": self.node, "name": self.name, "op_type": self.op_type, "params": self.params,
             "flops": self.flops, "precision": self.precision}
        if self.reason:
            d["reason"] = self.reason
        for k in ("act_sqnr_db", "output_sqnr_db"):
            v = getattr(self, k)
            if v is not None:
                d[k] = round(v, 3)
        return d


@dataclass
class ComponentQuant:
    component: str
    scheme: str
    layers: list[Layer]
    fallback: list[str] = field(default_factory=list)      # layer names kept float by the fallback
    check: dict = field(default_factory=dict)               # calibration-prompt metrics before/after fallback
    calibration_prompts: int = 0
    sizes: dict = field(default_factory=dict)              # fp32_bytes, shipped_bytes (files on disk)

    def coverage(self) -> dict:
        total_p = sum(l.params for l in self.layers) or 1
        total_f = sum(l.flops for l in self.layers) or 1
        q = [l for l in self.layers if l.precision == "int8"]
        return {"int8_layers": len(q), "float_layers": len(self.layers) - len(q),
                "int8_weight_share": round(sum(l.params for l in q) / total_p, 6),
                "int8_flop_share": round(sum(l.flops for l in q) / total_f, 6)}

    def as_dict(self) -> dict:
        return {"scheme": self.scheme, "tool": _tool(self.scheme), "coverage": self.coverage(),
                "fallback": self.fallback, "check_on_calibration_prompts": self.check,
                "calibration_prompts": self.calibration_prompts, "sizes": self.sizes,
                "layers": [l.as_dict() for l in self.layers]}


def _tool(scheme: str) -> str:
    if scheme == "w8a8":
        return ("onnxruntime.quantization.quantize_static(QDQ, per_channel=True, weight QInt8 symmetric, "
                "activation QUInt8, MinMax)")
    return "onnxruntime.quantization.MatMulNBitsQuantizer(bits=8, symmetric)"


# ---------------------------------------------------------------- recipe -> layer plan

def plan_layers(model, component: str, spec: Component) -> tuple[str, list[Layer]]:
    """Layered overrides: scheme -> op type -> node (ONNX node or torch module name); `null`
    keeps the op type / node in float."""
    q = spec.quantization or Quantization(scheme=DEFAULT_SCHEME[component])
    where = f"components.{component}.quantization"
    for key, value in list(q.op_types.items()) + list(q.nodes.items()):
        if value is not None and value != q.scheme:
            raise RecipeError(where, f"override {key!r}: {value!r} must be null (keep float) or the "
                                     f"component scheme {q.scheme!r}")
    for op in q.op_types:
        if op not in WEIGHT_OPS:
            raise RecipeError(f"{where}.op_types", f"{op!r} is not a quantizable op type; use one of {WEIGHT_OPS}")
    layers = weight_layers(model)
    if q.scheme == "w8":
        for l in layers:
            if l.op_type != "MatMul":
                l.reason = "w8 (weight-only) covers MatMul"
    known = {l.node for l in layers} | {l.name for l in layers}
    for key in q.nodes:
        if key not in known:
            raise RecipeError(f"{where}.nodes", f"{key!r} is not a weight-carrying layer of the {component} "
                                                f"(see manifest.json quantization layers for names)")
    for l in layers:
        if l.reason:
            continue
        if l.op_type in q.op_types and q.op_types[l.op_type] is None:
            l.reason = f"recipe: op_types.{l.op_type} = null"
        for key in (l.node, l.name):
            if key in q.nodes:
                l.reason = "" if q.nodes[key] is not None else f"recipe: nodes.{key} = null"
    return q.scheme, layers


def weight_layers(model) -> list[Layer]:
    """Conv / MatMul / Gemm nodes with a constant weight, with parameter and FLOP counts."""
    inits = {i.name: i for i in model.graph.initializer}
    shapes = _value_shapes(model)
    layers = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        params = int(np.prod(w.dims))
        if len(node.input) > 2 and node.input[2] in inits:
            params += int(np.prod(inits[node.input[2]].dims))
        out = shapes.get(node.output[0])
        flops = 0
        if out is not None:
            if node.op_type == "Conv":
                flops = 2 * int(np.prod(out)) * int(np.prod(w.dims[1:]))
            else:
                flops = 2 * int(np.prod(out)) * int(w.dims[0])
        layers.append(Layer(node.name, _layer_name(node), node.op_type, params, flops))
    return layers


def _layer_name(node) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(p.value.replace("'", '"'))
            except ValueError:
                break
            if len(scopes) >= 2 and scopes[-2]:
                return scopes[-2]
    return node.name


def _value_shapes(model) -> dict[str, tuple[int, ...]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        inferred = model
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[v.name] = tuple(dims)
    return shapes


# ---------------------------------------------------------------- calibration feeds

def calibration_feeds(component: str, reference, prompts: list[str], seed: int, where: str) -> Iterator[dict]:
    """Prompts -> the fp32 reference chain -> the inputs `component` sees at the baked timestep."""
    for i, prompt in enumerate(prompts):
        tokens = tokenize(reference.tokenizers, prompt)
        if component == "text_encoder":
            feeds = dict(tokens.ids)
        else:
            embeds = reference.embed(tokens)
            z = noise.gaussian(seed + i, reference.latent_shape)
            feeds = {**embeds, "noise": z}
            if component == "vae_decoder":
                feeds = {"latents": reference.denoise(embeds, z)}
        for name, value in feeds.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise CalibrationError(f"{where}", f"NaN/Inf in the {component} calibration input {name!r} for "
                                                   f"calibration prompt {i + 1} {prompt[:50]!r} (produced by the fp32 "
                                                   f"graph upstream of the {component})")
        yield feeds


# ---------------------------------------------------------------- quantizers

def quantize_component(component: str, spec: Component, src: Path, dst: Path, reference,
                       calib_prompts: list[str], calib_seed: int, candidate_loader: Callable,
                       work: Path, tolerance, progress=None) -> ComponentQuant:
    """Quantize the ONNX file `src` into `dst` (a .onnx path); returns what was done."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    scheme, layers = plan_layers(model, component, spec)
    q = spec.quantization or Quantization(scheme=scheme)
    result = ComponentQuant(component, scheme, layers)
    where = f"calibration ({component})"
    if scheme == "w8":
        _weight_only(src, dst, [l.node for l in layers if l.reason])
        _mark(layers)
        return result

    # ORT reuses a cache file it finds; this one must hold this call's prompts only.
    cache = work / f"{component}.calibration.json"
    cache.unlink(missing_ok=True)
    result.calibration_prompts = len(calib_prompts)

    def build(exclude: list[str]) -> None:
        _static(src, dst, cache, exclude, [l.node for l in layers])

    if progress:
        progress.step(f"{component}: calibrating on {len(calib_prompts)} prompts (streamed)")
    _calibrate(model, src, cache, calibration_feeds(component, reference, calib_prompts, calib_seed, where))
    _check_ranges(cache, model, component)
    if progress:
        progress.step(f"{component}: quantizing (ORT quantize_static, QDQ)")
    build([l.node for l in layers if l.reason])
    check_feeds = list(calibration_feeds(component, reference, calib_prompts[:CHECK_PROMPTS], calib_seed, where))
    expected = [reference.runners[component](f)[0] for f in check_feeds]

    def check() -> tuple[bool, dict]:
        run = candidate_loader(dst)
        c = Check(component, "int8", tolerance, [compare(e, run(f)[0], data_range=1.0 if component == "vae_decoder"
                                                         else None) for e, f in zip(expected, check_feeds)])
        return c.passed, {"worst_psnr_db": round(c.worst.psnr_db, 3),
                          "worst_cosine": round(min(m.cosine for m in c.per_prompt), 6),
                          "finite": all(m.finite for m in c.per_prompt), "passed": c.passed}

    ok, before = check()
    result.check = {"before_fallback": before}
    _mark(layers)
    _measure_sqnr(layers, src, dst, check_feeds[0])
    if ok:
        return result
    if not before["finite"]:
        bad = _first_nonfinite_layer(layers)
        raise ParityError(f"components.{component}", f"int8 output has NaN/Inf on calibration prompts"
                                                     f"{' (first at layer ' + bad + ')' if bad else ''}")
    budget = q.max_float_weight_fraction * sum(l.params for l in layers)
    if budget <= 0:
        raise ParityError(f"components.{component}",
                          f"int8 misses its tolerance on calibration prompts: PSNR {before['worst_psnr_db']:.1f} dB "
                          f"(min {tolerance.min_psnr_db}), cosine {before['worst_cosine']:.5f}; most sensitive layer "
                          f"{_ranked(layers)[0].name if _ranked(layers) else '?'}; set quantization."
                          f"max_float_weight_fraction to allow keeping layers in float")
    spent = sum(l.params for l in layers if l.reason)
    for layer in _ranked(layers):
        if spent + layer.params > budget:
            continue
        spent += layer.params
        layer.reason = f"fallback: output SQNR {layer.sensitivity_db:.1f} dB"
        result.fallback.append(layer.name)
        if progress:
            progress.step(f"{component}: keeping {layer.name} in float ({layer.reason})")
        build([l.node for l in layers if l.reason])
        ok, after = check()
        result.check["after_fallback"] = after
        if ok:
            _mark(layers)
            return result
    _mark(layers)
    after = result.check.get("after_fallback", before)
    raise ParityError(f"components.{component}",
                      f"int8 still misses its tolerance after keeping {len(result.fallback)} layers in float "
                      f"({spent / max(1, sum(l.params for l in layers)):.1%} of weights, limit "
                      f"{q.max_float_weight_fraction:.1%}): PSNR {after['worst_psnr_db']:.1f} dB "
                      f"(min {tolerance.min_psnr_db})")


def _mark(layers: list[Layer]) -> None:
    for l in layers:
        l.precision = "fp32" if l.reason else "int8"


def _ranked(layers: list[Layer]) -> list[Layer]:
    return sorted((l for l in layers if not l.reason and l.sensitivity_db is not None),
                  key=lambda l: l.sensitivity_db)


def _first_nonfinite_layer(layers: list[Layer]) -> str | None:
    for l in layers:
        if l.output_sqnr_db is not None and not math.isfinite(l.output_sqnr_db):
            return l.name
    return None


@contextlib.contextmanager
def _quiet_ort_logging():
    """ORT's quantizers log advice and per-node INFO lines on their own handlers; our
    progress lines say what happens."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _calibrate(graph, src: Path, cache: Path, feeds: Iterator[dict]) -> None:
    """MinMax ranges of every float input and output of the Conv/MatMul/Gemm nodes, streamed one
    sample at a time, written as ORT's calibration cache (quantize_static then reads it).

    The method is ORT's MinMaxCalibrater's (a ReduceMin and a ReduceMax on each tensor, added as
    graph outputs; a running min/max over samples), applied to a copy of `graph` (`src` loaded
    without its external weights) saved beside `src`, so the session is the only holder of the
    weights. ORT's own calibrator inside
    quantize_static keeps two more in-memory copies of the model next to its session: at
    SD-Turbo size (866M-parameter UNet, 512 px) that is over 24 GB, an out-of-memory kill on a
    24 GB machine. Ranges are merged with np.minimum/np.maximum, not ORT's nanmin/nanmax, so a NaN
    reaches _check_ranges instead of being skipped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    model = onnx.ModelProto()
    model.CopyFrom(graph)
    inits = {i.name for i in model.graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input,
                       *model.graph.output]}
    tensors = {t for n in model.graph.node if n.op_type in WEIGHT_OPS for t in (*n.input, *n.output)
               if t and t not in inits and types.get(t) == TensorProto.FLOAT}
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "calib_flat"))
    outputs = []

    def reductions(produced) -> list:
        added = []
        for t in produced:
            if t not in tensors:
                continue
            for op in ("ReduceMin", "ReduceMax"):
                name = f"{t}_{op}"
                added += [helper.make_node(op, [t], [name + "_keep"], keepdims=1),
                          helper.make_node("Reshape", [name + "_keep", "calib_flat"], [name])]
                model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
                outputs.append(name)
        return added

    # Each reduction goes right after the node that produces its tensor, and the session runs
    # nodes in that order (PRIORITY_BASED): with ORT's default order the reductions ran late and
    # kept calibrated activations alive, 9.6 GB instead of 4.4 GB for the SD-Turbo UNet at 512 px.
    nodes = reductions([i.name for i in model.graph.input])
    for node in model.graph.node:
        nodes += [node, *reductions(node.output)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    augmented = src.with_name(src.stem + ".calibration.onnx")  # beside src: external data paths resolve
    try:
        onnx.save(model, str(augmented))
        del model
        session = _session(str(augmented), in_graph_order=True)
        lo: dict[str, np.ndarray] = {}
        hi: dict[str, np.ndarray] = {}
        inputs = {i.name for i in session.get_inputs()}
        for feed in feeds:
            values = dict(zip(outputs, session.run(outputs, {k: v for k, v in feed.items() if k in inputs})))
            for t in tensors:
                mn, mx = values[f"{t}_ReduceMin"], values[f"{t}_ReduceMax"]
                lo[t] = np.minimum(lo[t], mn) if t in lo else mn
                hi[t] = np.maximum(hi[t], mx) if t in hi else mx
    finally:
        augmented.unlink(missing_ok=True)
    if not lo:
        raise CalibrationError("calibration", "no calibration prompts")
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, {t: (lo[t], hi[t]) for t in sorted(tensors)}), cache)


def _static(src: Path, dst: Path, cache: Path, exclude: list[str], candidates: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    _remove_model(dst)
    chosen = [n for n in candidates if n not in set(exclude)]
    if not chosen:
        raise RecipeError("quantization", "every weight-carrying layer is excluded; set precision: fp32 instead")
    with _quiet_ort_logging():
        quantize_static(
            str(src), str(dst), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(WEIGHT_OPS),
            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=chosen, nodes_to_exclude=exclude or None, use_external_data_format=_needs_external(src),
            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})


def _weight_only(src: Path, dst: Path, exclude: list[str], accuracy_level: int | None = None) -> None:
    """MatMulNBits bits=8; accuracy_level None computes in fp32 (weight-only), 4 in int8
    (benchmarks/text_encoder_int8.py compares them)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(src))
    config = DefaultWeightOnlyQuantConfig(block_size=WEIGHT_ONLY_BLOCK, is_symmetric=True, bits=8,
                                          accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, block_size=WEIGHT_ONLY_BLOCK, is_symmetric=True,
                                     nodes_to_exclude=exclude, algo_config=config)
    with _quiet_ort_logging():
        quantizer.process()
    _remove_model(dst)
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=_needs_external(src))


def _needs_external(src: Path) -> bool:
    return Path(str(src) + ".data").exists() or src.stat().st_size > 1.8 * 1024**3


def _remove_model(path: Path) -> None:
    for p in (path, Path(str(path) + ".data")):
        if p.exists():
            p.unlink()


def _check_ranges(cache: Path, model, component: str) -> None:
    """NaN/Inf in a calibrated range names the tensor and the layer that produced it."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    producers = {o: n for n in model.graph.node for o in n.output}
    for tensor, data in sorted(load_tensors_data(cache).data.items()):
        values = np.concatenate([np.ravel(np.asarray(getattr(data, k), dtype=np.float64))
                                 for k in ("lowest", "highest") if getattr(data, k, None) is not None])
        if not np.isfinite(values).all():
            node = producers.get(tensor)
            layer = _layer_name(node) if node is not None else "graph input"
            raise CalibrationError(f"calibration ({component})",
                                   f"NaN/Inf range for tensor {tensor!r} produced by {layer}")


# ---------------------------------------------------------------- per-layer sensitivity

def _measure_sqnr(layers: list[Layer], src: Path, dst: Path, feeds: dict) -> None:
    """Local error of each int8 layer, in context, on one calibration input:
    - activation SQNR: the float tensor entering the layer vs the same after Q/DQ;
    - output SQNR: the layer's output in the int8 graph vs the same op run in float (fp32
      weight, bias and the unquantized input), i.e. the error this layer adds by itself.
    The output SQNR ranks layers for fallback (lowest first). Graphs are loaded without their
    external weights: the probe sessions read them from disk, one fp32 layer at a time."""
    import onnx

    qmodel = onnx.load(str(dst), load_external_data=False)
    fmodel = onnx.load(str(src), load_external_data=False)
    float_nodes = {n.name: n for n in fmodel.graph.node}
    float_inits = {i.name: i for i in fmodel.graph.initializer}
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    by_node = {n.name: n for n in qmodel.graph.node}
    probes = {}  # layer node -> (float input, dequantized input, int8-graph output)
    for l in layers:
        node, fnode = by_node.get(l.node), float_nodes.get(l.node)
        if node is None or fnode is None or l.reason:
            continue
        act_dq = producers.get(node.input[0])
        q = producers.get(act_dq.input[0]) if act_dq is not None and act_dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        probes[l.node] = (q.input[0], act_dq.output[0], node.output[0])
    # a handful of layers per run keeps the captured activations small on real-size models
    items = sorted(probes.items())
    for start in range(0, len(items), PROBE_CHUNK):
        chunk = dict(items[start:start + PROBE_CHUNK])
        values = _run_with_outputs(qmodel, dst, sorted({t for p in chunk.values() for t in p}), feeds)
        for l in layers:
            if l.node not in chunk:
                continue
            x, x_dq, y = chunk[l.node]
            l.act_sqnr_db = _sqnr(values[x], values[x_dq])
            y_float = _run_single(fmodel, src.parent, float_nodes[l.node], float_inits, values[x])
            l.output_sqnr_db = _sqnr(y_float, values[y])


PROBE_CHUNK = 32


def _session(model: str | bytes, in_graph_order: bool = False):
    """A CPU session on a model file or serialized model, without graph optimizations, so every
    tensor named in the graph exists at run time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if in_graph_order:
        opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _run_with_outputs(model, path: Path, names: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """Run `model` (loaded from `path` without external data) with `names` as extra outputs; the
    probe file lies beside `path` so the external weights resolve."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in names if t not in existing)
    probe_path = path.with_name(path.stem + ".probe.onnx")
    try:
        onnx.save(probe, str(probe_path))
        del probe
        sess = _session(str(probe_path))
        inputs = {i.name for i in sess.get_inputs()}
        return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in inputs})))
    finally:
        probe_path.unlink(missing_ok=True)


def _run_single(fmodel, base_dir: Path, node, inits: dict, x: np.ndarray) -> np.ndarray:
    """The float op alone: its activation input fed, its weight/bias from the fp32 model."""
    from onnx import TensorProto, helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    weights = []
    for name in node.input[1:]:
        if name in inits:
            t = TensorProto()
            t.CopyFrom(inits[name])
            if uses_external_data(t):
                load_external_data_for_tensor(t, str(base_dir))
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
            weights.append(t)
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, list(x.shape))],
        [helper.make_empty_tensor_value_info(node.output[0])], initializer=weights)
    model = helper.make_model(graph, opset_imports=fmodel.opset_import, ir_version=fmodel.ir_version)
    return _session(model.SerializeToString()).run(None, {node.input[0]: x})[0]


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if not (np.isfinite(ref).all() and np.isfinite(test).all()):
        return -math.inf
    noise_p = float(np.mean((ref - test) ** 2))
    signal = float(np.mean(ref ** 2))
    if noise_p == 0:
        return 200.0
    return 10 * math.log10(max(signal, 1e-30) / noise_p)
