"""GenEval-like prompt adherence for the shapes domain, with classical image processing.

`score(image, caption)` parses the caption into checkable attributes, detects coloured blobs
(saturated pixels -> nearest palette colour -> 4-connected components -> shape by fill ratio
of the bounding box, size by bounding-box extent, position by centroid) and returns the
fraction of attributes satisfied:

    single   "a large red circle"             colour present, shape, size, exactly one object
    count    "two blue squares"                colour present, exact count of that colour, shape
    relation "a blue square left of a ..."     A present, A shape, B present, B shape, relation

numpy only; deterministic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from students.shapes.scenes import COLOURS, RELATIONS, SHAPES

SATURATION_MIN = 60  # max(rgb) - min(rgb) above this: an object pixel, not background
MIN_BLOB_AREA = 16  # pixels; smaller components are noise
LARGE_EXTENT = 17  # bounding-box extent (pixels) from which a blob counts as "large"
SQUARE_FILL = 0.86  # fill ratio of the bounding box: >= square, >= CIRCLE_FILL circle, else triangle
CIRCLE_FILL = 0.62
RELATION_MARGIN = 3.0  # pixels of centroid offset a relation needs

_COLOUR_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)
_C = "|".join(COLOURS)
_S = "|".join(SHAPES)
_R = "|".join(RELATIONS)
_SINGLE = re.compile(rf"^an? (small|large) ({_C}) ({_S})$")
_COUNT = re.compile(rf"^(two|three) ({_C}) ({_S})s$")
_RELATION = re.compile(rf"^an? ({_C}) ({_S}) ({_R}) an? ({_C}) ({_S})$")
_NUMBERS = {"two": 2, "three": 3}


@dataclass(frozen=True)
class Blob:
    colour: str
    shape: str
    size: str
    x: float  # centroid
    y: float
    area: int


@dataclass(frozen=True)
class Prompt:
    kind: str  # single | count | relation
    colour: str
    shape: str
    size: str | None = None
    count: int = 1
    relation: str | None = None
    colour_b: str | None = None
    shape_b: str | None = None


def parse(caption: str) -> Prompt:
    c = " ".join(caption.lower().split())
    if m := _SINGLE.match(c):
        return Prompt("single", m[2], m[3], size=m[1])
    if m := _COUNT.match(c):
        return Prompt("count", m[2], m[3], count=_NUMBERS[m[1]])
    if m := _RELATION.match(c):
        return Prompt("relation", m[1], m[2], relation=m[3], colour_b=m[4], shape_b=m[5])
    raise ValueError(f"caption outside the shapes grammar: {caption!r}")


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of (y, x) pixel coordinates."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack = [(y0, x0)]
        seen[y0, x0] = True
        pix = []
        while stack:
            y, x = stack.pop()
            pix.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(np.array(pix))
    return out


def classify_shape(pix: np.ndarray) -> tuple[str, int]:
    """(shape, extent) of a component given its (y, x) pixels."""
    ys, xs = pix[:, 0], pix[:, 1]
    hgt, wid = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(pix) / float(hgt * wid)
    shape = "square" if fill >= SQUARE_FILL else "circle" if fill >= CIRCLE_FILL else "triangle"
    return shape, int(max(hgt, wid))


def detect(image: np.ndarray) -> list[Blob]:
    """Coloured blobs in a uint8 HxWx3 image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    img = image.astype(np.float32)
    sat = img.max(axis=2) - img.min(axis=2)
    dist = ((img[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    label = dist.argmin(-1)
    blobs = []
    for ci, name in enumerate(_COLOUR_NAMES):
        mask = (sat > SATURATION_MIN) & (label == ci)
        for pix in _components(mask):
            if len(pix) < MIN_BLOB_AREA:
                continue
            shape, extent = classify_shape(pix)
            blobs.append(Blob(name, shape, "large" if extent >= LARGE_EXTENT else "small",
                              float(pix[:, 1].mean()) + 0.5, float(pix[:, 0].mean()) + 0.5, len(pix)))
    return blobs


def _largest(blobs: list[Blob], colour: str) -> Blob | None:
    own = [b for b in blobs if b.colour == colour]
    return max(own, key=lambda b: b.area) if own else None


def _relation_holds(a: Blob, b: Blob, rel: str) -> bool:
    dx, dy = b.x - a.x, b.y - a.y
    return {"left of": dx > RELATION_MARGIN, "right of": -dx > RELATION_MARGIN,
            "above": dy > RELATION_MARGIN, "below": -dy > RELATION_MARGIN}[rel]


def check(blobs: list[Blob], prompt: Prompt) -> list[bool]:
    """One bool per attribute of `prompt`."""
    a = _largest(blobs, prompt.colour)
    if prompt.kind == "single":
        return [a is not None, a is not None and a.shape == prompt.shape,
                a is not None and a.size == prompt.size, len(blobs) == 1]
    if prompt.kind == "count":
        own = [b for b in blobs if b.colour == prompt.colour]
        return [bool(own), len(own) == prompt.count, bool(own) and all(b.shape == prompt.shape for b in own)]
    b = _largest(blobs, prompt.colour_b)
    return [a is not None, a is not None and a.shape == prompt.shape,
            b is not None, b is not None and b.shape == prompt.shape_b,
            a is not None and b is not None and _relation_holds(a, b, prompt.relation)]


def score(image: np.ndarray, caption: str) -> float:
    """Fraction of the caption's attributes the image satisfies, in [0, 1]."""
    ok = check(detect(image), parse(caption))
    return sum(ok) / len(ok)


def score_many(images, captions) -> np.ndarray:
    """Per-image scores for paired sequences of uint8 HxWx3 images and captions."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    return np.array([score(np.asarray(im), c) for im, c in zip(images, captions)], dtype=np.float64)
