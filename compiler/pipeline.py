"""compile(): load -> wrap -> export -> quantize -> verify -> bundle, each a plain function."""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__, lora, report
from .contract import noise
from .bundle import atomic_output, package_versions
from .cases import read_pictures
from .families import img2img_family
from .contract.manifest import TIMINGS, sha256_file, write_manifest
from .contract.sizes import spell
from .decoder_cost import DecoderCost, compare_decoders
from .load import load_recipe_student
from .student import Student
from .progress import Progress
from .prompts import calibration_prompts, prompt_digests, read_prompts
from .quantization import (WEIGHT_PRECISION, ComponentQuant, QuantJob, artifact_bytes,
                           calibration_feeds, quantize_component, scheme_of)
from .recipe import Recipe
from .runtime import Chain, Deferred, Recorded
from .streaming import Question, compile_questions, one_at_a_time
from .targets import Artifact, Target
from .targets.registry import get_target
from .parity import TOLERANCES, Parity, check_parity, require
from .contract.tokenizers import save as save_tokenizer
from .contract.wiring import NOISE_SOURCE
from .errors import CompileError
from .wrap import Graph, Wrapped, check_sizes, wrap

STAGES = ("load", "wrap", "export", "quantize", "verify", "bundle")
TOOLS = ("torch", "diffusers", "transformers", "numpy")


@dataclass
class Exported:
    artifacts: dict[str, Artifact]       # component -> what the target wrote in the staging dir
    chain: Chain


@dataclass
class Quantized:
    artifacts: dict[str, Artifact]       # component -> the shipped (quantized or float) artifact
    chain: Chain                          # the shipped chain
    float_chain: Chain                     # the float export, kept (outside the bundle) for parity
    components: dict[str, ComponentQuant]
    calibration: dict


@dataclass
class Result:
    out: Path
    manifest: dict         # manifest.json's content plus report.json's figures (parity, quantization, decoder_cost)
    parity: list[Parity]
    latency: dict          # component -> {"fp32", "shipped"} seconds; empty when the target times nothing


@dataclass
class Built:
    """One size compiled and checked, its files under `root`, before they become the bundle's."""
    key: str               # "WxH" (manifest sizes, generate --size)
    size: tuple[int, int]  # (height, width)
    root: Path
    student: Student
    wrapped: Wrapped
    quantized: Quantized
    parity: list[Parity]
    latency: dict
    decoder_cost: DecoderCost | None
    device_checks: dict
    feeds: Callable[[str], dict]   # component -> what its program takes on the first held-out input


def compile_bundle(recipe: Recipe, target_name: str, model: str, out: Path, force: bool = False,
                   progress: Progress | None = None, sign_key: Path | None = None) -> Result:
    progress = progress or Progress(len(STAGES))
    sizes = recipe.sizes()
    progress.total = len(STAGES) if len(sizes) == 1 else (len(STAGES) - 1) * len(sizes) + 2
    target = get_target(target_name)
    options = recipe.target_options(target.name)
    target.validate(recipe, options)
    heldout_file = read_prompts(recipe.parity.prompts, "parity.prompts")
    heldout = heldout_file[: recipe.parity.num_prompts]
    calibration = calibration_prompts(recipe, heldout_file)
    if recipe.img2img:
        img2img_family(recipe.family)
    if len(sizes) > 1:   # every size checked against the model before the first is compiled
        check_sizes(load_recipe_student(model, recipe, lazy=True), recipe)
    with atomic_output(out, force) as staging:
        if len(sizes) == 1:
            built = [build(recipe, target, options, model, staging, heldout, calibration, progress)]
            programs = {}
        else:
            built = [build(recipe.at_size(h, w), target, options, model, staging / WORK_DIR / "sizes" / spell(h, w),
                           heldout, calibration, progress, f"{spell(h, w)} ", measure=i == 0)
                     for i, (h, w) in enumerate(sizes)]
            with progress.stage("share weights", f"{len(sizes)} sizes, each component's weights stored once"):
                programs = share_weights(target, options, built, staging, progress)
        with progress.stage("bundle", str(out)):
            shutil.rmtree(staging / WORK_DIR, ignore_errors=True)   # the sizes' own files, now shared
            manifest = bundle(staging, recipe, target, options, built, programs)
            if sign_key:   # inside the staging folder: a signed bundle appears whole or not at all
                from .signing import sign

                sign(staging, sign_key)
    return Result(Path(out), manifest, [p for b in built for p in b.parity], built[0].latency)


def build(recipe: Recipe, target: Target, options, model: str, staging: Path, heldout: list[str],
          calibration: list[str], progress: Progress, prefix: str = "", measure: bool = True) -> Built:
    """load -> wrap -> export -> quantize -> verify for the recipe's one size, into `staging`."""
    staging.mkdir(parents=True, exist_ok=True)
    pictures = read_pictures(recipe)
    with progress.stage(f"{prefix}load", f"{model} (configs and tokenizers; weights one component at a time)"):
        student = load_recipe_student(model, recipe, lazy=True)
    with progress.stage(f"{prefix}wrap", f"family {recipe.family}, {spell(recipe.image.height, recipe.image.width)}"):
        wrapped = wrap(student, recipe)
        reference = torch_chain(wrapped, student)
        questions = compile_questions(reference, recipe, heldout, calibration, precisions(recipe), pictures)
    with progress.stage(f"{prefix}export", f"{target.name}, {_options_detail(options)}"):
        exported = export(wrapped, student, recipe, reference, questions, target, options, staging, progress)
    with progress.stage(f"{prefix}quantize", _quantize_detail(recipe, calibration)):
        quantized = quantize(recipe, target, options, reference, exported, staging, calibration, progress, pictures)
    with progress.stage(f"{prefix}verify", f"{len(heldout)} held-out prompts from {recipe.parity.prompts}"
                                           f"{_pictures_detail(recipe, pictures)}, checked with {target.checker(options)}"):
        parity = verify(recipe, target, options, reference, quantized, heldout, progress, pictures, prefix)
        decoder_cost = compare_decoders(student, reference, heldout, recipe.parity.seed)
        latency = {}
        if target.reports_latency and measure:
            latency = measure_latency(quantized, reference, heldout[0], recipe.parity.seed, pictures)
        feeds = first_input(recipe, reference, heldout[0], pictures)
        quantized, device_checks = for_device(recipe, target, options, quantized, staging, feeds, progress)
        shutil.rmtree(staging / WORK_DIR)
    size = (recipe.image.height, recipe.image.width)
    return Built(spell(*size), size, staging, student, wrapped, quantized, parity, latency, decoder_cost, device_checks, feeds)


def share_weights(target: Target, options, built: list[Built], staging: Path, progress: Progress) -> dict:
    """Each component's programs of every size into one artifact in `staging`: a component whose
    files are byte-identical at every size (the text encoder; a tiled decoder) ships once, the
    others go through the target's share_weights (one weight file, a program per size). Each
    shared program must then compute exactly what the checked one did, on the size's first
    held-out input. Returns component -> size key -> its program ({"file"[, "function"]}; the
    size-dependent components only)."""
    programs = {}
    first = built[0]
    for name, art in first.quantized.artifacts.items():
        parts = [(b.key, b.root, b.quantized.artifacts[name]) for b in built]
        if len({_digests(root, a) for _, root, a in parts}) == 1:
            for f in art.files:
                (staging / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(first.root / f, staging / f)
            shared, files = art, None
        else:
            progress.step(f"{name}: {len(parts)} programs over one copy of its weights")
            shared, files = target.share_weights(name, parts, staging, options)
            for b in built:
                check_shared(target, options, b, name, staging / files[b.key]["file"], files[b.key].get("function"))
        for b in built:
            b.quantized.artifacts[name] = shared
        if files:
            programs[name] = files
    return programs


def _digests(root: Path, artifact: Artifact) -> tuple:
    return tuple((f, sha256_file(root / f)) for f in artifact.files)


def check_shared(target: Target, options, b: Built, name: str, program: Path, function: str | None) -> None:
    """The shared program vs the one parity checked, bit for bit, on the first held-out input."""
    feeds = b.feeds(name)
    want = b.quantized.chain.runners[name](feeds)
    b.quantized.chain.close(name)   # one program in memory at a time: three SD UNets would not fit
    got = target.runner(program, options, function)(feeds)
    if any(not np.array_equal(w, g) for w, g in zip(want, got)):
        raise CompileError(f"component {name} at {b.key}", f"{program.name} {function or ''} does not compute "
                                                           f"what the checked program did (weights shared wrongly)")


def _pictures_detail(recipe: Recipe, pictures: list) -> str:
    if not recipe.img2img:
        return ""
    return (f" (and on {len(pictures)} pictures from {recipe.img2img.images} at strength "
            f"{', '.join(map(str, recipe.img2img.strengths))})")


def _options_detail(options) -> str:
    import dataclasses

    return ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(options).items() if v is not None)


WORK_DIR = ".work"  # inside the staging dir, so an interrupted compile leaves nothing behind


def precisions(recipe: Recipe, float_precision: str = "fp32") -> dict[str, str]:
    """Component -> int8, or the precision the target computes unquantized components in."""
    return {name: spec.precision if spec.precision == "int8" else float_precision
            for name, spec in recipe.component_specs().items()}


def _quantize_detail(recipe: Recipe, calibration: list[str]) -> str:
    if not recipe.quantized:
        return "skipped (all components float)"
    int8 = [n for n, p in precisions(recipe).items() if p == "int8"]
    return f"int8 {', '.join(int8)}; {len(calibration)} calibration prompts from {recipe.calibration.prompts}"


def quantize(recipe: Recipe, target: Target, options, reference: Chain, exported: Exported, staging: Path,
             calibration: list[str], progress: Progress, pictures=()) -> Quantized:
    """Quantized components replace their float artifacts in the bundle; the float artifacts move
    to the work dir, where the target's quantizer reads them."""
    work = staging / WORK_DIR / "float"
    work.mkdir(parents=True)
    artifacts, done = dict(exported.artifacts), {}
    runners, float_runners = dict(exported.chain.runners), dict(exported.chain.runners)
    runner = _runner_factory(target, options)
    for name, spec in recipe.component_specs().items():
        if spec.precision != "int8":
            continue
        src = exported.artifacts[name]
        for f in src.files:
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staging / f, work / f)
        if (staging / src.main).is_dir():
            shutil.rmtree(staging / src.main)
        job = QuantJob(name, spec, reference, calibration, recipe.calibration.seed,
                       TOLERANCES[(name, "int8")], progress, list(pictures))
        quantizer = target.quantizer(name, scheme_of(name, spec), src, work, staging, options)
        done[name], artifacts[name] = quantize_component(job, quantizer)
        done[name].sizes = {"float_bytes": artifact_bytes(work, src.files),
                            "shipped_bytes": artifact_bytes(staging, artifacts[name].files)}
        runners[name] = Deferred(runner, staging / artifacts[name].main)
        float_runners[name] = Deferred(runner, work / src.main)
    chain = dataclasses.replace(exported.chain, runners=runners)
    float_chain = dataclasses.replace(exported.chain, runners=float_runners)
    info = {}
    if recipe.quantized:
        info = {"prompts": recipe.calibration.prompts, "num_prompts": len(calibration), "seed": recipe.calibration.seed,
                "prompts_sha256": sha256_file(Path(recipe.calibration.prompts)),
                "prompt_digests": prompt_digests(read_prompts(recipe.calibration.prompts, "calibration.prompts"))}
    return Quantized(artifacts, chain, float_chain, done, info)


def _runner_factory(target: Target, options):
    return lambda path: target.runner(path, options)


def verify(recipe: Recipe, target: Target, options, reference: Chain, quantized: Quantized, heldout: list[str],
           progress: Progress, pictures=(), prefix: str = "") -> list[Parity]:
    """The float export vs torch always; the shipped quantized chain vs torch when anything is int8.
    `prefix` names the size in each label of a multi-size bundle."""
    fp = target.float_precision(options)
    floats = {name: fp for name in recipe.component_specs()}
    parity = [check_parity(reference, quantized.float_chain, floats, heldout, recipe.parity.seed,
                           f"{prefix}{target.name} {fp}", progress, pictures)]
    if recipe.quantized:
        parity.append(check_parity(reference, quantized.chain, precisions(recipe, fp), heldout, recipe.parity.seed,
                                   f"{prefix}{target.name} int8", progress, pictures))
    for p in parity:
        require(p)
    return parity


def first_input(recipe: Recipe, reference: Chain, prompt: str, pictures=()) -> Callable[[str], dict]:
    """component -> its program's inputs on one held-out prompt (a tiled component's first tile),
    computed when asked: the reference replays what it recorded for the held-out prompts."""
    def feeds(name: str) -> dict:
        return next(reference.split(name, next(calibration_feeds(name, reference, [prompt], recipe.parity.seed,
                                                                 "device check", pictures))))

    return feeds


def for_device(recipe: Recipe, target: Target, options, quantized: Quantized, staging: Path,
               feeds: Callable[[str], dict], progress: Progress) -> tuple[Quantized, dict]:
    """The checked artifacts made into what the device loads (the target's step: QNN compiles
    context binaries per SoC and simulates them), and what checking those measured."""
    shipped, checks = target.for_device(quantized.artifacts, precisions(recipe, target.float_precision(options)),
                                        staging, staging / WORK_DIR, options, feeds, progress)
    return dataclasses.replace(quantized, artifacts=shipped), checks


def measure_latency(quantized: Quantized, reference: Chain, prompt: str, seed: int, pictures=(),
                    repeats: int = 3) -> dict:
    """Median seconds of the target's checker per component, float export vs shipped (a component
    left float is timed once), on one held-out input. Timings are not reproducible: they go to the
    bundle's unhashed timings.txt and the compile summary, never to a hashed file."""
    names = list(quantized.chain.runners)
    feeds = {name: next(calibration_feeds(name, reference, [prompt], seed, "latency", pictures)) for name in names}
    out = {}
    for name in names:
        runs = {"fp32": quantized.float_chain, "shipped": quantized.chain}
        if runs["fp32"].runners[name] is runs["shipped"].runners[name]:
            out[name] = dict.fromkeys(runs, _median_seconds(runs["fp32"], name, feeds[name], repeats))
        else:
            out[name] = {label: _median_seconds(chain, name, feeds[name], repeats) for label, chain in runs.items()}
        for chain in runs.values():
            chain.close(name)
    return out


def _median_seconds(chain: Chain, name: str, feed: dict, repeats: int) -> float:
    chain.run(name, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chain.run(name, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def torch_chain(wrapped: Wrapped, student: Student) -> Chain:
    runners = {name: Recorded(_torch_runner(g)) for name, g in wrapped.graphs.items()}
    return Chain(student.tokenizers, runners, wrapped.latent_shape, wrapped.wiring, wrapped.tiling, wrapped.img2img)


def _torch_runner(graph: Graph):
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = graph.module(*[torch.from_numpy(feeds[n]) for n in graph.input_names])
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run


def export(wrapped: Wrapped, student: Student, recipe: Recipe, reference: Chain, questions: list[Question],
           target: Target, options, staging: Path, progress: Progress) -> Exported:
    """One component at a time (streaming.one_at_a_time): its weights loaded, the reference's
    answers recorded, exported, released before the next is loaded."""
    artifacts, runners = {}, {}
    runner = _runner_factory(target, options)
    for graph in one_at_a_time(student, recipe, wrapped, reference, questions, progress):
        params = sum(p.numel() for p in getattr(graph.module, "shipped_parameters", graph.module.parameters)())
        progress.step(f"{graph.name}: exporting ({params / 1e6:.2f}M parameters)")
        artifacts[graph.name] = target.export(graph, staging, options)
        runners[graph.name] = Deferred(runner, staging / artifacts[graph.name].main)
    return Exported(artifacts, Chain(student.tokenizers, runners, wrapped.latent_shape, wrapped.wiring, wrapped.tiling,
                                     wrapped.img2img))


def bundle(staging: Path, recipe: Recipe, target: Target, options, built: list[Built], programs: dict) -> dict:
    """manifest.json, report.json/html and the tokenizers for the checked programs in `staging`.
    `programs`: component -> size key -> its program (multi-size bundles; {} for one size)."""
    first = built[0]
    student, wrapped, quantized = first.student, first.wrapped, first.quantized
    parity = [p for b in built for p in b.parity]
    for tok, folder in zip(student.tokenizers, student.tokenizer_dirs):
        save_tokenizer(tok, folder, staging / tok.name)
    tokenizers = [tok.manifest_entry() for tok in student.tokenizers]
    truncated = [s.prompt for p in parity[:1] for s in p.samples if s.truncated]
    warnings = [f"held-out prompt truncated to {wrapped.max_length} tokens: {p[:60]!r}" for p in truncated]
    warnings += getattr(student.prepare, "warnings", [])
    components = {}
    shipped = precisions(recipe, target.float_precision(options))
    for name in shipped:
        a = quantized.artifacts[name]
        q = quantized.components.get(name)
        program, io = _program(staging, target, first, name, programs)
        components[name] = {**program, "files": a.files, "precision": shipped[name],
                            "weights": WEIGHT_PRECISION[q.scheme] if q else shipped[name], **io}
        if name in wrapped.tiling:
            components[name]["tiling"] = wrapped.tiling[name].as_manifest()
    h, w = recipe.image.height, recipe.image.width
    # what was measured (parity, layer SQNR, fallback, the decoder's cost) goes to report.json, not
    # the manifest: figures differ in their last bits between CPUs, the manifest's bytes must not
    quantization = {f"{name}{'' if len(built) == 1 else ' ' + b.key}": q
                    for b in built for name, q in b.quantized.components.items()}
    device_checks = {k: v for b in built for k, v in (b.device_checks or {}).items()}
    manifest = {
        "name": recipe.name,
        "target": target.name,
        "family": recipe.family,
        "sampler": wrapped.constants,
        "image": {"height": h, "width": w, "channels": 3, "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0]},
        "latent": {"shape": list(wrapped.latent_shape), "scaling_factor": student.scaling_factor,
                   "decoder_class": type(student.vae).__name__, "vae_scale_factor": student.vae_scale_factor},
        "noise": {"algorithm": noise.ALGORITHM, "dtype": "float32", "shape": list(wrapped.latent_shape),
                  "output": NOISE_SOURCE},
        **({"sizes": size_entries(staging, target, built, programs)} if len(built) > 1 else {}),
        "tokenizers": tokenizers,
        "components": components,
        "wiring": wrapped.wiring.as_manifest(),
        "recipe": recipe.to_dict(),
        "calibration": quantized.calibration or None,
        "warnings": warnings,
        "source": source_fingerprint(student),
        **({"lora": fused} if (fused := lora.describe(recipe)) else {}),   # only in bundles that fuse any
        **({"img2img": wrapped.img2img.as_manifest()} if wrapped.img2img else {}),
        "targets": {target.name: target.manifest_block(options, quantized.artifacts, staging)},
        "tools": tool_versions(target.packages),
    }
    figures = {"parity": [p.as_dict() for p in parity],
               "quantization": {"components": {n: q.as_dict() for n, q in quantization.items()}} if quantization
               else None,
               "decoder_cost": first.decoder_cost.as_dict() if first.decoder_cost else None,
               "device_checks": device_checks or None}
    sizes = ", ".join(b.key for b in built)
    summary = {"name": recipe.name, "target": target.name, "family": recipe.family,
               "image": f"{h}x{w}" if len(built) == 1 else f"{sizes} (width x height; default {first.key})",
               "precision": ", ".join(f"{n} {p}" for n, p in shipped.items()),
               "parity": "pass" if all(p.passed for p in parity) else "FAIL", "numbers checked by": target.checker(options)}
    sections = report.lora_section(manifest.get("lora")) + report.quantization_sections(quantization)
    sections += report.delegation_section(manifest["targets"][target.name])
    sections += report.device_section(manifest["targets"][target.name], device_checks, staging)
    if first.decoder_cost:
        sections += report.decoder_cost_section(first.decoder_cost, figures["decoder_cost"])
    if first.latency:
        sections += report.latency_section()
        checker = target.checker(options) + ("" if len(built) == 1 else f", at the default size {first.key}")
        (staging / TIMINGS).write_text(report.timings_text(first.latency, checker), encoding="utf-8")
    manifest = write_manifest(staging, manifest)
    report.write_record(staging, figures, report.render(f"{recipe.name} ({target.name})", summary, parity, sections))
    return {**manifest, **figures}


def size_entries(staging: Path, target: Target, built: list[Built], programs: dict) -> list[dict]:
    """Per size, what differs from the default: its noise shape, and each component whose program or
    tile plan depends on the size (its file, I/O and tiling). The first entry is the default."""
    out = []
    for b in built:
        components = {}
        for name in b.quantized.artifacts:
            if name not in programs and name not in b.wrapped.tiling:
                continue
            program, io = _program(staging, target, b, name, programs)
            components[name] = {**program, "inputs": io["inputs"], "outputs": io["outputs"]}
            if name in b.wrapped.tiling:
                components[name]["tiling"] = b.wrapped.tiling[name].as_manifest()
        out.append({"height": b.size[0], "width": b.size[1], "noise_shape": list(b.wrapped.latent_shape), "components": components})
    return out


def _program(staging: Path, target: Target, b: Built, name: str, programs: dict) -> tuple[dict, dict]:
    """({"file"[, "function"]}, its I/O) of the program `name` runs at b's size."""
    program = programs[name][b.key] if name in programs else {"file": b.quantized.artifacts[name].main}
    return program, target.describe_io(staging / program["file"], program.get("function"))


def source_fingerprint(student: Student) -> dict:
    root = Path(student.source)
    out = {"folder_name": root.name, "weights_sha256": _weight_hashes(root)}
    if student.vae_source and student.vae_source != student.source:
        out["decoder"] = {"folder_name": Path(student.vae_source).name, "subfolder": student.vae_subfolder,
                          "weights_sha256": _weight_hashes(Path(student.vae_source) / student.vae_subfolder)}
    return out


def _weight_hashes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*.safetensors"))}


def tool_versions(target_packages: tuple[str, ...]) -> dict:
    return {"onestep-edge-compiler": __version__, **package_versions(*TOOLS, *target_packages)}
