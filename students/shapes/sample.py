"""Load the shapes student and sample it: InstaFlow one step, and the multi-step teacher ODE.

Conventions (rectified-flow family): latents at t=1000 are noise z ~ N(0, I), at t=0 data;
the UNet predicts v = x_data - z, so one step is x0 = z + v(z, 1000) and the N-step Euler
reference is latents += (1/N) v(latents, t_i) with t_i = (1 - i/N) * 1000.
Images: vae.decode(x0 / scaling_factor).sample, mapped from [-1, 1] to [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compiler.contract.noise import gaussian

T_MAX = 1000.0
LATENT_SHAPE = (4, 16, 16)


@dataclass
class Components:
    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module


def load(path: str | Path, unet_subfolder: str = "unet") -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    comps = Components(
        CLIPTokenizer.from_pretrained(path / "tokenizer"),
        CLIPTextModel.from_pretrained(path / "text_encoder").eval(),
        UNet2DConditionModel.from_pretrained(path / unet_subfolder).eval(),
        AutoencoderKL.from_pretrained(path / "vae").eval(),
    )
    return comps


def token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Exactly what StableDiffusionPipeline.encode_prompt feeds the text encoder."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def encode_text(c: Components, prompts: list[str]) -> torch.Tensor:
    dev = next(c.text_encoder.parameters()).device
    return c.text_encoder(token_ids(c.tokenizer, prompts).to(dev)).last_hidden_state


def noise(seeds: list[int], shape=LATENT_SHAPE) -> torch.Tensor:
    """Portable seeded noise (compiler.contract.noise), one latent per seed."""
    return torch.from_numpy(np.stack([gaussian(s, shape) for s in seeds]))


def velocity(unet, latents: torch.Tensor, t: float, emb: torch.Tensor) -> torch.Tensor:
    ts = torch.full((latents.shape[0],), float(t), device=latents.device)
    return unet(latents, ts, encoder_hidden_states=emb).sample


@torch.no_grad()
def euler(unet, z: torch.Tensor, emb: torch.Tensor, steps: int) -> torch.Tensor:
    x = z.clone()
    for i in range(steps):
        x = x + velocity(unet, x, (1.0 - i / steps) * T_MAX, emb) / steps
    return x


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> np.ndarray:
    img = vae.decode(latents / vae.config.scaling_factor).sample
    img = ((img.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return np.round(img * 255).astype(np.uint8)


@torch.no_grad()
def generate(c: Components, prompts: list[str], seeds: list[int], steps: int = 1, unet=None,
             batch: int = 64) -> np.ndarray:
    """uint8 NxHxWx3 images; steps=1 is the student's one step, more is the Euler ODE."""
    unet = unet or c.unet
    dev = next(unet.parameters()).device
    out = []
    for i in range(0, len(prompts), batch):
        emb = encode_text(c, prompts[i:i + batch])
        z = noise(seeds[i:i + batch]).to(dev)
        out.append(decode(c.vae, euler(unet, z, emb, steps)))
    return np.concatenate(out)
