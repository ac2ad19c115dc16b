"""OpenVINO int8 through NNCF, OpenVINO's own quantizer, fed by the shared calibration stream; the
policy around it (layer plan, check, sensitivity-ranked fallback) is compiler/quantization.py, and a
layer the fallback keeps float goes into NNCF's ignored scope.

- `w8a8`: `nncf.quantize` (preset MIXED: symmetric per-channel int8 weights, asymmetric
  activations where that is tighter; model type TRANSFORMER, which quantizes the inputs of
  convolutions and matrix products only), MinMax statistics on the calibration samples (asked
  for: NNCF's default for a per-tensor activation averages each sample's min and max, which
  clipped the shapes student's held-out prompts, worst image 28.4 dB against 39.3). As on
  every target only weight-carrying ops are candidates: the activation x activation MatMuls of
  attention are in the ignored scope, where the fallback's layers join them. Bias correction and
  SmoothQuant are off: both move weights by statistics the CPU computed, and another CPU's last
  bits would ship other weights. Weights take 7 bits in every layer (NNCF's overflow fix) unless
  `targets.openvino.reduce_range` is false: OpenVINO's u8 x s8 kernels on x86 CPUs without VNNI
  add pairs of products in saturating int16, and the 8th bit cost an SD-size decoder 7.6 dB there.
- `w8`: `nncf.compress_weights(INT8_SYM)`: int8 per-channel weights of every Conv and MatMul
  decompressed in the kernel, activations float, no calibration.

Deterministic bytes on any CPU: each activation range NNCF measured is widened onto the grid of
quantization.stable_range (as every target's are) before saving, keeping its zero point an integer.
Per-layer sensitivity: each quantized layer's output in the int8 model against the same op with its
float weight, computed by OpenVINO on the layer's unquantized input in that model.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import CalibrationError, ExportError, first_line
from ...quantization import Layer, sqnr, stable_range
from ...recipe import CALIBRATED
from .. import Artifact
from .export import WEIGHT_OPS, constant_source, read_ir, save, weight_ops
from .run import CHECK_CONFIG, runner_of

TOOLS = {
    "w8a8": "nncf.quantize(preset=MIXED, model_type=TRANSFORMER, int8 per-channel symmetric weights{overflow}, "
            "MinMax activations, bias correction and SmoothQuant off)",
    "w8": "nncf.compress_weights(mode=INT8_SYM, per-channel)",
}


class OpenVinoQuantizer:
    op_types = WEIGHT_OPS

    def __init__(self, component: str, scheme: str, src: Path, dst: Path, layer_names: dict[str, str],
                 reduce_range: bool = True):
        self.component, self.scheme, self.src, self.dst = component, scheme, Path(src), Path(dst)
        self.layer_names, self.reduce_range = layer_names, reduce_range
        self.tool = TOOLS[scheme].format(overflow=" in 7 bits (overflow_fix=ENABLE)" if reduce_range else "")
        self.needs_calibration = scheme in CALIBRATED
        self.model = read_ir(self.src)
        self.samples: list[dict] = []
        weighted = {op.get_friendly_name() for op, _ in weight_ops(self.model)}
        self._not_candidates = [op.get_friendly_name() for op in self.model.get_ordered_ops()
                                if op.get_type_name() in WEIGHT_OPS and op.get_friendly_name() not in weighted]
        self._built = None
        self._layers: list[Layer] = []

    def layers(self) -> list[Layer]:
        self._layers = []
        for op, const in weight_ops(self.model):
            node = op.get_friendly_name()
            weight = const.get_output_shape(0)
            params = int(np.prod(list(weight)))
            out = [d for d in op.get_output_shape(0)]
            # MACs x 2: each output element sums the weight's input extent (Conv: C_in/g x kH x kW;
            # MatMul: K, the weight's reduced axis)
            k = params // int(out[1]) if op.get_type_name() != "MatMul" else _reduced(op, weight)
            self._layers.append(Layer(node, self.layer_names.get(node, node), op.get_type_name(), params,
                                      2 * int(np.prod(out)) * k))
        return self._layers

    def calibrate(self, feeds: Iterator[dict]) -> None:
        self.samples = []
        for feed in feeds:
            if not all(np.isfinite(v).all() for v in feed.values() if v.dtype.kind == "f"):
                raise CalibrationError(f"calibration ({self.component})", "a calibration input is not finite")
            self.samples.append({k: np.array(v) for k, v in feed.items()})

    def build(self, float_layers: list[str]) -> Artifact:
        import nncf
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        nncf.set_log_level(logging.ERROR)
        scope = nncf.IgnoredScope(names=list(float_layers) + self._not_candidates, validate=True)
        try:
            if self.scheme == "w8":
                model = nncf.compress_weights(self.model.clone(), mode=nncf.CompressWeightsMode.INT8_SYM,
                                              ignored_scope=scope)
            else:
                model = nncf.quantize(self.model.clone(), nncf.Dataset(self.samples), subset_size=len(self.samples),
                                      preset=nncf.QuantizationPreset.MIXED, model_type=nncf.ModelType.TRANSFORMER,
                                      ignored_scope=scope, advanced_parameters=nncf.AdvancedQuantizationParameters(
                                          activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
                                          overflow_fix=nncf.OverflowFix.ENABLE if self.reduce_range
                                          else nncf.OverflowFix.FIRST_LAYER,
                                          disable_bias_correction=True,
                                          smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(convolution=-1,
                                                                                                 matmul=-1)))
                stable_activation_ranges(model, self.component)
        except (ExportError, CalibrationError):
            raise
        except Exception as exc:
            raise ExportError(self.component, f"NNCF could not quantize it: {first_line(exc)}") from exc
        _check_planned(model, self._layers, float_layers, self.component)
        self._built = model
        return save(model, self.dst.parent, self.dst.stem, self.layer_names)

    def runner(self):
        import openvino as ov

        return runner_of(ov.Core().compile_model(self._built, "CPU", CHECK_CONFIG))

    def measure_sensitivity(self, layers: list[Layer], feeds: dict) -> None:
        if self.scheme == "w8a8" and self._built is not None:
            _local_error(self._built, self.model, {l.node: l for l in layers if l.precision != "fp32"}, feeds)


def _reduced(op, weight) -> int:
    """The reduced (K) extent of a MatMul's constant second operand."""
    dims = list(weight)
    transposed = op.get_attributes().get("transpose_b", False)
    return int(dims[-1] if transposed else dims[-2]) if len(dims) >= 2 else int(dims[0])


def stable_activation_ranges(model, component: str) -> None:
    """Each activation FakeQuantize's [low, high] widened onto quantization.stable_range's grid. A
    range from 0 stays from 0; a signed symmetric one (low = -high x 128/127) stays so; any other is
    widened, then by up to one level more so that zero falls on a level (as NNCF's own ranges do).
    Every value is a function of grid points alone: the same on any CPU."""
    import openvino as ov

    for fq in model.get_ordered_ops():
        if fq.get_type_name() != "FakeQuantize" or constant_source(fq.input_value(0).get_node()) is not None:
            continue
        bounds = [fq.input_value(i).get_node() for i in range(1, 5)]
        if any(b.get_type_name() != "Constant" for b in bounds):
            raise ExportError(component, f"{fq.get_friendly_name()}: an activation range that is not constant "
                                         f"(NNCF changed how it writes them)")
        values = [b.get_data().astype(np.float64) for b in bounds]
        if not (np.array_equal(values[0], values[2]) and np.array_equal(values[1], values[3])):
            raise ExportError(component, f"{fq.get_friendly_name()}: an activation range whose output differs from "
                                         f"its input (NNCF changed how it writes them)")
        lo, hi = np.broadcast_arrays(values[0], values[1])
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise CalibrationError(f"calibration ({component})", f"{fq.get_friendly_name()}: range is not finite")
        levels = fq.get_attributes()["levels"]   # a range per channel where NNCF chose one: each on the grid
        pairs = [_on_grid(float(a), float(b), levels) for a, b in zip(lo.reshape(-1), hi.reshape(-1))]
        grid = [np.array([p[k] for p in pairs], dtype=np.float32).reshape(lo.shape) for k in (0, 1)]
        for i, value in ((1, grid[0]), (2, grid[1]), (3, grid[0]), (4, grid[1])):
            const = ov.opset13.constant(value)
            const.set_friendly_name(bounds[i - 1].get_friendly_name())
            fq.input(i).replace_source_output(const.output(0))


def _on_grid(lo: float, hi: float, levels: int) -> tuple[float, float]:
    half = levels // 2
    if lo == 0:
        return 0.0, stable_range(0.0, hi)[1]
    if lo < 0 < hi and abs(-lo / hi - half / (half - 1)) < 1e-5:
        top = stable_range(0.0, hi)[1]
        return float(np.float32(-top * half / (half - 1))), top
    lo, hi = stable_range(min(lo, 0.0), max(hi, 0.0))
    # one level to spare, so that zero on a level below lo still reaches hi: never clipped
    scale = (hi - lo) / (levels - 2)
    zero = math.ceil(-lo / scale)
    return float(np.float32(-zero * scale)), float(np.float32((levels - 1 - zero) * scale))


def _check_planned(model, layers: list[Layer], float_layers: list[str], component: str) -> None:
    """Never silently float: every planned layer's weight must be int8 in the built model."""
    int8 = {op.get_friendly_name() for op, const in weight_ops(model) if const.get_element_type().get_type_name() == "i8"}
    left = [l.name for l in layers if l.node not in float_layers and l.node not in int8]
    if left:
        raise ExportError(component, f"NNCF left {len(left)} planned layers in float (first: {left[0]})")


def _local_error(quantized, float_model, layers: dict[str, Layer], feeds: dict) -> None:
    """act_sqnr_db: each layer's input after its FakeQuantize vs before; output_sqnr_db: the layer's
    output vs the same op with its float weight on the unquantized input, in the int8 model."""
    import openvino as ov

    float_ops = {op.get_friendly_name(): op for op, _ in weight_ops(float_model)}
    probes, wanted = {}, {}
    for op in quantized.get_ordered_ops():
        layer = layers.get(op.get_friendly_name())
        if layer is None or layer.node not in float_ops:
            continue
        found = _activation_quantizer(op)
        if found is None:
            continue
        fq, moves = found
        wanted[layer.node] = ([_probe(probes, p) for p in (fq.input_value(0), fq.output(0), op.output(0))], moves)
    if not probes:
        return
    model = quantized.clone()
    first = len(model.outputs)
    model.add_outputs(_in(model, list(probes.values())))
    compiled = ov.Core().compile_model(model, "CPU", CHECK_CONFIG)
    results = compiled.create_infer_request().infer({i.get_any_name(): feeds[i.get_any_name()] for i in compiled.inputs})
    values = [np.array(results[o]) for o in compiled.outputs[first:]]
    for node, (at, moves) in wanted.items():
        x, xq, yq = (values[i] for i in at)
        layers[node].act_sqnr_db = sqnr(x, xq)
        weight = _direct_weight(float_ops[node])
        if weight is not None:   # a weight behind a Reshape/Transpose (not seen in our UNets, decoders and encoders) stays unranked
            for move in moves:
                x = move(x)
            layers[node].output_sqnr_db = sqnr(_float_op(float_ops[node], weight, x), yq)


def _activation_quantizer(op):
    """The FakeQuantize on a layer's input, and the data moves between it and the layer (Reshape,
    Squeeze, Unsqueeze to the static shapes they produce, Transpose by a constant order) as numpy
    functions in the order they apply; None when the input is not quantized so."""
    moves = []
    node = op.input_value(0).get_node()
    while node.get_type_name() in ("Reshape", "Squeeze", "Unsqueeze", "Transpose"):
        if node.get_type_name() == "Transpose":
            order = node.input_value(1).get_node()
            if order.get_type_name() != "Constant":
                return None
            moves.append(lambda x, axes=tuple(int(a) for a in order.get_data()): np.transpose(x, axes))
        else:
            moves.append(lambda x, shape=tuple(node.get_output_shape(0)): x.reshape(shape))
        node = node.input_value(0).get_node()
    return (node, moves[::-1]) if node.get_type_name() == "FakeQuantize" else None


def _probe(probes: dict, port) -> int:
    """Index of `port` among the outputs to add, each port once (two layers may read one FakeQuantize)."""
    key = (port.get_node().get_friendly_name(), port.get_index())
    if key not in probes:
        probes[key] = port
    return list(probes).index(key)


def _in(model, ports):
    """The same ports in a clone of their model (found by op name and output index)."""
    ops = {op.get_friendly_name(): op for op in model.get_ops()}
    return [ops[p.get_node().get_friendly_name()].output(p.get_index()) for p in ports]


def _direct_weight(op) -> np.ndarray | None:
    """The float weight an op reads as it reads it: a Constant, or one converted from fp16."""
    node = op.input_value(1).get_node()
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_data().astype(np.float32) if node.get_type_name() == "Constant" else None


def _float_op(op, weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`op` alone, with its float weight, on `x` (OpenVINO CPU, fp32)."""
    import openvino as ov
    from openvino import opset13 as ops

    data = ops.parameter(list(x.shape), np.float32)
    weight = ops.constant(weight)
    a = op.get_attributes()
    if op.get_type_name() == "MatMul":
        out = ops.matmul(data, weight, a["transpose_a"], a["transpose_b"])
    else:
        make = ops.convolution if op.get_type_name() == "Convolution" else ops.group_convolution
        out = make(data, weight, a["strides"], a["pads_begin"], a["pads_end"], a["dilations"], a["auto_pad"])
    compiled = ov.Core().compile_model(ov.Model([out], [data]), "CPU", CHECK_CONFIG)
    return np.array(compiled({0: x})[0])
