"""The check every reader runs before it opens anything: manifest.json against manifest.sha256,
bounded, of this schema; every file it lists there, whole and unchanged; nothing unlisted; every
path inside the bundle. The mirror of runtimes/kotlin's and runtimes/swift's BundleVerifier."""
from __future__ import annotations

from pathlib import Path

from ..errors import BundleError
from . import bounded_json
from .limits import MAX_MANIFEST_BYTES
from .manifest import (MANIFEST, REQUIRED_KEYS, UNHASHED, _check_digest, _check_references, _schema,
                       sha256_file)

def read_verified_manifest(bundle: Path) -> dict:
    """Load manifest.json and prove it and every file it names are what the compiler wrote;
    BundleError (exit 7) otherwise, before any model or tokenizer is opened. The report beside
    it is for people and `verify` (compiler/report.py read_verified_record), not checked here."""
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


def _inside(root: Path, rel: str, where: Path) -> Path:
    """Resolve a manifest path and refuse anything that escapes the bundle (.., absolute, symlinks)."""
    if rel.startswith("/") or ".." in Path(rel).parts or "\\" in rel:
        raise BundleError(f"{where}: files.{rel}", "path leaves the bundle directory")
    file = (root / rel)
    if file.is_symlink() or not file.resolve().is_relative_to(root):
        raise BundleError(f"{where}: files.{rel}", "path resolves outside the bundle directory")
    return file
