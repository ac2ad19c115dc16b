"""Helpers the tests import (`from support import ...`): tiny recipes, compiles in-process, the
runtime-fixture check, byte snapshots, the attack tally. Fixtures live in conftest.py."""
from __future__ import annotations

import contextlib
import os
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]

# Family recipe name -> seeded student layout
FAMILY_LAYOUTS = {
    "eps-turbo": "eps-turbo",
    "eps-turbo-xl": "eps-turbo-xl",
    "sample-lightning": "sample-lightning",
    "lcm": "lcm",
    "rectified-flow": "rectified-flow",
}


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

    from compiler.commands import compile as compile_command

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = compile_command.main(["--target", target, "--recipe", str(recipe), "--model", str(model),
                                     "--out", str(out), "--quiet", *extra])
    return int(code), err.getvalue()


def compiled(target: str, model: Path, root: Path, extra: str, out: str = "bundle", kind: str = "eps-turbo") -> Path:
    """A bundle compiled in-process from write_recipe(root / "r.yaml", kind, extra) into root / out;
    a failed compile fails the caller with its stderr."""
    code, err = compile_quietly(target, write_recipe(root / "r.yaml", kind, extra=extra), model, root / out)
    assert code == 0, err
    return root / out


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


# Longer than the tiny tokenizer's 16 tokens: compile truncates it and records a warning.
LONG_PROMPT = ("a small red car and a large blue house with a green tree on the left and a yellow "
               "mountain above them in the night sky")
LONG_PROMPT_CASE = "lcm"


def onnx_recipe(path: Path, case: str) -> Path:
    kind, decoder = CASES[case]
    recipe = write_recipe(path, family_of(kind), extra=f"components: {{vae_decoder: {{subfolder: {decoder}}}}}\n")
    if case == LONG_PROMPT_CASE:
        prompts = path.with_suffix(".prompts.txt")
        prompts.write_text(f"a red fox in the snow\n{LONG_PROMPT}\n", encoding="utf-8")
        recipe.write_text(recipe.read_text().replace(str(REPO / "tests/fixtures/heldout-tiny.txt"), str(prompts)))
    return recipe


def compiled_on_first_use(root: Path, recipe_and_model) -> Callable[[str], Path]:
    """key -> an ONNX bundle compiled from `recipe_and_model(key)` on first use, then shared."""
    built: dict[str, Path] = {}

    def get(key: str) -> Path:
        if key not in built:
            code, err = compile_quietly("onnx", *recipe_and_model(key), root / key)
            assert code == 0, err
            built[key] = root / key
        return built[key]

    return get


TRANSFORMER_TEXT = "text: {max_sequence_length: 16}\n"   # the tiny transformer students' prompt length


TILED_DECODER = ("components: {vae_decoder: {precision: int8, tiling: {tile: 16, overlap: 4}}}\n"
                 "calibration: {num_prompts: 2}\n")


def flip_byte(path: Path) -> None:
    """Corrupt one bit in the middle of a file, as a bad download or disk would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def tree_snapshot(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def identity(bundle: Path) -> dict[str, bytes]:
    """The bytes that identify a bundle: all but the report beside it (figures measured on the
    compiling CPU) and timings.txt."""
    from compiler.contract.manifest import FOR_PEOPLE

    return {k: v for k, v in tree_snapshot(bundle).items() if k not in FOR_PEOPLE}


def compile_on_another_cpu(target: str, recipe: Path, model: Path, out: Path) -> None:
    """`compile` in a fresh interpreter with another CPU's torch kernels (ATEN_CPU_CAPABILITY=default:
    a machine without AVX2, shared/PITFALLS.md), another hash seed and working directory."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "compiler.commands.compile", "--target", target, "--recipe",
                           str(recipe), "--model", str(model), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=out.parent)
    assert done.returncode == 0, done.stderr[-2000:]


def bundle_record(bundle: Path) -> dict:
    """manifest.json with report.json's figures (parity, quantization, decoder_cost) merged in, as
    `compile` returns them."""
    import json

    def read(name: str) -> dict:
        return json.loads((bundle / name).read_text(encoding="utf-8"))

    figures = read("report.json")
    assert figures["manifest_sha256"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    return {**read("manifest.json"), **{k: v for k, v in figures.items() if k not in ("record_version",
                                                                                     "manifest_sha256")}}


def assert_same_identity(first: Path, second: Path) -> None:
    a, b = identity(first), identity(second)
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"bytes that identify the bundle differ: {differ}"


RUNTIME_MANIFESTS = REPO / "runtimes" / "fixtures" / "manifests"


def check_runtime_manifest(bundle: Path, name: str) -> None:
    """The Kotlin and Swift runtimes parse runtimes/fixtures/manifests/<name>.json: the runtime view
    of a bundle these tests compile. Compared here, so a manifest change cannot leave the runtimes'
    fixtures stale; `make fixtures` (UPDATE_RUNTIME_FIXTURES=1) rewrites them. File hashes are left
    out of the comparison (sizes kept): the fixtures cover every family and target, and a
    calibrated range may still land on the other side of its grid point on another CPU
    (docs/quantization.md); the bundle tests compare hashes across CPUs where it matters."""
    import json

    from compiler.contract.manifest import runtime_view
    from compiler.contract.verifier import read_verified_manifest

    view = runtime_view(read_verified_manifest(bundle))
    path = RUNTIME_MANIFESTS / f"{name}.json"
    if os.environ.get("UPDATE_RUNTIME_FIXTURES") == "1":
        path.write_text(json.dumps(view, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: run `make fixtures`"

    def stable(v):
        return {**v, "files": {k: e["size"] for k, e in v["files"].items()}}

    assert stable(json.loads(path.read_text(encoding="utf-8"))) == stable(view), f"{path} is stale: run `make fixtures`"


# The attack suite's tally (issue 12): hostile inputs, fuzz examples and kills counted as they run
# (each fuzz example, each kill), and how many failed their check (left something behind,
# crashed, or took the wrong exit).
ATTACKS = {"hostile inputs": [0, 0], "fuzz examples": [0, 0], "kills": [0, 0]}


@contextlib.contextmanager
def attack(kind: str):
    """Count one attack of `kind` that ran; an exception out of it (a failed check) counts as failed."""
    ATTACKS[kind][0] += 1
    try:
        yield
    except BaseException:
        ATTACKS[kind][1] += 1
        raise


FUZZ_EXAMPLES = 60   # tests/test_attacks.py FUZZ settings


def run_benchmark(script: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """benchmarks/<script> in a fresh interpreter from the repository root, output captured."""
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


def outlier_linear_attention(folder: Path) -> str:
    """Give a SANA-layout student's first linear attention one outlier value channel (to_v's row
    scaled by 1000, to_out's matching column shrunk by as much: the same function in float) and
    weight its output 4x, so 8-bit activations entering to_out lose the other channels and the
    error reaches the step's output. Returns the layer fallback must keep float."""
    from safetensors.torch import load_file, save_file

    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    w = load_file(path)
    block = "transformer_blocks.0.attn1"
    w[f"{block}.to_out.0.weight"] *= 4
    w[f"{block}.to_v.weight"][3] *= 1e3
    w[f"{block}.to_out.0.weight"][:, 3] /= 1e3
    save_file(w, path)
    return f"transformer.{block}.to_out.0"
