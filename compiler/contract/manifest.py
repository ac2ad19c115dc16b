"""manifest.json: the schema (version 2), what a compiler writes (the files table, the digest line)
and what every reader checks of its values and references. The mirror of runtimes/kotlin's and
runtimes/swift's Manifest; verifier.py checks the files against it."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from ..errors import BundleError
from .limits import MAX_ELEMENTS
from . import sizes
from .init_image import INIT_IMAGE_SOURCE, STEP_SOURCE, Img2Img
from .noise import ALGORITHM as NOISE_ALGORITHM
from .tiling import manifest_problem as tiling_problem
from .tokenizers import CLIP, SENTENCEPIECE
from .wiring import Wiring

# 2: wiring, tokenizer files and noise named in the manifest; manifest.sha256 protects the manifest.
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
# sha256sum format ("<hex>  manifest.json"), so `sha256sum -c manifest.sha256` checks it too.
MANIFEST_DIGEST = "manifest.sha256"
# What a compile measured (parity PSNR, layer SQNR, the decoder's cost) differs in its last bits
# from one CPU's kernels to another's, so it is kept out of the bytes that identify a bundle:
# report.json (figures) and report.html (for people) sit beside the manifest, bound to it by its
# sha256 and hashed in report.sha256, which `verify` checks (compiler/report.py). Latencies differ
# run to run: timings.txt, read by nothing. manifest.sig signs the manifest, so it cannot be listed in it.
REPORT = "report.html"
REPORT_DATA = "report.json"
REPORT_DIGEST = "report.sha256"
TIMINGS = "timings.txt"
# `compile --sign-key`: a signature over manifest.json (compiler/signing.py); it cannot hash itself.
SIGNATURE = "manifest.sig"
# CLIP byte-level BPE from vocab.json + merges.txt, as runtimes/README.md specifies it.
# tokenizer type -> the bundle files its manifest entry names (the first: in the tokenizer's folder)
TOKENIZER_FILES = {CLIP: ("vocab", "merges"), SENTENCEPIECE: ("tokenizer_json",)}
# What an app does not carry (`package`): the report and timings are for people and stay beside
# the bundle; a runtime reads none of them.
FOR_PEOPLE = (REPORT, REPORT_DATA, REPORT_DIGEST, TIMINGS)
UNHASHED = (MANIFEST, MANIFEST_DIGEST, SIGNATURE, *FOR_PEOPLE)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(root: Path) -> dict[str, dict]:
    """sha256 and size of every file in the bundle except the manifest, its digest and signature, and the report."""
    table = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in UNHASHED:
            table[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def write_manifest(root: Path, manifest: dict) -> dict:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": file_table(root)}
    sign_manifest(root, manifest)
    return manifest


def sign_manifest(root: Path, manifest: dict) -> None:
    """Write manifest.json and the manifest.sha256 that protects it (the loader checks it first)."""
    data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    (root / MANIFEST).write_bytes(data)
    (root / MANIFEST_DIGEST).write_text(digest_line(data, MANIFEST), encoding="ascii")


def digest_line(data: bytes, name: str) -> str:
    """One line of sha256sum's format, so `sha256sum -c` checks the file too."""
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


REQUIRED_KEYS = {"schema_version": int, "target": str, "family": str, "components": dict, "files": dict,
                 "tokenizers": list, "noise": dict, "wiring": dict, "sampler": dict, "image": dict}


def _schema(manifest, path: Path) -> dict:
    if not isinstance(manifest, dict):
        raise BundleError(str(path), "manifest must be a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version", f"is {version!r}, this loader reads {SCHEMA_VERSION}: the bundle "
                                                     f"was written by another compiler version; compile it again")
    return manifest


def _check_digest(bundle: Path, data: bytes, manifest: dict) -> None:
    digest = bundle / MANIFEST_DIGEST
    if not digest.is_file():
        raise BundleError(str(digest), "missing; the manifest cannot be checked (bundle incomplete or edited)")
    expected = digest.read_bytes().decode("ascii", "replace")
    if expected != digest_line(data, MANIFEST):
        raise BundleError(str(bundle / MANIFEST), f"sha256 does not match {MANIFEST_DIGEST} (manifest modified or corrupt)")


def _check_references(manifest: dict, path: Path) -> None:
    """Every path the manifest names must be a checked file of the table (or the folder holding
    some), so nothing outside the bundle is ever opened; every value a runtime reads has its type;
    the wiring must be one a runtime can follow. A multi-size manifest must be all that at each
    of its sizes (compiler/contract/sizes.py)."""
    _check_one_size(manifest, path)
    if "sizes" not in manifest:
        return
    if problem := sizes.structure_problem(manifest):
        raise BundleError(f"{path}: {problem[0]}", problem[1])
    for i, (h, w) in enumerate(sizes.sizes_of(manifest)):
        _check_one_size(sizes.at_size(manifest, h, w), f"{path}: sizes[{i}]")


def _check_one_size(manifest: dict, path) -> None:
    files = manifest["files"]
    folders = {p.rsplit("/", 1)[0] for p in files if "/" in p}
    for name, comp in sorted(manifest["components"].items()):
        where = f"{path}: components.{name}"
        listed = comp.get("files") if isinstance(comp, dict) else None
        if not isinstance(listed, list) or not listed or not all(isinstance(f, str) and f in files for f in listed):
            raise BundleError(f"{where}.files", "must list files of the files table")
        main = comp.get("file")
        if not isinstance(main, str) or (main not in files and not any(f.startswith(f"{main}/") for f in listed)):
            raise BundleError(f"{where}.file", f"{main!r} is not a checked file or folder of the bundle")
        if "function" in comp and not (isinstance(comp["function"], str) and comp["function"]):
            raise BundleError(f"{where}.function", "must be the name of a program in the file")
        for key in ("inputs", "outputs"):
            tensors = comp.get(key)
            if not isinstance(tensors, list) or not all(_tensor_spec(t) for t in tensors):
                raise BundleError(f"{where}.{key}", "must be a list of named tensors (name, dtype float32/int64/int32, "
                                                    "shape of sizes)")
        if "tiling" in comp and (problem := tiling_problem(comp)):
            raise BundleError(f"{where}.tiling", problem)
    for i, tok in enumerate(manifest["tokenizers"]):
        where = f"{path}: tokenizers[{i}]"
        if not isinstance(tok, dict):
            raise BundleError(where, "must be an object")
        if tok.get("type") not in TOKENIZER_FILES:
            raise BundleError(f"{where}.type", f"{tok.get('type')!r}: runtimes implement "
                                               f"{', '.join(map(repr, TOKENIZER_FILES))}")
        keys = TOKENIZER_FILES[tok["type"]]
        for key in keys:
            if not isinstance(tok.get(key), str) or tok[key] not in files:
                raise BundleError(f"{where}.{key}", f"{tok.get(key)!r} is not a checked file of the bundle")
        folder = tok.get("folder")
        if not isinstance(folder, str) or folder not in folders or not tok[keys[0]].startswith(f"{folder}/"):
            raise BundleError(f"{where}.folder", f"{folder!r} is not the folder holding its {keys[0]}")
        for key in ("max_length", "bos_token_id", "eos_token_id", "pad_token_id"):
            # a sentencepiece tokenizer may have no BOS (T5): null there
            optional = tok["type"] == SENTENCEPIECE and key == "bos_token_id" and tok.get(key) is None
            if not optional and not _count(tok.get(key)):
                raise BundleError(f"{where}.{key}", "must be a non-negative integer")
        if tok["type"] == SENTENCEPIECE and (not isinstance(tok.get("prefix"), str) or
                                            not isinstance(tok.get("lowercase"), bool) or
                                            not _count(tok.get("prompt_length"))):
            raise BundleError(f"{where}.prefix", "a sentencepiece tokenizer needs prefix (text), lowercase (bool) "
                                                 "and prompt_length")
    noise = manifest["noise"]
    if noise.get("algorithm") != NOISE_ALGORITHM:
        raise BundleError(f"{path}: noise.algorithm", f"{noise.get('algorithm')!r}: runtimes implement {NOISE_ALGORITHM!r}")
    if not _shape(noise.get("shape")) or not 0 < math.prod(noise["shape"]) <= MAX_ELEMENTS:
        raise BundleError(f"{path}: noise.shape", f"must be a list of positive sizes of at most {MAX_ELEMENTS} elements")
    try:
        wiring = Wiring.from_manifest(manifest)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BundleError(f"{path}: wiring", f"malformed ({type(exc).__name__}: {exc})") from None
    sources = {src for t in manifest["tokenizers"] for src in (t.get("output"), t.get("mask_output"))
               if isinstance(src, str)}
    if "img2img" in manifest:
        try:
            img2img = Img2Img.from_manifest(manifest["img2img"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise BundleError(f"{path}: img2img", f"malformed ({type(exc).__name__}: {exc})") from None
        if img2img.encoder not in manifest["components"]:
            raise BundleError(f"{path}: img2img.encoder", f"{img2img.encoder!r} is not a component of the bundle")
        sources |= {INIT_IMAGE_SOURCE, STEP_SOURCE}
    problems = wiring.problems(sources)
    for name, comp in sorted(manifest["components"].items()):
        wired = set(wiring.inputs.get(name, {}))
        if name not in wiring.order or wired != {t["name"] for t in comp["inputs"]}:
            problems.append(f"wiring.inputs.{name}: does not name a source for each input of the component")
    if problems:
        raise BundleError(f"{path}: {problems[0].split(':')[0]}", problems[0].split(": ", 1)[1])


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_ELEMENTS


def _shape(v) -> bool:
    return isinstance(v, list) and all(_count(d) for d in v)


def _tensor_spec(t) -> bool:
    return (isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("dtype") in ("float32", "int64", "int32")
            and _shape(t.get("shape")))


RUNTIME_KEYS = ("schema_version", "name", "target", "family", "sampler", "image", "noise", "tokenizers", "wiring", "files")


def runtime_view(manifest: dict) -> dict:
    """What an on-device runtime reads of a manifest (runtimes/README.md): no parity, recipe or tools."""
    components = {n: {k: c[k] for k in ("file", "function", "files", "inputs", "outputs", "precision", "tiling") if k in c}
                  for n, c in manifest["components"].items()}
    targets = {t: {k: v for k, v in block.items() if k in ("compute_units", "backend", "minimum_deployment_target",
                                                           "soc_models", "cpu_fallback")}
               for t, block in manifest.get("targets", {}).items()}
    extra = {k: manifest[k] for k in ("img2img", "sizes") if k in manifest}
    return {**{k: manifest[k] for k in RUNTIME_KEYS}, **extra, "components": components, "targets": targets}
