"""trigflow-scm: SANA-Sprint (SanaTransformer2DModel, Gemma-2 text encoder, AutoencoderDC).

SanaSprintPipeline at num_inference_steps=1 (SCMScheduler, intermediate_timesteps=None): one
TrigFlow consistency step at t = max_timesteps (the pipeline's 1.57080, not float pi/2: the
two differ by 30x round-off in the image). With x unit noise, sd = sigma_data,
s = sin t / (cos t + sin t) and r = sqrt(s^2 + (1 - s)^2) the pipeline computes

    F  = transformer(x r, timestep=s, guidance=guidance_scale * guidance_embeds_scale)
    v  = sd ((1 - 2s) x r + (1 - 2s + 2s^2) F) / r;   x0 = cos t (x sd) - sin t v;   out = x0 / sd

so sigma_data cancels: out = c_noise x + c_model F, constants computed with the pipeline's own
float32 ops. The prompt is lower-cased, stripped, and put after the pipeline's complex human
instruction; Gemma-2 reads prefix + prompt with the padding mask, and the graph keeps the BOS
row and the last max_sequence_length - 1 rows of the states and of the mask.
"""
from __future__ import annotations

import inspect
import math

import torch

from ..errors import RecipeError
from ..recipe import img2img_steps
from .interface import Layout
from .common import check_latent_channels, reject_unused, run_img2img, run_pipeline
from .stepped import row
from .transformer_common import GEMMA_SLOT, check_width, hidden_size, masked_format

DEFAULT_SEQUENCE = 300


def _call_default(name: str):
    from diffusers import SanaSprintPipeline

    return inspect.signature(SanaSprintPipeline.__call__).parameters[name].default


def _scheduler(student):
    from diffusers import SCMScheduler

    return SCMScheduler.from_config(student.scheduler_config)


class SCMStep(torch.nn.Module):
    """(prompt_embeds, prompt_attention_mask, noise) -> latents (before / vae.scaling_factor)."""

    def __init__(self, transformer, c: dict):
        super().__init__()
        self.transformer = transformer
        self.register_buffer("timestep", torch.tensor([c["scm_timestep"]], dtype=torch.float32), persistent=False)
        self.register_buffer("guidance", torch.tensor([c["guidance_input"]], dtype=torch.float32), persistent=False)
        self.input_scale, self.c_noise, self.c_model = c["input_scale"], c["c_noise"], c["c_model"]

    def forward(self, prompt_embeds, prompt_attention_mask, noise):
        b = noise.shape[0]
        f = self.transformer(noise * self.input_scale, encoder_hidden_states=prompt_embeds,
                             encoder_attention_mask=prompt_attention_mask, guidance=self.guidance.expand(b),
                             timestep=self.timestep.expand(b), return_dict=False)[0]
        return self.c_noise * noise + self.c_model * f


class SCMCall(torch.nn.Module):
    """The stepped denoiser's model call (families/stepped.py): x, t = the SCM timestep -> F."""

    def __init__(self, transformer, c: dict):
        super().__init__()
        self.transformer = transformer
        self.register_buffer("guidance", torch.tensor([c["guidance_input"]], dtype=torch.float32), persistent=False)

    def forward(self, x, t, values):
        b = x.shape[0]
        return self.transformer(x, encoder_hidden_states=values["prompt_embeds"],
                                encoder_attention_mask=values["prompt_attention_mask"],
                                guidance=self.guidance.expand(b), timestep=t.expand(b), return_dict=False)[0]


def _trig(t: torch.Tensor) -> dict:
    """The one step at TrigFlow time t (a float32 tensor, as the pipeline holds it): the model reads
    s = sin t / (cos t + sin t) (the pipeline's float32 ops) and x r; out = c_noise x + c_model F."""
    s = torch.sin(t) / (torch.cos(t) + torch.sin(t))
    r = torch.sqrt(s ** 2 + (1 - s) ** 2)
    t64, s64, r64 = float(t), float(s), float(r)
    return {"scm_timestep": s64, "input_scale": r64, "c_noise": math.cos(t64) - math.sin(t64) * (1 - 2 * s64),
            "c_model": -math.sin(t64) * (1 - 2 * s64 + 2 * s64 * s64) / r64}


def _trig_row(c: dict, init: float, noise: float) -> tuple[float, ...]:
    return row(c["scm_timestep"], init, noise, c["input_scale"], c["c_noise"], c["c_model"])


def _img2img_schedule(student, recipe, strength: float):
    """(steps, start index, scheduler) of SanaSprintImg2ImgPipeline at num_inference_steps = 1/strength:
    two steps take the pipeline's intermediate timestep, more a linear schedule from max_timesteps."""
    n = img2img_steps(strength)
    sched = _scheduler(student)
    max_t = recipe.sampler.max_timesteps or _call_default("max_timesteps")
    sched.set_timesteps(n, max_timesteps=max_t,
                        intermediate_timesteps=_call_default("intermediate_timesteps") if n == 2 else None)
    start = int(max(n - n * strength, 0))
    if n - start != 1:
        raise RecipeError("img2img.strengths", f"{strength}: SanaSprintImg2ImgPipeline at {n} steps runs "
                                               f"{n - start} steps from it, not one")
    return n, start, sched


class GemmaSelectGraph(torch.nn.Module):
    """(input_ids, attention_mask) [1, L_all] -> (prompt_embeds [1, L, D], prompt_attention_mask [1, L]):
    the BOS row and the last L - 1 rows, as SanaSprintPipeline._get_gemma_prompt_embeds selects."""

    def __init__(self, encoder, total: int, keep: int):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("select", torch.tensor([0, *range(total - keep + 1, total)]), persistent=False)

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids, attention_mask=attention_mask)[0]
        return h.index_select(1, self.select), attention_mask.index_select(1, self.select)


class TrigFlowOneStep:
    latent_packing = 1
    name = "trigflow-scm"
    layout = Layout(denoiser="transformer", denoiser_class="SanaTransformer2DModel", text=(GEMMA_SLOT,),
                    decoder_classes=("AutoencoderDC",))

    def prompt_format(self, slot: int, recipe):
        return masked_format(recipe, DEFAULT_SEQUENCE, prefix="\n".join(_call_default("complex_human_instruction")),
                             lowercase=True)

    def check_compatible(self, student) -> None:
        check_width(student, "caption_channels", hidden_size(student.text_encoders[0]), "the Gemma-2 encoder produces")
        check_latent_channels(student, int(student.denoiser.config.in_channels), "the transformer takes")

    def constants(self, student, recipe) -> dict:
        reject_unused(self.name, recipe, used=("guidance_scale", "max_timesteps"), text=True)
        sched = _scheduler(student)
        max_t = recipe.sampler.max_timesteps or _call_default("max_timesteps")
        g = recipe.sampler.guidance_scale
        g = _call_default("guidance_scale") if g is None else g
        sched.set_timesteps(1, max_timesteps=max_t, intermediate_timesteps=None)
        t = sched.timesteps[:1]
        scale = float(student.denoiser.config.guidance_embeds_scale)
        guidance = torch.full([1], g, dtype=torch.float32) * scale
        return {"scheduler": "SCMScheduler", "prediction_type": sched.config.prediction_type,
                "sigma_data": float(sched.config.sigma_data), "max_timesteps": float(t), "guidance_scale": g,
                "guidance_embeds_scale": scale, "guidance_input": float(guidance), **_trig(t)}

    def text_encoder(self, student, recipe):
        tok = student.tokenizers[0]
        graph = GemmaSelectGraph(student.text_encoders[0], tok.max_length, tok.prompt_length)
        return graph.eval(), ["prompt_embeds", "prompt_attention_mask"]

    def denoiser(self, student, recipe):
        return SCMStep(student.denoiser, self.constants(student, recipe)).eval()

    def denoiser_inputs(self, student) -> list[str]:
        return ["prompt_embeds", "prompt_attention_mask", "noise"]

    def oracle(self, student, recipe, prompt, noise):
        from diffusers import SanaSprintPipeline

        c = self.constants(student, recipe)
        pipe = SanaSprintPipeline(tokenizer=student.tokenizers[0].hf, text_encoder=student.text_encoders[0],
                                  vae=student.vae, transformer=student.denoiser, scheduler=_scheduler(student))
        return run_pipeline(pipe, prompt=prompt, latents=noise, intermediate_timesteps=None,
                            max_timesteps=c["max_timesteps"], guidance_scale=c["guidance_scale"],
                            height=recipe.image.height, width=recipe.image.width, use_resolution_binning=False,
                            max_sequence_length=student.tokenizers[0].prompt_length)

    def model_call(self, student, recipe):
        return SCMCall(student.denoiser, self.constants(student, recipe)).eval()

    def img2img_rows(self, student, recipe):
        """Text-to-image, and per strength 1/N the last step SanaSprintImg2ImgPipeline runs at
        num_inference_steps=N: latents = cos t init + sin t noise (in units of sigma_data, which cancels)."""
        rows = []
        for strength in recipe.img2img.strengths:
            n, start, sched = _img2img_schedule(student, recipe, strength)
            t = sched.timesteps[start:start + 1]
            rows.append((n, _trig_row(_trig(t), math.cos(float(t)), math.sin(float(t)))))
        return _trig_row(self.constants(student, recipe), 0.0, 1.0), rows

    def img2img_oracle(self, student, recipe, prompt, noise, init_latents, strength):
        from diffusers import SanaSprintImg2ImgPipeline

        c = self.constants(student, recipe)
        n, _, _ = _img2img_schedule(student, recipe, strength)
        sd = float(_scheduler(student).config.sigma_data)
        pipe = SanaSprintImg2ImgPipeline(tokenizer=student.tokenizers[0].hf, text_encoder=student.text_encoders[0],
                                         vae=student.vae, transformer=student.denoiser, scheduler=_scheduler(student))
        # prepare_latents takes latents for `image` (its channel check), but prepare_image in front of
        # it would resize them as pixels: they pass through unchanged
        pipe.prepare_image = lambda image, *args, **kwargs: image
        return run_img2img(pipe, "diffusers.pipelines.sana.pipeline_sana_sprint_img2img", noise, prompt=prompt,
                           image=init_latents * sd, strength=strength, num_inference_steps=n,
                           intermediate_timesteps=_call_default("intermediate_timesteps") if n == 2 else None,
                           max_timesteps=c["max_timesteps"], guidance_scale=c["guidance_scale"],
                           height=recipe.image.height, width=recipe.image.width, use_resolution_binning=False,
                           max_sequence_length=student.tokenizers[0].prompt_length)
