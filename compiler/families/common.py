"""Pieces shared by the UNet families: the UNet call with SDXL micro-conditioning."""
from __future__ import annotations

import torch

from ..errors import RecipeError


def reject_guidance(family: str, recipe) -> None:
    if recipe.sampler.guidance_scale is not None:
        raise RecipeError("sampler.guidance_scale", f"family {family} has no guidance input; remove the key")


class BakedStep(torch.nn.Module):
    """Base for the exported denoiser graph: (prompt_embeds[, pooled], noise) -> latents."""

    def __init__(self, student, recipe):
        super().__init__()
        self.unet = student.unet
        self.dual = student.dual
        h, w = recipe.image.height, recipe.image.width
        self.register_buffer("time_ids", torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32), persistent=False)

    def _unet(self, sample, timestep, prompt_embeds, pooled=None, timestep_cond=None):
        extra = None
        if self.dual:
            extra = {"text_embeds": pooled, "time_ids": self.time_ids.expand(sample.shape[0], -1)}
        return self.unet(sample, timestep, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond,
                         added_cond_kwargs=extra, return_dict=False)[0]
