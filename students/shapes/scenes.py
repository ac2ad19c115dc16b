"""Seeded procedural scenes of coloured shapes with captions (the `shapes` student's data).

A scene is a 64x64 RGB image of 1-3 flat-coloured shapes on a plain light-grey background,
plus the structured spec drawn for its caption (`spec_for_caption`):

    single    "a large red circle"                      (one object, size given)
    count     "two blue squares" / "three ... "          (n small objects, same colour/shape)
    relation  "a blue square left of a yellow triangle"  (two objects, distinct colours;
                                                          left of / right of / above / below)

Everything is a pure function of a `numpy.random.Generator`, so a seed reproduces images and
captions bit for bit. The caption space is finite (780 captions); `caption_split` fixes which
of them training may use, so held-out and calibration prompts are unseen compositions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 225),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 6.0, "large": 11.0}  # "radius" in pixels (half the bounding box)
COUNT_WORDS = {2: "two", 3: "three"}
RELATIONS = ("left of", "right of", "above", "below")
KINDS = ("single", "count", "relation")
KIND_WEIGHTS = (0.2, 0.2, 0.6)
BACKGROUND_RANGE = (205, 240)  # plain neutral grey level, drawn per scene
RELATION_MARGIN = 12.0  # generator: centroid offset along the relation axis, at least
SPLIT_SEED = 0  # fixes the train / reserved caption split, independent of training seeds
TRAIN_FRACTION = 0.5


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    size: str  # "small" | "large"
    x: float  # centre, pixels
    y: float


@dataclass(frozen=True)
class Spec:
    kind: str
    objects: tuple[Obj, ...]
    relation: str | None = None  # for kind == "relation": objects[0] <relation> objects[1]
    background: int = 230
    caption: str = field(default="", compare=False)


def plural(shape: str) -> str:
    return shape + "s"


def all_captions() -> dict[str, list[str]]:
    """Every caption the generator can produce, per kind, in a fixed order."""
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for size in SIZES:
        for c in COLOURS:
            for s in SHAPES:
                out["single"].append(f"a {size} {c} {s}")
    for n, word in COUNT_WORDS.items():
        for c in COLOURS:
            for s in SHAPES:
                out["count"].append(f"{word} {c} {plural(s)}")
    for ca in COLOURS:
        for sa in SHAPES:
            for rel in RELATIONS:
                for cb in COLOURS:
                    if cb == ca:
                        continue
                    for sb in SHAPES:
                        out["relation"].append(f"a {ca} {sa} {rel} a {cb} {sb}")
    return out


def caption_split(seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION) -> tuple[set[str], set[str]]:
    """(train captions, reserved captions): a seeded per-kind split of the caption space.

    Training images only ever carry train captions; calibration and held-out prompts are
    drawn from the reserved ones (unseen compositions of seen words)."""
    rng = np.random.default_rng(seed)
    train: set[str] = set()
    reserved: set[str] = set()
    for kind, caps in all_captions().items():
        order = rng.permutation(len(caps))
        k = int(round(train_fraction * len(caps)))
        train.update(caps[i] for i in order[:k])
        reserved.update(caps[i] for i in order[k:])
    return train, reserved


# ---------------------------------------------------------------- spec sampling

def _place(rng: np.random.Generator, radii: list[float], ok, tries: int = 1000) -> list[tuple[float, float]]:
    for _ in range(tries):
        pts = [(float(rng.uniform(r + 1, SIZE - r - 1)), float(rng.uniform(r + 1, SIZE - r - 1))) for r in radii]
        sep = all(
            np.hypot(pts[i][0] - pts[j][0], pts[i][1] - pts[j][1]) >= (radii[i] + radii[j]) * 1.15 + 3
            for i in range(len(pts)) for j in range(i + 1, len(pts))
        )
        if sep and ok(pts):
            return pts
    raise RuntimeError("could not place objects")  # does not happen for the sizes above


def _relation_ok(rel: str):
    def ok(p):
        (ax, ay), (bx, by) = p
        dx, dy = bx - ax, by - ay  # b relative to a
        if rel == "left of":  # a left of b
            return dx >= RELATION_MARGIN and abs(dy) <= 0.5 * dx
        if rel == "right of":
            return -dx >= RELATION_MARGIN and abs(dy) <= 0.5 * -dx
        if rel == "above":  # a above b: a has the smaller y
            return dy >= RELATION_MARGIN and abs(dx) <= 0.5 * dy
        if rel == "below":
            return -dy >= RELATION_MARGIN and abs(dx) <= 0.5 * -dy
        raise ValueError(rel)
    return ok


def spec_for_caption(caption: str, rng: np.random.Generator) -> Spec:
    """A random layout (positions, unstated sizes, background) for a given caption."""
    words = caption.split()
    bg = int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1))
    if words[0] in ("two", "three"):
        n = 2 if words[0] == "two" else 3
        colour, shape = words[1], words[2][:-1]
        radii = [SIZES["small"]] * n
        pts = _place(rng, radii, lambda p: True)
        objs = tuple(Obj(colour, shape, "small", x, y) for x, y in pts)
        return Spec("count", objs, None, bg, caption)
    if len(words) == 4:
        _, size, colour, shape = words
        pts = _place(rng, [SIZES[size]], lambda p: True)
        return Spec("single", (Obj(colour, shape, size, *pts[0]),), None, bg, caption)
    ca, sa = words[1], words[2]
    rel = " ".join(words[3:-3])
    cb, sb = words[-2], words[-1]
    sizes = [str(rng.choice(list(SIZES))), str(rng.choice(list(SIZES)))]
    pts = _place(rng, [SIZES[s] for s in sizes], _relation_ok(rel))
    objs = (Obj(ca, sa, sizes[0], *pts[0]), Obj(cb, sb, sizes[1], *pts[1]))
    return Spec("relation", objs, rel, bg, caption)


def sample_caption(rng: np.random.Generator, allowed: set[str] | None = None) -> str:
    """A random caption (kind by KIND_WEIGHTS), optionally restricted to `allowed`."""
    caps = all_captions()
    if allowed is not None:
        caps = {k: [c for c in v if c in allowed] for k, v in caps.items()}
    kinds = [k for k in KINDS if caps[k]]
    w = np.array([KIND_WEIGHTS[KINDS.index(k)] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    return caps[kind][int(rng.integers(len(caps[kind])))]


# ---------------------------------------------------------------- rendering

def shape_mask(shape: str, r: float, x: float, y: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    dx, dy = xx - x, yy - y
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = 0.9 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "triangle":  # apex up: (0,-r), base corners (+-r, 0.9r)
        top, base = -r, 0.9 * r
        frac = (dy - top) / (base - top)  # 0 at apex, 1 at base
        return (dy >= top) & (dy <= base) & (np.abs(dx) <= frac * r)
    raise ValueError(f"unknown shape {shape!r}")


def render(spec: Spec) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), spec.background, dtype=np.uint8)
    for o in spec.objects:
        img[shape_mask(o.shape, SIZES[o.size], o.x, o.y)] = COLOURS[o.colour]
    return img


def sample_scene(rng: np.random.Generator, allowed: set[str] | None = None) -> tuple[np.ndarray, Spec]:
    """(uint8 HxWx3 image, spec); spec.caption is the caption."""
    spec = spec_for_caption(sample_caption(rng, allowed), rng)
    return render(spec), spec


def make_dataset(n: int, seed: int, allowed: set[str] | None = None) -> tuple[np.ndarray, list[str], list[Spec]]:
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    specs = []
    for i in range(n):
        imgs[i], spec = sample_scene(rng, allowed)
        specs.append(spec)
    return imgs, [s.caption for s in specs], specs


def normalise(caption: str) -> str:
    return " ".join(caption.lower().split())


def prompt_sets(n_heldout: int = 64, n_calibration: int = 256, heldout_seed: int = 2,
                calibration_seed: int = 1) -> tuple[list[str], list[str]]:
    """(held-out, calibration) prompts: sampled from their own seeds, keeping only captions
    outside the training split (and, for calibration, outside held-out)."""
    train, _ = caption_split()
    banned = {normalise(c) for c in train}

    def draw(seed: int, n: int, extra: set[str]) -> list[str]:
        rng = np.random.default_rng(seed)
        out: list[str] = []
        seen = set(banned) | extra
        while len(out) < n:
            c = sample_caption(rng)
            if normalise(c) not in seen:
                seen.add(normalise(c))
                out.append(c)
        return out

    heldout = draw(heldout_seed, n_heldout, set())
    calibration = draw(calibration_seed, n_calibration, {normalise(c) for c in heldout})
    return heldout, calibration
