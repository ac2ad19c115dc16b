"""`make demo`: compile a student into an ONNX, a Core ML and an ExecuTorch bundle (each with its app
package: an Android library module or a Swift package), generate the same
images from each, and print how far apart the targets' images are and how much of each ExecuTorch
program XNNPACK runs.

If the trained shapes student has shipped (students/shapes-rf/model_index.json), it is compiled
with recipes/shapes-rf-int8.yaml (int8 denoiser; the report compares it with
fp32), and each image's prompt-adherence score is printed. Otherwise a seeded random-weight student of the real classes
(compiler/testing/seeded_students.py, the same kind the tests use) is built into build/demo-student and
compiled with recipes/demo-seeded.yaml: it proves the toolchain end to end, but its images are
noise-like patterns, not pictures. The Core ML bundle is checked on Linux by the ML Program
evaluator (Core ML itself runs only on macOS); the demo says which check verified it.
Re-runnable (--force); exits non-zero if any step fails.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from compiler.errors import Exit

REPO = Path(__file__).resolve().parents[1]
TRAINED = Path("students/shapes-rf")
TRAINED_RECIPE = Path("recipes/shapes-rf-int8.yaml")
SEEDED = Path("build/demo-student")
SEEDED_RECIPE = Path("recipes/demo-seeded.yaml")
IMAGES = Path("build/demo")
SEEDED_PROMPTS = ("a red fox in the snow", "a watercolor painting of a house by the sea")
SEED = 0
TARGETS = ("onnx", "coreml", "executorch")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _slug(prompt: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in prompt.lower()).split())[:60]


def _trained_prompts() -> list[str]:
    """Two held-out captions of the shapes world (compositions the student never trained on)."""
    from students.shapes.scenes import prompt_sets

    return prompt_sets()[0][:2]


def _seeded_student() -> None:
    from compiler.testing.seeded_students import TinySpec, build

    _say(f"demo: building a SEEDED RANDOM-WEIGHT student (eps-turbo layout, real diffusers/transformers classes) "
         f"into {SEEDED}")
    _say("demo: no trained student ships yet (students/shapes-rf is missing); this seeded student is replaced "
         "once a trained one ships. Its images are patterns from random weights, not pictures.")
    build(SEEDED, TinySpec(kind="eps-turbo", image_size=64, max_length=77, seed=0))


def _adherence(png: Path, prompt: str) -> str:
    import numpy as np
    from PIL import Image

    from students.shapes.adherence import score

    return f"   adherence {score(np.asarray(Image.open(png).convert('RGB')), prompt):.2f}"


def _target_block(bundle: Path) -> dict:
    import json

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    return manifest["targets"][manifest["target"]]


def _psnr(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    from compiler.metrics import compare

    x, y = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0 for p in (a, b))
    return compare(x, y, data_range=1.0).psnr_db


def _recipe_name(recipe: Path) -> str:
    from compiler.recipe import load_recipe

    return load_recipe(recipe).name


def main() -> int:
    os.chdir(REPO)  # recipes name their prompt files and models relative to the repository root
    sys.path.insert(0, str(REPO))  # students/shapes (the shipped student's package) lives in the checkout
    from compiler.cli import _quiet_libraries
    from compiler.commands import compile as compile_command
    from compiler.commands import generate as generate_command
    from compiler.report import delegation_line

    _quiet_libraries()  # before the seeded student build imports diffusers

    if (TRAINED / "model_index.json").exists():
        if not TRAINED_RECIPE.exists():
            print(f"demo: error: {TRAINED_RECIPE}: missing; the trained student {TRAINED} needs its recipe",
                  file=sys.stderr)
            return Exit.RECIPE
        model, recipe, prompts = TRAINED, TRAINED_RECIPE, _trained_prompts()
        _say(f"demo: compiling the trained student {TRAINED} with {recipe}")
    else:
        try:
            _seeded_student()
        except Exception as exc:  # the demo's own step failed: one line, non-zero exit
            print(f"demo: error: {SEEDED}: could not build the seeded student ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return Exit.INTERNAL
        model, recipe, prompts = SEEDED, SEEDED_RECIPE, list(SEEDED_PROMPTS)

    images: dict[str, list[Path]] = {}
    bundles: dict[str, Path] = {}
    for target in TARGETS:
        bundle = Path("build") / f"{_recipe_name(recipe)}-{target}"
        _say(f"demo: compile --target {target} --recipe {recipe} --model {model} --out {bundle} --force")
        code = compile_command.main(["--target", target, "--recipe", str(recipe), "--model", str(model),
                                     "--out", str(bundle), "--force", "--emit-app-package"])
        if code != Exit.OK:
            print(f"demo: compile failed (--target {target}) with exit code {code}", file=sys.stderr)
            return code
        bundles[target] = bundle
        images[target] = []
        IMAGES.mkdir(parents=True, exist_ok=True)
        for prompt in prompts:
            png = IMAGES / f"{_slug(prompt)}-{target}.png"
            _say(f"demo: generate --bundle {bundle} --prompt {prompt!r} --seed {SEED} --out {png}")
            code = generate_command.main(["--bundle", str(bundle), "--prompt", prompt, "--seed", str(SEED),
                                          "--out", str(png)])
            if code != Exit.OK:
                print(f"demo: generate failed with exit code {code}", file=sys.stderr)
                return code
            images[target].append(png)

    _say()
    for target, bundle in bundles.items():
        block = _target_block(bundle)
        _say(f"bundle:  {REPO / bundle}   ({target}; numbers checked by {block['checker']})")
        for name, d in (block.get("delegation") or {}).items():
            _say(f"         {name}: {delegation_line(d)}")
        _say(f"report:  {REPO / bundle / 'report.html'}")
        _say(f"app:     {REPO / bundle}-app   (add it to an app: android_demo/README.md, ios_demo/README.md)")
    for i, prompt in enumerate(prompts):
        for target in TARGETS:
            png = images[target][i]
            _say(f"image:   {REPO / png}   {prompt!r}{_adherence(png, prompt) if model == TRAINED else ''}")
        for j, a in enumerate(TARGETS):
            for b in TARGETS[j + 1:]:
                _say(f"         {a} vs {b}: PSNR {_psnr(images[a][i], images[b][i]):.1f} dB "
                     f"(8-bit images, same prompt and seed)")
    if model == SEEDED:
        _say("note:    built from a seeded random-weight student of the real classes; "
             "replaced once a trained student ships (students/shapes-rf)")
    return Exit.OK


if __name__ == "__main__":
    sys.exit(int(main()))
