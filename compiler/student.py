"""A student in memory: its tokenizers, and its three components' modules, each either loaded or a
weightless skeleton (its class and config on the meta device) until `load(component)`, so a compile
holds one component's weights at a time. load.py finds and checks the folders; this module only
reads weights. It imports nothing of the compiler but its errors, so the family interface can name
it without an import circle (families -> student, load -> families)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError, first_line

# in the order they run; a bundle has the encoder only with img2img (Recipe.component_specs)
COMPONENTS = ("text_encoder", "vae_encoder", "denoiser", "vae_decoder")


@dataclass
class Student:
    source: str                      # the folder it was read from
    family: str
    tokenizers: list[Any]            # compiler.contract.tokenizers.PromptTokenizer, one per text encoder
    tokenizer_dirs: list[Path]
    text_encoders: list[Any]
    denoiser: Any                     # UNet2DConditionModel or a transformer (the family's Layout)
    vae: Any                          # AutoencoderKL, AutoencoderTiny or AutoencoderDC (its decoder ships)
    vae_subfolder: str
    scheduler_config: dict = field(default_factory=dict)
    vae_source: str = ""              # the folder vae_subfolder is in: `source`, or the recipe's decoder model
    # component -> [(root, subfolder, class)] its weights load from; a component not loaded (a lazy
    # student's, or one released) is a weightless skeleton until `load(component)`
    sources: dict = field(default_factory=dict)
    _loaded: set = field(default_factory=set)
    # called with (component, modules) as a component's weights are read, before anything sees them
    # (compiler.lora.Fuser: the recipe's LoRAs fused in)
    prepare: Any = None

    def __post_init__(self):
        if not self.sources:    # built from modules in memory (the benchmarks' random students)
            self._loaded = set(COMPONENTS)

    def loaded(self, component: str) -> bool:
        return component in self._loaded

    def load(self, component: str) -> None:
        """Read one component's weights (a lazy student); a no-op when they are in memory."""
        if component in self._loaded:
            return
        if component not in self.sources:
            raise RuntimeError(f"{component} was released and has no files to be read again from")
        modules = [_load(root, sub, cls) for root, sub, cls in self.sources[component]]
        if self.prepare:
            self.prepare(component, modules)
        self._set(component, modules)
        self._loaded.add(component)

    def release(self, component: str) -> None:
        """Drop one component's weights: its module becomes a weightless skeleton (class and config
        stay readable); whatever else holds the module keeps it alive."""
        self._set(component, [_skeleton(type(m), m.config) for m in self._modules(component)])
        self._loaded.discard(component)

    def _modules(self, component: str) -> list:
        return {"text_encoder": self.text_encoders, "denoiser": [self.denoiser], "vae_decoder": [self.vae],
                "vae_encoder": [self.vae]}[component]

    def _set(self, component: str, modules: list) -> None:
        if component == "text_encoder":
            self.text_encoders = modules
        elif component == "denoiser":
            self.denoiser = modules[0]
        else:   # the VAE: its encoder and decoder are two components of one module
            self.vae = modules[0]
            self._loaded -= {"vae_encoder", "vae_decoder"}

    @property
    def vae_label(self) -> str:
        """Where the shipped decoder came from, as a user would name it."""
        own = not self.vae_source or self.vae_source == self.source
        return self.vae_subfolder if own else f"{self.vae_source}/{self.vae_subfolder}".rstrip("/.")

    @property
    def dual(self) -> bool:
        """SDXL layout: two text encoders and pooled text embeddings."""
        return len(self.text_encoders) == 2

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        cfg = self.vae.config
        blocks = cfg.get("block_out_channels") or cfg.get("decoder_block_out_channels")
        return 2 ** (len(blocks) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.get("scaling_factor", 1.0))

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int, int]:
        f = self.vae_scale_factor
        return (1, self.latent_channels, height // f, width // f)


_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
PLAIN_WEIGHTS = ("model", "diffusion_pytorch_model")


def _weight_variant(folder: Path) -> str | None:
    """None when the folder has plain weights (model.safetensors, diffusion_pytorch_model.safetensors,
    sharded or not); else the one variant its files carry, as a hub download with variant="fp16"
    arrives (diffusion_pytorch_model.fp16.safetensors only). Several variants and no plain weights
    are ambiguous: a ModelError."""
    variants = set()
    for p in folder.glob("*.safetensors"):
        stem = _SHARD.sub("", p.name.removesuffix(".safetensors"))
        base, _, variant = stem.partition(".")
        if base in PLAIN_WEIGHTS:
            if not variant:
                return None
            variants.add(variant)
    if len(variants) > 1:
        raise ModelError(str(folder), f"weights in several variants ({', '.join(sorted(variants))}) and none plain: "
                                      "keep the one to compile")
    return variants.pop() if variants else None


def _load(root: Path, sub: str, cls: Any) -> Any:
    import torch

    # fp32 as each tensor is read: a bf16 checkpoint (as the hub ships most) loaded as stored and
    # cast afterwards would hold both copies at once (15 GB instead of 10 for a Gemma-2-2B)
    dtype = {"torch_dtype": torch.float32} if hasattr(cls, "load_config") else {"dtype": torch.float32}
    variant = _weight_variant(root / sub)
    try:
        model = cls.from_pretrained(str(root / sub), use_safetensors=True, variant=variant, **dtype)
    except Exception as exc:
        raise ModelError(str(root / sub), f"{cls.__name__} could not load it: {first_line(exc)}") from None
    model = model.eval().float()
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise ModelError(str(root / sub), f"weight {name} contains NaN or Inf")
    return model


def _skeleton(cls: Any, config: Any) -> Any:
    import torch

    with torch.device("meta"):
        return (cls.from_config(config) if hasattr(cls, "load_config") else cls(config)).eval()
