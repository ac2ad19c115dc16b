"""Stage 6, bundle: the atomic output directory a compile (or `package`) writes into, and the
versions a manifest records. What a bundle holds and how readers check it: compiler/contract/."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import EnvironmentError_, RecipeError

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
