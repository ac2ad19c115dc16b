"""The denoiser of an image-to-image bundle: one program for text-to-image and every strength.

Every one-step sampler of the families with a diffusers img2img pipeline is affine around one
model call, so the graph takes the six numbers of compiler.contract.init_image.STEP_LAYOUT as
its `step` input:

    sample  = init_latents * step[1] + noise * step[2]       (the pipeline's add_noise / scale_noise)
    out     = model(sample * step[3], timestep = step[0])    (scale_model_input; the UNet or transformer)
    latents = sample * step[4] + out * step[5]               (the scheduler's step to sigma 0)

Text-to-image is the row with step[1] = 0 (the encoder does not run; init_latents are zeros).
Each family gives its model call and its rows (text-to-image, and one per strength from its
img2img pipeline's own scheduler); tests/test_img2img.py checks every row against that pipeline.
"""
from __future__ import annotations

import torch

from ..contract.init_image import STEP_LAYOUT, Img2Img, Strength

STEP_INPUTS = ["init_latents", "step"]


class SteppedDenoiser(torch.nn.Module):
    """The step around `call`; a subclass per input layout names the graph's inputs (exporters
    take the names of forward's parameters)."""

    def __init__(self, call: torch.nn.Module):
        super().__init__()
        self.call = call

    def stepped(self, v: dict, init_latents, noise, step):
        # 1-element slices, not scalars: XNNPACK's layout pass cannot take a 0-d tensor
        t, init, noise_scale, input_scale, keep, model = (step[i:i + 1] for i in range(len(STEP_LAYOUT)))
        sample = init_latents * init + noise * noise_scale
        return sample * keep + self.call(sample * input_scale, t, v) * model


class OneText(SteppedDenoiser):       # SD layouts
    def forward(self, prompt_embeds, noise, init_latents, step):
        return self.stepped({"prompt_embeds": prompt_embeds}, init_latents, noise, step)


class PooledAfterNoise(SteppedDenoiser):   # SDXL layouts
    def forward(self, prompt_embeds, noise, pooled_prompt_embeds, init_latents, step):
        return self.stepped({"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds},
                            init_latents, noise, step)


class PooledBeforeNoise(SteppedDenoiser):  # FLUX
    def forward(self, prompt_embeds, pooled_prompt_embeds, noise, init_latents, step):
        return self.stepped({"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds},
                            init_latents, noise, step)


class MaskedText(SteppedDenoiser):        # SANA-Sprint
    def forward(self, prompt_embeds, prompt_attention_mask, noise, init_latents, step):
        return self.stepped({"prompt_embeds": prompt_embeds, "prompt_attention_mask": prompt_attention_mask},
                            init_latents, noise, step)


LAYOUTS = {("prompt_embeds", "noise"): OneText,
           ("prompt_embeds", "prompt_attention_mask", "noise"): MaskedText,
           ("prompt_embeds", "noise", "pooled_prompt_embeds"): PooledAfterNoise,
           ("prompt_embeds", "pooled_prompt_embeds", "noise"): PooledBeforeNoise}


def row(model_timestep: float, init: float, noise: float, input_scale: float, sample: float,
        model: float) -> tuple[float, ...]:
    out = (model_timestep, init, noise, input_scale, sample, model)
    assert len(out) == len(STEP_LAYOUT)
    return tuple(float(x) for x in out)


# the families that ship no img2img, and why
WITHOUT = {
    "rectified-flow": "diffusers has no pipeline for it to check an img2img step against",
    "pixart-onestep": "diffusers has no PixArt img2img pipeline to check an img2img step against",
}


def img2img(family, student, recipe, encoder: str) -> Img2Img:
    """`family`: families.img2img_family(recipe.family)."""
    t2i, rows = family.img2img_rows(student, recipe)
    strengths = tuple(Strength(s, n, r) for s, (n, r) in zip(recipe.img2img.strengths, rows))
    return Img2Img(recipe.image.height, recipe.image.width, encoder, t2i, strengths)


def denoiser(family, student, recipe) -> SteppedDenoiser:
    return LAYOUTS[tuple(family.denoiser_inputs(student))](family.model_call(student, recipe)).eval()
