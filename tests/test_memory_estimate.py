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
