"""Stage 2, wrap: the student becomes three exportable graphs with fixed, documented I/O.

    text_encoder: input_ids[, input_ids_2] (int64 [1, L])      -> prompt_embeds[, pooled_prompt_embeds]
    denoiser:     prompt_embeds[, pooled_prompt_embeds], noise  -> latents   (family step baked in)
    vae_decoder:  latents                                       -> image     (float32 [1, 3, H, W] in [0, 1])

`noise` is unit Gaussian noise from compiler.noise (the same on every platform).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import RecipeError
from .families import get_family
from .load import Student
from .recipe import Recipe
from .wiring import Wiring

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")


class TextEncoderGraph(torch.nn.Module):
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


class DecoderGraph(torch.nn.Module):
    """latents (UNet space) -> image in [0, 1], as the pipelines' decode + postprocess."""

    def __init__(self, vae, scaling_factor: float):
        super().__init__()
        self.vae = vae
        self.inv_scale = 1.0 / scaling_factor

    def forward(self, latents):
        image = self.vae.decode(latents * self.inv_scale, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)


@dataclass
class Graph:
    name: str
    module: torch.nn.Module
    example_inputs: tuple
    input_names: list[str]
    output_names: list[str]


@dataclass
class Wrapped:
    graphs: dict[str, Graph]
    constants: dict
    max_length: int
    latent_shape: tuple[int, ...]
    wiring: Wiring       # taken at wrap time: later stages release graphs to free memory


def wrap(student: Student, recipe: Recipe) -> Wrapped:
    family = get_family(recipe.family)
    constants = family.constants(student, recipe)
    L = int(student.tokenizers[0].model_max_length)
    ids = torch.zeros(1, L, dtype=torch.int64)
    f = student.vae_scale_factor
    for key in ("height", "width"):
        if getattr(recipe.image, key) % f:
            raise RecipeError(f"image.{key}", f"{getattr(recipe.image, key)} is not a multiple of the decoder's scale "
                                              f"factor {f} ({student.source})")
    latent_shape = student.latent_shape(recipe.image.height, recipe.image.width)
    noise = torch.zeros(latent_shape)
    text = TextEncoderGraph(student.text_encoders).eval()
    with torch.no_grad():
        text_out = text(ids, ids) if student.dual else (text(ids),)
    text_in_names = ["input_ids", "input_ids_2"] if student.dual else ["input_ids"]
    embed_names = ["prompt_embeds", "pooled_prompt_embeds"] if student.dual else ["prompt_embeds"]
    # Two tensors, not one passed twice: torch.export would merge the two inputs into one, and the
    # SDXL tokenizers pad differently, so input_ids would be ignored (tests/test_compile_onnx.py).
    graphs = {
        "text_encoder": Graph("text_encoder", text, (ids, ids.clone()) if student.dual else (ids,), text_in_names,
                              embed_names),
        "denoiser": Graph("denoiser", family.denoiser(student, recipe),
                          (text_out[0], noise, text_out[1]) if student.dual else (text_out[0], noise),
                          ["prompt_embeds", "noise", "pooled_prompt_embeds"][: 3 if student.dual else 2], ["latents"]),
        "vae_decoder": Graph("vae_decoder", DecoderGraph(student.vae, student.scaling_factor).eval(), (noise,),
                             ["latents"], ["image"]),
    }
    return Wrapped(graphs, constants, L, latent_shape, Wiring.from_graphs(graphs))
