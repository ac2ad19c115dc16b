"""Pieces shared by the UNet families: their layout (one CLIP text encoder, or SDXL's two), the
text encoder graph, the compatibility checks, and the UNet call with SDXL micro-conditioning."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError, RecipeError
from ..contract.tokenizers import CLIP, PromptFormat
from .interface import Layout, TextSlot

UNET_LAYOUT = Layout(
    denoiser="unet", denoiser_class="UNet2DConditionModel",
    text=(TextSlot("tokenizer", "text_encoder", CLIP, ("CLIPTextModel", "CLIPTextModelWithProjection")),
          TextSlot("tokenizer_2", "text_encoder_2", CLIP, ("CLIPTextModelWithProjection",), optional=True)))


class CLIPTextGraph(torch.nn.Module):
    """SD: the last hidden state. SDXL: both encoders' penultimate hidden states, concatenated,
    plus the second encoder's pooled projection (as StableDiffusionXLPipeline.encode_prompt)."""

    def __init__(self, encoders):
        super().__init__()
        self.encoders = torch.nn.ModuleList(encoders)

    def forward(self, input_ids, input_ids_2=None):
        if len(self.encoders) == 1:
            return self.encoders[0](input_ids, return_dict=False)[0]
        one = self.encoders[0](input_ids, output_hidden_states=True)
        two = self.encoders[1](input_ids_2, output_hidden_states=True)
        embeds = torch.cat([one.hidden_states[-2], two.hidden_states[-2]], dim=-1)
        return embeds, two.text_embeds


class UNetFamily:
    """What the four UNet families share; each adds its constants, baked step and oracle."""
    latent_packing = 1
    name: str
    layout = UNET_LAYOUT

    def prompt_format(self, slot: int, recipe) -> PromptFormat:
        return PromptFormat()

    def text_encoder(self, student, recipe):
        names = ["prompt_embeds", "pooled_prompt_embeds"] if student.dual else ["prompt_embeds"]
        return CLIPTextGraph(student.text_encoders).eval(), names

    def denoiser_inputs(self, student) -> list[str]:
        return ["prompt_embeds", "noise", "pooled_prompt_embeds"] if student.dual else ["prompt_embeds", "noise"]

    def check_compatible(self, student) -> None:
        root = Path(student.source)
        unet = student.denoiser.config
        widths = [int(e.config.hidden_size) for e in student.text_encoders]
        if sum(widths) != unet.cross_attention_dim:
            raise ModelError(f"{root / 'unet' / 'config.json'}: cross_attention_dim",
                             f"is {unet.cross_attention_dim} but the text encoder(s) produce {sum(widths)}")
        check_latent_channels(student, int(unet.in_channels), "the UNet takes")


def check_latent_channels(student, channels: int, what: str) -> None:
    latent = int(student.vae.config.latent_channels)
    if latent != channels:
        raise ModelError(f"{Path(student.vae_source) / student.vae_subfolder / 'config.json'}: latent_channels",
                         f"is {latent} but {what} {channels} channels")


def run_pipeline(pipe, **kwargs) -> torch.Tensor:
    """The pipeline's image at one step (kwargs may override num_inference_steps, e.g. with timesteps=)."""
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(**{"num_inference_steps": 1, "output_type": "pt", **kwargs}).images


SAMPLER_KEYS = ("guidance_scale", "max_timesteps", "timestep")


def reject_unused(family: str, recipe, used: tuple[str, ...] = (), text: bool = False) -> None:
    """A recipe key the family does not read is an error, not a silent no-op."""
    for key in SAMPLER_KEYS:
        if key not in used and getattr(recipe.sampler, key) is not None:
            raise RecipeError(f"sampler.{key}", f"family {family} does not use it; remove the key")
    if not text and recipe.text.max_sequence_length is not None:
        raise RecipeError("text.max_sequence_length", f"family {family} has CLIP text encoders of a fixed length; "
                                                      f"remove the key")


class BakedStep(torch.nn.Module):
    """Base for the exported denoiser graph: (prompt_embeds[, pooled], noise) -> latents."""

    def __init__(self, student, recipe):
        super().__init__()
        self.unet = student.denoiser
        self.dual = student.dual
        h, w = recipe.image.height, recipe.image.width
        self.register_buffer("time_ids", torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32), persistent=False)

    def _unet(self, sample, timestep, prompt_embeds, pooled=None, timestep_cond=None):
        extra = None
        if self.dual:
            extra = {"text_embeds": pooled, "time_ids": self.time_ids.expand(sample.shape[0], -1)}
        return self.unet(sample, timestep, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond,
                         added_cond_kwargs=extra, return_dict=False)[0]


class UNetCall(BakedStep):
    """The stepped denoiser's model call (families/stepped.py): (x, t, values) -> the UNet's output,
    with a constant timestep_cond where the family has one (LCM's guidance embedding)."""

    def __init__(self, student, recipe, cond: torch.Tensor | None = None):
        super().__init__(student, recipe)
        self.register_buffer("cond", cond, persistent=False)

    def forward(self, x, t, values):
        cond = None if self.cond is None else self.cond.expand(x.shape[0], -1)
        return self._unet(x, t, values["prompt_embeds"], values.get("pooled_prompt_embeds"), timestep_cond=cond)


def run_img2img(pipe, module: str, noise: torch.Tensor, **kwargs) -> torch.Tensor:
    """An img2img pipeline's image at one step, its noise draw replaced by `noise` (the pipelines
    draw it with randn_tensor in `module`) and the picture given as latents (the encoder's mean)."""
    from unittest import mock

    with mock.patch(f"{module}.randn_tensor", lambda *a, **k: noise.clone()):
        return run_pipeline(pipe, **kwargs)
