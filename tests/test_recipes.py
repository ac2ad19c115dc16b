"""Recipes are strict: every shipped recipe loads, and each kind of mistake names its key and exits 2."""
import json
from pathlib import Path

import pytest

from compiler.errors import Exit, RecipeError
from compiler.recipe import load_recipe
from support import REPO, write_recipe

SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))


def test_every_family_has_a_shipped_recipe():
    families = {load_recipe(p).family for p in SHIPPED}
    assert {"eps-turbo", "sample-lightning", "lcm", "rectified-flow", "trigflow-scm", "pixart-onestep",
            "flow-match"} <= families


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.version == 1 and recipe.name


@pytest.mark.parametrize("body, key", [
    ("version: 1\nname: x\nfamily: lcm\ncomponets: {}\n", "componets"),
    ("version: 1\nname: x\nfamily: lcm\ncomponents: {denoiser: {precison: int8}}\n", "components.denoiser.precison"),
    ("version: 1\nname: x\nfamily: lcm\nimage: {height: '512'}\n", "image.height"),
    ("version: 1\nname: x\nfamily: lcm\nimage: {height: 500}\n", "image.height"),
    ("version: 1\nname: x\nfamily: nope\n", "family"),
    ("version: 1\nfamily: lcm\n", "name"),
    ("version: 2\nname: x\nfamily: lcm\n", "version"),
    ("version: 1\nname: x\nfamily: eps-turbo\ncomponents: {denoiser: {precision: fp16}}\n", "components.denoiser.precision"),
    ("version: 1\nname: x\nfamily: lcm\ntargets: {tflite: {}}\n", "targets.tflite"),
    ("version: 1\nname: x\nfamily: lcm\ntargets: {onnx: {opset: 16}}\n", "targets.onnx.opset"),
    ("version: 1\nname: x\nfamily: lcm\ntargets: {onnx: {opsett: 18}}\n", "targets.onnx.opsett"),
    ("version: 1\nname: x\nfamily: lcm\ntargets: {coreml: {compute_precision: int4}}\n",
     "targets.coreml.compute_precision"),
    ("version: 1\nname: x\nfamily: lcm\ntargets: {coreml: {minimum_deployment_target: iOS15}}\n",
     "targets.coreml.minimum_deployment_target"),
])
def test_bad_recipe_names_the_key(tmp_path, body, key):
    path = tmp_path / "r.yaml"
    path.write_text(body)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert err.value.code == Exit.RECIPE
    assert str(path) in str(err.value) and key in str(err.value)


def test_old_export_key_names_the_new_spelling(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: x\nfamily: lcm\nexport: {opset: 18}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert err.value.code == Exit.RECIPE and "export" in str(err.value) and "targets: {onnx: {opset: 18}}" in str(err.value)


def test_target_blocks_are_the_targets_own_dataclasses(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: x\nfamily: lcm\ntargets: {coreml: {compute_precision: fp32}}\n")
    recipe = load_recipe(path)
    assert recipe.target_options("coreml").compute_precision == "fp32"
    assert recipe.target_options("onnx").opset == 18          # defaults where the recipe is silent
    assert recipe.to_dict()["targets"] == {"coreml": {"compute_precision": "fp32", "minimum_deployment_target": None,
                                                      "compute_units": "all", "check": "auto",
                                                      "palettize_group_size": 16}}


@pytest.mark.parametrize("target, scheme", [("onnx", "palettize4"), ("onnx", "palettize6")])
def test_scheme_a_target_cannot_ship_is_refused_before_work(tmp_path, run_cli, students, target, scheme):
    recipe = write_recipe(tmp_path / "r.yaml", extra=f"components: {{denoiser: {{precision: int8, quantization: "
                                                      f"{{scheme: {scheme}}}}}}}\n")
    code, _, err = run_cli("compile", "--target", target, "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o")
    assert code == Exit.RECIPE and scheme in err and target in err and "components.denoiser" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("body", ["", "version: [1\n", "- a\n- b\n"])
def test_empty_or_malformed_recipe_is_a_usage_error(tmp_path, run_cli, body):
    path = tmp_path / "r.yaml"
    path.write_text(body)
    code, out, err = run_cli("compile", "--target", "onnx", "--recipe", path, "--model", tmp_path, "--out", tmp_path / "o")
    assert code == Exit.RECIPE
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and str(path) in err


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: !!python/object/apply:os.system ['touch pwned']\nfamily: lcm\n")
    with pytest.raises(RecipeError):
        load_recipe(path)
    assert not Path("pwned").exists()


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, run_cli, students):
    recipe = write_recipe(tmp_path / "r.yaml")
    out = tmp_path / "bundle"
    code, stdout, _ = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", students["eps-turbo"],
                              "--out", out, "--dry-run")
    assert code == 0
    assert '"family": "eps-turbo"' in stdout and '"stages"' in stdout and '"denoiser": "fp32"' in stdout
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_unknown_target_is_a_usage_error(tmp_path, run_cli, students):
    recipe = write_recipe(tmp_path / "r.yaml")
    code, _, err = run_cli("compile", "--target", "tflite", "--recipe", recipe, "--model", students["eps-turbo"])
    assert code == Exit.RECIPE and "tflite" in err and "onnx" in err


def test_guidance_rejected_for_family_without_it(tmp_path, run_cli, students):
    recipe = write_recipe(tmp_path / "r.yaml", extra="sampler: {guidance_scale: 2.0}\n")
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o")
    assert code == Exit.RECIPE and "guidance_scale" in err
    assert not (tmp_path / "o").exists()


def test_prompt_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch, run_cli):
    """Documented in the README: a recipe's prompt files resolve against the working directory,
    not the recipe's folder; a dry run reads them (and refuses an overlap) before any work."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "held.txt").write_text("a red fox\na blue bird\n", encoding="utf-8")
    (tmp_path / "prompts" / "calib.txt").write_text("a green tree\na grey cat\na pink house\n", encoding="utf-8")
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("version: 1\nname: x\nfamily: eps-turbo\nmodel: nowhere\n"
                      "parity: {prompts: prompts/held.txt, num_prompts: 1}\n"
                      "components: {denoiser: {precision: int8}}\n"
                      "calibration: {prompts: prompts/calib.txt, num_prompts: 2}\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("compile", "--target", "onnx", "--recipe", "recipes/r.yaml", "--dry-run")
    assert code == 0, err
    prompts = json.loads(out)["plan"]["prompts"]
    assert prompts == {"parity": f"1 from {tmp_path.resolve() / 'prompts/held.txt'}",
                       "calibration": f"2 from {tmp_path.resolve() / 'prompts/calib.txt'}"}
    monkeypatch.chdir(tmp_path / "recipes")   # beside the recipe: not where the paths point
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", "r.yaml", "--dry-run")
    assert code == Exit.CALIBRATION and err.strip() == "compile: error: prompts/held.txt (parity.prompts): prompt file not found"
    (tmp_path / "prompts" / "calib.txt").write_text("A  red FOX\n", encoding="utf-8")   # the held-out prompt again
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", "recipes/r.yaml", "--dry-run")
    assert code == Exit.CALIBRATION and "also appears in the held-out set" in err
