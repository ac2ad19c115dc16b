"""Core ML quantization with coremltools.optimize.coreml, fed by the shared calibration stream.

- `w8`: int8 per-channel symmetric weights (`linear_quantize_weights`). Every planned layer's
  weight is named in `op_name_configs` with `weight_threshold=0`: coremltools' default threshold
  (2048 elements) would silently leave small weights in float. Nothing else (biases, norms) is
  touched, and the built program is checked: a planned weight that is still a plain const fails.
- `w8a8`: int8 activations into every quantized conv/linear, then int8 weights. coremltools'
  own `linear_quantize_activations` gathers its ranges with MLModel.predict (macOS only); here
  the ranges come from our ML Program evaluator run on the calibration stream, streamed one
  sample at a time (a running min/max per MIL variable), and go into the same graph passes
  coremltools runs after its statistics step (`insert_prefix_quantize_dequantize_pair`,
  `insert_suffix_quantize_dequantize_pair`, `dequantize_quantize_pair_elimination`), so the result
  is the program coremltools itself would write: quantize/dequantize ops Core ML (iOS17+) runs in
  int8. Private API of coremltools 9.0: pinned, and exercised by the tests.
- `palettize6` / `palettize4`: k-means lookup tables (6 or 4 bits per weight) per group of
  output channels (`palettize_weights`, iOS18), scikit-learn KMeans with a fixed seed.

Per-layer sensitivity is measured by evaluating the quantized program on one calibration input:
each layer's output against the same op computed with its float weight on its unquantized input.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import CalibrationError, ExportError
from ...quantization import Layer, stable_range
from ...recipe import CALIBRATED
from .. import Artifact
from . import convert

WEIGHT_OPS = ("conv", "linear", "matmul")
NBITS = {"palettize6": 6, "palettize4": 4}
TOOLS = {
    "w8": "coremltools.optimize.coreml.linear_quantize_weights(linear_symmetric, int8, per_channel)",
    "w8a8": "coremltools.optimize.coreml activation passes (insert_prefix/suffix_quantize_dequantize_pair, "
            "int8 linear_symmetric, ranges from the ML Program evaluator) + linear_quantize_weights(int8, per_channel)",
    "palettize6": "coremltools.optimize.coreml.palettize_weights(kmeans, 6 bits, per_grouped_channel)",
    "palettize4": "coremltools.optimize.coreml.palettize_weights(kmeans, 4 bits, per_grouped_channel)",
}


class CoreMLQuantizer:
    op_types = WEIGHT_OPS

    def __init__(self, component: str, scheme: str, src: Path, dst: Path, options, layer_names: dict[str, str]):
        self.component, self.scheme, self.src, self.dst = component, scheme, Path(src), Path(dst)
        self.options, self.layer_names = options, layer_names
        self.tool = TOOLS[scheme]
        self.needs_calibration = scheme in CALIBRATED
        self.stats: dict[str, dict[str, float]] = {}
        self._layers: list[Layer] = []
        self._weights: dict[str, str] = {}      # layer node -> weight const name
        self._channels: dict[str, int] = {}     # layer node -> output channels
        self._built = None                      # evaluator of the last built program

    def layers(self) -> list[Layer]:
        prog = convert.load_program(self.src)
        self._layers, self._weights, self._channels = [], {}, {}
        reduced_axis = {"conv": slice(1, None), "linear": slice(-1, None), "matmul": slice(-2, -1)}
        for op in prog.functions["main"].operations:
            weight = _weight_input(op)
            if weight is None:
                continue
            w = weight.op
            params = int(np.prod(weight.shape))
            bias = op.inputs.get("bias")
            if bias is not None and bias.op is not None and bias.op.op_type == "const":
                params += int(np.prod(bias.shape))
            out = op.outputs[0].shape
            k = int(np.prod(weight.shape[reduced_axis[op.op_type]]))   # multiply-adds per output element
            flops = 2 * int(np.prod(out)) * k if all(isinstance(d, int) for d in out) else 0
            name = convert.module_of(w.name, self.layer_names) or op.name
            self._layers.append(Layer(op.name, name, op.op_type, params, flops))
            self._weights[op.name] = w.name
            self._channels[op.name] = int(weight.shape[-1] if op.op_type == "matmul" else weight.shape[0])
        return self._layers

    def calibrate(self, feeds: Iterator[dict]) -> None:
        """Running min/max of every variable the activation passes may ask for, one sample at a time."""
        import torch

        from .check import CheckedEvaluator

        # released when calibration ends: at SD-Turbo size it holds the UNet's weights in float32
        # in float32 throughout: ranges every CPU agrees on (evaluate.ProgramEvaluator)
        evaluator = CheckedEvaluator(self.src, fp16_storage=False).evaluator
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}

        def update(name: str, mn: float, mx: float) -> None:
            if not (math.isfinite(mn) and math.isfinite(mx)):   # min()/max() would skip a NaN
                raise CalibrationError(f"calibration ({self.component})",
                                       f"NaN/Inf in MIL variable {name!r} on a calibration prompt")
            lo[name], hi[name] = min(lo.get(name, mn), mn), max(hi.get(name, mx), mx)

        def observe(op, outputs) -> None:
            for var, value in zip(op.outputs, outputs):
                if torch.is_tensor(value) and value.is_floating_point() and value.numel():
                    mn, mx = torch.aminmax(value)
                    update(var.name, float(mn), float(mx))

        for feed in feeds:
            for name, value in feed.items():
                if name in evaluator.input_names and np.asarray(value).dtype.kind == "f":
                    update(name, float(np.min(value)), float(np.max(value)))
            evaluator.run(feed, observe=observe)
        if not lo:
            raise CalibrationError(f"calibration ({self.component})", "no calibration prompts")
        # on the grid every CPU's kernels agree on (quantization.stable_range)
        self.stats = {v: dict(zip(("rmin", "rmax"), stable_range(lo[v], hi[v]))) for v in sorted(lo)}

    def build(self, float_layers: list[str]) -> Artifact:
        import coremltools.optimize.coreml as cto

        keep = set(float_layers)
        chosen = [l for l in self._layers if l.node not in keep]
        model = convert.load_model(self.src)
        with convert.quiet():
            if self.scheme == "w8a8":
                model = _quantize_activations(model, self.stats, [l.node for l in chosen if l.op_type != "matmul"])
            if self.scheme in ("w8", "w8a8"):
                config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                     weight_threshold=0)
                model = cto.linear_quantize_weights(model, cto.OptimizationConfig(
                    global_config=None, op_name_configs={self._weights[l.node]: config for l in chosen}))
            else:
                model = cto.palettize_weights(model, cto.OptimizationConfig(global_config=None, op_name_configs={
                    self._weights[l.node]: self._palette_config(l) for l in chosen}))
        files = convert.save(model, self.dst)
        prog = convert.load_program(self.dst)
        self._check_coverage(prog, chosen)
        from .check import CheckedEvaluator

        self._built = CheckedEvaluator(self.dst, prog)
        return Artifact(self.component, self.dst.name, files)

    def _palette_config(self, layer: Layer):
        """A group size that divides the layer's output channels (coremltools skips the layer
        otherwise): the recipe's, or the largest divisor of both."""
        import coremltools.optimize.coreml as cto

        channels = self._channels[layer.node]
        return cto.OpPalettizerConfig(mode="kmeans", nbits=NBITS[self.scheme], granularity="per_grouped_channel",
                                      group_size=math.gcd(channels, self.options.palettize_group_size),
                                      weight_threshold=0)

    def _check_coverage(self, prog, chosen: list[Layer]) -> None:
        """No silent float: every chosen layer's weight must now come from a constexpr op."""
        by_name = {op.name: op for op in prog.functions["main"].operations}
        left = []
        for l in chosen:
            op = by_name.get(l.node)
            weight = _weight_input(op, constexpr=True) if op is not None else None
            if weight is None or not weight.op.op_type.startswith("constexpr_"):
                left.append(l.name)
        if left:
            raise ExportError(f"component {self.component}", f"{self.scheme}: coremltools left {len(left)} planned "
                                                             f"layers in float (first: {left[0]})")

    def runner(self):
        return self._built

    def measure_sensitivity(self, layers: list[Layer], feeds: dict) -> None:
        from .sensitivity import measure

        measure(layers, convert.load_program(self.src), self._built.evaluator, feeds)


def _weight_input(op, constexpr: bool = False):
    """The constant weight var of a conv / linear / matmul op, or None."""
    if op is None or op.op_type not in WEIGHT_OPS:
        return None
    var = op.inputs.get("y" if op.op_type == "matmul" else "weight")
    if var is None or var.op is None:
        return None
    kind = var.op.op_type
    if kind == "const" or (constexpr and kind.startswith("constexpr_")):
        return var
    return None


def _quantize_activations(model, stats: dict, op_names: list[str]):
    """coremltools' own activation passes, with ranges from our evaluator instead of predict()."""
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.frontend.milproto import load as milproto
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption as Option
    from coremltools.models.utils import _apply_graph_pass
    from coremltools import _SPECIFICATION_VERSION_IOS_17

    config = cto.OptimizationConfig(global_config=None, op_name_configs={
        name: cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8") for name in op_names})
    passes = []
    for name in ("compression::insert_prefix_quantize_dequantize_pair",
                 "compression::insert_suffix_quantize_dequantize_pair"):
        p = PASS_REGISTRY[name]
        p.set_options([Option("config", config)])
        p.set_options([Option("activation_stats", stats)])
        passes.append(p)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
    version = max(model.get_spec().specificationVersion, _SPECIFICATION_VERSION_IOS_17)
    return _apply_graph_pass(model, passes, spec_version=version,
                             pymil_load_func=milproto.load, skip_model_load=True)
