"""Prompt files (calibration and held-out) and tokenization shared by compile, verify and generate."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CalibrationError


def read_prompts(path: str | Path, field: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    where = f"{path} ({field})"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CalibrationError(where, "prompt file not found") from None
    except IsADirectoryError:
        raise CalibrationError(where, "is a directory, expected a text file with one prompt per line") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CalibrationError(f"{path}:{line} ({field})", "not valid UTF-8; save the file as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise CalibrationError(where, "contains no prompts")
    return prompts


def normalize(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def prompt_digests(prompts: list[str]) -> list[str]:
    """sha256 of each normalized prompt, sorted: what a bundle records of its calibration set, so
    `verify` can refuse calibrated prompts from any directory without the file (or its text)."""
    return sorted({_digest(p) for p in prompts})


def _digest(prompt: str) -> str:
    return hashlib.sha256(normalize(prompt).encode("utf-8")).hexdigest()


def check_not_calibrated(heldout: list[str], heldout_where: str, digests: list[str], calibration_where: str) -> None:
    seen = set(digests)
    for i, p in enumerate(heldout, 1):
        if _digest(p) in seen:
            raise CalibrationError(heldout_where, f"held-out prompt {i} {p[:60]!r} was calibrated on "
                                                  f"({calibration_where})")


def check_disjoint(calibration: list[str], calibration_path: str, heldout: list[str], heldout_path: str) -> None:
    """Held-out prompts must never be calibrated on (case- and whitespace-insensitive)."""
    held = {normalize(p) for p in heldout}
    for i, p in enumerate(calibration, 1):
        if normalize(p) in held:
            raise CalibrationError(f"{calibration_path} (calibration.prompts)",
                                   f"prompt {i} {p[:60]!r} also appears in the held-out set {heldout_path}")


def calibration_prompts(recipe, heldout: list[str]) -> list[str]:
    """A recipe's calibration prompts, refused when they overlap any prompt of the held-out file."""
    if not recipe.quantized:
        return []
    prompts = read_prompts(recipe.calibration.prompts, "calibration.prompts")
    check_disjoint(prompts, recipe.calibration.prompts, heldout, recipe.parity.prompts)
    return prompts[: recipe.calibration.num_prompts]


@dataclass(frozen=True)
class Tokens:
    ids: dict[str, np.ndarray]   # graph input name (input_ids, attention_mask, ...) -> int64 [1, L]
    truncated: bool


def tokenize(tokenizers, prompt: str) -> Tokens:
    """Every tokenizer's graph inputs for `prompt` (compiler.contract.tokenizers.PromptTokenizer)."""
    ids, truncated = {}, False
    for tok in tokenizers:
        out, cut = tok(prompt)
        ids.update(out)
        truncated |= cut
    return Tokens(ids, truncated)
