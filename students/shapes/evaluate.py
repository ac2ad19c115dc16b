"""Prompt adherence of the shapes student: teacher (multi-step), student (one step, torch fp32)
and each compiled bundle, on held-out captions the student never trained on.

    python -m students.shapes.evaluate --student students/shapes-rf \\
        --bundle build/shapes-rf-onnx --bundle build/shapes-rf-int8 --out docs/shapes

Also validates the scorer itself: ground-truth rendered scenes of the same captions (should
score ~1.0) and the same scenes with shuffled captions (should score low). Writes
<out>/adherence.json and <out>/grid.png (one row per prompt: teacher, student, bundles).
Seeds: prompt i uses noise seed `--seed + i` (the portable generator, as bundles do).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from students.shapes import adherence, sample, scenes

TEACHER_STEPS = 16


def bundle_images(bundle: Path, prompts: list[str], seeds: list[int]) -> np.ndarray:
    from compiler.runtime import load_bundle

    from compiler.contract.png import to_pixels

    chain, _ = load_bundle(bundle)
    return np.stack([to_pixels(chain(p, s)) for p, s in zip(prompts, seeds)])


def ground_truth(prompts: list[str], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([scenes.render(scenes.spec_for_caption(p, rng)) for p in prompts])


def evaluate(student: Path, bundles: list[Path], prompts: list[str], seed: int) -> tuple[dict, dict]:
    import torch

    torch.manual_seed(seed)
    seeds = [seed + i for i in range(len(prompts))]
    comps = sample.load(student)
    images = {"ground truth (rendered)": ground_truth(prompts, seed)}
    if (student / "teacher_unet").is_dir():
        from diffusers import UNet2DConditionModel

        teacher = UNet2DConditionModel.from_pretrained(student / "teacher_unet").eval()
        images[f"teacher {TEACHER_STEPS} steps"] = sample.generate(comps, prompts, seeds, TEACHER_STEPS, unet=teacher)
    images["student 1 step (torch fp32)"] = sample.generate(comps, prompts, seeds, 1)
    for b in bundles:
        manifest = json.loads((b / "manifest.json").read_text())
        precision = "int8" if any(c["precision"] == "int8" for c in manifest["components"].values()) else "fp32"
        images[f"bundle {b.name} ({manifest['target']} {precision})"] = bundle_images(b, prompts, seeds)
    scores = {name: float(adherence.score_many(ims, prompts).mean()) for name, ims in images.items()}
    shuffled = list(np.random.default_rng(seed).permutation(prompts))
    scores["ground truth, shuffled captions"] = float(
        adherence.score_many(images["ground truth (rendered)"], shuffled).mean())
    return scores, images


def grid(images: dict, rows: int, scale: int = 2) -> np.ndarray:
    """rows x columns of images with a 2-pixel white gutter."""
    cols = list(images.values())
    h, w = cols[0].shape[1:3]
    out = np.full((rows * (h + 2), len(cols) * (w + 2), 3), 255, np.uint8)
    for r in range(rows):
        for c, ims in enumerate(cols):
            out[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = ims[r]
    return out.repeat(scale, 0).repeat(scale, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, default=Path("students/shapes-rf"))
    ap.add_argument("--bundle", type=Path, action="append", default=[], help="compiled bundle (repeatable)")
    ap.add_argument("--prompts", type=Path, default=Path("calibration/shapes/heldout.txt"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid-rows", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/shapes"))
    a = ap.parse_args(argv)
    from compiler.cli import _quiet_libraries
    from compiler.prompts import read_prompts

    _quiet_libraries()
    prompts = read_prompts(a.prompts, "--prompts")
    scores, images = evaluate(a.student, a.bundle, prompts, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"prompts": str(a.prompts), "num_prompts": len(prompts), "seed": a.seed, "adherence": scores,
              "grid_columns": [k for k in images]}
    (a.out / "adherence.json").write_text(json.dumps(report, indent=2) + "\n")
    from PIL import Image

    Image.fromarray(grid(images, min(a.grid_rows, len(prompts)))).save(a.out / "grid.png")
    (a.out / "grid-prompts.txt").write_text("\n".join(prompts[:a.grid_rows]) + "\n")
    width = max(len(k) for k in scores)
    print(f"prompt adherence on {len(prompts)} held-out captions ({a.prompts})")
    for name, value in scores.items():
        print(f"  {name:<{width}}  {value:.3f}")
    print(f"wrote {a.out / 'adherence.json'} and {a.out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
