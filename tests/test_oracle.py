"""Oracle rule (shared/FAMILIES.md): the fp32 torch graphs the compiler exports (compiler.wrap +
the family's baked step) reproduce diffusers' own pipeline at num_inference_steps=1 with the
same `latents=` noise, to float32 round-off. rectified-flow has no diffusers pipeline; it is
checked against the InstaFlow reference formula x0 = z + v(z, t=1000) run on the UNet directly."""
from __future__ import annotations

import pytest
import torch

from compiler.contract import noise
from compiler.families import get_family
from compiler.load import load_student
from compiler.prompts import tokenize
from compiler.recipe import load_recipe
from compiler.wrap import wrap
from support import family_of, write_recipe

# fp32 round-off between two orderings of the same arithmetic: observed ~5e-7 on images in [0, 1].
MAX_ABS_ROUNDOFF = 1e-4
# A different noise must move the image by far more than the round-off gate, or the
# comparison above would pass vacuously.
MIN_SENSITIVITY = 100 * MAX_ABS_ROUNDOFF

PROMPTS = (
    "a red fox in the snow",
    # longer than the tiny tokenizer's 16 tokens: both sides must truncate the same way
    "a small blue car on a street at night with a large green tree and a white house "
    "above a yellow mountain in the sky",
)

# (student layout, decoder subfolder): every layout with the AutoencoderKL decoder, and the
# AutoencoderTiny drop-in decoder for an SD, an SDXL, the LCM and the flow layout; the
# transformer families with their own decoders (SANA-Sprint: AutoencoderDC).
CASES = [
    ("eps-turbo", "vae"), ("eps-turbo", "vae_tiny"),
    ("eps-turbo-xl", "vae"), ("eps-turbo-xl", "vae_tiny"),
    ("sample-lightning", "vae"),
    ("lcm", "vae"), ("lcm", "vae_tiny"),
    ("rectified-flow", "vae"), ("rectified-flow", "vae_tiny"),
    ("pixart-onestep", "vae"), ("flow-match", "vae"), ("trigflow-scm", "vae"),
]
TRANSFORMERS = ("pixart-onestep", "flow-match", "trigflow-scm")
# T5 / Gemma prompt length of the tiny transformer students (the second prompt is longer)
TEXT = "text: {max_sequence_length: 16}\n"


def _setup(students, tmp_path, kind, decoder, extra: str = ""):
    family = family_of(kind)
    text = TEXT if kind in TRANSFORMERS else ""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family,
                                      extra=f"components: {{vae_decoder: {{subfolder: {decoder}}}}}\n{text}{extra}"))
    student = load_student(str(students[kind]), family, decoder, None, recipe)
    return family, student, recipe, wrap(student, recipe)


def _wrapped_image(wrapped, student, prompt, z):
    """The three graphs exactly as exported, chained in torch by the wiring's names:
    tokens -> embeds -> latents -> image. Returns (image, text encoder outputs, latents)."""
    graphs = wrapped.graphs
    tokens = tokenize(student.tokenizers, prompt)
    values = {n: torch.from_numpy(v) for n, v in tokens.ids.items()}
    with torch.no_grad():
        text = graphs["text_encoder"]
        embeds = text.module(*[values[n] for n in text.input_names])
        embeds = embeds if isinstance(embeds, tuple) else (embeds,)
        values.update(zip(text.output_names, embeds), noise=z)
        latents = graphs["denoiser"].module(*[values[n] for n in graphs["denoiser"].input_names])
        return graphs["vae_decoder"].module(latents), embeds, latents


def _noise(wrapped, seed):
    return torch.from_numpy(noise.gaussian(seed, wrapped.latent_shape))


@pytest.mark.parametrize("kind, decoder", [c for c in CASES if c[0] != "rectified-flow"],
                         ids=lambda v: str(v))
def test_wrapped_graph_matches_diffusers_pipeline_at_one_step(students, tmp_path, kind, decoder):
    family, student, recipe, wrapped = _setup(students, tmp_path, kind, decoder)
    oracle = get_family(family).oracle
    for i, prompt in enumerate(PROMPTS):
        z = _noise(wrapped, seed=10 + i)
        ours, _, _ = _wrapped_image(wrapped, student, prompt, z)
        theirs = oracle(student, recipe, prompt, z.clone())
        assert theirs is not None, f"family {family} exposes no diffusers oracle"
        assert ours.shape == theirs.shape == (1, 3, recipe.image.height, recipe.image.width)
        assert bool(torch.isfinite(ours).all())
        err = (ours - theirs.float()).abs().max().item()
        assert err < MAX_ABS_ROUNDOFF, f"{kind}/{decoder} prompt {i}: max-abs {err:.3g} vs pipeline"
        # the image is not flat (a constant image would match anything)
        assert ours.std().item() > 1e-2


@pytest.mark.parametrize("kind, decoder", [("eps-turbo", "vae"), ("eps-turbo-xl", "vae_tiny"), ("lcm", "vae"),
                                          *((k, "vae") for k in TRANSFORMERS)], ids=lambda v: str(v))
def test_oracle_comparison_is_sensitive_to_the_noise(students, tmp_path, kind, decoder):
    family, student, recipe, wrapped = _setup(students, tmp_path, kind, decoder)
    ours, _, _ = _wrapped_image(wrapped, student, PROMPTS[0], _noise(wrapped, seed=10))
    theirs = get_family(family).oracle(student, recipe, PROMPTS[0], _noise(wrapped, seed=11))
    assert (ours - theirs.float()).abs().max().item() > MIN_SENSITIVITY


@pytest.mark.parametrize("decoder", ["vae", "vae_tiny"])
def test_rectified_flow_matches_instaflow_reference_formula(students, tmp_path, decoder):
    family, student, recipe, wrapped = _setup(students, tmp_path, "rectified-flow", decoder)
    assert get_family(family).oracle(student, recipe, PROMPTS[0], _noise(wrapped, 0)) is None
    assert wrapped.constants["timestep"] == 1000.0 and wrapped.constants["dt"] == 1.0
    for i, prompt in enumerate(PROMPTS):
        z = _noise(wrapped, seed=20 + i)
        ours, embeds, latents = _wrapped_image(wrapped, student, prompt, z)
        with torch.no_grad():
            # InstaFlow reference: t = 1000 at the noise end, one Euler step of dt = 1.
            t = torch.full((1,), 1000.0)
            v = student.denoiser(z, t, encoder_hidden_states=embeds[0]).sample
            x0 = z + 1.0 * v
            image = student.vae.decode(x0 / student.scaling_factor).sample
            image = (image / 2 + 0.5).clamp(0, 1)
        assert (latents - x0).abs().max().item() < MAX_ABS_ROUNDOFF
        assert (ours - image).abs().max().item() < MAX_ABS_ROUNDOFF
        assert ours.std().item() > 1e-2
        # the velocity is not negligible: x0 really differs from the noise
        assert (x0 - z).abs().max().item() > MIN_SENSITIVITY


def _perturbed_denoiser(kind, student, recipe, wrapped):
    """The family's baked step with one sampler constant a little off."""
    from compiler.families import flow_match, pixart, trigflow

    c = dict(wrapped.constants)
    if kind == "trigflow-scm":   # the TrigFlow time of the step: 1.5 instead of the pipeline's 1.57080
        import dataclasses

        late = dataclasses.replace(recipe, sampler=dataclasses.replace(recipe.sampler, max_timesteps=1.5))
        return trigflow.SCMStep(student.denoiser, get_family(kind).constants(student, late))
    if kind == "pixart-onestep":
        return pixart.PixArtStep(student.denoiser, {**c, "timestep": 998}, student.latent_channels)
    return flow_match.FlowStep(student.denoiser, {**c, "timestep": 999.0}, wrapped.latent_shape,
                               student.tokenizers[1].max_length)


@pytest.mark.parametrize("kind", TRANSFORMERS)
def test_transformer_oracle_fails_on_a_perturbed_sampler_constant(students, tmp_path, kind):
    family, student, recipe, wrapped = _setup(students, tmp_path, kind, "vae")
    z = _noise(wrapped, seed=10)
    theirs = get_family(family).oracle(student, recipe, PROMPTS[0], z.clone())
    exact, _, _ = _wrapped_image(wrapped, student, PROMPTS[0], z)
    assert (exact - theirs.float()).abs().max().item() < MAX_ABS_ROUNDOFF
    wrapped.graphs["denoiser"].module = _perturbed_denoiser(kind, student, recipe, wrapped).eval()
    ours, _, _ = _wrapped_image(wrapped, student, PROMPTS[0], z)
    assert (ours - theirs.float()).abs().max().item() > 10 * MAX_ABS_ROUNDOFF   # the gate fails, with margin


@pytest.mark.parametrize("scheduler, overrides, timestep", [
    ("DDPMScheduler", {"prediction_type": "epsilon"}, None),
    ("DDIMScheduler", {"prediction_type": "epsilon"}, None),
    ("EulerDiscreteScheduler", {"prediction_type": "epsilon"}, None),
    ("DDPMScheduler", {"prediction_type": "epsilon", "clip_sample": True}, None),
    ("DDPMScheduler", {"prediction_type": "epsilon"}, 400),
    ("DDPMScheduler", {"prediction_type": "sample"}, None),
])
def test_pixart_step_matches_the_pipeline_latents_for_each_student_scheduler(students, tmp_path, scheduler, overrides,
                                                                            timestep):
    """The latents (not the image: eps-prediction at t = 999 multiplies by 1/sqrt(abar) = 157 and
    saturates a random decoder's image) for every scheduler a one-step PixArt student may ship."""
    import diffusers
    from diffusers import PixArtAlphaPipeline

    folder = tmp_path / "pixart"
    import shutil

    shutil.copytree(students["pixart-onestep"], folder)
    config = diffusers.DDPMScheduler.load_config(folder / "scheduler")
    getattr(diffusers, scheduler).from_config(config, **overrides).save_pretrained(folder / "scheduler")
    extra = f"sampler: {{timestep: {timestep}}}\n" if timestep else ""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", "pixart-onestep", extra=TEXT + extra))
    student = load_student(str(folder), "pixart-onestep", "vae", None, recipe)
    wrapped = wrap(student, recipe)
    z = _noise(wrapped, seed=10)
    _, _, latents = _wrapped_image(wrapped, student, PROMPTS[0], z)
    pipe = PixArtAlphaPipeline(tokenizer=student.tokenizers[0].hf, text_encoder=student.text_encoders[0],
                               vae=student.vae, transformer=student.denoiser,
                               scheduler=getattr(diffusers, scheduler).from_config(student.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    steps = {"timesteps": [timestep], "num_inference_steps": None} if timestep else {"num_inference_steps": 1}
    with torch.no_grad():
        theirs = pipe(PROMPTS[0], guidance_scale=1.0, latents=z.clone(), height=recipe.image.height,
                      width=recipe.image.width, use_resolution_binning=False, clean_caption=False,
                      max_sequence_length=16, output_type="latent", **steps).images
    # eps-prediction divides by sqrt(abar) (157 at t = 999): the transformer's last-bit differences
    # between CPUs' kernels grow by that much even where clip_sample then bounds the latents to 1
    gain = 1 / pipe.scheduler.alphas_cumprod[timestep or 999].sqrt().item()
    scale = theirs.abs().max().item()
    assert (latents - theirs).abs().max().item() <= 1e-6 * max(scale, gain, 1.0)
    assert wrapped.constants["timestep"] == (timestep or 999)
