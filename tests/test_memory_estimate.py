"""A compile that cannot fit in this machine's memory is refused before any work (exit 8, with
the numbers), unless forced; --dry-run prints the per-stage estimate."""
from __future__ import annotations

import json

from compiler import memory
from compiler.errors import Exit
from support import write_recipe


def test_estimate_reads_parameter_counts_from_the_headers(students):
    model = students["eps-turbo"]
    params = memory.component_parameters(model, ["unet", "text_encoder"])
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(model / "unet"))
    assert params["unet"] == sum(t.numel() for t in unet.state_dict().values())
    assert params["text_encoder"] > 0


def test_dry_run_prints_the_estimate(students, run_cli, tmp_path):
    code, out, err = run_cli("compile", "--target", "onnx", "--recipe", write_recipe(tmp_path / "r.yaml"),
                             "--model", students["eps-turbo"], "--dry-run")
    assert code == Exit.OK, err
    stages = json.loads(out)["plan"]["peak_memory_estimate_gb"]
    assert set(stages) == {"load", "export", "verify"} and stages["verify"] >= stages["export"] >= stages["load"] >= 0


def test_a_compile_over_the_machines_memory_is_refused_before_work(students, run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: 1000)
    out = tmp_path / "out"
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", write_recipe(tmp_path / "r.yaml"),
                           "--model", students["eps-turbo"], "--out", out, "--quiet")
    assert code == Exit.ENVIRONMENT
    assert len(err.strip().splitlines()) == 1 and "estimated peak memory" in err and "--skip-memory-check" in err
    assert "0.0 GB" in err and "verify" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_a_multi_size_recipe_adds_the_share_stage_per_size(students, tmp_path):
    """The share stage (every size's program of a component over one weight file) is estimated as
    the target's third factor per size, of the largest size-dependent component's fp32 weights."""
    from compiler.recipe import load_recipe

    model = students["eps-turbo"]
    one = load_recipe(write_recipe(tmp_path / "one.yaml"))
    three = write_recipe(tmp_path / "three.yaml")
    three.write_text(three.read_text().replace("image: {height: 32, width: 32}",
                                               "image: {sizes: [[32, 32], [24, 40], [40, 24]]}"))
    three = load_recipe(three)
    factors = (0.5, 1.0, 0.25)
    params = memory.component_parameters(model, ["unet", "vae"])
    assert "share" not in memory.estimate(model, one, factors)
    stages = memory.estimate(model, three, factors)
    assert stages["share"] == int(0.25 * 3 * memory.FP32 * max(params["unet"], params["vae"]))
    assert {k: v for k, v in stages.items() if k != "share"} == memory.estimate(model, one, factors)
