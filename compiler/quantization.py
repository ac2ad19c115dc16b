"""Stage 4, quantize: what every target's 8-bit (and lower) quantization shares.

The target's own toolkit does the quantizing (compiler/targets/<name>/quantize.py); this module
is the policy around it, the same on every target:

- the calibration stream: prompts -> the student's tokenizer -> fp32 torch text encoder ->
  seeded portable noise at the baked timestep -> fp32 torch denoiser (for the decoder), one
  sample at a time, so memory does not grow with the number of prompts;
- the layer plan: the recipe's layered overrides (scheme -> op type -> layer, `null` = float);
- the accuracy-aware fallback: the quantized component is checked against fp32 torch on a few
  calibration prompts (the held-out prompts stay unseen for the final verdict); on a miss,
  layers are ranked by their local output SQNR, measured in context by the target, and the
  worst are kept in float one at a time within `max_float_weight_fraction`; without that
  permission a miss is a ParityError (exit 6);
- coverage accounting (share of layers, weights and FLOPs quantized) for the manifest and report;
- stable ranges: every calibrated activation range is widened onto a coarse grid
  (`stable_range`), so the last-bit differences between CPUs' kernels do not reach the bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .cases import calibration_cases
from .errors import CalibrationError, ParityError, RecipeError
from .metrics import compare
from .recipe import DEFAULT_SCHEME, Component, Quantization, scheme_of
from .parity import Check, Tolerance

# Significant bits a calibrated range keeps. Another CPU's kernels move an activation's extremes
# in their last bits (more after many layers); rounded outward to 6 bits, a range changes only
# when an extreme lies within that drift of one of 64 grid points per octave (`make bench-cpus`
# counts how often: docs/bundle.md, "The same bundle from every CPU"). The widening costs at most
# 1/32 of the range (0.27 dB of that activation's SQNR at the worst point, 0.1 dB on average).
RANGE_BITS = 6


def stable_range(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened outward (lo toward -inf, hi toward +inf) to the nearest values with
    RANGE_BITS significant bits."""
    return _on_grid(lo, math.floor), _on_grid(hi, math.ceil)


def _on_grid(x: float, rounding) -> float:
    if x == 0 or not math.isfinite(x):
        return float(x)
    mantissa, exponent = math.frexp(x)      # x = mantissa * 2^exponent, 0.5 <= |mantissa| < 1
    return math.ldexp(rounding(mantissa * (1 << RANGE_BITS)), exponent - RANGE_BITS)


WEIGHT_PRECISION = {"w8a8": "int8", "w8a16": "int8", "w8": "int8", "palettize6": "lut6", "palettize4": "lut4"}
CHECK_PROMPTS = 2          # calibration prompts used to decide on fallback


@dataclass
class Layer:
    """One weight-carrying op: what it is, what it weighs, how it ended up."""
    node: str                  # the op's name in the target's graph
    name: str                  # torch module path where known, else the node name
    op_type: str
    params: int
    flops: int
    precision: str = "fp32"    # int8 | lut6 | lut4 | fp32
    reason: str = ""           # why it is float: recipe override / fallback / not a candidate
    act_sqnr_db: Optional[float] = None     # input activation after quantization vs before
    output_sqnr_db: Optional[float] = None  # layer output, quantized vs the same op in float

    @property
    def sensitivity_db(self) -> Optional[float]:
        return self.output_sqnr_db

    def as_dict(self) -> dict:
        d = {"node": self.node, "name": self.name, "op_type": self.op_type, "params": self.params,
             "flops": self.flops, "precision": self.precision}
        if self.reason:
            d["reason"] = self.reason
        for k in ("act_sqnr_db", "output_sqnr_db"):
            v = getattr(self, k)
            if v is not None:
                d[k] = round(v, 3)
        return d


@dataclass
class ComponentQuant:
    component: str
    scheme: str
    tool: str
    layers: list[Layer]
    fallback: list[str] = field(default_factory=list)      # layer names kept float by the fallback
    check: dict = field(default_factory=dict)               # calibration-prompt metrics before/after fallback
    calibration_prompts: int = 0
    sizes: dict = field(default_factory=dict)              # fp32_bytes, shipped_bytes (files on disk)

    def coverage(self) -> dict:
        total_p = sum(l.params for l in self.layers) or 1
        total_f = sum(l.flops for l in self.layers) or 1
        q = [l for l in self.layers if l.precision != "fp32"]
        return {"quantized_layers": len(q), "float_layers": len(self.layers) - len(q),
                "quantized_weight_share": round(sum(l.params for l in q) / total_p, 6),
                "quantized_flop_share": round(sum(l.flops for l in q) / total_f, 6)}

    def as_dict(self) -> dict:
        return {"scheme": self.scheme, "weights": WEIGHT_PRECISION[self.scheme], "tool": self.tool,
                "coverage": self.coverage(), "fallback": self.fallback, "check_on_calibration_prompts": self.check,
                "calibration_prompts": self.calibration_prompts, "sizes": self.sizes,
                "layers": [l.as_dict() for l in self.layers]}


@dataclass
class QuantJob:
    """What quantizing one component needs from the rest of the compile."""
    component: str
    spec: Component
    reference: object              # runtime.Chain of the torch fp32 graphs
    prompts: list[str]             # calibration prompts
    seed: int
    tolerance: Tolerance
    progress: object = None
    pictures: list = field(default_factory=list)   # cases.Picture: img2img's init pictures


def plan_layers(layers: list[Layer], op_types: tuple[str, ...], component: str, spec: Component) -> None:
    """Layered overrides: scheme -> op type -> layer (node or torch module name); `null` keeps
    the op type / layer in float. Sets `reason` on every layer the recipe keeps float."""
    q = spec.quantization or Quantization(scheme=DEFAULT_SCHEME[component])
    where = f"components.{component}.quantization"
    for key, value in list(q.op_types.items()) + list(q.nodes.items()):
        if value is not None and value != q.scheme:
            raise RecipeError(where, f"override {key!r}: {value!r} must be null (keep float) or the "
                                     f"component scheme {q.scheme!r}")
    for op in q.op_types:
        if op not in op_types:
            raise RecipeError(f"{where}.op_types", f"{op!r} is not a quantizable op type of this target; use one "
                                                   f"of {op_types}")
    known = {l.node for l in layers} | {l.name for l in layers}
    for key in q.nodes:
        if key not in known:
            raise RecipeError(f"{where}.nodes", f"{key!r} is not a weight-carrying layer of the {component} "
                                                f"(see manifest.json quantization layers for names)")
    for l in layers:
        if l.reason:
            continue
        if l.op_type in q.op_types and q.op_types[l.op_type] is None:
            l.reason = f"recipe: op_types.{l.op_type} = null"
        for key in (l.node, l.name):
            if key in q.nodes:
                l.reason = "" if q.nodes[key] is not None else f"recipe: nodes.{key} = null"


def calibration_feeds(component: str, reference, prompts: list[str], seed: int, where: str,
                      pictures=()) -> Iterator[dict]:
    """Prompts (and img2img's pictures) -> the fp32 reference chain -> the inputs `component` sees
    (cases.calibration_cases: the denoiser's step rows take turns)."""
    for i, case in enumerate(calibration_cases(reference, prompts, seed, pictures)):
        if component == "text_encoder":
            feeds = dict(case.tokens.ids)
        elif component == "vae_encoder":
            feeds = {"image": case.picture.tensor}
        else:
            embeds = reference.embed(case.tokens)
            init = reference.encode(case.picture.tensor) if case.strength is not None else None
            feeds = reference.denoiser_feeds(embeds, case.z, init, case.strength)
            if component == "vae_decoder":
                feeds = {"latents": reference.run("denoiser", feeds)[0]}
        for name, value in feeds.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise CalibrationError(f"{where}", f"NaN/Inf in the {component} calibration input {name!r} for "
                                                   f"calibration prompt {i + 1} {case.prompt[:50]!r} (produced by the "
                                                   f"fp32 graph upstream of the {component})")
        yield feeds


def program_feeds(reference, component: str, feeds: Iterator[dict]) -> Iterator[dict]:
    """Whole inputs -> what the component's program takes: tiles of a tiled decoder."""
    for f in feeds:
        yield from reference.split(component, f)


def quantize_component(job: QuantJob, quantizer):
    """Calibrate, build, check on calibration prompts, and fall back layer by layer on a miss.
    Returns (ComponentQuant, the shipped Artifact)."""
    component, spec = job.component, job.spec
    scheme = scheme_of(component, spec)
    q = spec.quantization or Quantization(scheme=scheme)
    layers = quantizer.layers()
    plan_layers(layers, quantizer.op_types, component, spec)
    result = ComponentQuant(component, scheme, quantizer.tool, layers)
    where = f"calibration ({component})"
    say = job.progress.step if job.progress else (lambda text: None)
    if quantizer.needs_calibration:
        result.calibration_prompts = len(job.prompts)
        say(f"{component}: calibrating on {len(job.prompts)} prompts (streamed)")
        quantizer.calibrate(program_feeds(job.reference, component, calibration_feeds(
            component, job.reference, job.prompts, job.seed, where, job.pictures)))
    if all(l.reason for l in layers):
        raise RecipeError(f"components.{component}.quantization", "every weight-carrying layer is kept float; "
                                                                  "set precision: fp32 instead")
    say(f"{component}: quantizing ({scheme}, {quantizer.tool.split('(')[0]})")
    artifact = quantizer.build(_floated(layers))
    check_feeds = list(program_feeds(job.reference, component, calibration_feeds(
        component, job.reference, job.prompts[:CHECK_PROMPTS], job.seed, where, job.pictures)))
    expected = [job.reference.runners[component](f)[0] for f in check_feeds]
    data_range = 1.0 if component == "vae_decoder" else None

    def check() -> tuple[bool, dict]:
        run = quantizer.runner()
        c = Check(component, "int8", job.tolerance,
                  [compare(e, run(f)[0], data_range=data_range) for e, f in zip(expected, check_feeds)])
        return c.passed, {"worst_psnr_db": round(c.worst.psnr_db, 3),
                          "worst_cosine": round(min(m.cosine for m in c.per_prompt), 6),
                          "finite": all(m.finite for m in c.per_prompt), "passed": c.passed}

    ok, before = check()
    result.check = {"before_fallback": before}
    _mark(layers, scheme)
    quantizer.measure_sensitivity(layers, check_feeds[0])
    if ok:
        return result, artifact
    if not before["finite"]:
        bad = _first_nonfinite_layer(layers)
        raise ParityError(f"components.{component}", f"quantized output has NaN/Inf on calibration prompts"
                                                     f"{' (first at layer ' + bad + ')' if bad else ''}")
    total = sum(l.params for l in layers)
    budget = q.max_float_weight_fraction * total
    ranked = _ranked(layers)
    if budget <= 0:
        raise ParityError(f"components.{component}",
                          f"{scheme} misses its tolerance on calibration prompts: PSNR {before['worst_psnr_db']:.1f} "
                          f"dB (min {job.tolerance.min_psnr_db}), cosine {before['worst_cosine']:.5f}; most sensitive "
                          f"layer {ranked[0].name if ranked else '?'}; set quantization.max_float_weight_fraction to "
                          f"allow keeping layers in float")
    spent = sum(l.params for l in layers if l.reason)
    for layer in ranked:
        if spent + layer.params > budget:
            continue
        spent += layer.params
        layer.reason = f"fallback: output SQNR {layer.sensitivity_db:.1f} dB"
        result.fallback.append(layer.name)
        say(f"{component}: keeping {layer.name} in float ({layer.reason})")
        artifact = quantizer.build(_floated(layers))
        ok, after = check()
        result.check["after_fallback"] = after
        if ok:
            _mark(layers, scheme)
            return result, artifact
    _mark(layers, scheme)
    after = result.check.get("after_fallback", before)
    raise ParityError(f"components.{component}",
                      f"{scheme} still misses its tolerance after keeping {len(result.fallback)} layers in float "
                      f"({spent / max(1, total):.1%} of weights, limit {q.max_float_weight_fraction:.1%}): PSNR "
                      f"{after['worst_psnr_db']:.1f} dB (min {job.tolerance.min_psnr_db})")


def _floated(layers: list[Layer]) -> list[str]:
    return [l.node for l in layers if l.reason]


def _mark(layers: list[Layer], scheme: str) -> None:
    for l in layers:
        l.precision = "fp32" if l.reason else WEIGHT_PRECISION[scheme]


def _ranked(layers: list[Layer]) -> list[Layer]:
    return sorted((l for l in layers if not l.reason and l.sensitivity_db is not None),
                  key=lambda l: l.sensitivity_db)


def _first_nonfinite_layer(layers: list[Layer]) -> str | None:
    for l in layers:
        if l.output_sqnr_db is not None and not math.isfinite(l.output_sqnr_db):
            return l.name
    return None


def sqnr(ref, test) -> float:
    """Signal-to-quantization-noise ratio in dB; -inf when either side is not finite."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if not (np.isfinite(ref).all() and np.isfinite(test).all()):
        return -math.inf
    noise_p = float(np.mean((ref - test) ** 2))
    signal = float(np.mean(ref ** 2))
    if noise_p == 0:
        return 200.0
    return 10 * math.log10(max(signal, 1e-30) / noise_p)


def artifact_bytes(root: Path, files: list[str]) -> int:
    return sum((root / f).stat().st_size for f in files)
