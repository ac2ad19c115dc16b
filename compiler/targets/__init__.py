"""Export targets: a small Protocol and an explicit registry.

A target turns one wrapped component (a torch module with fixed example inputs, the family's
step baked in) into a file or directory a device runtime loads, quantizes it with its own
toolkit, and says how this machine computes its outputs for parity. Each target is a package
(`compiler/targets/<name>/`) whose `__init__` imports nothing heavy, so `compile --help` stays
instant and a target whose toolchain is missing says why instead of crashing. Adding a target is
one package plus one line in TARGETS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from ..errors import RecipeError

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class Artifact:
    """What a target wrote for one component, relative to the bundle root."""
    component: str
    main: str            # what a runtime loads: a file (.onnx) or a directory (.mlpackage)
    files: list[str]     # every file that belongs to it, sorted
    # weight name in the target's graph -> torch module path, where the format loses the module
    # path (Core ML); layer names in manifests and recipe overrides are then the same on every target
    layer_names: dict[str, str] = field(default_factory=dict)
    # what the target measured while writing it (ExecuTorch: its delegation report), for manifest_block
    facts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AppRuntime:
    """Which runtime an app runs this target's bundles with (`package`, runtimes/README.md)."""
    platform: str          # "swift" (Swift package) or "android" (Android library module)
    engine: str            # the runtime's Engine for this target
    dependencies: tuple[str, ...] = ()   # the frameworks an Android module links (Maven coordinates)


class ComponentQuantizer(Protocol):
    """One component's quantization in a target's own toolkit. The generic driver
    (compiler/quantization.py) plans layers from the recipe, feeds calibration, checks the result
    and decides the fallback; the target only knows how to do each step in its format."""
    tool: str                      # the toolkit call, for the manifest
    op_types: tuple[str, ...]      # weight-carrying op types, as the recipe's op_types names them
    needs_calibration: bool

    def layers(self) -> list:                                  # list[quantization.Layer]
        ...

    def calibrate(self, feeds: Iterator[dict[str, np.ndarray]]) -> None: ...

    def build(self, float_layers: list[str]) -> Artifact:
        """Write the quantized component, keeping the layers named (Layer.node) in float."""

    def runner(self) -> Runner:
        """Runs the artifact last built."""

    def measure_sensitivity(self, layers: list, feeds: dict[str, np.ndarray]) -> None:
        """Fill each quantized layer's act_sqnr_db / output_sqnr_db, measured in context."""


class Target(Protocol):
    name: str
    Options: type                 # frozen dataclass of the recipe's `targets.<name>` block
    schemes: tuple[str, ...]      # quantization schemes this target can ship
    packages: tuple[str, ...]     # its toolchain, recorded in the manifest's tools
    reports_latency: bool         # whether timing its checker on this machine means anything
    app: AppRuntime               # how an app runs its bundles
    # peak memory added by (export, quantize), as multiples of the largest component's fp32 weights
    # it works on, on top of that component, and by sharing a component's weights across sizes,
    # per size (compiler/memory.py; measured at SD-Turbo size: bench-export, bench-int8, bench-sizes)
    memory_factors: tuple[float, float, float]

    def unavailable_reason(self) -> str | None: ...

    def validate(self, recipe, options) -> None:
        """Refuse (RecipeError, exit 2) what this target cannot do, before any work."""

    def float_precision(self, options) -> str:
        """What an unquantized component computes in: fp32, or fp16 (Core ML's default)."""

    def export(self, graph, out_dir: Path, options) -> Artifact: ...

    def quantizer(self, component: str, scheme: str, src: Artifact, src_root: Path, out_dir: Path,
                  options) -> ComponentQuantizer: ...

    def runner(self, path: Path, options, function: str | None = None) -> Runner:
        """How this machine computes the artifact's outputs: run it, or evaluate it. `function`: one
        program of an artifact that holds several (a multi-size bundle's Core ML function); None:
        its only or default one."""

    def checker(self, options) -> str:
        """Which check verified the numbers (the manifest and report say it)."""

    def describe_io(self, path: Path, function: str | None = None) -> dict: ...

    def for_device(self, artifacts: dict[str, Artifact], precisions: dict[str, str], root: Path, work: Path,
                   options, feeds: Callable[[str], dict], progress) -> tuple[dict[str, Artifact], dict]:
        """The programs a device loads, made from the checked artifacts (under root; `work` holds
        what the bundle does not ship; `feeds(component)`: its inputs on the first held-out
        prompt), and what checking them measured (for the report). QNN
        compiles each graph into a context binary per SoC; the others ship the artifacts as they are."""

    def share_weights(self, name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path,
                      options) -> tuple[Artifact, dict[str, dict]]:
        """One component's checked programs of several image sizes ((size key, root, artifact)
        each) as one artifact in out_dir whose weights are stored once, and per size key the
        program a runtime loads for that size: {"file"} (ONNX: a graph per size), with "function"
        where one file holds them all (Core ML). A target that cannot refuses `image.sizes` in
        validate."""

    def manifest_block(self, options, artifacts: dict[str, Artifact], root: Path) -> dict:
        """This target's facts for manifest.json `targets.<name>` (artifacts lie under root)."""


def component_problems(field: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(field, why) for each name in a target option's list of components that is not one."""
    from dataclasses import fields

    from ..recipe import Components   # here, not at the top: recipe.py reads the targets' options

    known = [f.name for f in fields(Components)]
    return [(field, f"{c!r} is not a component (one of {', '.join(known)})") for c in names if c not in known]


def size_program(key: str) -> str:
    """The name of a size's program where one file holds every size's (a Core ML function, an
    ExecuTorch method): `size_640x384` (a MIL function name is an identifier; "640x384" starts
    with a digit)."""
    return f"size_{key}"


def refuse_sizes(target, recipe, why: str) -> None:
    """Exit 2 before any work for a multi-size recipe on a target that cannot share weights yet."""
    if len(recipe.sizes()) > 1:
        raise RecipeError("image.sizes", f"several sizes in one bundle are not available on {target.name} yet "
                                         f"({why}); compile one bundle per size, or use a target that shares "
                                         f"weights between sizes")


def toolkit_problem(packages: tuple[str, ...], modules: tuple[str, ...] = ()) -> str | None:
    """Why a target's toolkit cannot be used (exit 8): packages not installed, or modules that fail
    to import (a broken install), named."""
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        return f"missing Python packages {', '.join(missing)}; run `make install`"
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            return f"{module} does not import ({type(exc).__name__}: {str(exc)[:120]}); reinstall it"
    return None


def check_schemes(target, recipe) -> None:
    """Every int8 component's scheme must be one this target can ship (exit 2 before any work)."""
    from ..recipe import scheme_of

    for name, spec in recipe.component_specs().items():
        if spec.precision == "int8" and scheme_of(name, spec) not in target.schemes:
            raise RecipeError(f"components.{name}.quantization.scheme",
                              f"{scheme_of(name, spec)!r} is not available for target {target.name} "
                              f"(it ships: {', '.join(target.schemes)})")


def package_files(out_dir: Path, main: str) -> list[str]:
    """Every file of an artifact: the main file and its siblings (`x.onnx`, `x.onnx.data`), or
    everything inside the main directory."""
    path = out_dir / main
    if path.is_dir():
        return sorted(p.relative_to(out_dir).as_posix() for p in path.rglob("*") if p.is_file())
    return sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name.startswith(main))
