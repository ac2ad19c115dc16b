"""Stage 5, verify (the `verify` command, which re-runs it on a bundle, is compiler/commands/verify.py):
parity of a candidate chain (exported / quantized) against the torch fp32
reference, per component and end to end, on held-out prompts. One tolerance table; a miss
(NaN included) is a ParityError naming the component and by how much."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ParityError
from .metrics import Metrics, compare, ssim
from .cases import heldout_cases
from .runtime import Chain

END_TO_END = "end_to_end"


@dataclass(frozen=True)
class Tolerance:
    min_psnr_db: float
    min_cosine: float
    # end to end only: SSIM catches structural damage (shifted edges, lost texture) that PSNR averages away
    min_ssim: float = 0.0


# component x precision -> the gate. fp32 exports must match torch to float round-off;
# int8 gates are the smallest figures at which images stay visually the same (issue 4).
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("text_encoder", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999),
    ("vae_encoder", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999),
    ("denoiser", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999),
    ("vae_decoder", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999),
    (END_TO_END, "fp32"): Tolerance(min_psnr_db=50.0, min_cosine=0.9999, min_ssim=0.999),
    # Core ML's default: float weights and activations stored in fp16 (~11 bits of mantissa).
    ("text_encoder", "fp16"): Tolerance(min_psnr_db=40.0, min_cosine=0.9999),
    ("vae_encoder", "fp16"): Tolerance(min_psnr_db=40.0, min_cosine=0.9999),
    ("denoiser", "fp16"): Tolerance(min_psnr_db=40.0, min_cosine=0.9999),
    ("vae_decoder", "fp16"): Tolerance(min_psnr_db=40.0, min_cosine=0.9999),
    (END_TO_END, "fp16"): Tolerance(min_psnr_db=35.0, min_cosine=0.999, min_ssim=0.99),
    ("text_encoder", "int8"): Tolerance(min_psnr_db=30.0, min_cosine=0.999),
    # the picture's latents: the img2img step keeps (1 - strength) of them, so they gate like text
    ("vae_encoder", "int8"): Tolerance(min_psnr_db=30.0, min_cosine=0.99),
    ("denoiser", "int8"): Tolerance(min_psnr_db=25.0, min_cosine=0.99),
    ("vae_decoder", "int8"): Tolerance(min_psnr_db=25.0, min_cosine=0.99),
    (END_TO_END, "int8"): Tolerance(min_psnr_db=20.0, min_cosine=0.98, min_ssim=0.9),
}


FLOAT_ORDER = ("fp32", "fp16")   # the end-to-end gate of a float chain is its least precise component's


def chain_precision(precisions: dict[str, str]) -> str:
    """int8 if any component is; else the least precise float (the end-to-end gate and the label)."""
    return "int8" if "int8" in precisions.values() else max(precisions.values(), key=FLOAT_ORDER.index)


@dataclass
class Check:
    name: str
    precision: str
    tolerance: Tolerance
    per_prompt: list[Metrics] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    cases: list = field(default_factory=list)    # the Sample each per_prompt entry measured

    @property
    def worst(self) -> Metrics:
        return min(self.per_prompt, key=lambda m: (m.finite, m.psnr_db))

    @property
    def passed(self) -> bool:
        return self.first_miss() is None

    def first_miss(self) -> tuple[int, str] | None:
        """(prompt index, what missed) of the first prompt outside the tolerance. max-abs is
        reported but not gated: its scale depends on the component's output range."""
        t = self.tolerance
        for i, m in enumerate(self.per_prompt):
            if not m.finite:
                return i, "NaN/Inf in output"
            if m.psnr_db < t.min_psnr_db or m.cosine < t.min_cosine:
                return i, f"PSNR {m.psnr_db:.1f} dB (min {t.min_psnr_db}), cosine {m.cosine:.5f} (min {t.min_cosine})"
            if i < len(self.ssim) and self.ssim[i] < t.min_ssim:
                return i, f"SSIM {self.ssim[i]:.4f} (min {t.min_ssim})"
        return None

    def as_dict(self) -> dict:
        tolerance = {"min_psnr_db": self.tolerance.min_psnr_db, "min_cosine": self.tolerance.min_cosine}
        if self.ssim:
            tolerance["min_ssim"] = self.tolerance.min_ssim
        d = {"precision": self.precision, "passed": self.passed, "tolerance": tolerance, "not_gated": ["max_abs"],
             "worst": self.worst.as_dict(), "per_prompt": [m.as_dict() for m in self.per_prompt]}
        if self.ssim:
            d["min_ssim"] = round(min(self.ssim), 6)
        return d


@dataclass
class Sample:
    prompt: str
    seed: int
    truncated: bool
    reference: np.ndarray   # [1, 3, H, W] in [0, 1]
    candidate: np.ndarray
    picture: object = None          # cases.Picture of an image-to-image case
    strength: float | None = None
    number: int = 1                 # which held-out prompt (1-based)

    def as_dict(self) -> dict:
        d = {"prompt": self.prompt, "seed": self.seed, "truncated": self.truncated}
        if self.picture is not None:
            d.update(picture=self.picture.name, strength=self.strength)
        return d

    @property
    def label(self) -> str:
        what = f"held-out prompt {self.number} {self.prompt[:50]!r}"
        return what if self.picture is None else f"{what} on {self.picture.name} at strength {self.strength}"


@dataclass
class Parity:
    label: str
    checks: list[Check]
    samples: list[Sample]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def as_dict(self) -> dict:
        return {"label": self.label, "passed": self.passed, "prompts": [s.as_dict() for s in self.samples],
                "checks": {c.name: c.as_dict() for c in self.checks}}

    def failure(self) -> str | None:
        for c in self.checks:
            miss = c.first_miss()
            if miss:
                bad, what = miss
                if c.cases:
                    where = c.cases[bad].label
                else:   # a check built without cases: one entry per held-out prompt
                    where = f"held-out prompt {bad + 1} {self.samples[bad].prompt[:50]!r}"
                return f"{c.name} ({c.precision}) {self.label}: {what} on {where}"
        return None


def check_parity(reference: Chain, candidate: Chain, precisions: dict[str, str], prompts: list[str],
                 seed: int, label: str, progress=None, pictures=()) -> Parity:
    """Feed the reference's intermediate values into each candidate component (isolating its
    error), and run the candidate chain alone end to end, on every held-out case
    (cases.heldout_cases: with img2img, each prompt also on a picture at every strength).
    Component by component, each candidate session closed before the next opens: at real size a
    whole chain's sessions do not fit in memory beside each other."""
    e2e_precision = chain_precision(precisions)
    checks = {name: Check(name, p, TOLERANCES[(name, p)]) for name, p in precisions.items()}
    checks[END_TO_END] = Check(END_TO_END, e2e_precision, TOLERANCES[(END_TO_END, e2e_precision)])
    cases = heldout_cases(reference, prompts, seed, pictures)
    samples = [Sample(c.prompt, c.seed, c.tokens.truncated, None, None, c.picture, c.strength, c.seed - seed + 1)
               for c in cases]
    step = progress.step if progress else (lambda text: None)
    n = f"{len(prompts)} prompts" + (f", {len(cases)} cases with the pictures" if len(cases) > len(prompts) else "")

    ref_embeds = [reference.embed(c.tokens) for c in cases]
    cand_embeds = [candidate.embed(c.tokens) for c in cases]
    candidate.close("text_encoder")
    features = _text_features(reference, ref_embeds[0])
    text = [i for i, c in enumerate(cases) if c.strength is None]
    _gate(checks["text_encoder"], samples, text,
          [compare(_flat(ref_embeds[i], features), _flat(cand_embeds[i], features)) for i in text])
    step(f"{label}: text encoder, {len(prompts)} prompts")

    ref_init, cand_init = [None] * len(cases), [None] * len(cases)
    if reference.img2img:
        encoder = reference.img2img.encoder
        pictured = [i for i, c in enumerate(cases) if c.strength is not None]
        for i in pictured:
            ref_init[i] = reference.encode(cases[i].picture.tensor)
            cand_init[i] = candidate.encode(cases[i].picture.tensor)
        candidate.close(encoder)
        _gate(checks[encoder], samples, pictured, [compare(ref_init[i], cand_init[i]) for i in pictured])
        step(f"{label}: encoder, {len(pictured)} pictures")

    ref_latents = [reference.denoise(e, c.z, init, c.strength) for e, c, init in zip(ref_embeds, cases, ref_init)]
    everything = list(range(len(cases)))
    _gate(checks["denoiser"], samples, everything,
          [compare(r, candidate.denoise(e, c.z, init, c.strength))
           for r, e, c, init in zip(ref_latents, ref_embeds, cases, ref_init)])
    latents = [candidate.denoise(e, c.z, init, c.strength) for e, c, init in zip(cand_embeds, cases, cand_init)]
    candidate.close("denoiser")
    step(f"{label}: denoiser, {n}")

    ref_images = [reference.decode(l) for l in ref_latents]
    _gate(checks["vae_decoder"], samples, everything,
          [compare(r, candidate.decode(l), data_range=1.0) for r, l in zip(ref_images, ref_latents)])
    images = [candidate.decode(l) for l in latents]
    candidate.close("vae_decoder")
    _gate(checks[END_TO_END], samples, everything, [compare(r, i, data_range=1.0) for r, i in zip(ref_images, images)])
    checks[END_TO_END].ssim = [ssim(r, i) for r, i in zip(ref_images, images)]
    step(f"{label}: decoder and end to end, {n}")
    for s, r, im in zip(samples, ref_images, images):
        s.reference, s.candidate = r, im
    return Parity(label, list(checks.values()), samples)


def _gate(check: Check, samples: list[Sample], which: list[int], metrics: list[Metrics]) -> None:
    check.per_prompt = metrics
    check.cases = [samples[i] for i in which]


def require(parity: Parity) -> None:
    failure = parity.failure()
    if failure:
        raise ParityError("parity", failure)


def _text_features(chain, embeds: dict[str, np.ndarray]) -> list[str]:
    """The text encoder's float outputs (a selected padding mask is ids, not features; a target
    may return it as float, as Core ML returns every output)."""
    return [n for n in chain.wiring.outputs["text_encoder"] if embeds[n].dtype.kind == "f"]


def _flat(embeds: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.concatenate([embeds[n].astype(np.float32, copy=False).ravel() for n in names])
