"""Pieces shared by the transformer families (PixArt, SANA-Sprint, FLUX): their text slots
(T5, Gemma-2, CLIP), the masked encoder graph, and the width checks."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError
from ..contract.tokenizers import CLIP, SENTENCEPIECE, PromptFormat
from .interface import TextSlot

T5_SLOT = TextSlot("tokenizer", "text_encoder", SENTENCEPIECE, ("T5EncoderModel",))
CLIP_SLOT = TextSlot("tokenizer", "text_encoder", CLIP, ("CLIPTextModel",))
T5_SECOND_SLOT = TextSlot("tokenizer_2", "text_encoder_2", SENTENCEPIECE, ("T5EncoderModel",))
GEMMA_SLOT = TextSlot("tokenizer", "text_encoder", SENTENCEPIECE, ("Gemma2Model",))


def sequence_length(recipe, default: int) -> int:
    return (recipe.text.max_sequence_length if recipe is not None else None) or default


def masked_format(recipe, default: int, **kwargs) -> PromptFormat:
    return PromptFormat(max_length=sequence_length(recipe, default), mask=True, **kwargs)


def check_width(student, config_key: str, expected: int, what: str) -> None:
    value = int(student.denoiser.config[config_key])
    if value != expected:
        raise ModelError(f"{Path(student.source) / 'transformer' / 'config.json'}: {config_key}",
                         f"is {value} but {what} {expected}")


def hidden_size(encoder) -> int:
    cfg = encoder.config
    return int(getattr(cfg, "d_model", None) or cfg.hidden_size)


class MaskedEncoderGraph(torch.nn.Module):
    """(input_ids, attention_mask) -> last hidden state, the padding mask applied (PixArt's T5)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids, attention_mask=attention_mask)[0]

