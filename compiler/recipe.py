"""Recipes: strict, versioned, frozen dataclasses loaded from YAML.

Every key is checked: an unknown key, a wrong type or a missing field raises RecipeError
naming the file and the key path (e.g. `recipes/sd-turbo.yaml: components.denoiser.precison`).
"""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import yaml

from .errors import RecipeError

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Image:
    height: int = 512
    width: int = 512
    # Several sizes from one bundle, as [height, width] pairs, the first the default (height and
    # width may then be left out). Each size gets its own programs over weights stored once per
    # target (docs/sizes.md); a component whose program does not depend on the size ships once.
    sizes: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class Quantization:
    """How one component is quantized (issue 4). Layered like coremltools.optimize:
    global scheme -> per op type -> per node name, where `null` keeps that op/node in float."""

    # w8a8: int8 weights and activations; w8a16: int8 weights, 16-bit activations (what
    # Snapdragon NPUs run, QNN); w8: int8 weights only; palettize6/4: k-means weight palettes (6
    # or 4 bits per weight, Core ML). Which a target can ship: its `schemes` (exit 2 otherwise).
    scheme: Literal["w8a8", "w8a16", "w8", "palettize6", "palettize4"] = "w8a8"
    op_types: Mapping[str, Optional[str]] = field(default_factory=dict)
    nodes: Mapping[str, Optional[str]] = field(default_factory=dict)
    max_float_weight_fraction: float = 0.0


# The scheme vocabulary, the same on every target: a component's scheme unless the recipe names one.
DEFAULT_SCHEME = {"text_encoder": "w8", "vae_encoder": "w8a8", "denoiser": "w8a8", "vae_decoder": "w8a8"}
CALIBRATED = ("w8a8", "w8a16")   # schemes whose activations are calibrated (the others quantize weights only)


@dataclass(frozen=True)
class Lora:
    # a LoRA's .safetensors (diffusers/PEFT or kohya layout) and the scale it is fused at, as
    # diffusers' fuse_lora(lora_scale=...) (compiler/lora.py)
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class Component:
    precision: Literal["fp32", "int8"] = "fp32"
    quantization: Optional[Quantization] = None
    # LoRAs fused into the weights before export, in order (denoiser and text encoders)
    lora: tuple[Lora, ...] = ()


@dataclass(frozen=True)
class Tiling:
    # Image pixels of one square tile (the decoder ships at this shape) and of the band
    # neighbouring tiles share and blend; both multiples of the decoder's scale factor. Tiles
    # are whole and spread evenly, so 576 covers 1024 px in 2x2 tiles (1.27x the pixels
    # decoded) where 512 would take 3x3 (2.25x).
    tile: int = 576
    overlap: int = 64


def scheme_of(component: str, spec: Component) -> str:
    return (spec.quantization or Quantization(scheme=DEFAULT_SCHEME[component])).scheme


@dataclass(frozen=True)
class Decoder(Component):
    # Folder of the VAE whose decoder ships, relative to the model folder (or to `model` when
    # given; "." is its root): an AutoencoderKL or an AutoencoderTiny ("TAESD") as a drop-in,
    # faster decoder.
    subfolder: str = "vae"
    # Where that VAE comes from when it is not the student's own: a diffusers folder or hub id
    # (e.g. madebyollin/taesd with subfolder "."), read with the same checks as the student.
    model: Optional[str] = None
    # Decode tile by tile (compiler/contract/tiling.py): activations of one tile at any image size.
    tiling: Optional[Tiling] = None


@dataclass(frozen=True)
class Components:
    text_encoder: Component = Component()
    # the encoder of the VAE whose decoder ships; in the bundle only with `img2img`
    vae_encoder: Component = Component()
    denoiser: Component = Component()
    vae_decoder: Decoder = Decoder()


@dataclass(frozen=True)
class Img2Img:
    # Strengths shipped besides text-to-image, each 1/N: the one step diffusers' img2img pipeline
    # of the family runs at num_inference_steps N (0.5: SD-Turbo's `num_inference_steps=2,
    # strength=0.5`). One denoiser program serves them all: the step is an input (docs/img2img.md).
    strengths: tuple[float, ...] = (0.5,)
    # Pictures the encoder and the img2img steps are calibrated and checked on (PNG/JPEG, any size:
    # fitted as a runtime fits an app's picture, compiler/contract/init_image.py)
    images: str = "calibration/init_images"


@dataclass(frozen=True)
class Sampler:
    # LCM's guidance embedding w is computed from this (w = guidance_scale - 1); SANA-Sprint's
    # and guidance-distilled FLUX transformers embed it; the other families reject it because
    # their students are trained without guidance. null: the family pipeline's default.
    guidance_scale: Optional[float] = None
    # trigflow-scm: the TrigFlow time of the one step (SanaSprintPipeline's default 1.57080).
    max_timesteps: Optional[float] = None
    # pixart-onestep: a student distilled at a fixed timestep (DMD-PixArt: 400) instead of the
    # scheduler's trailing t = 999.
    timestep: Optional[int] = None


@dataclass(frozen=True)
class Text:
    # T5 / Gemma prompt length in tokens (the pipelines' max_sequence_length); null: the
    # family's default (PixArt 120, FLUX 256, SANA 300). CLIP encoders keep their own 77.
    max_sequence_length: Optional[int] = None


@dataclass(frozen=True)
class Parity:
    prompts: str = "calibration/heldout.txt"
    num_prompts: int = 2
    seed: int = 0


@dataclass(frozen=True)
class Calibration:
    prompts: str = "calibration/calibration.txt"
    num_prompts: int = 32
    seed: int = 1234


@dataclass(frozen=True)
class Recipe:
    version: int
    name: str
    family: Literal["eps-turbo", "sample-lightning", "lcm", "rectified-flow", "trigflow-scm", "pixart-onestep",
                    "flow-match"]
    model: Optional[str] = None
    image: Image = Image()
    components: Components = Components()
    sampler: Sampler = Sampler()
    text: Text = Text()
    parity: Parity = Parity()
    calibration: Calibration = Calibration()
    # image-to-image: the VAE encoder ships and the denoiser takes the picture's latents
    img2img: Optional[Img2Img] = None
    # Options only one target has, validated by that target's own frozen dataclass:
    # targets: {onnx: {opset: 18}, coreml: {compute_precision: fp16}}
    targets: Mapping[str, Any] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return any(c.precision == "int8" for c in self.component_specs().values())

    def sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every size the bundle ships, the default first."""
        return [tuple(s) for s in self.image.sizes] or [(self.image.height, self.image.width)]

    def at_size(self, height: int, width: int) -> "Recipe":
        """This recipe for one of its sizes alone: what each size's programs are compiled from."""
        return dataclasses.replace(self, image=Image(height, width))

    def component_specs(self) -> dict[str, Component]:
        """The bundle's components in the order they run (the encoder only with img2img)."""
        return {f.name: getattr(self.components, f.name) for f in dataclasses.fields(Components)
                if f.name != "vae_encoder" or self.img2img is not None}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # a recipe without LoRAs or img2img records what it did before they existed
        for spec in out["components"].values():
            if not spec["lora"]:
                del spec["lora"]
        if self.img2img is None:
            del out["img2img"], out["components"]["vae_encoder"]
        if not self.image.sizes:   # a one-size recipe records what it did before sizes existed
            del out["image"]["sizes"]
        else:
            out["image"]["sizes"] = [list(s) for s in self.image.sizes]
        return out

    def target_options(self, name: str) -> Any:
        """The recipe's `targets.<name>` block, or that target's defaults."""
        from .targets.registry import target_class

        return self.targets.get(name) or target_class(name).Options()


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(where, "recipe file not found") from None
    except UnicodeDecodeError:
        raise RecipeError(where, "recipe is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise RecipeError(where, f"invalid YAML{line}") from None
    if data is None:
        raise RecipeError(where, "recipe is empty; it needs at least version, name and family")
    return recipe_from_data(data, where)


# Keys of earlier recipe layouts: exit 2 with the new spelling instead of a bare "unknown key".
MOVED = {"export": "target-specific options moved under `targets`: write `targets: {onnx: {opset: 18}}`"}


def recipe_from_data(data: Any, where: str) -> Recipe:
    """The same strict checks for a recipe that arrives as data (e.g. from a bundle's manifest)."""
    blocks: Any = {}
    if isinstance(data, dict):
        for key, hint in MOVED.items():
            if key in data:
                raise RecipeError(f"{where}: {key}", hint)
        data = dict(data)
        blocks = data.pop("targets", None) or {}
        data = _default_size(data)
    recipe = _build(Recipe, data, where, "")
    recipe = dataclasses.replace(recipe, targets=_target_blocks(blocks, where))
    if recipe.version != RECIPE_VERSION:
        raise RecipeError(f"{where}: version", f"unsupported recipe version {recipe.version}; this compiler reads version {RECIPE_VERSION}")
    _check_values(recipe, where)
    return recipe


def _default_size(data: dict) -> dict:
    """`image: {sizes: [...]}` alone: height and width are the first size's (checked later when given)."""
    image = data.get("image")
    if not isinstance(image, dict) or not isinstance(image.get("sizes"), list) or not image["sizes"]:
        return data
    first = image["sizes"][0]
    if isinstance(first, list) and len(first) == 2:
        image = {"height": first[0], "width": first[1], **image}
    return {**data, "image": image}


def _target_blocks(blocks: Any, where: str) -> dict[str, Any]:
    from .targets.registry import TARGETS, target_class

    if not isinstance(blocks, dict):
        raise RecipeError(f"{where}: targets", f"expected a mapping, got {type(blocks).__name__}")
    out = {}
    for name in sorted(map(str, blocks)):
        if name not in TARGETS:
            raise RecipeError(f"{where}: targets.{name}", f"unknown target (known: {', '.join(sorted(TARGETS))})")
        options = _build(target_class(name).Options, blocks[name] or {}, where, f"targets.{name}")
        for key, message in options.problems():
            raise RecipeError(f"{where}: targets.{name}.{key}", message)
        out[name] = options
    return out


def override(recipe: Recipe, **changes: Any) -> Recipe:
    return dataclasses.replace(recipe, **changes)


MAX_IMAGE_SIDE = 4096


def _check_values(r: Recipe, where: str) -> None:
    def bad(key: str, msg: str) -> RecipeError:
        return RecipeError(f"{where}: {key}", msg)

    for name in ("vae_decoder", "vae_encoder"):
        if getattr(r.components, name).lora:
            raise bad(f"components.{name}.lora", "LoRAs apply to the denoiser and the text encoders")
    _check_img2img(r, bad)
    _check_sizes(r, bad)
    if r.text.max_sequence_length is not None and not 1 <= r.text.max_sequence_length <= 4096:
        raise bad("text.max_sequence_length", f"must be within [1, 4096], got {r.text.max_sequence_length}")
    if r.parity.num_prompts < 1:
        raise bad("parity.num_prompts", "must be at least 1")
    if r.calibration.num_prompts < 1:
        raise bad("calibration.num_prompts", "must be at least 1")
    sub = Path(r.components.vae_decoder.subfolder)
    if sub.is_absolute() or ".." in sub.parts:
        raise bad("components.vae_decoder.subfolder", "must be a folder inside the model (no absolute path, no ..)")
    if r.components.vae_decoder.model == "":
        raise bad("components.vae_decoder.model", "is empty; remove it to ship the student's own decoder")
    tiling = r.components.vae_decoder.tiling
    if tiling is not None:
        if tiling.tile <= 0 or not 0 <= 2 * tiling.overlap <= tiling.tile:
            raise bad("components.vae_decoder.tiling", f"needs tile > 0 and 0 <= overlap <= tile / 2, got tile "
                                                       f"{tiling.tile}, overlap {tiling.overlap}")
        for h, w in r.sizes():
            if tiling.tile >= max(h, w):
                raise bad("components.vae_decoder.tiling.tile", f"{tiling.tile} covers the whole {h}x{w} image; "
                                                                f"remove tiling")
            if tiling.tile > min(h, w):
                raise bad("components.vae_decoder.tiling.tile", f"{tiling.tile} is taller or wider than the {h}x{w} "
                                                                f"image; tiles must fit it both ways")
    for name, comp in r.component_specs().items():
        q = comp.quantization
        if comp.precision == "fp32" and q is not None:
            raise bad(f"components.{name}.quantization", "given but precision is fp32; set precision: int8 or remove it")
        if q is not None and not 0.0 <= q.max_float_weight_fraction <= 1.0:
            raise bad(f"components.{name}.quantization.max_float_weight_fraction", "must be within [0, 1]")


def _check_sizes(r: Recipe, bad) -> None:
    for i, size in enumerate(r.image.sizes):
        if len(size) != 2:
            raise bad(f"image.sizes[{i}]", f"must be [height, width], got {list(size)}")
        for side in size:
            _check_side(bad, f"image.sizes[{i}]", side)
        if size in r.image.sizes[:i]:
            raise bad(f"image.sizes[{i}]", f"{size[0]}x{size[1]} is listed twice")
    for key in ("height", "width"):
        _check_side(bad, f"image.{key}", getattr(r.image, key))
    if r.image.sizes and (r.image.height, r.image.width) != tuple(r.image.sizes[0]):
        raise bad("image.height", f"{r.image.height}x{r.image.width} is not image.sizes[0] "
                                  f"{list(r.image.sizes[0])}: leave height and width out, the first size is the default")


def _check_side(bad, key: str, value: int) -> None:
    if value <= 0 or value % 8:
        raise bad(key, f"must be a positive multiple of 8, got {value}")
    if value > MAX_IMAGE_SIDE:
        raise bad(key, f"{value} is over {MAX_IMAGE_SIDE} pixels, beyond what any one-step student "
                       f"generates (and than a phone holds activations for)")


MAX_IMG2IMG_STEPS = 1000


def img2img_steps(strength: float) -> int | None:
    """N when strength is 1/N (within 1e-6) for an integer 2 <= N <= MAX_IMG2IMG_STEPS, else None."""
    if not 0 < strength < 1:
        return None
    n = round(1 / strength)
    return n if 2 <= n <= MAX_IMG2IMG_STEPS and abs(n * strength - 1) <= 1e-6 else None


def _check_img2img(r: Recipe, bad) -> None:
    if r.img2img is None:
        if r.components.vae_encoder != Component():
            raise bad("components.vae_encoder", "the encoder ships only with img2img; add `img2img:` or remove it")
        return
    strengths = r.img2img.strengths
    if not strengths:
        raise bad("img2img.strengths", "lists no strength; remove `img2img` for text-to-image only")
    for i, s in enumerate(strengths):
        if img2img_steps(s) is None:
            raise bad(f"img2img.strengths[{i}]", f"{s} is not 1/N for an integer N in [2, {MAX_IMG2IMG_STEPS}] "
                                                 f"(0.5, 0.25, 0.2, ...): a one-step student takes one step of an "
                                                 f"N-step schedule")
        if img2img_steps(s) in [img2img_steps(t) for t in strengths[:i]]:
            raise bad(f"img2img.strengths[{i}]", f"{s} is listed twice")
    if r.components.vae_decoder.tiling is not None:
        raise bad("img2img", "not available with a tiled decoder yet (the encoder would need tiles too)")


def _build(cls: Any, data: Any, where: str, path: str) -> Any:
    """Recursively build `cls` from plain YAML data, rejecting anything not declared."""
    label = path or "(top level)"
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: {label}", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RecipeError(f"{where}: {key}", f"unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: {key}", "missing required field")
            continue
        kwargs[name] = _coerce(hints[name], data[name], where, key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise RecipeError(f"{where}: {key}", f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (Mapping, dict, typing.Mapping, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: {key}", f"expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, where, f"{key}.{k}") for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if origin is tuple:   # tuple[X, ...]: a YAML list, kept immutable
        if not isinstance(value, list):
            raise RecipeError(f"{where}: {key}", f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(typing.get_args(tp)[0], v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise RecipeError(f"{where}: {key}", f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"recipe schema uses unsupported type {tp!r} at {key}")
