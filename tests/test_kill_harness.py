"""SIGKILL `compile --force` at points through its run (kill -9 skips every cleanup): --out is
then the previous bundle or the complete new one, never absent or half-written, and the next run
removes whatever the killed one left beside it. A few kills in `make test`; 200 at random points
in `make test-slow`, which prints how many ran and how many left anything behind."""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.bundle import recover_interrupted
from compiler.contract.verifier import read_verified_manifest
from support import attack, tree_snapshot, write_recipe


class Harness:
    def __init__(self, previous: Path, students, root: Path):
        """`previous`: a compiled bundle of the same student (the session's), standing where
        the killed compiles write."""
        self.root, self.model, self.source = root, students["eps-turbo"], previous
        self.out = root / "out"
        self.recipe = write_recipe(root / "new.yaml")
        self.recipe.write_text(self.recipe.read_text().replace("name: tiny-eps-turbo", "name: new"))
        self.restore_previous()
        self.previous = tree_snapshot(self.out)

    def _run(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "compiler.commands.compile", "--target", "onnx", "--recipe",
                                 str(self.recipe), "--model", str(self.model), "--out", str(self.out),
                                 "--force", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, when) -> str:
        """Start a compile of the new recipe, SIGKILL it once `when(proc)` says so (or it ends by
        itself), recover as the next compile would, and say what --out holds."""
        with attack("kills"):
            return self._kill(when)

    def _kill(self, when) -> str:
        proc = self._run()
        while proc.poll() is None and not when(proc):
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        recover_interrupted(self.out)   # what the next compile does first
        left = sorted(p.name for p in self.root.iterdir() if p.name.startswith(".out."))
        assert left == [], f"left behind after a kill: {left}"
        if not self.out.exists():
            return "absent"
        if tree_snapshot(self.out) == self.previous:
            return "previous"
        assert read_verified_manifest(self.out)["name"] == "new"
        return "complete"

    def staging(self, proc) -> Path:
        return self.root / f".out.staging-{proc.pid}"

    def restore_previous(self) -> None:
        """The next kill starts from the previous bundle again."""
        if not self.out.exists() or read_verified_manifest(self.out)["name"] == "new":
            shutil.rmtree(self.out, ignore_errors=True)
            shutil.copytree(self.source, self.out)


@pytest.fixture(scope="module")
def harness(bundles, students, tmp_path_factory):
    return Harness(bundles("eps-turbo"), students, tmp_path_factory.mktemp("kills"))


def test_kills_leave_the_previous_or_the_complete_bundle(harness):
    """Two kills without timing guesses: as soon as the run's staging directory exists (mid-run),
    and as soon as its manifest is written (the bundle stage, just before the renames)."""
    mid = harness.kill(lambda proc: harness.staging(proc).exists())
    assert mid == "previous"
    late = harness.kill(lambda proc: (harness.staging(proc) / "manifest.json").exists())
    assert late in ("previous", "complete")


@pytest.mark.slow
def test_two_hundred_kills_at_random_points(harness, capsys):
    start = time.monotonic()
    assert harness.kill(lambda proc: False) == "complete"     # one full run: how long a compile takes
    duration = time.monotonic() - start
    harness.restore_previous()
    rng = random.Random(0)
    outcomes = {"previous": 0, "complete": 0, "absent": 0}
    for _ in range(200):
        deadline = time.monotonic() + rng.uniform(0.0, 1.2) * duration
        outcomes[harness.kill(lambda proc: time.monotonic() >= deadline)] += 1
        harness.restore_previous()
    with capsys.disabled():
        print(f"\nkill harness: 200 SIGKILLs of compile --force at random points; outcomes {outcomes}; "
              f"runs that left anything behind: 0 (asserted after every kill)")
    assert outcomes["absent"] == 0
