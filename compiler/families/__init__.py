"""Sampler families: the single-step math each student was distilled for.

A family turns a loaded Student into the denoiser graph with its step baked in, reports
the constants it folded (they go into manifest.json for the runtimes), and can run the
diffusers pipeline it must match (the oracle; tests compare the two).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from ..load import Student
    from ..recipe import Recipe


class Family(Protocol):
    name: str

    def constants(self, student: "Student", recipe: "Recipe") -> dict: ...

    def denoiser(self, student: "Student", recipe: "Recipe") -> "torch.nn.Module": ...

    def oracle(self, student: "Student", recipe: "Recipe", prompt: str, noise: "torch.Tensor") -> "torch.Tensor | None": ...


def get_family(name: str) -> Family:
    from . import euler, lcm, rectified_flow

    families: dict[str, Family] = {
        "eps-turbo": euler.EulerOneStep("eps-turbo", prediction_type=None),
        "sample-lightning": euler.EulerOneStep("sample-lightning", prediction_type="sample"),
        "lcm": lcm.LCMOneStep(),
        "rectified-flow": rectified_flow.RectifiedFlowOneStep(),
    }
    return families[name]
