"""Stage 6, bundle: atomic output directory, manifest.json with a sha256 per file, and the
loader-side check that refuses a bundle whose files do not match their manifest."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import BundleError, EnvironmentError_, RecipeError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# report.html is for people: it records measured latencies, which differ run to run, so it
# is written after the manifest and is neither hashed nor part of the byte-identical promise.
REPORT = "report.html"
UNHASHED = (MANIFEST, REPORT)


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
    """Yield a staging directory beside `out`; on success it replaces `out` in one rename,
    on any failure (Ctrl-C included) it is deleted and `out` is exactly as before."""
    out = Path(out)
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
            os.rename(staging, out)
            shutil.rmtree(old)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_table(root: Path) -> dict[str, dict]:
    """sha256 and size of every file in the bundle except the manifest and the report."""
    table = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in UNHASHED:
            table[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def write_manifest(root: Path, manifest: dict) -> dict:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": file_table(root)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
    return manifest


REQUIRED_KEYS = ("schema_version", "target", "family", "components", "files", "tokenizers", "noise", "sampler", "image")


def read_verified_manifest(bundle: Path) -> dict:
    """Load manifest.json and prove every file matches it; BundleError (exit 7) otherwise."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(str(path), "missing; not a bundle directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(str(path), f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(str(path), "manifest must be a JSON object")
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise BundleError(f"{path}: {key}", "missing from manifest (schema invalid)")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version", f"is {manifest['schema_version']}, this loader reads {SCHEMA_VERSION}")
    root = bundle.resolve()
    for rel, entry in sorted(manifest["files"].items()):
        file = _inside(root, rel, path)
        if not file.is_file():
            raise BundleError(f"{path}: files.{rel}", "listed file is missing")
        if file.stat().st_size != entry.get("size"):
            raise BundleError(f"{bundle / rel}", f"size {file.stat().st_size} != manifest {entry.get('size')}")
        if sha256_file(file) != entry.get("sha256"):
            raise BundleError(f"{bundle / rel}", "sha256 does not match manifest.json (file modified or corrupt)")
    listed = set(manifest["files"]) | set(UNHASHED)
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.is_file() and rel not in listed:
            raise BundleError(str(bundle / rel), "file not listed in manifest.json")
    return manifest


def _inside(root: Path, rel: str, where: Path) -> Path:
    """Resolve a manifest path and refuse anything that escapes the bundle (.., absolute, symlinks)."""
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise BundleError(f"{where}: files.{rel}", "path leaves the bundle directory")
    file = (root / rel)
    if file.is_symlink() or not file.resolve().is_relative_to(root):
        raise BundleError(f"{where}: files.{rel}", "path resolves outside the bundle directory")
    return file
