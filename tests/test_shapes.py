"""The shapes world (issue 5): seeded data, the adherence scorer, its prompt sets and the
shipped student."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compiler.prompts import normalize, read_prompts
from students.shapes import adherence, scenes
from support import REPO

STUDENT = REPO / "students/shapes-rf"


def test_scenes_are_reproducible_from_a_seed():
    a_imgs, a_caps, _ = scenes.make_dataset(24, seed=5)
    b_imgs, b_caps, _ = scenes.make_dataset(24, seed=5)
    c_imgs, _, _ = scenes.make_dataset(24, seed=6)
    assert a_caps == b_caps and np.array_equal(a_imgs, b_imgs)
    assert not np.array_equal(a_imgs, c_imgs)
    assert a_imgs.shape == (24, scenes.SIZE, scenes.SIZE, 3) and a_imgs.dtype == np.uint8


def test_scorer_is_near_one_on_ground_truth_and_low_on_shuffled_captions():
    imgs, caps, _ = scenes.make_dataset(200, seed=11)
    assert adherence.score_many(imgs, caps).mean() >= 0.97
    shuffled = list(np.random.default_rng(0).permutation(caps))
    assert adherence.score_many(imgs, shuffled).mean() <= 0.35


def test_scorer_checks_each_attribute():
    rng = np.random.default_rng(0)
    img = scenes.render(scenes.spec_for_caption("a blue square left of a yellow triangle", rng))
    assert adherence.score(img, "a blue square left of a yellow triangle") == 1.0
    assert adherence.score(img, "a blue square right of a yellow triangle") == pytest.approx(0.8)
    assert adherence.score(img, "a red circle above a green square") == 0.0
    blank = np.full((scenes.SIZE, scenes.SIZE, 3), 220, np.uint8)
    assert adherence.score(blank, "two red circles") == 0.0
    with pytest.raises(ValueError):
        adherence.score(img, "a photo of a cat")


def test_shapes_prompt_sets_are_the_generators_and_never_training_captions():
    held = read_prompts(REPO / "calibration/shapes/heldout.txt", "heldout")
    calib = read_prompts(REPO / "calibration/shapes/calibration.txt", "calibration")
    assert (held, calib) == tuple(scenes.prompt_sets())
    assert len(held) >= 64 and len(calib) >= 256
    train, _ = scenes.caption_split()
    train = {normalize(c) for c in train}
    assert not {normalize(p) for p in held} & train
    assert not {normalize(p) for p in calib} & train
    assert not {normalize(p) for p in held} & {normalize(p) for p in calib}


@pytest.mark.skipif(not (STUDENT / "model_index.json").exists(), reason="students/shapes-rf not trained yet")
def test_shipped_student_loads_with_diffusers_and_fits_in_git():
    from diffusers import StableDiffusionPipeline

    size = sum(p.stat().st_size for p in STUDENT.rglob("*") if p.is_file())
    assert size < 40e6
    assert not list(STUDENT.rglob("*.bin")) and list(STUDENT.rglob("*.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(STUDENT, use_safetensors=True, safety_checker=None)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    stats = json.loads((STUDENT / "training_stats.json").read_text())
    assert {"vae", "teacher", "pairs", "reflow", "distill"} <= set(stats["stages"])
    # training captions never include the held-out ones
    held = {normalize(p) for p in read_prompts(REPO / "calibration/shapes/heldout.txt", "heldout")}
    assert not held & {normalize(c) for c in stats["training_captions"]}


@pytest.mark.slow
def test_training_pipeline_runs_end_to_end_quickly(tmp_path):
    out = tmp_path / "student"
    proc = subprocess.run([sys.executable, "-m", "students.shapes.train", "--quick", "--out", str(out),
                           "--threads", "1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model_index.json").exists() and (out / "unet/diffusion_pytorch_model.safetensors").exists()
