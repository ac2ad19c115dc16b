"""Shared fixtures: tiny seeded students of the real classes (built once per session) and a
helper that runs the console entry points in-process."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# Family recipe name -> seeded student layout
FAMILY_LAYOUTS = {
    "eps-turbo": "eps-turbo",
    "eps-turbo-xl": "eps-turbo-xl",
    "sample-lightning": "sample-lightning",
    "lcm": "lcm",
    "rectified-flow": "rectified-flow",
}


@pytest.fixture(scope="session")
def students(tmp_path_factory) -> dict[str, Path]:
    from compiler.seeded_students import KINDS, TinySpec, build

    root = tmp_path_factory.mktemp("students")
    return {k: build(root / k, TinySpec(kind=k, tiny_vae=True)) for k in KINDS}


@pytest.fixture
def student_copy(students, tmp_path):
    """A private copy of a seeded student that a test may corrupt."""

    def copy(kind: str = "eps-turbo") -> Path:
        dst = tmp_path / f"student-{kind}"
        shutil.copytree(students[kind], dst)
        return dst

    return copy


# compile case -> (seeded student layout, decoder subfolder): every family, both decoder classes
CASES = {
    "eps-turbo": ("eps-turbo", "vae"),
    "eps-turbo-xl": ("eps-turbo-xl", "vae_tiny"),
    "sample-lightning": ("sample-lightning", "vae"),
    "lcm": ("lcm", "vae_tiny"),
    "rectified-flow": ("rectified-flow", "vae"),
}


def compile_quietly(target: str, recipe: Path, model: Path, out: Path, *extra: str) -> tuple[int, str]:
    """`compile --quiet` in-process; (exit code, stderr)."""
    import contextlib
    import io

    from compiler import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.compile_main(["--target", target, "--recipe", str(recipe), "--model", str(model),
                                 "--out", str(out), "--quiet", *extra])
    return int(code), err.getvalue()


def family_of(kind: str) -> str:
    return "eps-turbo" if kind == "eps-turbo-xl" else kind


def write_recipe(path: Path, family: str = "eps-turbo", extra: str = "", num_prompts: int = 2) -> Path:
    path.write_text(f"""version: 1
name: tiny-{family}
family: {family}
image: {{height: 32, width: 32}}
parity: {{prompts: {REPO / 'tests/fixtures/heldout-tiny.txt'}, num_prompts: {num_prompts}, seed: 3}}
{extra}""")
    return path


@pytest.fixture
def run_cli(capsys):
    """Run an entry point in-process; returns (exit code, stdout, stderr)."""
    from compiler import cli

    def run(entry: str, *args: str):
        code = getattr(cli, f"{entry}_main")(list(map(str, args)))
        out = capsys.readouterr()
        return int(code), out.out, out.err

    return run


def flip_byte(path: Path) -> None:
    """Corrupt one bit in the middle of a file, as a bad download or disk would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def tree_snapshot(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
