"""What a killed or failing run leaves beside --out: nothing that outlives it, and never a
missing bundle where one was (compiler/bundle.py atomic_output, recover_interrupted)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from compiler.bundle import atomic_output
from support import tree_snapshot


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _bundle(path, marker: str):
    path.mkdir()
    (path / "manifest.json").write_text(marker)


def test_staging_left_by_a_killed_run_is_removed_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead, live = tmp_path / f".out.staging-{_dead_pid()}", tmp_path / f".out.staging-{running.pid}"
        _bundle(dead, "half-written")
        _bundle(live, "another compile is writing this")
        other = tmp_path / f".other.staging-{_dead_pid()}"
        _bundle(other, "belongs to another output")
        with atomic_output(out, force=False) as staging:
            (staging / "manifest.json").write_text("new")
        assert not dead.exists() and live.exists() and other.exists()
        assert (out / "manifest.json").read_text() == "new"
    finally:
        running.kill()
        running.wait()


def test_a_previous_bundle_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    """Killed between the two renames of --force: --out is missing, the old bundle sits aside."""
    out = tmp_path / "out"
    aside = tmp_path / f".out.old-{_dead_pid()}"
    _bundle(aside, "previous bundle")
    with pytest.raises(RuntimeError):
        with atomic_output(out, force=True):
            raise RuntimeError("this run fails too")
    assert (out / "manifest.json").read_text() == "previous bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_puts_the_old_bundle_back_when_the_new_one_cannot_be_moved_in(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _bundle(out, "previous bundle")
    before = tree_snapshot(tmp_path)
    real_rename = os.rename

    def rename(src, dst):
        if ".staging-" in str(src):
            raise OSError(5, "I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        with atomic_output(out, force=True) as staging:
            (staging / "manifest.json").write_text("new")
    assert tree_snapshot(tmp_path) == before
