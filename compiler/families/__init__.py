"""Sampler families: the single-step math each student was distilled for.

A family turns a loaded Student into the denoiser graph with its step baked in, reports
the constants it folded (they go into manifest.json for the runtimes), and can run the
diffusers pipeline it must match (the oracle; tests compare the two). Its Layout says which
folders and classes a student of the family has, so the loader stays generic; its text
encoder graph turns token ids (and padding masks) into what the denoiser reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from ..load import Student
    from ..recipe import Recipe
    from ..tokenizers import PromptFormat


@dataclass(frozen=True)
class TextSlot:
    tokenizer: str                  # subfolders of the model folder
    encoder: str
    kind: str                       # compiler.tokenizers.CLIP or SENTENCEPIECE
    encoder_classes: tuple[str, ...]
    optional: bool = False          # present only when model_index.json names it (SDXL's second CLIP)


@dataclass(frozen=True)
class Layout:
    denoiser: str                   # subfolder
    denoiser_class: str             # diffusers class
    text: tuple[TextSlot, ...]
    decoder_classes: tuple[str, ...] = ("AutoencoderKL", "AutoencoderTiny")


class Family(Protocol):
    name: str
    layout: Layout

    def prompt_format(self, slot: int, recipe: "Recipe") -> "PromptFormat": ...

    def check_compatible(self, student: "Student") -> None: ...

    def constants(self, student: "Student", recipe: "Recipe") -> dict: ...

    def text_encoder(self, student: "Student", recipe: "Recipe") -> tuple["torch.nn.Module", list[str]]:
        """The text encoder graph (inputs: every tokenizer's graph inputs, in order) and its output names."""

    def denoiser(self, student: "Student", recipe: "Recipe") -> "torch.nn.Module": ...

    def denoiser_inputs(self, student: "Student") -> list[str]: ...

    def oracle(self, student: "Student", recipe: "Recipe", prompt: str, noise: "torch.Tensor") -> "torch.Tensor | None": ...


def get_family(name: str) -> Family:
    from . import euler, flow_match, lcm, pixart, rectified_flow, trigflow

    families: dict[str, Family] = {
        "eps-turbo": euler.EulerOneStep("eps-turbo", prediction_type=None),
        "sample-lightning": euler.EulerOneStep("sample-lightning", prediction_type="sample"),
        "lcm": lcm.LCMOneStep(),
        "rectified-flow": rectified_flow.RectifiedFlowOneStep(),
        "trigflow-scm": trigflow.TrigFlowOneStep(),
        "pixart-onestep": pixart.PixArtOneStep(),
        "flow-match": flow_match.FlowMatchOneStep(),
    }
    return families[name]
