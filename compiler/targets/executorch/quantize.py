"""PT2E quantization with ExecuTorch's XNNPACK quantizer, on the rewritten ATen program.

- `w8a8` (denoiser, decoder): static, per-channel symmetric int8 weights, int8 activations with
  ranges observed on the shared calibration stream (`prepare_pt2e` -> calibrate -> `convert_pt2e`):
  each activation's min/max put on the grid every CPU agrees on (quantization.stable_range). The
  convolutions and linears are annotated, as the other targets quantize; a component listed in
  `targets.executorch.elementwise` gets every pattern of XNNPACK's quantizer (add, mul, cat too).
- `w8` (text encoder): int8 per-channel weights with activations quantized per call (XNNPACK's
  dynamic quantization). XNNPACK has no weight-only int8 kernels; this is its 8-bit-weights
  scheme (shared/PITFALLS.md), and like every scheme it must pass the component's gate.

Layers kept in float (recipe overrides, fallback) are left out of the quantizer's annotation by
module path, so they run as fp32 XNNPACK ops. Changing that set means preparing and calibrating
again: the calibration inputs are small (token ids, embeddings, noise), so they are kept.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from ...quantization import Layer, sqnr, stable_range
from ...recipe import CALIBRATED
from .. import Artifact
from .export import lower_and_write, quiet
from .run import program_runner

WEIGHT_OPS = ("conv", "linear")
_ATEN = {"conv2d": "conv", "conv1d": "conv", "linear": "linear"}
TOOL = ("torchao.quantization.pt2e prepare_pt2e/convert_pt2e with executorch XNNPACKQuantizer({annotated} "
        "get_symmetric_quantization_config(is_per_channel=True{dynamic})): int8 per-channel weights, {activations}")
ACTIVATIONS = {"w8a8": "int8 activations (MinMax ranges on a 6-bit grid)", "w8": "activations quantized per call"}


def _module_path(node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else None


def _fresh(module):
    """A new graph over the same weights: prepare_pt2e edits the module it is given, and each build
    starts from the float graph."""
    import copy

    import torch

    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(module.graph, {}))
    graph._codegen = copy.deepcopy(module.graph._codegen)
    fresh = torch.fx.GraphModule(module, graph)
    fresh.meta.update(module.meta)
    return fresh


def _param(arg, params: dict) -> str | None:
    target = getattr(arg, "target", None) if getattr(arg, "op", None) == "get_attr" else None
    return target if target in params else None


def _op(node) -> str | None:
    if node.op != "call_function":
        return None
    return _ATEN.get(getattr(node.target, "__name__", "").split(".")[0])


class ExecuTorchQuantizer:
    op_types = WEIGHT_OPS

    def __init__(self, component: str, scheme: str, module, example_inputs: tuple, input_names: list[str],
                 output_names: list[str], out_dir: Path, options):
        self.component, self.scheme, self.module, self.example = component, scheme, module, example_inputs
        self.input_names, self.output_names = input_names, output_names
        self.out_dir, self.options = out_dir, options
        self.elementwise = component in options.elementwise
        annotated = "set_global" if self.elementwise else "set_operator_type(conv, linear)"
        self.tool = TOOL.format(annotated=annotated, dynamic=", is_dynamic=True" if scheme == "w8" else "",
                                activations=ACTIVATIONS[scheme])
        self.needs_calibration = scheme in CALIBRATED
        self._feeds: list[dict[str, np.ndarray]] = []
        self._converted = None
        self._artifact: Artifact | None = None

    def layers(self) -> list[Layer]:
        params = dict(self.module.named_parameters())
        layers, seen = [], set()
        for node in self.module.graph.nodes:
            op, path = _op(node), _module_path(node)
            weight = _param(node.args[1], params) if op else None
            if weight is None or path is None or path in seen:
                continue                # a folded constant (the rewrites' upsampling kernels) is not a layer
            seen.add(path)
            w = params[weight]
            bias = _param(node.args[2], params) if len(node.args) > 2 else None
            n_params = w.numel() + (params[bias].numel() if bias else 0)
            out = node.meta["val"]
            k = math.prod(w.shape[1:])
            layers.append(Layer(path, path, op, int(n_params), int(2 * out.numel() * k)))
        return layers

    def _inputs(self, feeds: dict[str, np.ndarray]):
        import torch

        return [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]

    def calibrate(self, feeds: Iterator[dict]) -> None:
        self._feeds = list(feeds)

    def _quantizer(self, float_layers: list[str]):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            CONV_TARGETS, LINEAR_TARGETS, XNNPACKQuantizer, get_symmetric_quantization_config)

        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=self.scheme == "w8")
        quantizer = XNNPACKQuantizer()
        if self.elementwise:
            quantizer.set_global(config)
        else:   # the weight-carrying ops only: int8 residual adds and muls cost 2-9 dB (docs/benchmarks.md)
            for op in sorted(CONV_TARGETS | LINEAR_TARGETS, key=str):
                quantizer.set_operator_type(op, config)
        if float_layers:
            # set_module_name(path, None) is not supported by this quantizer (an assertion): a
            # filter leaves every op of those modules unannotated, so they stay float
            floats = set(float_layers)
            quantizer.set_filter_function(lambda node: _module_path(node) not in floats)
        return quantizer

    def build(self, float_layers: list[str]) -> Artifact:
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        example = self.example
        with torch.no_grad(), quiet():
            prepared = prepare_pt2e(_fresh(self.module), self._quantizer(float_layers))
            for feeds in self._feeds or [None]:
                prepared(*(self._inputs(feeds) if feeds else example))
            _stable_activation_ranges(prepared)
            self._converted = convert_pt2e(prepared)
            quantized = torch.export.export(self._converted, example)
        self._artifact = lower_and_write(quantized, self.component, self.input_names, self.output_names,
                                         self.out_dir, self.options)
        return self._artifact

    def runner(self):
        return program_runner(self.out_dir / self._artifact.main)

    def measure_sensitivity(self, layers: list[Layer], feeds: dict) -> None:
        """Each quantized layer's output in the converted program against the same op with its float
        weight on its unquantized input (the value before the activation's quantize op)."""
        if self.scheme != "w8a8" or self._converted is None:
            return
        _LocalError(self._converted, dict(self.module.named_parameters()),
                    {l.node: l for l in layers if l.precision != "fp32"}).run(*self._inputs(feeds))


def _stable_activation_ranges(prepared) -> None:
    """Each calibrated activation observer (per tensor; weights are per channel, computed from the
    weights alone) gives the qparams of its observed min/max widened onto the grid every CPU's
    kernels agree on (quantization.stable_range), with its own formula: MinMax ranges, as the
    other targets calibrate. HistogramObserver's own search picks a range by histogram bins,
    which another CPU's last bits move by a bin (measured: 2 of 866 ranges flipped on the grid)."""
    import torch
    from torchao.quantization.pt2e.observer import UniformQuantizationObserverBase

    for observer in prepared.modules():
        if not isinstance(observer, UniformQuantizationObserverBase) or observer.qscheme not in (
                torch.per_tensor_affine, torch.per_tensor_symmetric) or observer.is_dynamic:
            continue
        lo, hi = float(observer.min_val.reshape(-1)[0]), float(observer.max_val.reshape(-1)[0])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            continue   # never observed: its own default qparams
        lo, hi = stable_range(lo, hi)
        qparams = observer._calculate_qparams(torch.tensor([lo]), torch.tensor([hi]))
        observer.calculate_qparams = lambda qparams=qparams: qparams


def _float_input(node):
    """The value a layer would see unquantized: the input of its input's quantize/dequantize pair."""
    dq = node.args[0]
    q = dq.args[0] if getattr(dq, "op", None) == "call_function" and "dequantize" in str(dq.target) else None
    if getattr(q, "op", None) == "call_function" and "quantize" in str(q.target):
        return q.args[0]
    return dq


class _LocalError:
    def __init__(self, gm, float_params: dict, layers: dict[str, Layer]):
        self.gm, self.params = gm, float_params
        self.layers = {n: layers[_module_path(n)] for n in gm.graph.nodes if _op(n) and _module_path(n) in layers}

    def run(self, *args) -> None:
        import torch
        from torch.fx import Interpreter

        sources = {n: _float_input(n) for n in self.layers}
        pending = Counter(sources.values())
        kept: dict = {}
        outer = self

        class Capture(Interpreter):
            def run_node(self, n):
                result = super().run_node(n)
                if n in pending:
                    kept[n] = result
                layer = outer.layers.get(n)
                if layer is not None:
                    a, kw = self.fetch_args_kwargs_from_env(n)
                    x_float = kept[sources[n]]
                    ref = n.target(x_float, outer.params[f"{layer.node}.weight"], *a[2:], **kw)
                    layer.act_sqnr_db = sqnr(x_float, a[0])
                    layer.output_sqnr_db = sqnr(ref, result)
                    pending[sources[n]] -= 1
                    if not pending[sources[n]]:
                        kept.pop(sources[n])   # activations are large at real size: hold each one only as long as needed
                return result

        with torch.no_grad():
            Capture(self.gm).run(*args)
