"""Export targets: a small Protocol and an explicit registry.

Heavy toolchains are imported inside each target, so `compile --help` stays instant, and a
target whose toolchain is missing says why instead of crashing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import EnvironmentError_, RecipeError

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class Target(Protocol):
    name: str
    suffix: str

    def unavailable_reason(self) -> str | None: ...

    def export(self, graph, out_dir: Path, opset: int) -> list[str]:
        """Write the graph into out_dir; return the files written (relative names)."""

    def load(self, path: Path) -> Runner:
        """A callable that runs the exported file on this machine, for verification."""

    def describe_io(self, path: Path) -> dict: ...


def _onnx() -> Target:
    from .onnx import OnnxTarget

    return OnnxTarget()


# Core ML and ExecuTorch land with their own issues; until then they are not listed, so
# `--target coreml` is a usage error that names what exists rather than a stub.
TARGETS: dict[str, Callable[[], Target]] = {"onnx": _onnx}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise RecipeError("--target", f"unknown target {name!r}; available: {', '.join(sorted(TARGETS))}")
    target = TARGETS[name]()
    reason = target.unavailable_reason()
    if reason:
        raise EnvironmentError_(f"--target {name}", reason)
    return target
