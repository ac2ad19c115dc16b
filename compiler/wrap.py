"""Stage 2, wrap: the student becomes three exportable graphs with fixed, documented I/O.

    text_encoder: input_ids[, input_ids_2] (int64 [1, L])      -> prompt_embeds[, pooled_prompt_embeds]
    denoiser:     prompt_embeds[, pooled_prompt_embeds], noise  -> latents   (family step baked in)
    vae_decoder:  latents                                       -> image     (float32 [1, 3, H, W] in [0, 1])

With `img2img` a fourth graph, and the denoiser takes the picture's latents and the step row:

    vae_encoder:  image (float32 [1, 3, H, W] in [0, 1])        -> init_latents
    denoiser:     ..., noise, init_latents, step (float32 [6])  -> latents   (families/stepped.py)

`noise` is unit Gaussian noise from compiler.contract.noise (the same on every platform).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import RecipeError
from .families import get_family, img2img_family, stepped
from .contract.init_image import Img2Img
from .student import Student
from .recipe import Recipe
from .contract.tiling import TilePlan
from .contract.wiring import Wiring



class VaePart(torch.nn.Module):
    """One half of a VAE as its own graph; the exported file holds only that half's weights."""
    PARTS: tuple[str, ...] = ()

    def __init__(self, vae, scaling_factor: float):
        super().__init__()
        self.vae = vae
        self.scale = scaling_factor
        self.shift = float(vae.config.get("shift_factor") or 0.0)   # FLUX's VAE has a shift; the others none

    def shipped_parameters(self):
        for name in self.PARTS:
            part = getattr(self.vae, name, None)
            if isinstance(part, torch.nn.Module):
                yield from part.parameters()


class DecoderGraph(VaePart):
    """latents (denoiser space) -> image in [0, 1], as the pipelines' decode + postprocess:
    latents / scaling_factor + shift_factor."""
    PARTS = ("post_quant_conv", "decoder")

    def forward(self, latents):
        z = latents * (1.0 / self.scale)
        image = self.vae.decode(z + self.shift if self.shift else z, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)


class EncoderGraph(VaePart):
    """image in [0, 1] -> latents in the denoiser's space, as the img2img pipelines prepare them:
    the encoder's mean (diffusers' retrieve_latents with sample_mode="argmax": no second noise to
    carry to the phone), then (z - shift_factor) * scaling_factor."""
    PARTS = ("encoder", "quant_conv")

    def forward(self, image):
        z = self.vae.encode(image * 2 - 1, return_dict=False)[0]
        z = z if isinstance(z, torch.Tensor) else z.mode()   # AutoencoderKL: a DiagonalGaussianDistribution
        return ((z - self.shift) if self.shift else z) * self.scale


@dataclass
class Graph:
    name: str
    module: torch.nn.Module | None     # None while the component's weights are not loaded
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
    tiling: dict[str, TilePlan]   # component -> its tile plan; the graph takes one tile
    img2img: Img2Img | None = None


def wrap(student: Student, recipe: Recipe) -> Wrapped:
    family = get_family(recipe.family)
    constants = family.constants(student, recipe)
    f = student.vae_scale_factor
    check_sizes(student, recipe)
    latent_shape = student.latent_shape(recipe.image.height, recipe.image.width)
    # Every example input its own tensor: torch.export merges inputs that are one tensor, and the
    # SDXL tokenizers pad differently, so input_ids would be ignored (tests/targets/onnx/test_compile_onnx.py).
    tokens = {name: (torch.ones if name.startswith("attention_mask") else torch.zeros)(1, tok.max_length, dtype=torch.int64)
              for tok in student.tokenizers for name in tok.inputs}
    student.load("text_encoder")   # its example outputs are the denoiser's example inputs
    text, text_outputs = family.text_encoder(student, recipe)
    with torch.no_grad():
        out = text(*tokens.values())
    values = {**tokens, **dict(zip(text_outputs, out if isinstance(out, tuple) else (out,))),
              "noise": torch.zeros(latent_shape), "init_latents": torch.zeros(latent_shape)}
    denoiser_inputs = family.denoiser_inputs(student)
    img2img = None
    if recipe.img2img is not None:
        img2img = stepped.img2img(img2img_family(recipe.family), student, recipe, "vae_encoder")
        denoiser_inputs = denoiser_inputs + stepped.STEP_INPUTS
        values["step"] = torch.from_numpy(img2img.row(None))
    tiling = decoder_tiling(recipe, latent_shape, f)
    decoder_input = torch.zeros(tiling.latent_shape[:-2] + tiling.tile) if tiling else values["noise"]
    graphs = {"text_encoder": Graph("text_encoder", text, tuple(tokens.values()), list(tokens), text_outputs)}
    if img2img:
        picture = torch.full((1, 3, recipe.image.height, recipe.image.width), 0.5)
        graphs["vae_encoder"] = Graph("vae_encoder", None, (picture,), ["image"], ["init_latents"])
    graphs["denoiser"] = Graph("denoiser", None, tuple(values[n] for n in denoiser_inputs), denoiser_inputs,
                               ["latents"])
    graphs["vae_decoder"] = Graph("vae_decoder", None, (decoder_input,), ["latents"], ["image"])
    for name in list(graphs)[1:]:
        if student.loaded(name):
            graphs[name].module = graph_module(student, recipe, name)
    return Wrapped(graphs, constants, student.tokenizers[0].max_length, latent_shape, Wiring.from_graphs(graphs),
                   {"vae_decoder": tiling} if tiling else {}, img2img)


def check_sizes(student: Student, recipe: Recipe) -> None:
    """Every size the recipe ships must be whole latent tokens: a multiple of the decoder's scale
    factor, times the transformer's patch size and the family's packing (exit 2, before any export)."""
    f = student.vae_scale_factor
    patch = int(getattr(student.denoiser.config, "patch_size", None) or 1)
    multiple = f * patch * get_family(recipe.family).latent_packing
    why = (f"the decoder's scale factor {f}" if multiple == f else
           f"{multiple} (the decoder's scale factor {f} x {multiple // f} latent pixels per token)")
    sides = ([(f"image.sizes[{i}]", side) for i, size in enumerate(recipe.image.sizes) for side in size] or
             [("image.height", recipe.image.height), ("image.width", recipe.image.width)])
    for key, side in sides:
        if side % multiple:
            raise RecipeError(key, f"{side} is not a multiple of {why} ({student.source})")


def graph_module(student: Student, recipe: Recipe, name: str) -> torch.nn.Module:
    """The exportable module of one component, over the student's loaded weights."""
    family = get_family(recipe.family)
    if name == "text_encoder":
        return family.text_encoder(student, recipe)[0]
    if name == "denoiser":
        if recipe.img2img:
            return stepped.denoiser(img2img_family(recipe.family), student, recipe)
        return family.denoiser(student, recipe)
    if name == "vae_encoder":
        return EncoderGraph(student.vae, student.scaling_factor).eval()
    return DecoderGraph(student.vae, student.scaling_factor).eval()


def decoder_tiling(recipe: Recipe, latent_shape: tuple[int, ...], scale: int) -> TilePlan | None:
    tiling = recipe.components.vae_decoder.tiling
    if tiling is None:
        return None
    for key in ("tile", "overlap"):
        if getattr(tiling, key) % scale:
            raise RecipeError(f"components.vae_decoder.tiling.{key}", f"{getattr(tiling, key)} is not a multiple of "
                                                                      f"the decoder's scale factor {scale}")
    return TilePlan.for_latent(latent_shape, tiling.tile // scale, tiling.overlap // scale, scale)
