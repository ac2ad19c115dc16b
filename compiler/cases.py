"""What a compile runs through the chain: a prompt, its noise seed, and with img2img a picture
and a strength (None: text-to-image). One list for the reference's recordings, calibration and
parity, so each asks the same questions with the same inputs.

The pictures are the recipe's `img2img.images`, fitted to the image size exactly as a runtime
fits an app's picture (compiler/contract/init_image.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import init_image, noise
from .errors import CalibrationError
from .prompts import Tokens, tokenize

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_PICTURES = 64


@dataclass(frozen=True)
class Picture:
    name: str                 # file name in img2img.images
    tensor: np.ndarray        # float32 [1, 3, H, W] in [0, 1], fitted


@dataclass(frozen=True)
class Case:
    prompt: str
    tokens: Tokens
    seed: int
    z: np.ndarray
    picture: Picture | None = None
    strength: float | None = None     # None: text-to-image (a picture, if any, only feeds the encoder)


def read_pictures(recipe) -> list[Picture]:
    """The recipe's init pictures, fitted; [] without img2img. CalibrationError (exit 2) when the
    folder is missing, empty or holds a file that is not a picture."""
    if recipe.img2img is None:
        return []
    folder = Path(recipe.img2img.images)
    where = f"{folder} (img2img.images)"
    if not folder.is_dir():
        raise CalibrationError(where, "not a folder of pictures (PNG or JPEG)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)[:MAX_PICTURES]
    if not files:
        raise CalibrationError(where, "holds no .png or .jpg picture")
    out = []
    for f in files:
        try:
            rgb = init_image.read_picture(f)
        except ValueError as exc:
            raise CalibrationError(str(f), str(exc)) from None
        fitted = init_image.fit(rgb, recipe.image.height, recipe.image.width)
        out.append(Picture(f.name, init_image.to_tensor(fitted)))
    return out


def heldout_cases(chain, prompts: list[str], seed: int, pictures: list[Picture] = ()) -> list[Case]:
    """Prompt i with noise seed `seed + i` as text-to-image; with img2img, prompt i again at every
    strength j on picture (i + j) mod the number of pictures."""
    t2i = [Case(p, tokenize(chain.tokenizers, p), seed + i, noise.gaussian(seed + i, chain.latent_shape))
           for i, p in enumerate(prompts)]
    strengths = [s.strength for s in chain.img2img.strengths] if chain.img2img and pictures else []
    return t2i + [Case(c.prompt, c.tokens, c.seed, c.z, pictures[(i + j) % len(pictures)], s)
                  for j, s in enumerate(strengths) for i, c in enumerate(t2i)]


def calibration_cases(chain, prompts: list[str], seed: int, pictures: list[Picture] = ()) -> list[Case]:
    """Prompt i with noise seed `seed + i`; with img2img every case carries picture i (mod) for the
    encoder, and the denoiser's rows take turns: text-to-image, then each strength."""
    rows = [None] + ([s.strength for s in chain.img2img.strengths] if chain.img2img and pictures else [])
    out = []
    for i, p in enumerate(prompts):
        picture = pictures[i % len(pictures)] if pictures else None
        out.append(Case(p, tokenize(chain.tokenizers, p), seed + i, noise.gaussian(seed + i, chain.latent_shape),
                        picture, rows[i % len(rows)]))
    return out
