"""The target registry: one line per target, its package found by name when first asked for, so
the recipe, the CLI and the loaders name targets without importing any (ExecuTorch's
recipe_registry apart from its recipe providers). compiler/targets/__init__.py is the interface a
target implements; nothing here imports it."""
from __future__ import annotations

import importlib
from typing import Any

from ..errors import EnvironmentError_, RecipeError

# name -> "module:class". Each module's top level imports nothing heavy.
TARGETS: dict[str, str] = {
    "onnx": "compiler.targets.onnx:OnnxTarget",
    "coreml": "compiler.targets.coreml:CoreMLTarget",
    "executorch": "compiler.targets.executorch:ExecuTorchTarget",
    "qnn": "compiler.targets.qnn:QnnTarget",
    "openvino": "compiler.targets.openvino:OpenVinoTarget",
}


def target_class(name: str) -> Any:
    if name not in TARGETS:
        raise RecipeError("--target", f"unknown target {name!r}; available: {', '.join(sorted(TARGETS))}")
    module, cls = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_target(name: str) -> Any:
    """An instance of the target's class (a compiler.targets.Target); exit 8 when its toolkit is unusable."""
    target = target_class(name)()
    reason = target.unavailable_reason()
    if reason:
        raise EnvironmentError_(f"--target {name}", reason)
    return target
