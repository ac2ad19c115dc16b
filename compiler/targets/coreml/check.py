"""The ML Program evaluator as compile's checker: an op it cannot evaluate, or one that fails,
is a parity failure (exit 6) naming the op, never a skipped check."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ExportError, ParityError


class CheckedEvaluator:
    def __init__(self, package: Path, prog=None, fp16_storage: bool = True, function: str | None = None):
        from . import convert
        from .evaluate import ProgramEvaluator, UnsupportedOp

        self.where = f"component {Path(package).name.removesuffix(convert.SUFFIX)}"
        function = function or convert.default_function(package)
        if prog is None:
            try:
                prog = convert.load_program(package, function)
            except Exception as exc:  # coremltools' loader: a package it cannot read back
                raise ExportError(str(package), f"the ML Program does not load: {str(exc)[:200]}") from exc
        try:
            self.evaluator = ProgramEvaluator(prog, fp16_storage, function)
        except UnsupportedOp as exc:
            raise ParityError(self.where, f"{exc}; its numbers cannot be checked on this machine") from exc

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from .evaluate import EvaluationError, UnsupportedOp

        try:
            return self.evaluator(feeds)
        except (UnsupportedOp, EvaluationError) as exc:
            raise ParityError(self.where, f"the ML Program evaluator failed: {str(exc)[:200]}") from exc
