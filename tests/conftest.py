"""Shared fixtures: tiny seeded students of the real classes (built once per session), bundles
compiled on first use, the console commands run in-process, and the attack tally's summary line.
The helpers the tests import live in support.py."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from support import (ATTACKS, CASES, TILED_DECODER, TRANSFORMER_TEXT, compile_quietly, compiled_on_first_use,
                     onnx_recipe, write_recipe)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

@pytest.fixture(scope="session")
def students(tmp_path_factory) -> dict[str, Path]:
    from compiler.testing.seeded_students import KINDS, TinySpec, build

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




@pytest.fixture(scope="session")
def bundles(students, tmp_path_factory):
    """case -> bundle directory, compiled on first use and shared by every test in the session."""
    root = tmp_path_factory.mktemp("bundles")
    return compiled_on_first_use(root, lambda case: (onnx_recipe(root / f"{case}.yaml", case),
                                                     students[CASES[case][0]]))


@pytest.fixture(scope="session")
def transformer_bundles(students, tmp_path_factory):
    """Transformer family -> its fp32 ONNX bundle, compiled on first use and shared."""
    root = tmp_path_factory.mktemp("transformer-bundles")
    return compiled_on_first_use(root, lambda kind: (write_recipe(root / f"{kind}.yaml", kind, extra=TRANSFORMER_TEXT),
                                                     students[kind]))


@pytest.fixture
def workdir(tmp_path):
    """A clean directory for a run: everything written by a failing run would show up here."""
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def tiled_bundle(students, tmp_path_factory) -> Path:
    """An eps-turbo bundle whose W8A8 decoder ships at one 16x16 px tile and decodes the 32x32
    image in 3x3 tiles (compiler/contract/tiling.py), shared by the Python and Kotlin tests."""
    root = tmp_path_factory.mktemp("tiled")
    recipe = write_recipe(root / "tiled.yaml", extra=TILED_DECODER)
    code, err = compile_quietly("onnx", recipe, students["eps-turbo"], root / "bundle")
    assert code == 0, err
    return root / "bundle"


@pytest.fixture
def run_cli(capsys):
    """Run a console command in-process (compiler/commands/<entry>.py); returns (exit code, stdout, stderr)."""
    import importlib

    def run(entry: str, *args: str):
        code = importlib.import_module(f"compiler.commands.{entry}").main(list(map(str, args)))
        out = capsys.readouterr()
        return int(code), out.out, out.err

    return run


@pytest.fixture(scope="session")
def generated_png(tmp_path_factory) -> Callable[[Path, str, str], bytes]:
    """`generate`'s PNG for (bundle, prompt, seed), made once per session: the Kotlin and the Swift
    pipelines are both compared with it."""
    from compiler.commands import generate as generate_command
    from compiler.errors import Exit

    root = tmp_path_factory.mktemp("generated")
    made: dict[tuple, bytes] = {}

    def get(bundle: Path, prompt: str, seed: str) -> bytes:
        key = (str(bundle), prompt, seed)
        if key not in made:
            out = root / f"{len(made)}.png"
            code = generate_command.main(["--bundle", str(bundle), "--prompt", prompt, "--seed", seed,
                                          "--out", str(out)])
            assert code == Exit.OK, f"generate {bundle} seed {seed}: exit {code}"
            made[key] = out.read_bytes()
        return made[key]

    return get


def pytest_terminal_summary(terminalreporter):
    if any(run for run, _ in ATTACKS.values()):
        terminalreporter.write_line("attacks: " + "; ".join(f"{run} {kind}, {bad} failed" for kind, (run, bad)
                                                             in ATTACKS.items()))
