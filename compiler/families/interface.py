"""The family interface: what a family is (Family), which folders and classes its students have
(Layout, TextSlot). It imports nothing of the compiler at run time; the families implement it
and compiler/families/__init__.py registers them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from ..student import Student
    from ..recipe import Recipe
    from ..contract.tokenizers import PromptFormat


@dataclass(frozen=True)
class TextSlot:
    tokenizer: str                  # subfolders of the model folder
    encoder: str
    kind: str                       # compiler.contract.tokenizers.CLIP or SENTENCEPIECE
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
    # latent pixels per token side on top of the transformer's patch size (FLUX packs 2x2)
    latent_packing: int

    def prompt_format(self, slot: int, recipe: "Recipe") -> "PromptFormat": ...

    def check_compatible(self, student: "Student") -> None: ...

    def constants(self, student: "Student", recipe: "Recipe") -> dict: ...

    def text_encoder(self, student: "Student", recipe: "Recipe") -> tuple["torch.nn.Module", list[str]]:
        """The text encoder graph (inputs: every tokenizer's graph inputs, in order) and its output names."""

    def denoiser(self, student: "Student", recipe: "Recipe") -> "torch.nn.Module": ...

    def denoiser_inputs(self, student: "Student") -> list[str]: ...

    def oracle(self, student: "Student", recipe: "Recipe", prompt: str, noise: "torch.Tensor") -> "torch.Tensor | None": ...
