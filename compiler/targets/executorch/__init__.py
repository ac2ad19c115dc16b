"""ExecuTorch target: `.pte` programs for Android and iOS apps, XNNPACK-delegated, fp32 and int8,
checked by loading and running every program with ExecuTorch's own runtime on this machine.

    rewrites.py    ATen rewrites so XNNPACK takes the whole graph (norms, attention, upsampling)
    export.py      torch.export -> rewrites -> to_edge_transform_and_lower(XNNPACK) -> <name>.pte
    delegation.py  what XNNPACK took: op counts, segments, FLOP share; the recipe's minimum enforced
    quantize.py    PT2E with the XNNPACK quantizer (w8a8 static; w8 = int8 weights, dynamic activations)
    run.py         ExecuTorch's Python runtime (verify, generate)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import RecipeError

from .. import AppRuntime, Artifact, check_schemes, component_problems, toolkit_problem

PACKAGES = ("executorch", "torchao")


@dataclass(frozen=True)
class ExecuTorchOptions:
    # the least share of a component's FLOPs XNNPACK must take; below it the compile fails (exit 5)
    # naming the operators left on ExecuTorch's portable (unoptimized) kernels
    min_delegated_flop_share: float = 0.98
    # rewrite norms, attention and nearest upsampling into ops XNNPACK takes (rewrites.py); off
    # shows what XNNPACK takes of the graph as exported
    rewrites: bool = True
    # Components whose W8A8 also quantizes the ops between the convolutions (every pattern of
    # XNNPACK's quantizer: add, mul, cat); the others quantize the convolutions and linears only, as
    # the ONNX target's `elementwise` does. On the trained shapes student the default took the worst
    # held-out image from 30.4 to 39.3 dB, and its int8 denoiser was no slower (docs/benchmarks.md).
    elementwise: tuple[str, ...] = ()

    def problems(self) -> list[tuple[str, str]]:
        out = component_problems("elementwise", self.elementwise)
        if not 0.0 <= self.min_delegated_flop_share <= 1.0:
            out.append(("min_delegated_flop_share", "must be between 0 and 1"))
        return out


class ExecuTorchTarget:
    name = "executorch"
    Options = ExecuTorchOptions
    schemes = ("w8a8", "w8")
    packages = PACKAGES
    reports_latency = True        # XNNPACK's CPU kernels are the ones phones run
    # bench-executorch: text encoder lowering 4.36x its weights; bench-sizes: joining the sizes'
    # programs holds one copy of the weights, +3.80 GB for the SD UNet's three (1.1x its weights,
    # whatever the count: 0.55 per size covers two)
    memory_factors = (3.4, 3.4, 0.55)
    app = AppRuntime("android", "ExecuTorchEngine", ("org.pytorch:executorch-android:1.5.1",))

    def __init__(self):
        self._int8: set[str] = set()
        # component -> (the rewritten ATen program as a module, its example inputs, input names, output
        # names), kept from export for PT2E quantization; the module shares the torch module's weights
        # (no copy). Taken before lowering, which edits the program's constants.
        self._modules: dict = {}

    def unavailable_reason(self) -> str | None:
        return toolkit_problem(PACKAGES, ("executorch.exir", "executorch.runtime",
                                          "executorch.backends.xnnpack.partition.xnnpack_partitioner"))

    def validate(self, recipe, options: ExecuTorchOptions) -> None:
        check_schemes(self, recipe)
        self._int8 = {n for n, s in recipe.component_specs().items() if s.precision == "int8"}
        if recipe.img2img and "denoiser" in self._int8 and "denoiser" in options.elementwise:
            # measured on a tiny SD student at strength 0.25: cosine 0.967 (gate 0.99) with the mul and
            # add patterns annotated, 0.9997 with the convolutions and linears only
            raise RecipeError("targets.executorch.elementwise", "the denoiser's elementwise int8 with img2img is not "
                                                                "available on executorch: XNNPACK's quantizer puts the "
                                                                "step row's coefficients (an input here) on one int8 "
                                                                "scale; leave the denoiser out of this list")

    def float_precision(self, options: ExecuTorchOptions) -> str:
        return "fp32"

    def export(self, graph, out_dir: Path, options: ExecuTorchOptions) -> Artifact:
        from .export import exported_program, lower_and_write

        program = exported_program(graph, options)
        if graph.name in self._int8:
            self._modules[graph.name] = (program.module(), program.example_inputs[0], graph.input_names,
                                         graph.output_names)
        return lower_and_write(program, graph.name, graph.input_names, graph.output_names, out_dir, options)

    def quantizer(self, component, scheme, src: Artifact, src_root: Path, out_dir: Path, options):
        from .quantize import ExecuTorchQuantizer

        return ExecuTorchQuantizer(component, scheme, *self._modules.pop(component), out_dir, options)

    def runner(self, path: Path, options=None, function: str | None = None):
        from .run import program_runner

        return program_runner(path, function)

    def checker(self, options) -> str:
        return "ExecuTorch runtime (XNNPACK delegate, portable kernels)"

    def describe_io(self, path: Path, function: str | None = None) -> dict:
        from .run import describe_io

        return describe_io(path, function)

    def share_weights(self, name: str, parts: list, out_dir: Path, options: ExecuTorchOptions) -> tuple[Artifact, dict]:
        from .sizes import share_weights

        return share_weights(name, parts, out_dir, options)

    def for_device(self, artifacts: dict, precisions: dict, root: Path, work: Path, options, feeds,
                   progress) -> tuple[dict, dict]:
        return artifacts, {}     # the checked artifacts are what the device loads

    def manifest_block(self, options: ExecuTorchOptions, artifacts: dict, root: Path) -> dict:
        return {"backend": "xnnpack", "checker": self.checker(options), "rewrites": options.rewrites,
                "elementwise": list(options.elementwise),
                "min_delegated_flop_share": options.min_delegated_flop_share,
                "delegation": {name: a.facts["delegation"] for name, a in sorted(artifacts.items())}}
