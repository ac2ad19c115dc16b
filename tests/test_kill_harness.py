"""SIGKILL `compile --force` at points through its run (kill -9 skips every cleanup): --out is
then the previous bundle or the complete new one, never absent or half-written, and the next run
removes whatever the killed one left beside it. Compiles are forked from a warm interpreter
(tests/warm_compiles.py), so every kill lands in a compile's work, not in its imports: 7 kills in
`make test`, 200 at random points in `make test-slow`; each prints how many ran and their outcomes."""
from __future__ import annotations

import json
import os
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
from support import REPO, attack, tree_snapshot, write_recipe


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

        self.launcher = subprocess.Popen([sys.executable, str(REPO / "tests" / "warm_compiles.py")], text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})

    def close(self) -> None:
        self.launcher.stdin.close()
        self.launcher.wait(timeout=60)

    def kill(self, when) -> str:
        """Start a compile of the new recipe, SIGKILL it once `when(pid)` says so (or it ends by
        itself), recover as the next compile would, and say what --out holds."""
        with attack("kills"):
            return self._kill(when)

    def _kill(self, when) -> str:
        argv = ["--target", "onnx", "--recipe", str(self.recipe), "--model", str(self.model), "--out", str(self.out),
                "--force", "--quiet"]
        self.launcher.stdin.write(json.dumps(argv) + "\n")
        self.launcher.stdin.flush()
        pid = int(self.launcher.stdout.readline())
        while not when(pid):
            try:
                os.kill(pid, 0)
                time.sleep(0.005)
            except ProcessLookupError:    # ended by itself (and reaped)
                break
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        ended = self.launcher.stdout.readline().split()
        assert ended in (["exit", "0"], ["signal", str(int(signal.SIGKILL))]), ended
        recover_interrupted(self.out)   # what the next compile does first
        left = sorted(p.name for p in self.root.iterdir() if p.name.startswith(".out."))
        assert left == [], f"left behind after a kill: {left}"
        if not self.out.exists():
            return "absent"
        if tree_snapshot(self.out) == self.previous:
            return "previous"
        assert read_verified_manifest(self.out)["name"] == "new"
        return "complete"

    def staging(self, pid: int) -> Path:
        return self.root / f".out.staging-{pid}"

    def restore_previous(self) -> None:
        """The next kill starts from the previous bundle again."""
        if not self.out.exists() or read_verified_manifest(self.out)["name"] == "new":
            shutil.rmtree(self.out, ignore_errors=True)
            shutil.copytree(self.source, self.out)


@pytest.fixture(scope="module")
def harness(bundles, students, tmp_path_factory):
    harness = Harness(bundles("eps-turbo"), students, tmp_path_factory.mktemp("kills"))
    yield harness
    harness.close()


def _random_kills(harness, count: int, seed: int, capsys, within: float | None = None) -> dict:
    """`count` kills at random points of a run, or of its first `within` seconds after its staging
    directory appears (load, wrap and the first exports: where most of a compile's life is)."""
    if within is None:
        start = time.monotonic()
        assert harness.kill(lambda pid: False) == "complete"     # one full run: how long a compile takes
        duration = time.monotonic() - start
        harness.restore_previous()
    rng = random.Random(seed)
    outcomes = {"previous": 0, "complete": 0, "absent": 0}
    for _ in range(count):
        if within is None:
            deadline = time.monotonic() + rng.uniform(0.0, 1.1) * duration
            outcomes[harness.kill(lambda pid: time.monotonic() >= deadline)] += 1
        else:
            delay, seen = rng.uniform(0.0, within), {}

            def when(pid):
                if harness.staging(pid).exists():
                    seen.setdefault(pid, time.monotonic())
                return pid in seen and time.monotonic() >= seen[pid] + delay

            outcomes[harness.kill(when)] += 1
        harness.restore_previous()
    where = f"of a {duration:.1f} s run" if within is None else f"within {within} s of the staging directory appearing"
    with capsys.disabled():
        print(f"\nkill harness: {count} SIGKILLs of compile --force at random points {where}; outcomes {outcomes}; "
              "runs that left anything behind: 0 (asserted after every kill)")
    return outcomes


def test_kills_leave_the_previous_or_the_complete_bundle(harness, capsys):
    """Two kills without timing guesses: as soon as the run's staging directory exists (mid-run),
    and as soon as its manifest is written (the bundle stage, just before the renames); then 5
    at random points of its first seconds (a full compile of even the tiny student takes ~12 s,
    most of it ONNX export: `make test-slow` kills 200 times across whole runs)."""
    mid = harness.kill(lambda pid: harness.staging(pid).exists())
    assert mid == "previous"
    late = harness.kill(lambda pid: (harness.staging(pid) / "manifest.json").exists())
    assert late in ("previous", "complete")
    harness.restore_previous()
    outcomes = _random_kills(harness, 5, seed=1, capsys=capsys, within=1.5)
    assert outcomes == {"previous": 5, "complete": 0, "absent": 0}


@pytest.mark.slow
def test_two_hundred_kills_at_random_points(harness, capsys):
    assert _random_kills(harness, 200, seed=0, capsys=capsys)["absent"] == 0
