"""pixart-onestep: one-step students of PixArt-alpha (SIM, TDM, DMD-PixArt).

PixArtAlphaPipeline at num_inference_steps=1 keeps the scheduler step's pred_original_sample
(x0), with DDPM, DDIM or Euler alike (DPMSolver's step has no x0 to keep: a one-step student
ships one of the three). The timestep is the student's scheduler's one-step timestep (trailing
spacing: t = 999), or the fixed t the student was distilled at (`sampler.timestep`, DMD: 400).
A learned-sigma transformer (out_channels = 2 * in_channels) keeps the first half. The T5
encoder runs with the padding mask, and the transformer reads the same mask for cross-attention.

At t = 999 on PixArt's linear betas 1/sqrt(abar) is 157: an eps-prediction student multiplies
any error of its transformer by 157 in x0, which is why its parity is judged on the image.
"""
from __future__ import annotations

import torch

from ..errors import ModelError
from .interface import Layout
from .common import check_latent_channels, reject_unused, run_pipeline
from .schedules import exact
from .transformer_common import T5_SLOT, MaskedEncoderGraph, check_width, hidden_size, masked_format

DEFAULT_SEQUENCE = 120     # PixArtAlphaPipeline's max_sequence_length
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler")


def _scheduler(student, recipe):
    import diffusers

    name = student.scheduler_config.get("_class_name", "DDPMScheduler")
    if name not in SCHEDULERS:
        raise ModelError(f"{student.source}/scheduler/scheduler_config.json: _class_name",
                         f"{name}: a one-step PixArt student needs one of {', '.join(SCHEDULERS)} (their step returns x0)")
    sched = exact(getattr(diffusers, name).from_config(student.scheduler_config))
    if recipe.sampler.timestep is None:
        sched.set_timesteps(1)
    else:
        sched.set_timesteps(timesteps=[recipe.sampler.timestep])
    return sched


class PixArtStep(torch.nn.Module):
    """(prompt_embeds, attention_mask, noise) -> x0 latents (before / vae.scaling_factor)."""

    def __init__(self, transformer, c: dict, latent_channels: int):
        super().__init__()
        self.transformer, self.c, self.channels = transformer, c, latent_channels
        self.register_buffer("timestep", torch.tensor([float(c["timestep"])]), persistent=False)

    def forward(self, prompt_embeds, attention_mask, noise):
        c = self.c
        euler = c["scheduler"] == "EulerDiscreteScheduler"
        if euler:   # Euler's own op order (the same x0 as DDPM in exact arithmetic, not in float32)
            sample = noise * c["init_noise_sigma"]
            model_in = sample / (c["sigma"] ** 2 + 1) ** 0.5
        else:
            sample = model_in = noise
        out = self.transformer(model_in, encoder_hidden_states=prompt_embeds, encoder_attention_mask=attention_mask,
                               timestep=self.timestep.expand(noise.shape[0]),
                               added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        if c["learned_sigma"]:
            out = out[:, : self.channels]
        if euler and c["prediction_type"] == "epsilon":
            x0 = sample - c["sigma"] * out
        elif c["prediction_type"] == "epsilon":
            x0 = (noise - c["sqrt_one_minus_alpha_prod"] * out) / c["sqrt_alpha_prod"]
        elif c["prediction_type"] == "v_prediction":
            x0 = c["sqrt_alpha_prod"] * noise - c["sqrt_one_minus_alpha_prod"] * out
        else:
            x0 = out
        if c["clip_sample"]:
            x0 = x0.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        return x0


class PixArtOneStep:
    latent_packing = 1
    name = "pixart-onestep"
    layout = Layout(denoiser="transformer", denoiser_class="PixArtTransformer2DModel", text=(T5_SLOT,))

    def prompt_format(self, slot: int, recipe):
        # clean_caption=False: the pipeline's default caption cleaning needs bs4 + ftfy and silently
        # degrades to lower().strip() without them; a device reproduces lower().strip().
        return masked_format(recipe, DEFAULT_SEQUENCE, lowercase=True)

    def check_compatible(self, student) -> None:
        check_width(student, "caption_channels", hidden_size(student.text_encoders[0]), "the T5 encoder produces")
        check_latent_channels(student, int(student.denoiser.config.in_channels), "the transformer takes")
        if int(student.denoiser.config.sample_size) == 128:
            raise ModelError(f"{student.source}/transformer/config.json: sample_size",
                             "128 (PixArt-alpha 1024 px, resolution and aspect-ratio conditioning) is not supported yet")

    def constants(self, student, recipe) -> dict:
        reject_unused(self.name, recipe, used=("timestep",), text=True)
        sched = _scheduler(student, recipe)
        if sched.config.get("thresholding"):
            raise ModelError(f"{student.source}/scheduler/scheduler_config.json: thresholding",
                             "dynamic thresholding is not supported in a baked one-step graph")
        t = int(sched.timesteps[0])
        abar = sched.alphas_cumprod[t]
        cfg = student.denoiser.config
        return {
            "scheduler": type(sched).__name__, "timestep": t, "prediction_type": sched.config.prediction_type,
            "sigma": float(sched.sigmas[0]) if hasattr(sched, "sigmas") else None,
            "init_noise_sigma": float(sched.init_noise_sigma),
            "alpha_prod": float(abar), "sqrt_alpha_prod": float(abar ** 0.5),
            "sqrt_one_minus_alpha_prod": float((1 - abar) ** 0.5),
            "clip_sample": bool(sched.config.get("clip_sample", False)),
            "clip_sample_range": float(sched.config.get("clip_sample_range", 1.0)),
            "learned_sigma": int(cfg.out_channels) == 2 * int(cfg.in_channels),
        }

    def text_encoder(self, student, recipe):
        return MaskedEncoderGraph(student.text_encoders[0]).eval(), ["prompt_embeds"]

    def denoiser(self, student, recipe):
        return PixArtStep(student.denoiser, self.constants(student, recipe), student.latent_channels).eval()

    def denoiser_inputs(self, student) -> list[str]:
        return ["prompt_embeds", "attention_mask", "noise"]

    def oracle(self, student, recipe, prompt, noise):
        from diffusers import PixArtAlphaPipeline

        pipe = PixArtAlphaPipeline(tokenizer=student.tokenizers[0].hf, text_encoder=student.text_encoders[0],
                                   vae=student.vae, transformer=student.denoiser, scheduler=_scheduler(student, recipe))
        steps = {"timesteps": [recipe.sampler.timestep], "num_inference_steps": None} if recipe.sampler.timestep else {}
        kwargs = dict(prompt=prompt, guidance_scale=1.0, latents=noise, height=recipe.image.height,
                      width=recipe.image.width, use_resolution_binning=False, clean_caption=False,
                      max_sequence_length=student.tokenizers[0].prompt_length, **steps)
        return run_pipeline(pipe, **kwargs)
