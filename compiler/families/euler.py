"""eps-turbo (SD-Turbo, SDXL-Turbo, SwiftBrush...) and sample-lightning (SDXL-Lightning 1-step).

Both are one Euler step of diffusers' EulerDiscreteScheduler with timestep_spacing="trailing"
from t=999 to sigma=0. The constants are read from the student's own scheduler after
`set_timesteps(1)`, so a student with another beta schedule or prediction type stays exact.
"""
from __future__ import annotations

import math

import torch

from ..recipe import img2img_steps
from .common import BakedStep, UNetCall, UNetFamily, reject_unused, run_img2img, run_pipeline
from .stepped import row
from .schedules import exact


def _scheduler(student, prediction_type, steps: int = 1):
    from diffusers import EulerDiscreteScheduler

    overrides = {"timestep_spacing": "trailing"}
    if prediction_type:
        overrides["prediction_type"] = prediction_type
    sched = exact(EulerDiscreteScheduler.from_config(student.scheduler_config, **overrides))
    sched.set_timesteps(steps)
    return sched


def _output(prediction_type: str, s: float) -> tuple[float, float]:
    """(sample, model) coefficients of Euler's step from sigma s to 0."""
    if prediction_type == "epsilon":
        return 1.0, -s
    if prediction_type == "v_prediction":
        return 1 / (s * s + 1), -s / math.sqrt(s * s + 1)
    return 0.0, 1.0


class EulerStep(BakedStep):
    def __init__(self, student, recipe, c: dict):
        super().__init__(student, recipe)
        self.prediction_type = c["prediction_type"]
        self.register_buffer("timestep", torch.tensor([c["timestep"]], dtype=torch.float32), persistent=False)
        self.sigma = c["sigma"]
        self.init_noise_sigma = c["init_noise_sigma"]
        self.input_scale = c["init_noise_sigma"] / math.sqrt(c["sigma"] ** 2 + 1)

    def forward(self, prompt_embeds, noise, pooled_prompt_embeds=None):
        sample = noise * self.init_noise_sigma
        out = self._unet(noise * self.input_scale, self.timestep, prompt_embeds, pooled_prompt_embeds)
        s = self.sigma
        if self.prediction_type == "epsilon":
            return sample - s * out
        if self.prediction_type == "v_prediction":
            return out * (-s / math.sqrt(s * s + 1)) + sample / (s * s + 1)
        return out  # "sample": the UNet predicts x0 directly


class EulerOneStep(UNetFamily):
    def __init__(self, name: str, prediction_type: str | None):
        self.name = name
        self.prediction_type = prediction_type

    def constants(self, student, recipe) -> dict:
        reject_unused(self.name, recipe)
        sched = _scheduler(student, self.prediction_type)
        return {
            "scheduler": "EulerDiscreteScheduler",
            "timestep_spacing": "trailing",
            "timestep": float(sched.timesteps[0]),
            "sigma": float(sched.sigmas[0]),
            "init_noise_sigma": float(sched.init_noise_sigma),
            "prediction_type": sched.config.prediction_type,
        }

    def denoiser(self, student, recipe):
        return EulerStep(student, recipe, self.constants(student, recipe)).eval()

    def oracle(self, student, recipe, prompt, noise):
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        sched = _scheduler(student, self.prediction_type)
        common = dict(vae=student.vae, text_encoder=student.text_encoders[0], tokenizer=student.tokenizers[0].hf,
                      unet=student.denoiser, scheduler=sched)
        if student.dual:
            pipe = StableDiffusionXLPipeline(text_encoder_2=student.text_encoders[1], tokenizer_2=student.tokenizers[1].hf,
                                             **common)
        else:
            pipe = StableDiffusionPipeline(safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                                           **common)
        return run_pipeline(pipe, prompt=prompt, guidance_scale=0.0, latents=noise, height=recipe.image.height,
                            width=recipe.image.width)

    def model_call(self, student, recipe):
        return UNetCall(student, recipe)

    def img2img_rows(self, student, recipe):
        """Text-to-image, and per strength 1/N the last step of the trailing N-step schedule, as
        StableDiffusion(XL)Img2ImgPipeline runs it at num_inference_steps=N (add_noise: init + sigma noise)."""
        c = self.constants(student, recipe)
        s = c["sigma"]
        t2i = row(c["timestep"], 0.0, c["init_noise_sigma"], 1 / math.sqrt(s * s + 1), *_output(c["prediction_type"], s))
        rows = []
        for strength in recipe.img2img.strengths:
            n = img2img_steps(strength)
            sched = _scheduler(student, self.prediction_type, n)
            t, s = float(sched.timesteps[n - 1]), float(sched.sigmas[n - 1])
            rows.append((n, row(t, 1.0, s, 1 / math.sqrt(s * s + 1), *_output(c["prediction_type"], s))))
        return t2i, rows

    def img2img_oracle(self, student, recipe, prompt, noise, init_latents, strength):
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

        n = img2img_steps(strength)
        common = dict(vae=student.vae, text_encoder=student.text_encoders[0], tokenizer=student.tokenizers[0].hf,
                      unet=student.denoiser, scheduler=_scheduler(student, self.prediction_type))
        if student.dual:
            pipe = StableDiffusionXLImg2ImgPipeline(text_encoder_2=student.text_encoders[1],
                                                    tokenizer_2=student.tokenizers[1].hf, **common)
            module = "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img"
        else:
            pipe = StableDiffusionImg2ImgPipeline(safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False, **common)
            module = "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img"
        return run_img2img(pipe, module, noise, prompt=prompt, image=init_latents, strength=strength,
                           num_inference_steps=n, guidance_scale=0.0)
