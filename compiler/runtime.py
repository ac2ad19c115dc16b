"""The reference runtime: prompt + seed -> image from exported components.

It is what the Swift and Kotlin runtimes mirror: tokenize, portable noise, text encoder,
denoiser once, decoder. `generate` runs it on a verified bundle; verify runs the same chain
on freshly exported files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import noise, png
from .contract.sizes import at_size
from .contract.init_image import INIT_IMAGE_SOURCE, STEP_SOURCE, Img2Img
from .contract.verifier import read_verified_manifest
from .errors import BundleError, CompileError, RecipeError, first_line
from .prompts import Tokens, tokenize
from .targets import Runner
from .targets.registry import get_target
from .contract.tiling import TilePlan, plan_from_manifest
from .contract.wiring import NOISE_SOURCE, Wiring


class Deferred:
    """A runner that opens its session on first use. The compiler exports and quantizes before it
    verifies: fp32 sessions opened at export would hold a second copy of every weight (5 GB at
    SD-Turbo size) through calibration, where memory peaks."""

    def __init__(self, load, path: Path):
        self._load, self.path, self._run = load, Path(path), None

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._run is None:
            self._run = self._load(self.path)
        return self._run(feeds)

    def close(self) -> None:
        """Drop the session; the next call opens it again."""
        self._run = None


class Recorded:
    """A reference runner that can record outputs by input while `recording`, replay them for
    the same input later, and go on replaying after the model behind it has been released
    (compiler/streaming.py). Unrecorded inputs run the model, and are not kept."""

    def __init__(self, run):
        self._run, self._outputs, self.recording = run, {}, False

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        key = _digest(feeds) if (self._outputs or self.recording or self._run is None) else None
        if key in self._outputs:
            return self._outputs[key]
        if self._run is None:
            raise RuntimeError("reference output requested for an input that was not recorded before release")
        out = self._run(feeds)
        if self.recording:
            self._outputs[key] = out
        return out

    def release(self) -> None:
        self._run = None


def _digest(feeds: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(feeds):
        a = np.ascontiguousarray(feeds[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Chain:
    tokenizers: list
    runners: dict[str, Runner]
    latent_shape: tuple[int, ...]
    wiring: Wiring
    tiling: dict[str, TilePlan] = field(default_factory=dict)   # component -> its tile plan (tiled decoding)
    img2img: Img2Img | None = None     # the encoder and the denoiser's step rows (img2img bundles)

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One component on whole inputs: a tiled component runs tile by tile and blends."""
        plan = self.tiling.get(name)
        return plan.run(self.runners[name], feeds) if plan else self.runners[name](feeds)

    def close(self, name: str) -> None:
        """Release the component's session where its runner can reopen it (runtime.Deferred)."""
        close = getattr(self.runners[name], "close", None)
        if close:
            close()

    def split(self, name: str, feeds: dict[str, np.ndarray]):
        """The feeds the component's program itself takes: one per tile when it is tiled."""
        plan = self.tiling.get(name)
        return plan.split(feeds) if plan else iter((feeds,))

    def embed(self, tokens: Tokens) -> dict[str, np.ndarray]:
        """The text encoder's outputs, with the token inputs a denoiser may also read (PixArt's mask)."""
        out = self.run("text_encoder", tokens.ids)
        return {**tokens.ids, **dict(zip(self.wiring.outputs["text_encoder"], out))}

    def denoiser_feeds(self, embeds: dict[str, np.ndarray], z: np.ndarray, init: np.ndarray | None = None,
                       strength: float | None = None) -> dict[str, np.ndarray]:
        """`init`: the picture's latents (the encoder's output) at `strength`; text-to-image without."""
        values = {**embeds, "noise": z}
        if self.img2img:
            values["init_latents"] = np.zeros(self.latent_shape, np.float32) if strength is None else init
            values["step"] = self.img2img.row(strength)
        return {name: values[name] for name in self.wiring.inputs["denoiser"]}

    def denoise(self, embeds: dict[str, np.ndarray], z: np.ndarray, init: np.ndarray | None = None,
                strength: float | None = None) -> np.ndarray:
        return self.run("denoiser", self.denoiser_feeds(embeds, z, init, strength))[0]

    def encode(self, picture: np.ndarray) -> np.ndarray:
        return self.run(self.img2img.encoder, {"image": picture})[0]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        return self.run("vae_decoder", {"latents": latents})[0]

    def case(self, case, upto: str | None = None) -> np.ndarray | None:
        """A compile case (compiler/cases.py) through the chain, up to and including `upto`; the
        encoder runs on every case that carries a picture, the denoiser reads it at its strength."""
        embeds = self.embed(case.tokens)
        if upto == "text_encoder":
            return None
        init = self.encode(case.picture.tensor) if self.img2img and case.picture else None
        if upto == "vae_encoder":
            return None
        latents = self.denoise(embeds, case.z, init, case.strength)
        return latents if upto == "denoiser" else self.decode(latents)

    def __call__(self, prompt: str, seed: int, picture: np.ndarray | None = None,
                 strength: float | None = None) -> np.ndarray:
        """The whole chain as a runtime runs it: values flow by the manifest's wiring. `picture`:
        the fitted init image [1, 3, H, W] for image-to-image at `strength`; without one the
        encoder does not run and its output is zeros (the text-to-image step ignores it)."""
        tokens = tokenize(self.tokenizers, prompt)
        values = {src: tokens.ids[inp] for tok in self.tokenizers for inp, src in tok.inputs.items()}
        values[NOISE_SOURCE] = noise.gaussian(seed, self.latent_shape)
        if self.img2img:
            values[STEP_SOURCE] = self.img2img.row(None if picture is None else strength)
            values[INIT_IMAGE_SOURCE] = picture
        for name in self.wiring.order:
            skip = self.img2img and name == self.img2img.encoder and picture is None
            out = ([np.zeros(self.latent_shape, np.float32)] if skip else
                   self.run(name, {inp: values[src] for inp, src in self.wiring.inputs[name].items()}))
            values.update({f"{name}.{o}": v for o, v in zip(self.wiring.outputs[name], out)})
        return values[self.wiring.image]


def load_tokenizers(bundle: Path, entries: list[dict]) -> list:
    from .contract.tokenizers import from_manifest

    return [from_manifest(bundle, i, entry) for i, entry in enumerate(entries)]


def load_bundle(bundle: str | Path, size: tuple[int, int] | None = None) -> tuple[Chain, dict]:
    """The chain at `size` (height, width; default: the bundle's first), and the manifest at that size.
    A size the bundle does not ship raises SizeNotShipped, naming the ones it does."""
    bundle = Path(bundle)
    manifest = read_verified_manifest(bundle)
    if size is not None:
        manifest = at_size(manifest, *size)
    target = get_target(manifest["target"])
    options = _target_options(target, manifest, bundle / "manifest.json")
    tokenizers = load_tokenizers(bundle, manifest["tokenizers"])   # cheap, and checked before any program opens
    runners = {name: _open(target, bundle / c["file"], options, c.get("function"))
               for name, c in sorted(manifest["components"].items())}
    tiling = {name: plan_from_manifest(c["tiling"]) for name, c in manifest["components"].items() if "tiling" in c}
    img2img = Img2Img.from_manifest(manifest["img2img"]) if "img2img" in manifest else None
    chain = Chain(tokenizers, runners, tuple(manifest["noise"]["shape"]), Wiring.from_manifest(manifest), tiling,
                  img2img)
    return chain, manifest


def _open(target, path: Path, options, function: str | None = None) -> Runner:
    """A component of a verified bundle that does not load is a bad bundle (exit 7), whatever the toolkit raised."""
    try:
        return target.runner(path, options, function)
    except BundleError:
        raise
    except CompileError as exc:
        raise BundleError(str(path), f"does not load: {exc.message}") from None
    except Exception as exc:
        raise BundleError(str(path), f"does not load: {type(exc).__name__}: {first_line(exc)}") from None


def _target_options(target, manifest: dict, where: Path):
    """The target options the bundle was compiled with; a recipe in a manifest that does not parse is a bad bundle."""
    from .recipe import recipe_from_data

    try:
        return recipe_from_data(manifest.get("recipe") or {}, f"{where} recipe").target_options(target.name)
    except RecipeError as exc:
        raise BundleError(exc.where, exc.message) from None


def to_png(image: np.ndarray, path: str | Path) -> None:
    """[1, 3, H, W] float in [0, 1] -> the portable 8-bit PNG every runtime writes (compiler/contract/png.py)."""
    Path(path).write_bytes(png.encode(png.to_pixels(image)))
