"""The Swift package for real, on Linux: its Pipeline (tokenizers, noise, wiring, tiling, pixels,
PNG) runs real compiled bundles of every family through `onestep-generate --reference`, each
component computed by the Python reference engine over a pipe (Linux has no Core ML), and its
PNG is `generate`'s, byte for byte. `make test-swift` (which `make test` runs first) builds the
package and runs its XCTest suite against runtimes/fixtures."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.errors import Exit
from support import REPO, flip_byte

PROMPT = "A RED fox\u00a0in the snow, caf\u00e9 \U0001f98a!!"
SCRATCH = REPO / "build" / "swift"


def _swift() -> str:
    found = shutil.which("swift") or ("/opt/swift/usr/bin/swift" if Path("/opt/swift/usr/bin/swift").exists() else None)
    assert found, "no Swift toolchain: the project's machines have Swift 6.3.1 at /opt/swift (README)"
    return found


@pytest.fixture(scope="session")
def onestep_generate() -> Path:
    done = subprocess.run([_swift(), "build", "--quiet", "--scratch-path", str(SCRATCH), "--product", "onestep-generate"],
                          cwd=REPO / "runtimes" / "swift", capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    binary = SCRATCH / "debug" / "onestep-generate"
    assert binary.is_file()
    return binary


def _swift_png(binary: Path, bundle: Path, prompt: str, seed: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "--reference", sys.executable, str(REPO), str(bundle), prompt, seed, str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})


@pytest.mark.parametrize("case", ["eps-turbo", pytest.param("eps-turbo-xl", marks=pytest.mark.slow),   # CI's 15 minutes;
                                  pytest.param("lcm", marks=pytest.mark.slow)])   # Kotlin runs SDXL in the fast suite
def test_swift_pipeline_writes_the_same_png_as_generate(onestep_generate, bundles, generated_png, tmp_path, case):
    """SD and SDXL (two CLIP tokenizers) layouts, the AutoencoderKL and the tiny decoder."""
    bundle = bundles(case)
    pngs = {}
    for seed in ("7", str(2**64 - 1)):
        done = _swift_png(onestep_generate, bundle, PROMPT, seed, tmp_path / f"swift-{seed}.png")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "denoiser" in done.stdout and "ms" in done.stdout      # per-stage timings
        pngs[seed] = (tmp_path / f"swift-{seed}.png").read_bytes()
        assert pngs[seed] == generated_png(bundle, PROMPT, seed), f"seed {seed}"
    assert pngs["7"] != pngs[str(2**64 - 1)]          # the check can fail: another seed is another image


@pytest.mark.parametrize("kind", ["trigflow-scm", pytest.param("pixart-onestep", marks=pytest.mark.slow),
                                  pytest.param("flow-match", marks=pytest.mark.slow)])   # CI's 15 minutes
def test_swift_pipeline_runs_the_transformer_families_like_generate(onestep_generate, transformer_bundles,
                                                                   generated_png, tmp_path, kind):
    """SentencePiece tokenizers from tokenizer.json (Gemma with SANA's prefix, T5 with PixArt's mask, CLIP + T5 for FLUX)."""
    bundle = transformer_bundles(kind)
    done = _swift_png(onestep_generate, bundle, PROMPT, "5", tmp_path / "swift.png")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "swift.png").read_bytes() == generated_png(bundle, PROMPT, "5")


def test_swift_pipeline_decodes_a_tiled_bundle_to_the_same_png_as_generate(onestep_generate, tiled_bundle,
                                                                          generated_png, tmp_path):
    """The manifest's tile plan followed in Swift: every tile decoded and blended in float32."""
    done = _swift_png(onestep_generate, tiled_bundle, PROMPT, "11", tmp_path / "swift.png")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "swift.png").read_bytes() == generated_png(tiled_bundle, PROMPT, "11")


def test_swift_pipeline_refuses_a_corrupt_bundle_before_opening_it(onestep_generate, bundles, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("eps-turbo"), bundle)
    flip_byte(bundle / "denoiser.onnx")
    done = _swift_png(onestep_generate, bundle, "a red fox", "1", tmp_path / "x.png")
    assert done.returncode == Exit.BUNDLE, done.stderr
    assert "denoiser.onnx" in done.stderr and "sha256" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_onestep_generate_without_core_ml_says_how_to_run_it(onestep_generate, bundles):
    done = subprocess.run([str(onestep_generate), str(bundles("eps-turbo")), "a fox", "1", "/dev/null"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--reference" in done.stderr
