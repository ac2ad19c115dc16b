"""The failure contract (shared/ERRORS.md): one exception type, one exit code per class."""
from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    INTERNAL = 1
    RECIPE = 2
    MODEL = 3
    CALIBRATION = 4
    EXPORT = 5
    PARITY = 6
    BUNDLE = 7
    ENVIRONMENT = 8
    INTERRUPTED = 130


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A third-party exception as one line for an error message: its first line, or its type."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class CompileError(Exception):
    """A failure the user can act on. `where` names the file and field at fault."""

    code: Exit = Exit.INTERNAL

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


class RecipeError(CompileError):
    code = Exit.RECIPE


class ModelError(CompileError):
    code = Exit.MODEL


class CalibrationError(CompileError):
    code = Exit.CALIBRATION


class ExportError(CompileError):
    code = Exit.EXPORT


class ParityError(CompileError):
    code = Exit.PARITY


class BundleError(CompileError):
    code = Exit.BUNDLE


class EnvironmentError_(CompileError):
    code = Exit.ENVIRONMENT
