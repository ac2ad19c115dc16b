"""ONNX Runtime's own quantizers (onnxruntime.quantization) for the ONNX target; nothing here
rounds a weight by hand. The policy around them (calibration stream, layer plan, fallback,
coverage) is compiler/quantization.py.

- `w8a8` (denoiser default): `quantize_static`, QDQ format, per-channel symmetric int8
  weights in 7 bits (`reduce_range`), uint8 activations (MinMax ranges). The 7 bits are ORT's own
  advice for x86 without VNNI: there its u8 x s8 kernels sum pairs of products in saturating
  int16 (VPMADDUBSW), and with full-range weights the SD decoder's image fell from 36.1 dB (the
  same QDQ file computed unfused) to 23.2 dB; with 7-bit weights 35.7 dB, at 1.1x the time.
  The file is the same for every machine (bundles stay byte-identical), and ARM's int8 dot
  products lose only the one bit. Only ops that carry a weight (Conv, and
  MatMul/Gemm with a constant operand) are candidates: quantizing the attention
  activation x activation MatMuls made the UNet slower on AVX2 CPUs (shared/PITFALLS.md).
  Because every candidate gets Q/DQ on its output as well as its inputs, ONNX Runtime
  fuses them into QLinearConv / QLinearMatMul kernels at session load. With `elementwise`
  (target option) the Add / Mul / Sigmoid nodes are candidates too (QLinearAdd, QLinearMul,
  QLinearSigmoid at load); they are not layers of the fallback plan.
- `w8` (text encoder default): weight-only int8 (`MatMulNBits`, bits=8, symmetric,
  blocks along K); activations stay float, so no calibration is needed.

Calibration ranges come from our own MinMax graph (`_calibrate`), streamed one sample at a time
and written as ORT's calibration cache, which `quantize_static` then reads. Per-layer
sensitivity is measured in the int8 graph (`_measure_sqnr`), as qdq_loss_debug does.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import CalibrationError, RecipeError
from ...quantization import Layer, sqnr, stable_range
from ...recipe import CALIBRATED
from .. import Artifact, package_files
from .run import session_runner

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
ELEMENTWISE_OPS = ("Add", "Mul", "Sigmoid")   # the `elementwise` option: ONNX Runtime has uint8 kernels for each
WEIGHT_ONLY_BLOCK = 128    # MatMulNBits: one scale per 128 weights along K (ORT pads a K that is not a multiple)
TOOLS = {
    "w8a8": "onnxruntime.quantization.quantize_static(QDQ, per_channel=True, reduce_range={reduce_range}, weight QInt8 "
            "symmetric, activation QUInt8, MinMax{elementwise})",
    "w8": "onnxruntime.quantization.MatMulNBitsQuantizer(bits=8, symmetric)",
    # QNN's HTP: full-range weights, 16-bit activations (quantize_static raises the graph to opset 21)
    "w8a16": "onnxruntime.quantization.quantize_static(QDQ, per_channel=True, weight QInt8 symmetric, "
             "activation QUInt16, MinMax)",
}


class OnnxQuantizer:
    """One component: `src` (fp32 .onnx in the work dir) -> `dst` (in the bundle)."""
    op_types = WEIGHT_OPS     # the layers a recipe plans and fallback ranks

    def __init__(self, component: str, scheme: str, src: Path, dst: Path, reduce_range: bool = True,
                 elementwise: bool = False):
        """`reduce_range`: 7-bit weights for ONNX Runtime's x86 kernels (above); an NPU takes all 8.
        `elementwise`: W8A8 quantizes Add / Mul / Sigmoid too (above)."""
        import onnx

        self.component, self.scheme, self.src, self.dst = component, scheme, Path(src), Path(dst)
        self.reduce_range = reduce_range and scheme == "w8a8"
        self.quantized_ops = WEIGHT_OPS + (ELEMENTWISE_OPS if elementwise and scheme == "w8a8" else ())
        self.tool = TOOLS[scheme].format(reduce_range=self.reduce_range,
                                         elementwise=", Add/Mul/Sigmoid too" if len(self.quantized_ops) > 3 else "")
        self.needs_calibration = scheme in CALIBRATED
        self.graph = onnx.load(str(src), load_external_data=False)
        self.cache = self.src.with_name(f"{component}.calibration.json")
        self.cache.unlink(missing_ok=True)  # ORT reuses a cache file it finds: this one holds this call's prompts
        self._layers: list[Layer] = []

    def layers(self) -> list[Layer]:
        self._layers = weight_layers(self.graph)
        if self.scheme == "w8":
            for l in self._layers:
                if l.op_type != "MatMul":
                    l.reason = "w8 (weight-only) covers MatMul"
        return self._layers

    def calibrate(self, feeds: Iterator[dict]) -> None:
        _calibrate(self.graph, self.src, self.cache, feeds, self.quantized_ops)
        _check_ranges(self.cache, self.graph, self.component)

    def build(self, float_layers: list[str]) -> Artifact:
        if self.scheme == "w8":
            _weight_only(self.src, self.dst, float_layers)
        else:
            elementwise = [n.name for n in self.graph.graph.node if n.op_type in self.quantized_ops and n.op_type not in WEIGHT_OPS]
            _static(self.src, self.dst, self.cache, float_layers, [l.node for l in self._layers],
                    sixteen_bit=self.scheme == "w8a16", reduce_range=self.reduce_range, also=elementwise,
                    op_types=self.quantized_ops)
        return Artifact(self.component, self.dst.name, package_files(self.dst.parent, self.dst.name))

    def runner(self):
        return session_runner(self.dst)

    def measure_sensitivity(self, layers: list[Layer], feeds: dict) -> None:
        if self.needs_calibration:
            _measure_sqnr(layers, self.src, self.dst, feeds)


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


@contextlib.contextmanager
def _quiet_ort_logging():
    """ORT's quantizers log advice and per-node INFO lines on their own handlers; our
    progress lines say what happens."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _calibrate(graph, src: Path, cache: Path, feeds: Iterator[dict], op_types: tuple[str, ...] = WEIGHT_OPS) -> None:
    """MinMax ranges of every float input and output of the `op_types` nodes, streamed one
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
    tensors = {t for n in model.graph.node if n.op_type in op_types for t in (*n.input, *n.output)
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
    ranges = {}
    for t in sorted(tensors):   # on the grid every CPU's kernels agree on (quantization.stable_range)
        stable = stable_range(float(lo[t].reshape(-1)[0]), float(hi[t].reshape(-1)[0]))
        ranges[t] = tuple(np.array([v], dtype=np.float32) for v in stable)
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)


def _static(src: Path, dst: Path, cache: Path, exclude: list[str], candidates: list[str], sixteen_bit: bool = False,
            reduce_range: bool = True, also: list[str] = (), op_types: tuple[str, ...] = WEIGHT_OPS) -> None:
    """`candidates`: the weight-carrying layers, less `exclude`; `also`: further nodes to quantize."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    _remove_model(dst)
    chosen = [n for n in candidates if n not in set(exclude)]
    if not chosen:
        raise RecipeError("quantization", "every weight-carrying layer is excluded; set precision: fp32 instead")
    chosen += also
    with _quiet_ort_logging():
        quantize_static(
            str(src), str(dst), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt16 if sixteen_bit else QuantType.QUInt8,
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
            l.act_sqnr_db = sqnr(values[x], values[x_dq])
            y_float = _run_single(fmodel, src.parent, float_nodes[l.node], float_inits, values[x])
            l.output_sqnr_db = sqnr(y_float, values[y])


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
