"""Core ML target: ML Program packages (.mlpackage) for iOS/macOS, quantized with
coremltools.optimize, and checked on Linux by evaluating the converted MIL program itself.

    convert.py   torch.export -> coremltools.convert -> .mlpackage (byte-identical on rebuild)
    quantize.py  w8 (int8 weights), w8a8 (+ int8 activations from our own calibration),
                 palettize6 / palettize4 (k-means lookup tables per grouped channel)
    evaluate.py  the ML Program evaluator (Linux): the MIL ops in torch, fp16 storage emulated
    predict.py   Core ML's own MLModel.predict (macOS only)
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ...errors import EnvironmentError_, RecipeError
from .. import AppRuntime, Artifact, check_schemes, toolkit_problem

DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
# The oldest OS whose Core ML runs each scheme: activation quantize/dequantize ops are iOS17;
# per-grouped-channel palettes (constexpr_lut_to_dense with per-group tables) are iOS18.
SCHEME_MINIMUM = {"w8": "iOS16", "w8a8": "iOS17", "palettize6": "iOS18", "palettize4": "iOS18"}
DEFAULT_DEPLOYMENT = "iOS17"
MULTIFUNCTION_MINIMUM = "iOS18"   # MLModelConfiguration.functionName: iOS 18 / macOS 15


@dataclass(frozen=True)
class CoreMLOptions:
    # null: iOS17, raised to what the recipe's schemes need (and said so)
    minimum_deployment_target: Optional[Literal["iOS16", "iOS17", "iOS18"]] = None
    compute_precision: Literal["fp16", "fp32"] = "fp16"
    # what the runtimes ask Core ML for (MLComputeUnits)
    compute_units: Literal["all", "cpu_and_ne", "cpu_and_gpu", "cpu_only"] = "all"
    # how compile checks the numbers: auto = Core ML's MLModel.predict on macOS, the ML Program
    # evaluator elsewhere; both = compare the two as well (macOS only)
    check: Literal["auto", "evaluator", "core-ml", "both"] = "auto"
    palettize_group_size: int = 16     # output channels sharing one lookup table

    def problems(self) -> list[tuple[str, str]]:
        if self.palettize_group_size < 1:
            return [("palettize_group_size", "must be >= 1")]
        return []


def resolved_deployment(recipe, options: CoreMLOptions) -> tuple[str, str]:
    """(deployment target, why): the recipe's, or iOS17 raised to what its schemes (and several
    sizes: a multifunction package) need."""
    from ...recipe import scheme_of

    needs = [(SCHEME_MINIMUM[scheme_of(n, s)], f"components.{n} scheme {scheme_of(n, s)}", scheme_of(n, s))
             for n, s in recipe.component_specs().items() if s.precision == "int8"]
    if len(recipe.sizes()) > 1:
        needs.append((MULTIFUNCTION_MINIMUM, "image.sizes (one multifunction package per component)",
                      "a multifunction package"))
    floor, why, what = max(needs, key=lambda x: DEPLOYMENT_TARGETS.index(x[0]), default=("iOS16", "", ""))
    if options.minimum_deployment_target:
        chosen = options.minimum_deployment_target
        if DEPLOYMENT_TARGETS.index(chosen) < DEPLOYMENT_TARGETS.index(floor):
            raise RecipeError("targets.coreml.minimum_deployment_target",
                              f"{chosen} cannot run {what} ({why}); it needs {floor} or later")
        return chosen, "recipe"
    if DEPLOYMENT_TARGETS.index(floor) > DEPLOYMENT_TARGETS.index(DEFAULT_DEPLOYMENT):
        return floor, f"raised from {DEFAULT_DEPLOYMENT}: {why} needs {floor}"
    return DEFAULT_DEPLOYMENT, "default"


def on_macos() -> bool:
    return platform.system() == "Darwin"


class CoreMLTarget:
    name = "coreml"
    Options = CoreMLOptions
    schemes = ("w8a8", "w8", "palettize6", "palettize4")
    packages = ("coremltools", "scikit-learn")
    reports_latency = False       # the evaluator's speed says nothing about a phone's
    # bench-coreml conversion 1.95-2.65x per component; bench-sizes: the multifunction save, +0.30 GB
    # for the SD decoder's three fp16 functions (1.0x each fp16 package, 0.5x its fp32 weights per size)
    memory_factors = (1.7, 2.0, 0.5)
    app = AppRuntime("swift", "CoreMLEngine")

    def __init__(self):
        self._deployment: tuple[str, str] | None = None

    def unavailable_reason(self) -> str | None:
        return toolkit_problem(("coremltools",), ("coremltools", "coremltools.optimize.coreml"))

    def validate(self, recipe, options: CoreMLOptions) -> None:
        check_schemes(self, recipe)
        self._deployment = resolved_deployment(recipe, options)
        if options.check in ("core-ml", "both") and not on_macos():
            raise EnvironmentError_("targets.coreml.check", f"{options.check!r} needs Core ML, which runs only on "
                                                            f"macOS; use auto or evaluator here")

    def deployment(self, options: CoreMLOptions) -> str:
        return (self._deployment or (options.minimum_deployment_target or DEFAULT_DEPLOYMENT, ""))[0]

    def float_precision(self, options: CoreMLOptions) -> str:
        return options.compute_precision

    def export(self, graph, out_dir: Path, options: CoreMLOptions) -> Artifact:
        from . import convert

        model = convert.convert(graph, self.deployment(options), options.compute_precision)
        name = f"{graph.name}{convert.SUFFIX}"
        files = convert.save(model, out_dir / name)
        return Artifact(graph.name, name, files, convert.weight_module_names(graph.module))

    def quantizer(self, component, scheme, src: Artifact, src_root: Path, out_dir: Path, options):
        from .quantize import CoreMLQuantizer

        return CoreMLQuantizer(component, scheme, src_root / src.main, out_dir / src.main, options,
                               src.layer_names)

    def runner(self, path: Path, options: CoreMLOptions | None = None, function: str | None = None):
        check = (options or CoreMLOptions()).check
        if check in ("core-ml", "both") or (check == "auto" and on_macos()):
            from .predict import predict_runner

            return predict_runner(path, compare_with_evaluator=check == "both", function=function)
        from .check import CheckedEvaluator

        return CheckedEvaluator(path, function=function)

    def checker(self, options: CoreMLOptions) -> str:
        if options.check == "both":
            return "Core ML MLModel.predict and the ML Program evaluator"
        if options.check == "core-ml" or (options.check == "auto" and on_macos()):
            return "Core ML MLModel.predict"
        return f"ML Program evaluator ({options.compute_precision} storage emulated, torch kernels)"

    def describe_io(self, path: Path, function: str | None = None) -> dict:
        from .convert import describe_io

        return describe_io(path, function)

    def share_weights(self, name: str, parts: list, out_dir: Path, options: CoreMLOptions) -> tuple[Artifact, dict]:
        from .multifunction import share_weights

        return share_weights(name, parts, out_dir)

    def for_device(self, artifacts: dict, precisions: dict, root: Path, work: Path, options, feeds,
                   progress) -> tuple[dict, dict]:
        return artifacts, {}     # the checked artifacts are what the device loads

    def manifest_block(self, options: CoreMLOptions, artifacts: dict, root: Path) -> dict:
        from .convert import float32_ops

        deployment, why = self._deployment or (self.deployment(options), "")
        return {"minimum_deployment_target": deployment, "deployment_target_reason": why,
                "compute_precision": options.compute_precision, "compute_units": options.compute_units,
                "checker": self.checker(options), "format": "mlprogram",
                "ops_kept_in_fp32": {name: float32_ops(root / a.main) for name, a in sorted(artifacts.items())}
                if options.compute_precision == "fp16" else {}}
