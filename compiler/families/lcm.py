"""lcm: Latent Consistency Models. One LCMScheduler step at t=999 with the boundary
scalings c_skip/c_out and the guidance embedding w folded in as constants."""
from __future__ import annotations

import torch

from .common import BakedStep, UNetCall, UNetFamily, reject_unused, run_img2img, run_pipeline
from .stepped import row
from .schedules import exact

DEFAULT_GUIDANCE = 8.5  # LatentConsistencyModelPipeline's default guidance_scale


def _scheduler(student, strength: float = 1.0):
    from diffusers import LCMScheduler

    sched = exact(LCMScheduler.from_config(student.scheduler_config))
    sched.set_timesteps(1, strength=strength)
    return sched


def _guidance_embedding(student, recipe) -> torch.Tensor:
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([_guidance(recipe) - 1.0])
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(
        None, w, embedding_dim=student.denoiser.config.time_cond_proj_dim).float()


def _step(sched, t, init: float, noise: float) -> tuple[float, ...]:
    """LCMScheduler.step at t to its boundary: c_out x0 + c_skip sample, x0 = (sample - sqrt(1 - abar) eps) / sqrt(abar)."""
    c_skip, c_out = (float(v) for v in sched.get_scalings_for_boundary_condition_discrete(t))
    abar = float(sched.alphas_cumprod[int(t)])
    return row(float(t), init, noise, 1.0, c_out / abar ** 0.5 + c_skip, -c_out * (1 - abar) ** 0.5 / abar ** 0.5)


def _guidance(recipe) -> float:
    g = recipe.sampler.guidance_scale
    return DEFAULT_GUIDANCE if g is None else g


class LCMStep(BakedStep):
    def __init__(self, student, recipe, c: dict):
        super().__init__(student, recipe)
        self.c = c
        self.register_buffer("timestep", torch.tensor([c["timestep"]], dtype=torch.float32), persistent=False)
        self.register_buffer("w_embedding", _guidance_embedding(student, recipe), persistent=False)

    def forward(self, prompt_embeds, noise, pooled_prompt_embeds=None):
        c = self.c
        sample = noise * c["init_noise_sigma"]
        cond = self.w_embedding.expand(noise.shape[0], -1)
        eps = self._unet(sample, self.timestep, prompt_embeds, pooled_prompt_embeds, timestep_cond=cond)
        x0 = (sample - c["sqrt_one_minus_alpha_prod"] * eps) / c["sqrt_alpha_prod"]
        return c["c_out"] * x0 + c["c_skip"] * sample


class LCMOneStep(UNetFamily):
    name = "lcm"

    def constants(self, student, recipe) -> dict:
        reject_unused(self.name, recipe, used=("guidance_scale",))
        if student.denoiser.config.time_cond_proj_dim is None:
            from ..errors import ModelError

            raise ModelError(f"{student.source}/unet/config.json: time_cond_proj_dim",
                             "an LCM student needs a guidance-embedding UNet (time_cond_proj_dim is null)")
        sched = _scheduler(student)
        t = sched.timesteps[0]
        c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(t)
        abar = float(sched.alphas_cumprod[int(t)])
        if sched.config.prediction_type != "epsilon":
            from ..errors import ModelError

            raise ModelError(f"{student.source}/scheduler/scheduler_config.json: prediction_type",
                             f"lcm supports epsilon prediction, got {sched.config.prediction_type}")
        return {
            "scheduler": "LCMScheduler",
            "timestep": float(t),
            "alpha_prod": abar,
            "sqrt_alpha_prod": abar ** 0.5,
            "sqrt_one_minus_alpha_prod": (1 - abar) ** 0.5,
            "c_skip": float(c_skip),
            "c_out": float(c_out),
            "init_noise_sigma": float(sched.init_noise_sigma),
            "guidance_scale": _guidance(recipe),
            "prediction_type": "epsilon",
        }

    def denoiser(self, student, recipe):
        return LCMStep(student, recipe, self.constants(student, recipe)).eval()

    def oracle(self, student, recipe, prompt, noise):
        from diffusers import LatentConsistencyModelPipeline

        pipe = LatentConsistencyModelPipeline(
            vae=student.vae, text_encoder=student.text_encoders[0], tokenizer=student.tokenizers[0].hf,
            unet=student.denoiser, scheduler=_scheduler(student), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        return run_pipeline(pipe, prompt=prompt, guidance_scale=_guidance(recipe), latents=noise,
                            height=recipe.image.height, width=recipe.image.width)

    def model_call(self, student, recipe):
        return UNetCall(student, recipe, cond=_guidance_embedding(student, recipe))

    def img2img_rows(self, student, recipe):
        """Text-to-image, and per strength the one step LatentConsistencyModelImg2ImgPipeline runs
        at num_inference_steps=1 (LCMScheduler.set_timesteps(1, strength=s): t = 20 int(50 s) - 1)."""
        c = self.constants(student, recipe)
        t2i = _step(_scheduler(student), c["timestep"], 0.0, c["init_noise_sigma"])
        rows = []
        for strength in recipe.img2img.strengths:
            sched = _scheduler(student, strength)
            t = sched.timesteps[0]
            abar = float(sched.alphas_cumprod[int(t)])
            rows.append((1, _step(sched, t, abar ** 0.5, (1 - abar) ** 0.5)))
        return t2i, rows

    def img2img_oracle(self, student, recipe, prompt, noise, init_latents, strength):
        from diffusers import LatentConsistencyModelImg2ImgPipeline

        pipe = LatentConsistencyModelImg2ImgPipeline(
            vae=student.vae, text_encoder=student.text_encoders[0], tokenizer=student.tokenizers[0].hf,
            unet=student.denoiser, scheduler=_scheduler(student), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        return run_img2img(pipe, "diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_img2img",
                           noise, prompt=prompt, image=init_latents, strength=strength,
                           guidance_scale=_guidance(recipe))
