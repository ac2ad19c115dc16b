"""Stage 6, bundle: atomic output directory, manifest.json with a sha256 per file, and the
loader-side check that refuses a bundle whose files do not match their manifest."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterator

from . import bounded_json
from .errors import BundleError, EnvironmentError_, RecipeError
from .limits import MAX_ELEMENTS, MAX_MANIFEST_BYTES
from .noise import ALGORITHM as NOISE_ALGORITHM
from .tokenizers import CLIP, SENTENCEPIECE

# 2: wiring, tokenizer files and noise named in the manifest; manifest.sha256 protects the manifest.
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
# sha256sum format ("<hex>  manifest.json"), so `sha256sum -c manifest.sha256` checks it too.
MANIFEST_DIGEST = "manifest.sha256"
# report.html is for people and hashed like every file; the latencies it shows are
# measurements of the compiling machine, which differ run to run, so they live in timings.txt,
# plain text read by nothing, outside the hashes and the byte-identical promise (as is the
# signature of a signed bundle, which signs the manifest and so cannot be listed in it).
REPORT = "report.html"
TIMINGS = "timings.txt"
# `compile --sign-key`: a signature over manifest.json (compiler/signing.py); it cannot hash itself.
SIGNATURE = "manifest.sig"
# CLIP byte-level BPE from vocab.json + merges.txt, as runtimes/README.md specifies it.
# tokenizer type -> the bundle files its manifest entry names (the first: in the tokenizer's folder)
TOKENIZER_FILES = {CLIP: ("vocab", "merges"), SENTENCEPIECE: ("tokenizer_json",)}
UNHASHED = (MANIFEST, MANIFEST_DIGEST, TIMINGS, SIGNATURE)
# What an app does not carry (`package`): the report and timings are for people and stay beside the
# bundle. A runtime accepts a bundle without report.html; `verify` requires it (with its hash).
FOR_PEOPLE = (REPORT, TIMINGS)


def package_versions(*names: str) -> dict:
    """Installed versions, read from package metadata without importing the packages."""
    import importlib.metadata

    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse early, before any work, if the run could not finish by renaming into `out`."""
    if out.exists() and not out.is_dir():
        raise RecipeError(f"--out {out}", "exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise RecipeError(f"--out {out}", "already exists and is not empty; pass --force to replace it atomically")
    parent = out.resolve().parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise EnvironmentError_(f"--out {out}", f"cannot create parent directory ({exc.strerror})") from None
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise EnvironmentError_(f"--out {out}", "directory is not writable")


@contextlib.contextmanager
def atomic_output(out: Path, force: bool) -> Iterator[Path]:
    """Yield a staging directory beside `out`; on success it replaces `out` in one rename (the old
    bundle kept until the new one is in place, and put back if that rename fails), on any failure
    (Ctrl-C included) it is deleted and `out` is exactly as before. Directories are fsynced, so a
    bundle survives power loss after exit 0."""
    out = Path(out)
    recover_interrupted(out)
    check_output_dir(out, force)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
    except OSError as exc:
        raise EnvironmentError_(f"--out {out}", f"cannot write beside it ({exc.strerror})") from None
    try:
        yield staging
        _fsync_tree(staging)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(old, out)
                raise
            _fsync_dir(out.parent)
            shutil.rmtree(old)
        else:
            os.rename(staging, out)
            _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def recover_interrupted(out: Path) -> None:
    """Undo what a killed run (SIGKILL, power loss) left beside `out`: its staging directory is
    removed, and a previous bundle it had moved aside is put back if `out` is missing. Only
    directories whose owning process is gone are touched: a running compile keeps its own."""
    if not out.parent.is_dir():
        return
    prefix = f".{out.name}."
    for leftover in sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix)):
        kind, _, pid = leftover.name[len(prefix):].rpartition("-")
        if kind not in ("staging", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            os.rename(leftover, out)
            _fsync_dir(out.parent)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for folder in sorted({p.parent for p in root.rglob("*")} | {root}, reverse=True):
        _fsync_dir(folder)


def file_table(root: Path) -> dict[str, dict]:
    """sha256 and size of every file in the bundle except the manifest and timings.txt."""
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
    (root / MANIFEST_DIGEST).write_text(_digest_line(data), encoding="ascii")


def _digest_line(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n"


REQUIRED_KEYS = {"schema_version": int, "target": str, "family": str, "components": dict, "files": dict,
                 "tokenizers": list, "noise": dict, "wiring": dict, "sampler": dict, "image": dict}


def read_verified_manifest(bundle: Path, with_report: bool = False) -> dict:
    """Load manifest.json and prove it and every file it names are what the compiler wrote;
    BundleError (exit 7) otherwise, before any model or tokenizer is opened. report.html may be
    absent, as in an app's copy, unless `with_report`; when present its hash is checked."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(str(path), "missing; not a bundle directory")
    data, manifest = bounded_json.read(path, MAX_MANIFEST_BYTES)
    manifest = _schema(manifest, path)
    _check_digest(bundle, data, manifest)
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise BundleError(f"{path}: {key}", f"missing or not a {kind.__name__} (schema invalid)")
    root = bundle.resolve()
    for rel, entry in sorted(manifest["files"].items()):
        file = _inside(root, rel, path)
        if not file.is_file() and rel == REPORT and not with_report and not file.is_symlink():
            continue
        if not file.is_file():
            raise BundleError(f"{path}: files.{rel}", "listed file is missing")
        size = entry.get("size") if isinstance(entry, dict) else None
        if file.stat().st_size != size or isinstance(size, bool):
            raise BundleError(f"{bundle / rel}", f"size {file.stat().st_size} != manifest {size}")
        if sha256_file(file) != entry.get("sha256"):
            raise BundleError(f"{bundle / rel}", "sha256 does not match manifest.json (file modified or corrupt)")
    listed = set(manifest["files"]) | set(UNHASHED)
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if (file.is_file() or file.is_symlink()) and rel not in listed:
            raise BundleError(str(bundle / rel), "file not listed in manifest.json")
    _check_references(manifest, path)
    return manifest


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
    if expected != _digest_line(data):
        raise BundleError(str(bundle / MANIFEST), f"sha256 does not match {MANIFEST_DIGEST} (manifest modified or corrupt)")


def _check_references(manifest: dict, path: Path) -> None:
    """Every path the manifest names must be a checked file of the table (or the folder holding
    some), so nothing outside the bundle is ever opened; every value a runtime reads has its type;
    the wiring must be one a runtime can follow."""
    from .tiling import manifest_problem as tiling_problem
    from .wiring import Wiring

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
    problems = wiring.problems({src for t in manifest["tokenizers"] for src in (t.get("output"), t.get("mask_output"))
                                if isinstance(src, str)})
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
    components = {n: {k: c[k] for k in ("file", "files", "inputs", "outputs", "precision", "tiling") if k in c}
                  for n, c in manifest["components"].items()}
    targets = {t: {k: v for k, v in block.items() if k in ("compute_units", "backend", "minimum_deployment_target")}
               for t, block in manifest.get("targets", {}).items()}
    return {**{k: manifest[k] for k in RUNTIME_KEYS}, "components": components, "targets": targets}


def _inside(root: Path, rel: str, where: Path) -> Path:
    """Resolve a manifest path and refuse anything that escapes the bundle (.., absolute, symlinks)."""
    if rel.startswith("/") or ".." in Path(rel).parts or "\\" in rel:
        raise BundleError(f"{where}: files.{rel}", "path leaves the bundle directory")
    file = (root / rel)
    if file.is_symlink() or not file.resolve().is_relative_to(root):
        raise BundleError(f"{where}: files.{rel}", "path resolves outside the bundle directory")
    return file
