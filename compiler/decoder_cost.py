"""What a tiny decoder costs in image quality. A recipe that ships an AutoencoderTiny (TAESD
class) for speed gets, on its held-out prompts, the tiny decoder's image against the full
AutoencoderKL decoder's image from the same latents, when the model folder has one (`vae/`).
Informational, not gated: the recipe chose the trade; the manifest and report show its price."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import compare, ssim

FULL_DECODER = "vae"


@dataclass
class DecoderCost:
    shipped: str
    compared_with: str
    prompts: list[str]
    full: list[np.ndarray]      # [1, 3, H, W] in [0, 1], per held-out prompt
    tiny: list[np.ndarray]

    def as_dict(self) -> dict:
        rows = [{"prompt": p, "psnr_db": round(compare(f, t, data_range=1.0).psnr_db, 4),
                 "ssim": round(ssim(f, t), 6)} for p, f, t in zip(self.prompts, self.full, self.tiny)]
        return {"shipped": self.shipped, "compared_with": self.compared_with, "gated": False,
                "worst_psnr_db": min(r["psnr_db"] for r in rows), "min_ssim": min(r["ssim"] for r in rows),
                "per_prompt": rows}


def compare_decoders(student, reference, heldout: list[str], seed: int) -> DecoderCost | None:
    """None unless the shipped decoder is an AutoencoderTiny and `vae/` holds a full decoder."""
    import torch

    from .load import load_full_decoder
    from .verify import heldout_inputs
    from .wrap import DecoderGraph

    if type(student.vae).__name__ != "AutoencoderTiny":
        return None
    vae = load_full_decoder(Path(student.source), FULL_DECODER)
    if vae is None:
        return None
    graph = DecoderGraph(vae, float(vae.config.scaling_factor)).eval()
    full, tiny = [], []
    for _, tokens, z in heldout_inputs(reference, heldout, seed):
        latents = reference.denoise(reference.embed(tokens), z)
        tiny.append(reference.decode(latents))
        with torch.no_grad():
            full.append(graph(torch.from_numpy(latents)).numpy())
    if full[0].shape != tiny[0].shape:
        return None   # not the same latent space: nothing to compare
    return DecoderCost(f"AutoencoderTiny ({student.vae_label})", f"AutoencoderKL ({FULL_DECODER})",
                       list(heldout), full, tiny)
