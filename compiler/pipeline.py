"""compile(): load -> wrap -> export -> quantize -> verify -> bundle, each a plain function."""
from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, noise, report
from .bundle import atomic_output, check_output_dir, sha256_file, write_manifest
from .load import Student, load_student
from .progress import Progress
from .prompts import read_prompts
from .recipe import Recipe
from .runtime import Chain
from .targets import Target, get_target
from .verify import Parity, check_parity, require
from .wrap import COMPONENTS, Graph, Wrapped, wrap

STAGES = ("load", "wrap", "export", "quantize", "verify", "bundle")
TOOLS = ("torch", "diffusers", "transformers", "onnx", "onnxruntime", "onnxscript", "nncf", "numpy")
TOKENIZER_FILES = (".json", ".txt")


@dataclass
class Exported:
    files: dict[str, list[str]]          # component -> files written in the staging dir
    chain: Chain


@dataclass
class Result:
    out: Path
    manifest: dict
    parity: list[Parity]


def compile_bundle(recipe: Recipe, target_name: str, model: str, out: Path, force: bool = False,
                   progress: Progress | None = None) -> Result:
    progress = progress or Progress(len(STAGES))
    progress.total = len(STAGES)
    target = get_target(target_name)
    heldout = read_prompts(recipe.parity.prompts, "parity.prompts")[: recipe.parity.num_prompts]
    check_output_dir(out, force)
    with atomic_output(out, force) as staging:
        with progress.stage("load", model):
            student = load_student(model, recipe.family, recipe.components.vae_decoder.subfolder)
        with progress.stage("wrap", f"family {recipe.family}, {recipe.image.height}x{recipe.image.width}"):
            wrapped = wrap(student, recipe)
            reference = torch_chain(wrapped, student)
        with progress.stage("export", f"{target.name}, opset {recipe.export.opset}"):
            exported = export(wrapped, student, target, staging, recipe.export.opset, progress)
        with progress.stage("quantize", "int8" if recipe.quantized else "skipped (all components fp32)"):
            pass
        with progress.stage("verify", f"{len(heldout)} held-out prompts from {recipe.parity.prompts}"):
            parity = [check_parity(reference, exported.chain, precisions(recipe), heldout, recipe.parity.seed,
                                   f"{target.name} fp32", progress)]
            for p in parity:
                require(p)
        with progress.stage("bundle", str(out)):
            manifest = bundle(staging, recipe, target, student, wrapped, exported, parity)
    return Result(Path(out), manifest, parity)


def precisions(recipe: Recipe) -> dict[str, str]:
    return {name: "fp32" for name in COMPONENTS}


def torch_chain(wrapped: Wrapped, student: Student) -> Chain:
    runners = {name: _torch_runner(g) for name, g in wrapped.graphs.items()}
    return Chain(student.tokenizers, runners, wrapped.latent_shape, student.dual)


def _torch_runner(graph: Graph):
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = graph.module(*[torch.from_numpy(feeds[n]) for n in graph.input_names])
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run


def export(wrapped: Wrapped, student: Student, target: Target, staging: Path, opset: int,
           progress: Progress) -> Exported:
    files, runners = {}, {}
    for name in COMPONENTS:
        graph = wrapped.graphs[name]
        params = sum(p.numel() for p in graph.module.parameters())
        progress.step(f"{name}: {params / 1e6:.2f}M parameters")
        files[name] = target.export(graph, staging, opset)
        runners[name] = target.load(staging / files[name][0])
    return Exported(files, Chain(student.tokenizers, runners, wrapped.latent_shape, student.dual))


def bundle(staging: Path, recipe: Recipe, target: Target, student: Student, wrapped: Wrapped,
           exported: Exported, parity: list[Parity]) -> dict:
    tokenizers = []
    for i, folder in enumerate(student.tokenizer_dirs):
        name = "tokenizer" if i == 0 else f"tokenizer_{i + 1}"
        (staging / name).mkdir()
        copied = []
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in TOKENIZER_FILES:
                shutil.copyfile(f, staging / name / f.name)
                copied.append(f.name)
        tok = student.tokenizers[i]
        tokenizers.append({"folder": name, "class": "CLIPTokenizer", "files": copied, "max_length": wrapped.max_length,
                           "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                           "pad_token_id": tok.pad_token_id})
    truncated = [s.prompt for p in parity[:1] for s in p.samples if s.truncated]
    warnings = [f"held-out prompt truncated to {wrapped.max_length} tokens: {p[:60]!r}" for p in truncated]
    components = {}
    for name in COMPONENTS:
        main = exported.files[name][0]
        components[name] = {"file": main, "files": exported.files[name], "precision": precisions(recipe)[name],
                            **target.describe_io(staging / main)}
    h, w = recipe.image.height, recipe.image.width
    summary = {"name": recipe.name, "target": target.name, "family": recipe.family, "image": f"{h}x{w}",
               "parity": "pass" if all(p.passed for p in parity) else "FAIL"}
    (staging / "report.html").write_text(report.render(f"{recipe.name} ({target.name})", summary, parity),
                                         encoding="utf-8")
    manifest = {
        "name": recipe.name,
        "target": target.name,
        "family": recipe.family,
        "sampler": wrapped.constants,
        "image": {"height": h, "width": w, "channels": 3, "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0]},
        "latent": {"shape": list(wrapped.latent_shape), "scaling_factor": student.scaling_factor,
                   "decoder_class": type(student.vae).__name__, "vae_scale_factor": student.vae_scale_factor},
        "noise": {"algorithm": noise.ALGORITHM, "dtype": "float32", "shape": list(wrapped.latent_shape),
                  "seed_to_noise": "compiler/noise.py"},
        "tokenizers": tokenizers,
        "components": components,
        "recipe": recipe.to_dict(),
        "parity": [p.as_dict() for p in parity],
        "warnings": warnings,
        "source": source_fingerprint(student),
        "tools": tool_versions(),
    }
    return write_manifest(staging, manifest)


def source_fingerprint(student: Student) -> dict:
    root = Path(student.source)
    weights = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*.safetensors"))}
    return {"folder_name": root.name, "weights_sha256": weights}


def tool_versions() -> dict:
    versions = {"onestep-edge-compiler": __version__}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
