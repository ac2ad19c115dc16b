"""The Kotlin runtime's Pipeline end to end on the JVM: real bundles, each component run by the
Python reference engine, and the PNG compared byte for byte with `generate`'s, for an SD layout
and an SDXL (two tokenizers) layout. Its unit tests against runtimes/fixtures run from
`make test-kotlin`, which `make test` calls."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from compiler.errors import Exit
from support import REPO, flip_byte

BUILD = REPO / "runtimes" / "kotlin" / "build.sh"
PROMPT = "A RED fox\u00a0in the snow, caf\u00e9 \U0001f98a!!"


@pytest.fixture(scope="session")
def kotlin_jar() -> str:
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _kotlin_pngs(jar: str, bundle, prompt: str, prefix, *seeds: str) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", jar, "dev.onestep.runtime.EndToEndKt", str(bundle), prompt, sys.executable,
                           str(REPO), str(prefix), *seeds], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("case", ["eps-turbo", "eps-turbo-xl"])
def test_kotlin_pipeline_writes_the_same_png_as_generate(kotlin_jar, bundles, generated_png, tmp_path, case):
    bundle = bundles(case)
    seeds = ("7", str(2**64 - 1))
    done = _kotlin_pngs(kotlin_jar, bundle, PROMPT, tmp_path / "kotlin", *seeds)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "denoiser" in done.stdout and "ms" in done.stdout      # per-stage timings
    for seed in seeds:
        assert (tmp_path / f"kotlin-{seed}.png").read_bytes() == generated_png(bundle, PROMPT, seed), f"seed {seed}"
    # The check can fail: another seed is another image.
    assert (tmp_path / "kotlin-7.png").read_bytes() != (tmp_path / f"kotlin-{2**64 - 1}.png").read_bytes()


def test_kotlin_pipeline_decodes_a_tiled_bundle_to_the_same_png_as_generate(kotlin_jar, tiled_bundle, generated_png,
                                                                           tmp_path):
    """The manifest's tile plan followed in Kotlin: 9 tiles blended in float32, byte for byte."""
    done = _kotlin_pngs(kotlin_jar, tiled_bundle, PROMPT, tmp_path / "kotlin", "11")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "kotlin-11.png").read_bytes() == generated_png(tiled_bundle, PROMPT, "11")


# test-slow (CI's 15 minutes): the Swift pipeline runs SANA (masked Gemma) in the fast suite
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["trigflow-scm", "pixart-onestep", "flow-match"])
def test_kotlin_pipeline_runs_the_transformer_families_like_generate(kotlin_jar, transformer_bundles, generated_png,
                                                                    tmp_path, kind):
    """SentencePiece tokenizers from tokenizer.json (Gemma with SANA's instruction prefix, T5 with
    PixArt's padding mask, CLIP + T5 for FLUX), the mask wired where the manifest says: the PNG
    is generate's, byte for byte."""
    bundle = transformer_bundles(kind)
    done = _kotlin_pngs(kotlin_jar, bundle, PROMPT, tmp_path / "kotlin", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "kotlin-5.png").read_bytes() == generated_png(bundle, PROMPT, "5")


def test_kotlin_pipeline_refuses_a_corrupt_bundle_before_opening_it(kotlin_jar, bundles, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("eps-turbo"), bundle)
    flip_byte(bundle / "denoiser.onnx")
    done = _kotlin_pngs(kotlin_jar, bundle, "a red fox", tmp_path / "x", "1")
    assert done.returncode == Exit.BUNDLE
    assert "denoiser.onnx" in done.stderr and "sha256" in done.stderr
    assert not (tmp_path / "x-1.png").exists()
