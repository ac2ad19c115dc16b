"""flow-match: FLUX.1-schnell-class students (FluxTransformer2DModel, CLIP + T5).

FluxPipeline at num_inference_steps=1: sigmas = [1.0], and any static or dynamic shift maps
sigma 1 to 1, so the step is t = 1000 (the transformer reads t / 1000) with dt = -1:
x0 = z - v(z, 1). The graph takes unpacked noise [1, C, h, w], packs 2x2 patches into tokens
as _pack_latents does, runs the transformer with the constant rotary ids (text ids zero, image
ids (0, row, col)), and unpacks. The pooled embedding is CLIP's pooler output; T5 runs
without a padding mask (the pipeline attends to padding). A guidance-distilled transformer
(guidance_embeds) gets sampler.guidance_scale (pipeline default 3.5) as a constant.
The decoder is FLUX's AutoencoderKL with a shift factor (wrap.DecoderGraph applies it).
"""
from __future__ import annotations

import torch

from ..errors import RecipeError
from ..contract.tokenizers import PromptFormat
from .interface import Layout
from ..recipe import img2img_steps
from .common import check_latent_channels, reject_unused, run_img2img, run_pipeline
from .stepped import row
from .transformer_common import CLIP_SLOT, T5_SECOND_SLOT, check_width, hidden_size, sequence_length

DEFAULT_SEQUENCE = 256     # FLUX.1-schnell's model card (the pipeline's default is 512)
DEFAULT_GUIDANCE = 3.5     # FluxPipeline's default guidance_scale


def _scheduler(student, image_seq_len: int, steps: int = 1):
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sched = FlowMatchEulerDiscreteScheduler.from_config(student.scheduler_config)
    cfg = sched.config
    mu = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                         cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return sched


class FlowStep(torch.nn.Module):
    def __init__(self, transformer, c: dict, latent_shape, text_length: int):
        super().__init__()
        from diffusers import FluxPipeline

        self.transformer, self.dt = transformer, c["dt"]
        _, _, h, w = latent_shape
        self.register_buffer("timestep", torch.tensor([c["timestep"]], dtype=torch.float32) / 1000, persistent=False)
        self.register_buffer("img_ids", FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32),
                             persistent=False)
        self.register_buffer("txt_ids", torch.zeros(text_length, 3), persistent=False)
        g = c["guidance_scale"]
        self.register_buffer("guidance", None if g is None else torch.full([1], g, dtype=torch.float32),
                             persistent=False)

    def forward(self, prompt_embeds, pooled_prompt_embeds, noise):
        z = _pack(noise)
        out = z + self.dt * self.velocity(z, self.timestep, prompt_embeds, pooled_prompt_embeds)
        return _unpack(out, noise.shape)

    def velocity(self, z, t, prompt_embeds, pooled_prompt_embeds):
        """The transformer on packed tokens z at t = sigma, with the constant ids and guidance."""
        b = z.shape[0]
        return self.transformer(hidden_states=z, timestep=t.expand(b),
                                guidance=None if self.guidance is None else self.guidance.expand(b),
                                pooled_projections=pooled_prompt_embeds, encoder_hidden_states=prompt_embeds,
                                txt_ids=self.txt_ids, img_ids=self.img_ids, return_dict=False)[0]


def _pack(x):
    """[b, c, h, w] -> [b, h/2 * w/2, 4c]: 2x2 patches as tokens (FluxPipeline._pack_latents)."""
    b, ch, h, w = x.shape
    return x.view(b, ch, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), ch * 4)


def _unpack(z, shape):
    b, ch, h, w = shape
    return z.view(b, h // 2, w // 2, ch, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, ch, h, w)


class FlowCall(torch.nn.Module):
    """The stepped denoiser's model call (families/stepped.py): unpacked x, t = sigma -> unpacked velocity."""

    def __init__(self, transformer, c: dict, latent_shape, text_length: int):
        super().__init__()
        self.step = FlowStep(transformer, c, latent_shape, text_length)

    def forward(self, x, t, values):
        v = self.step.velocity(_pack(x), t, values["prompt_embeds"], values["pooled_prompt_embeds"])
        return _unpack(v, x.shape)


class FluxTextGraph(torch.nn.Module):
    """(input_ids [CLIP], input_ids_2 [T5]) -> (prompt_embeds [T5], pooled_prompt_embeds [CLIP pooled])."""

    def __init__(self, clip, t5):
        super().__init__()
        self.clip, self.t5 = clip, t5

    def forward(self, input_ids, input_ids_2):
        pooled = self.clip(input_ids, output_hidden_states=False).pooler_output
        return self.t5(input_ids_2, output_hidden_states=False)[0], pooled


class FlowMatchOneStep:
    latent_packing = 2   # _pack: 2x2 latent pixels per token
    name = "flow-match"
    layout = Layout(denoiser="transformer", denoiser_class="FluxTransformer2DModel", text=(CLIP_SLOT, T5_SECOND_SLOT))

    def prompt_format(self, slot: int, recipe) -> PromptFormat:
        return PromptFormat() if slot == 0 else PromptFormat(max_length=sequence_length(recipe, DEFAULT_SEQUENCE))

    def check_compatible(self, student) -> None:
        clip, t5 = student.text_encoders
        check_width(student, "joint_attention_dim", hidden_size(t5), "the T5 encoder produces")
        check_width(student, "pooled_projection_dim", hidden_size(clip), "the CLIP encoder pools")
        check_latent_channels(student, int(student.denoiser.config.in_channels) // 4, "the transformer's packed 2x2 "
                                                                                       "tokens hold")

    def constants(self, student, recipe) -> dict:
        guided = bool(student.denoiser.config.guidance_embeds)
        reject_unused(self.name, recipe, used=("guidance_scale",) if guided else (), text=True)
        _, _, h, w = student.latent_shape(recipe.image.height, recipe.image.width)
        if h % 2 or w % 2:
            raise RecipeError("image.height", f"FLUX packs 2x2 latent patches: the image sides must be multiples of "
                                              f"{2 * student.vae_scale_factor}")
        sched = _scheduler(student, (h // 2) * (w // 2))
        g = recipe.sampler.guidance_scale
        return {"scheduler": "FlowMatchEulerDiscreteScheduler", "shift": float(sched.config.shift),
                "use_dynamic_shifting": bool(sched.config.use_dynamic_shifting),
                "timestep": float(sched.timesteps[0]), "sigma": float(sched.sigmas[0]),
                "dt": float(sched.sigmas[1] - sched.sigmas[0]), "prediction_type": "flow",
                "guidance_scale": (DEFAULT_GUIDANCE if g is None else g) if guided else None}

    def text_encoder(self, student, recipe):
        return FluxTextGraph(*student.text_encoders).eval(), ["prompt_embeds", "pooled_prompt_embeds"]

    def denoiser(self, student, recipe):
        shape = student.latent_shape(recipe.image.height, recipe.image.width)
        return FlowStep(student.denoiser, self.constants(student, recipe), shape,
                        student.tokenizers[1].max_length).eval()

    def denoiser_inputs(self, student) -> list[str]:
        return ["prompt_embeds", "pooled_prompt_embeds", "noise"]

    def oracle(self, student, recipe, prompt, noise):
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

        c = self.constants(student, recipe)
        _, ch, h, w = noise.shape
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(student.scheduler_config),
                            vae=student.vae,
                            text_encoder=student.text_encoders[0], tokenizer=student.tokenizers[0].hf,
                            text_encoder_2=student.text_encoders[1], tokenizer_2=student.tokenizers[1].hf,
                            transformer=student.denoiser)
        packed = FluxPipeline._pack_latents(noise, 1, ch, h, w)
        return run_pipeline(pipe, prompt=prompt, latents=packed, height=recipe.image.height, width=recipe.image.width,
                            max_sequence_length=student.tokenizers[1].prompt_length,
                            guidance_scale=c["guidance_scale"] or DEFAULT_GUIDANCE)

    def model_call(self, student, recipe):
        shape = student.latent_shape(recipe.image.height, recipe.image.width)
        return FlowCall(student.denoiser, self.constants(student, recipe), shape,
                        student.tokenizers[1].max_length).eval()

    def img2img_rows(self, student, recipe):
        """Text-to-image, and per strength 1/N the last step of FluxImg2ImgPipeline's N-step
        schedule (sigmas linspace(1, 1/N, N), shifted): scale_noise (1 - sigma) init + sigma noise."""
        c = self.constants(student, recipe)
        t2i = row(c["timestep"] / 1000, 0.0, 1.0, 1.0, 1.0, c["dt"])
        _, _, h, w = student.latent_shape(recipe.image.height, recipe.image.width)
        rows = []
        for strength in recipe.img2img.strengths:
            n = img2img_steps(strength)
            start = int(max(n - n * strength, 0))      # FluxImg2ImgPipeline.get_timesteps
            if n - start != 1:
                raise RecipeError("img2img.strengths", f"{strength}: FluxImg2ImgPipeline at {n} steps runs "
                                                       f"{n - start} steps from it, not one")
            sched = _scheduler(student, (h // 2) * (w // 2), n)
            s = float(sched.sigmas[start])
            rows.append((n, row(float(sched.timesteps[start]) / 1000, 1.0 - s, s, 1.0, 1.0,
                                float(sched.sigmas[start + 1]) - s)))
        return t2i, rows

    def img2img_oracle(self, student, recipe, prompt, noise, init_latents, strength):
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline

        c = self.constants(student, recipe)
        pipe = FluxImg2ImgPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(student.scheduler_config),
                                   vae=student.vae,
                                   text_encoder=student.text_encoders[0], tokenizer=student.tokenizers[0].hf,
                                   text_encoder_2=student.text_encoders[1], tokenizer_2=student.tokenizers[1].hf,
                                   transformer=student.denoiser)
        return run_img2img(pipe, "diffusers.pipelines.flux.pipeline_flux_img2img", noise, prompt=prompt,
                           image=init_latents, strength=strength, num_inference_steps=img2img_steps(strength),
                           height=recipe.image.height, width=recipe.image.width,
                           max_sequence_length=student.tokenizers[1].prompt_length,
                           guidance_scale=c["guidance_scale"] or DEFAULT_GUIDANCE)
