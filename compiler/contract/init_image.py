"""Image-to-image: an app's picture -> the encoder's input, and which step each strength runs.

Pixels -> tensor, specified in integers so Python, Kotlin and Swift give the same bits:

1. Crop the picture (8-bit RGB, any size) to the bundle's aspect ratio, centred: a picture wider
   than the image keeps its height and `h * W // H` columns, a taller one its width and `w * H // W`
   rows; the crop starts at half the pixels left over (rounded down).
2. When the crop is k >= 2 times the image on both sides, average k x k blocks first (a box
   filter: a phone's 12 MP photo read by bilinear alone would alias); the crop shrinks to a
   multiple of k, centred again. Each average is (sum + k*k/2) // (k*k).
3. Bilinear resize to W x H with half-pixel centres in 16-bit fixed point: the source position of
   column x is ((2x + 1) * cw * 65536) // (2W) - 32768, clamped to [0, (cw - 1) * 65536]; its
   integer part indexes the left pixel, the low 16 bits weigh the right one. A pixel is
   (top * (65536 - fy) + bottom * fy + 2^31) >> 32 with top and bottom the horizontal blends:
   64-bit integers, exact everywhere.
4. The tensor is float32 [1, 3, H, W]: pixel / 255 (one correctly rounded division).

The manifest's `img2img` block names the encoder's source, the image size, and the denoiser's
`step` input for text-to-image and for every strength shipped (compiler/families/stepped.py
says what the six numbers are)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INIT_IMAGE_SOURCE = "init_image.pixels"     # the wiring's name for the preprocessed picture
STEP_SOURCE = "sampler.step"           # ... and for the chosen step row
FIT = "center-crop, box k x k when k >= 2, bilinear 16-bit fixed point"
STEP_LAYOUT = ("model_timestep", "init", "noise", "input_scale", "sample", "model")
ONE = 1 << 16


def fit(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h, w, 3] uint8 -> [height, width, 3] uint8 by steps 1-3 above."""
    h, w = rgb.shape[:2]
    if h < 1 or w < 1:
        raise ValueError("the picture has no pixels")
    if w * height > h * width:
        cw, ch = max(1, h * width // height), h
    else:
        cw, ch = w, max(1, w * height // width)
    k = min(cw // width, ch // height)
    if k >= 2:
        cw, ch = cw // k * k, ch // k * k
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    crop = rgb[y0:y0 + ch, x0:x0 + cw].astype(np.int64)
    if k >= 2:
        blocks = crop.reshape(ch // k, k, cw // k, k, 3).sum(axis=(1, 3))
        crop = (blocks + k * k // 2) // (k * k)
        ch, cw = ch // k, cw // k
    xs, fx = _positions(width, cw)
    ys, fy = _positions(height, ch)
    x1, y1 = np.minimum(xs + 1, cw - 1), np.minimum(ys + 1, ch - 1)
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = crop[ys][:, xs] * (ONE - fx) + crop[ys][:, x1] * fx
    bottom = crop[y1][:, xs] * (ONE - fx) + crop[y1][:, x1] * fx
    return ((top * (ONE - fy) + bottom * fy + (1 << 31)) >> 32).astype(np.uint8)


def _positions(out: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(out, dtype=np.int64)
    pos = np.clip((2 * i + 1) * size * ONE // (2 * out) - ONE // 2, 0, (size - 1) * ONE)
    return pos >> 16, pos & (ONE - 1)


def to_tensor(pixels: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> float32 [1, 3, H, W] in [0, 1]."""
    return (pixels.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].copy()


def read_picture(path) -> np.ndarray:
    """A PNG or JPEG file -> [h, w, 3] uint8 (alpha dropped). ValueError with a reason when it is
    not a picture Pillow decodes or is over MAX_PIXELS."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"{im.width}x{im.height} is over {MAX_PIXELS // 1_000_000} megapixels")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a picture this reads (PNG, JPEG): {type(exc).__name__}") from None


MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Strength:
    strength: float
    num_inference_steps: int     # the diffusers img2img call that runs this one step
    step: tuple[float, ...]


@dataclass(frozen=True)
class Img2Img:
    height: int
    width: int
    encoder: str                  # the component that reads INIT_IMAGE_SOURCE
    text_to_image: tuple[float, ...]
    strengths: tuple[Strength, ...]

    def row(self, strength: float | None) -> np.ndarray:
        """The denoiser's `step` input: text-to-image for None, else the listed strength's."""
        if strength is None:
            return np.asarray(self.text_to_image, dtype=np.float32)
        for s in self.strengths:
            if abs(s.strength - strength) <= 1e-6:
                return np.asarray(s.step, dtype=np.float32)
        raise KeyError(f"strength {strength} is not in this bundle (it ships "
                       f"{', '.join(str(s.strength) for s in self.strengths)})")

    def as_manifest(self) -> dict:
        return {"image": {"source": INIT_IMAGE_SOURCE, "height": self.height, "width": self.width, "fit": FIT},
                "encoder": self.encoder, "step": {"source": STEP_SOURCE, "layout": list(STEP_LAYOUT)},
                "text_to_image": list(self.text_to_image),
                "strengths": [{"strength": s.strength, "num_inference_steps": s.num_inference_steps,
                               "step": list(s.step)} for s in self.strengths]}

    @classmethod
    def from_manifest(cls, block: dict) -> "Img2Img":
        """ValueError (or KeyError/TypeError) when a key is missing or of the wrong type."""
        rows = [Strength(float(s["strength"]), int(s["num_inference_steps"]), _row(s["step"]))
                for s in block["strengths"]]
        image = block["image"]
        return cls(int(image["height"]), int(image["width"]), str(block["encoder"]), _row(block["text_to_image"]),
                   tuple(rows))


def _row(values) -> tuple[float, ...]:
    if not isinstance(values, list) or len(values) != len(STEP_LAYOUT):
        raise ValueError(f"a step row is {len(STEP_LAYOUT)} numbers")
    return tuple(float(v) for v in values)
