"""The failure contract (shared/ERRORS.md) on bad inputs: the documented exit code, exactly one
line on stderr naming the file or field at fault, no traceback, no code executed from inputs,
and the output directory exactly as it was before the run (nothing beside it either)."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from compiler.errors import Exit
from compiler.load import load_student
from support import REPO, tree_snapshot, write_recipe


def compile_args(recipe: Path, model, out: Path, *extra) -> list:
    return ["--target", "onnx", "--recipe", recipe, "--model", model, "--out", out, "--quiet", *extra]


def assert_one_line_error(err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("compile: error: ") and "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


def recipe_with_prompts(path: Path, prompts: Path) -> Path:
    """The tiny recipe with parity.prompts pointing at `prompts`."""
    text = write_recipe(path).read_text().replace(str(REPO / "tests/fixtures/heldout-tiny.txt"), str(prompts))
    path.write_text(text)
    return path


class Unpickled:
    """Creates `marker` when unpickled: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pickle(folder: Path, marker: Path, name: str = "diffusion_pytorch_model.bin") -> None:
    (folder / name).write_bytes(pickle.dumps(Unpickled(marker)))


def test_the_pickle_plant_works(tmp_path):
    """Sanity: the planted file really does create the marker when something unpickles it."""
    marker = tmp_path / "marker"
    _plant_pickle(tmp_path, marker)
    pickle.loads((tmp_path / "diffusion_pytorch_model.bin").read_bytes()).close()
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".bin", ".ckpt", ".pt"])
def test_pickle_weights_are_refused_without_being_loaded(student_copy, workdir, run_cli, suffix):
    model = student_copy("eps-turbo")
    marker = workdir.parent / "unpickled-marker"
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    _plant_pickle(model / "unet", marker, f"diffusion_pytorch_model{suffix}")
    recipe = write_recipe(workdir.parent / "r.yaml")
    code, _, err = run_cli("compile", *compile_args(recipe, model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, f"diffusion_pytorch_model{suffix}", "safetensors")
    assert not marker.exists()
    assert list(workdir.iterdir()) == []


def test_pickle_beside_safetensors_is_never_unpickled(student_copy, tmp_path):
    model = student_copy("eps-turbo")
    marker = tmp_path / "unpickled-marker"
    for sub in ("unet", "vae", "text_encoder"):
        _plant_pickle(model / sub, marker, "diffusion_pytorch_model.bin" if sub != "text_encoder" else "pytorch_model.bin")
    student = load_student(str(model), "eps-turbo")
    assert student.denoiser is not None
    assert not marker.exists()


@pytest.mark.parametrize("cut", ["half", "last-bytes"])
def test_truncated_safetensors_is_a_model_error(student_copy, workdir, run_cli, cut):
    model = student_copy("eps-turbo")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-16])
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, weights)
    assert list(workdir.iterdir()) == []


def test_nan_weights_are_a_model_error(student_copy, workdir, run_cli):
    import torch
    from safetensors.torch import load_file, save_file

    model = student_copy("eps-turbo")
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(k for k, v in tensors.items() if k.startswith("decoder.") and v.is_floating_point())[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = torch.nan
    save_file(tensors, str(weights), metadata={"format": "pt"})
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, model / "vae", name, "NaN")
    assert list(workdir.iterdir()) == []


def test_denoiser_config_that_does_not_match_its_weights(student_copy, workdir, run_cli):
    model = student_copy("eps-turbo")
    config = model / "unet" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["cross_attention_dim"] = 48   # the weights were saved for 32
    config.write_text(json.dumps(cfg))
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, model / "unet")
    assert list(workdir.iterdir()) == []


def test_unet_cross_attention_dim_must_match_the_text_encoder(student_copy, workdir, run_cli):
    """Each component loads on its own, but they do not fit together."""
    from transformers import CLIPTextConfig, CLIPTextModel

    model = student_copy("eps-turbo")
    cfg = json.loads((model / "text_encoder" / "config.json").read_text())
    wider = CLIPTextConfig(**{k: cfg[k] for k in ("vocab_size", "max_position_embeddings", "num_hidden_layers",
                                                  "num_attention_heads", "bos_token_id", "eos_token_id",
                                                  "pad_token_id", "hidden_act")},
                           hidden_size=48, intermediate_size=96, projection_dim=48)
    shutil.rmtree(model / "text_encoder")
    CLIPTextModel(wider).save_pretrained(model / "text_encoder", safe_serialization=True)
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, "unet", "cross_attention_dim", "48")
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("missing", ["vae", "unet", "text_encoder", "tokenizer", "model_index.json"])
def test_missing_component_is_a_model_error(student_copy, workdir, run_cli, missing):
    model = student_copy("eps-turbo")
    path = model / missing
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, path)
    assert list(workdir.iterdir()) == []


def test_recipe_decoder_subfolder_that_does_not_exist(students, workdir, run_cli):
    recipe = write_recipe(workdir.parent / "r.yaml", extra="components: {vae_decoder: {subfolder: vae_nope}}\n")
    code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, "vae_nope")


def test_decoder_model_that_does_not_exist_is_a_model_error(students, workdir, run_cli):
    missing = workdir.parent / "no-taesd"
    recipe = write_recipe(workdir.parent / "r.yaml", extra=f"components: {{vae_decoder: {{model: {missing}, subfolder: .}}}}\n")
    code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, "no-taesd")


@pytest.mark.parametrize("subfolder", ["../vae", "/etc"])
def test_decoder_subfolder_outside_the_model_is_a_recipe_error(students, workdir, run_cli, subfolder):
    recipe = write_recipe(workdir.parent / "r.yaml", extra=f"components: {{vae_decoder: {{subfolder: '{subfolder}'}}}}\n")
    code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], workdir / "out"))
    assert code == Exit.RECIPE
    assert_one_line_error(err, "components.vae_decoder.subfolder")


def test_unsupported_decoder_class_is_a_model_error(student_copy, workdir, run_cli):
    model = student_copy("eps-turbo")
    config = model / "vae" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["_class_name"] = "AutoencoderDC"
    config.write_text(json.dumps(cfg))
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, config, "AutoencoderDC")


def test_hub_id_offline_is_one_line_model_error(workdir, run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(workdir.parent / "hf-home"))  # an empty cache: nothing to fall back on
    recipe = write_recipe(workdir.parent / "r.yaml")
    code, _, err = run_cli("compile", *compile_args(recipe, "no-such-org/no-such-model", workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, "no-such-org/no-such-model", "offline")
    assert list(workdir.iterdir()) == []


def test_mistyped_local_folder_says_it_does_not_exist(workdir, run_cli):
    """`org/name`-shaped local paths are tried as hub ids too: the message must cover both readings."""
    recipe = write_recipe(workdir.parent / "r.yaml")
    code, _, err = run_cli("compile", *compile_args(recipe, "students/no-such-student", workdir / "out"))
    assert code == Exit.MODEL
    assert_one_line_error(err, "students/no-such-student", "no such local folder")


@pytest.mark.parametrize("content, what", [
    (b"", "contains no prompts"),
    (b"\n   \n# only a comment\n", "contains no prompts"),
    (b"a red fox\nun caf\xe9 au lait\n", "UTF-8"),   # latin-1, not UTF-8
])
def test_bad_prompt_file_is_a_calibration_error(students, workdir, run_cli, content, what):
    prompts = workdir.parent / "prompts.txt"
    prompts.write_bytes(content)
    recipe = recipe_with_prompts(workdir.parent / "r.yaml", prompts)
    code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], workdir / "out"))
    assert code == Exit.CALIBRATION
    assert_one_line_error(err, prompts, what)
    assert list(workdir.iterdir()) == []


def test_missing_prompt_file_is_a_calibration_error(students, workdir, run_cli):
    prompts = workdir.parent / "nope.txt"
    recipe = recipe_with_prompts(workdir.parent / "r.yaml", prompts)
    code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], workdir / "out"))
    assert code == Exit.CALIBRATION
    assert_one_line_error(err, prompts, "not found")


def test_existing_output_without_force_is_refused_and_untouched(students, workdir, run_cli):
    out = workdir / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "denoiser.onnx").write_bytes(b"previous bundle")
    before = tree_snapshot(workdir)
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), students["eps-turbo"],
                                                    out))
    assert code == Exit.RECIPE
    assert_one_line_error(err, out, "--force")
    assert tree_snapshot(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["out"]


def test_output_path_that_is_a_file_is_a_usage_error(students, workdir, run_cli):
    out = workdir / "out"
    out.write_text("not a directory")
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), students["eps-turbo"],
                                                    out))
    assert code == Exit.RECIPE
    assert_one_line_error(err, out)
    assert out.read_text() == "not a directory"


def _chmod_is_effective(path: Path) -> bool:
    """root ignores directory permissions (os.geteuid() == 0): then a read-only dir is writable."""
    probe = path / ".probe"
    try:
        probe.mkdir()
    except PermissionError:
        return True
    probe.rmdir()
    return False


@pytest.mark.parametrize("how", ["read-only parent", "read-only out", "parent is a file"])
def test_unwritable_output_is_an_environment_error(students, workdir, run_cli, how):
    """As root, chmod cannot make a directory unwritable; the 'parent is a file' case still
    makes the output location unwritable for everyone, so something real is always asserted."""
    recipe = write_recipe(workdir.parent / "r.yaml")
    if how == "parent is a file":
        (workdir / "file").write_text("x")
        out = workdir / "file" / "out"
        locked = None
    else:
        locked = workdir if how == "read-only parent" else workdir / "out"
        locked.mkdir(exist_ok=True)
        out = workdir / "out"
        locked.chmod(0o555)
    try:
        if locked is not None and not _chmod_is_effective(locked):
            pytest.skip(f"running as uid {os.geteuid()}: chmod 0555 does not stop this user from writing")
        before, names = tree_snapshot(workdir), sorted(p.name for p in workdir.iterdir())
        extra = ("--force",) if how == "read-only out" else ()
        code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], out, *extra))
        assert code == Exit.ENVIRONMENT
        assert_one_line_error(err, out)
        assert tree_snapshot(workdir) == before
        assert sorted(p.name for p in workdir.iterdir()) == names
    finally:
        if locked is not None:
            locked.chmod(0o755)


def _interrupt_on_second_export(monkeypatch, exc: BaseException):
    """Let the first component export really write its file into the staging directory, then fail."""
    from compiler.targets.onnx import OnnxTarget

    real = OnnxTarget.export
    calls = []

    def export(self, graph, out_dir, options):
        calls.append(graph.name)
        if len(calls) == 2:
            assert any(out_dir.iterdir()), "the first component should be in staging by now"
            raise exc
        return real(self, graph, out_dir, options)

    monkeypatch.setattr(OnnxTarget, "export", export)
    return calls


def test_keyboard_interrupt_mid_compile_leaves_nothing_behind(students, workdir, run_cli, monkeypatch):
    calls = _interrupt_on_second_export(monkeypatch, KeyboardInterrupt())
    out = workdir / "out"
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), students["eps-turbo"],
                                                    out))
    assert len(calls) == 2
    assert code == Exit.INTERRUPTED
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
    assert not out.exists()
    assert list(workdir.iterdir()) == []   # no staging dir next to it either


def test_keyboard_interrupt_with_force_keeps_the_previous_bundle(students, workdir, run_cli, monkeypatch):
    _interrupt_on_second_export(monkeypatch, KeyboardInterrupt())
    out = workdir / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"previous": true}')
    before = tree_snapshot(workdir)
    code, _, _ = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), students["eps-turbo"],
                                                  out, "--force"))
    assert code == Exit.INTERRUPTED
    assert tree_snapshot(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["out"]


def test_out_of_disk_while_writing_is_an_environment_error(students, workdir, run_cli, monkeypatch):
    import torch.onnx

    def full(self, destination, **kwargs):
        Path(destination).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", full)
    out = workdir / "out"
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), students["eps-turbo"],
                                                    out))
    assert code == Exit.ENVIRONMENT
    assert_one_line_error(err, "disk")
    assert list(workdir.iterdir()) == []


def test_errors_are_one_line_even_with_progress_output(student_copy, workdir, run_cli):
    """Without --quiet, progress goes to stderr too; the error is still a single, last line."""
    model = student_copy("eps-turbo")
    shutil.rmtree(model / "vae")
    args = [a for a in compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out") if a != "--quiet"]
    code, _, err = run_cli("compile", *args)
    assert code == Exit.MODEL and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0]
    assert str(model / "vae") in errors[0]


def test_debug_flag_adds_the_traceback(student_copy, workdir, run_cli):
    model = student_copy("eps-turbo")
    shutil.rmtree(model / "vae")
    code, _, err = run_cli("compile", *compile_args(write_recipe(workdir.parent / "r.yaml"), model, workdir / "out"),
                           "--debug")
    assert code == Exit.MODEL and "Traceback" in err


def test_generate_into_missing_directory_is_a_usage_error(run_cli, tmp_path):
    """Refused before the bundle is even read."""
    out = tmp_path / "missing" / "x.png"
    code, _, err = run_cli("generate", "--bundle", tmp_path / "no-bundle", "--prompt", "x", "--out", out)
    assert code == Exit.RECIPE and "Traceback" not in err and str(out) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()


def test_generate_on_a_directory_that_is_not_a_bundle(run_cli, tmp_path):
    code, _, err = run_cli("generate", "--bundle", tmp_path, "--prompt", "x", "--out", tmp_path / "x.png")
    assert code == Exit.BUNDLE and "manifest.json" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_bundle_whose_program_does_not_load_is_a_bundle_error(bundles, run_cli, tmp_path):
    """Hashes can be rewritten along with a file (a deliberate edit): a program that then fails to
    load is still a bad bundle (exit 7), not an export failure or an internal error."""
    import hashlib

    from compiler.contract.manifest import sign_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("eps-turbo"), bundle)
    (bundle / "vae_decoder.onnx").write_bytes(b"not an onnx program")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["vae_decoder.onnx"] = {"sha256": hashlib.sha256(b"not an onnx program").hexdigest(), "size": 19}
    sign_manifest(bundle, manifest)
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "x", "--out", tmp_path / "x.png")
    assert code == Exit.BUNDLE and "vae_decoder.onnx: does not load" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("size, message", [(8192, "over 4096"), (36, "multiple of 8")])
def test_image_sizes_are_bounded(students, workdir, run_cli, size, message):
    recipe = write_recipe(workdir.parent / "r.yaml")
    recipe.write_text(recipe.read_text().replace("image: {height: 32, width: 32}", f"image: {{height: {size}, width: 32}}"))
    code, _, err = run_cli("compile", *compile_args(recipe, students["eps-turbo"], workdir / "out"))
    assert code == Exit.RECIPE
    assert_one_line_error(err, "image.height", message)


def test_image_size_must_fit_the_decoders_scale_factor(students, workdir, monkeypatch):
    """A 40 px side passes the recipe's multiple-of-8 rule but not a 16x decoder."""
    import dataclasses

    from compiler.errors import RecipeError
    from compiler.load import Student
    from compiler.recipe import load_recipe
    from compiler.wrap import wrap

    student = load_student(str(students["eps-turbo"]), "eps-turbo")
    monkeypatch.setattr(Student, "vae_scale_factor", property(lambda self: 16))
    recipe = load_recipe(write_recipe(workdir.parent / "r.yaml"))
    recipe = dataclasses.replace(recipe, image=dataclasses.replace(recipe.image, height=40))
    with pytest.raises(RecipeError, match="image.height.*40 is not a multiple of the decoder's scale factor 16"):
        wrap(student, recipe)
