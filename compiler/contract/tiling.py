"""Tiled decoding: the decoder ships at one tile's shape and the runtime decodes the whole
latent tile by tile, blending the overlaps, so activations stay those of one tile at any image
size (at 1024 px the AutoencoderKL decoder's activations are many times its weights).

The plan is data in the manifest (`components.<name>.tiling`), so Swift and Kotlin follow it
without recomputing it: tile origins along each latent axis, the tile's latent shape, the
overlap and the decoder's scale factor. The blend every runtime computes, in float32 and in this
order (runtimes/README.md):

  - along an axis, a tile's weight at image coordinate x (offset d = x - origin*scale inside the
    tile, length T = tile*scale, ramp R = overlap*scale) is 1, lowered to (d + 0.5) / R where the
    tile has a neighbour before it and to (T - d - 0.5) / R where it has one after it;
  - a pixel's weight is the row weight times the column weight;
  - tiles are accumulated row-major: sum += w * value, weight += w; the image is sum / weight.

Origins are spread evenly with the last tile flush with the edge, so every tile is whole (the
exported decoder has one fixed shape) and neighbours overlap by at least `overlap`, which keeps
every pixel's weight positive."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .limits import MAX_ELEMENTS


def origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of `length` latent pixels."""
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))
    return [k * (length - tile) // (count - 1) for k in range(count)]


def axis_weights(starts: list[int], tile: int, overlap: int, scale: int) -> list[np.ndarray]:
    """Each tile's float32 blend weight per image coordinate along one axis."""
    size, ramp = tile * scale, np.float32(overlap * scale)
    d = np.arange(size, dtype=np.float32)
    out = []
    for k in range(len(starts)):
        w = np.ones(size, dtype=np.float32)
        if ramp and k > 0:
            w = np.minimum(w, (d + np.float32(0.5)) / ramp)
        if ramp and k < len(starts) - 1:
            w = np.minimum(w, (np.float32(size) - d - np.float32(0.5)) / ramp)
        out.append(w)
    return out


@dataclass(frozen=True)
class TilePlan:
    latent_shape: tuple[int, ...]       # [1, C, h, w]: the whole latent
    tile: tuple[int, int]                # the exported decoder's latent (h, w)
    overlap: int                          # latent pixels shared by neighbours (at least)
    scale: int                            # image pixels per latent pixel
    input: str = "latents"

    @classmethod
    def for_latent(cls, latent_shape, tile: int, overlap: int, scale: int) -> "TilePlan":
        h, w = latent_shape[-2:]
        return cls(tuple(latent_shape), (min(tile, h), min(tile, w)), overlap, scale)

    @property
    def rows(self) -> list[int]:
        return origins(self.latent_shape[-2], self.tile[0], self.overlap)

    @property
    def cols(self) -> list[int]:
        return origins(self.latent_shape[-1], self.tile[1], self.overlap)

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def as_manifest(self) -> dict:
        return {"input": self.input, "latent_shape": list(self.latent_shape), "tile": list(self.tile),
                "overlap": self.overlap, "scale": self.scale, "rows": self.rows, "cols": self.cols, "blend": BLEND}

    def tiles(self, latents: np.ndarray):
        """(row, col, the tile's latents) in row-major order."""
        (th, tw), rows, cols = self.tile, self.rows, self.cols
        for r in rows:
            for c in cols:
                yield r, c, np.ascontiguousarray(latents[..., r:r + th, c:c + tw])

    def run(self, run, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The whole image from a runner of one tile (the component's single output)."""
        latents = feeds[self.input]
        if tuple(latents.shape[-2:]) == self.tile:
            return run(feeds)
        s, (th, tw) = self.scale, self.tile
        wy = dict(zip(self.rows, axis_weights(self.rows, th, self.overlap, s)))
        wx = dict(zip(self.cols, axis_weights(self.cols, tw, self.overlap, s)))
        total = weight = None
        for r, c, tile in self.tiles(latents):
            out = run({**feeds, self.input: tile})[0]
            if total is None:
                total = np.zeros((*out.shape[:-2], latents.shape[-2] * s, latents.shape[-1] * s), np.float32)
                weight = np.zeros(total.shape[-2:], np.float32)
            w = wy[r][:, None] * wx[c][None, :]
            window = (..., slice(r * s, (r + th) * s), slice(c * s, (c + tw) * s))
            total[window] += w * out
            weight[window[1:]] += w
        return [total / weight]

    def split(self, feeds: dict[str, np.ndarray]):
        """One feed per tile (calibration and checks of the tile-shaped program)."""
        if tuple(feeds[self.input].shape[-2:]) == self.tile:
            yield feeds
            return
        for _, _, tile in self.tiles(feeds[self.input]):
            yield {**feeds, self.input: tile}


BLEND = "linear-ramp-v1"


def plan_from_manifest(entry: dict) -> TilePlan:
    return TilePlan(tuple(entry["latent_shape"]), tuple(entry["tile"]), entry["overlap"], entry["scale"], entry["input"])


def manifest_problem(component: dict) -> str | None:
    """What is wrong with a component's `tiling` block (checked shapes and positive sizes aside),
    as the runtimes check it before they allocate: the plan must be the one this module makes."""
    t = component["tiling"]
    if not isinstance(t, dict):
        return "must be an object"

    def sizes(v, n=None):
        return isinstance(v, list) and (n is None or len(v) == n) and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_ELEMENTS for d in v)

    if t.get("blend") != BLEND:
        return f"blend {t.get('blend')!r}: runtimes implement {BLEND!r}"
    if not (sizes(t.get("latent_shape")) and len(t["latent_shape"]) >= 2 and sizes(t.get("tile"), 2)
            and sizes([t.get("scale")]) and type(t.get("overlap")) is int and t["overlap"] >= 0):
        return "needs latent_shape, tile (2 sizes), overlap and scale as positive integers"
    (th, tw), overlap, scale = t["tile"], t["overlap"], t["scale"]
    h, w = t["latent_shape"][-2:]
    if not (th <= h and tw <= w and 2 * overlap <= min(th, tw)):
        return "tile must fit the latent and overlap at most half a tile"
    if t.get("rows") != origins(h, th, overlap) or t.get("cols") != origins(w, tw, overlap):
        return "rows and cols are not the tile origins of the latent shape, tile and overlap"
    specs = {s["name"]: s["shape"] for s in component["inputs"]}
    if specs.get(t.get("input")) != [*t["latent_shape"][:-2], th, tw]:
        return f"input {t.get('input')!r} is not an input of the component of the tile's shape"
    outputs = component["outputs"]
    if len(outputs) != 1 or outputs[0]["shape"][-2:] != [th * scale, tw * scale]:
        return "the component must have one output, of the tile's shape times scale"
    if math.prod(outputs[0]["shape"][:-2]) * h * scale * w * scale > MAX_ELEMENTS:
        return "the whole image is too large"
    return None
