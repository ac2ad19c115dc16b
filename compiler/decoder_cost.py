"""What a faster or leaner decoder costs in image quality. A recipe that ships an
AutoencoderTiny (TAESD class) for speed, or decodes tile by tile for memory, gets, on its
held-out prompts, the shipped decoding's image against the full AutoencoderKL decoder's image
of the whole latent, from the same latents (for a tiny decoder, when the model folder has a
full one in `vae/`). Informational, not gated: the recipe chose the trade; the manifest and
report show its price."""
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
    tiny: list[np.ndarray]      # the shipped decoding's
    short: str = "tiny decoder"
    purpose: str = "speed"      # what the recipe trades image quality for

    def as_dict(self) -> dict:
        rows = [{"prompt": p, "psnr_db": round(compare(f, t, data_range=1.0).psnr_db, 4),
                 "ssim": round(ssim(f, t), 6)} for p, f, t in zip(self.prompts, self.full, self.tiny)]
        return {"shipped": self.shipped, "compared_with": self.compared_with, "gated": False,
                "worst_psnr_db": min(r["psnr_db"] for r in rows), "min_ssim": min(r["ssim"] for r in rows),
                "per_prompt": rows}


def compare_decoders(student, reference, heldout: list[str], seed: int) -> DecoderCost | None:
    """None unless the shipped decoder is an AutoencoderTiny with a full decoder in `vae/`, or is tiled."""
    import torch

    from .load import load_full_decoder
    from .cases import heldout_cases
    from .wrap import DecoderGraph

    tiny = type(student.vae).__name__ == "AutoencoderTiny"
    plan = reference.tiling.get("vae_decoder")
    if not (tiny or plan):
        return None
    vae = load_full_decoder(Path(student.source), FULL_DECODER) if tiny else _loaded_decoder(student)
    if vae is None:
        return None
    graph = DecoderGraph(vae, float(vae.config.scaling_factor)).eval()
    full, shipped_images = [], []
    for case in heldout_cases(reference, heldout, seed):
        latents = reference.denoise(reference.embed(case.tokens), case.z)
        shipped_images.append(reference.decode(latents))
        with torch.no_grad():
            full.append(graph(torch.from_numpy(latents)).numpy())
    del graph, vae
    if not tiny:
        student.release("vae_decoder")
    if full[0].shape != shipped_images[0].shape:
        return None   # not the same latent space: nothing to compare
    shipped, short = (f"AutoencoderTiny ({student.vae_label})", "tiny decoder") if tiny else \
        (f"AutoencoderKL ({student.vae_label})", "tiled decoding")
    if plan:
        s = plan.scale
        shipped += f" decoded in {plan.count} tiles of {plan.tile[0] * s}x{plan.tile[1] * s} px, {plan.overlap * s} px overlap"
        short = "tiny decoder, tiled" if tiny else short
    full_label = f"AutoencoderKL ({FULL_DECODER if tiny else student.vae_label})" + (" on the whole image" if plan else "")
    return DecoderCost(shipped, full_label, list(heldout), full, shipped_images, short, "speed" if tiny else "memory")


def _loaded_decoder(student):
    """The shipped decoder's torch weights, read again: the compile released them after export."""
    student.load("vae_decoder")
    return student.vae
