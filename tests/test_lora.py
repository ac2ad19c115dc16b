"""LoRAs fused at compile time (issue 28, compiler/lora.py). Oracle: diffusers' own pipeline, loaded
from the student's folder as a user loads it, with `load_lora_weights(file)` + `fuse_lora(lora_scale=s)`
at one step, equals the compiler's fp32 graphs of the fused student (tiny seeded LoRAs in the
layouts people download: diffusers/PEFT saved by `save_lora_weights`, and kohya with convolutions
as LCM-LoRA has them). A LoRA that does not match is exit 3 and nothing is fused."""
from __future__ import annotations

import json

import pytest
import torch

from compiler.errors import Exit, ModelError
from compiler.families import get_family
from compiler.load import load_student
from compiler.lora import pipeline_class
from compiler.recipe import load_recipe
from compiler.testing.seeded_loras import kohya_lora, peft_lora
from compiler.wrap import wrap
from support import REPO, bundle_record, compile_quietly, family_of, write_recipe
from test_oracle import MAX_ABS_ROUNDOFF, MIN_SENSITIVITY, TEXT, TRANSFORMERS, _noise, _wrapped_image

PROMPT = "a red fox in the snow"


def _lora_recipe(path, kind: str, file, scale: float, text: bool = True):
    lora = f"{{lora: [{{path: {file}, scale: {scale}}}]}}"
    extra = f"components:\n  denoiser: {lora}\n" + (f"  text_encoder: {lora}\n" if text else "")
    return write_recipe(path, family_of(kind), extra=extra + (TEXT if kind in TRANSFORMERS else ""))


def _diffusers_fused(folder, kind: str, recipe, file, scale: float):
    """The student as diffusers loads it, with the LoRA loaded and fused by the pipeline's own API."""
    family = family_of(kind)
    student = load_student(str(folder), family, "vae", None, recipe)     # replaced below by the pipeline's modules
    pipe = pipeline_class(folder).from_pretrained(str(folder))
    pipe.load_lora_weights(str(file))
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()
    student.denoiser = getattr(pipe, "unet", None) or pipe.transformer
    student.text_encoders = [te for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if te is not None]
    return get_family(family).oracle(student, recipe, PROMPT, _noise(wrap(student, recipe), 10))


@pytest.mark.parametrize("kind, layout, text", [
    ("eps-turbo", "peft", True),           # UNet + text encoder, diffusers/PEFT
    ("eps-turbo", "kohya", True),          # sd-scripts keys, 3x3 convolutions (LCM-LoRA's shape), alphas
    pytest.param("eps-turbo-xl", "peft", True, marks=pytest.mark.slow),   # SDXL: both text encoders
    pytest.param("lcm", "kohya", False, marks=pytest.mark.slow),          # an LCM-LoRA-shaped file, denoiser only
    pytest.param("trigflow-scm", "peft", False, marks=pytest.mark.slow),  # SANA-Sprint loads transformer LoRAs
])
def test_the_fused_student_is_what_diffusers_computes_with_the_lora_fused(kind, layout, text, students, tmp_path):
    folder = students[kind]
    file = peft_lora(folder, tmp_path / "lora", text_targets=None if not text else ("q_proj", "v_proj")) \
        if layout == "peft" else kohya_lora(folder, tmp_path / "lora.safetensors", text_targets=() if not text else
                                            ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"))
    scale = 0.7
    recipe = load_recipe(_lora_recipe(tmp_path / "r.yaml", kind, file, scale, text))
    student = load_student(str(folder), family_of(kind), "vae", None, recipe)
    wrapped = wrap(student, recipe)
    ours, _, _ = _wrapped_image(wrapped, student, PROMPT, _noise(wrapped, 10))
    theirs = _diffusers_fused(folder, kind, recipe, file, scale)
    assert (ours - theirs.float()).abs().max().item() < MAX_ABS_ROUNDOFF
    plain = load_recipe(write_recipe(tmp_path / "plain.yaml", family_of(kind), extra=TEXT if kind in TRANSFORMERS else ""))
    base_student = load_student(str(folder), family_of(kind), "vae", None, plain)
    base, _, _ = _wrapped_image(wrap(base_student, plain), base_student, PROMPT, _noise(wrapped, 10))
    assert (ours - base).abs().max().item() > MIN_SENSITIVITY     # the LoRA really changed the image


@pytest.mark.parametrize("precision", ["fp32", pytest.param("int8", marks=pytest.mark.slow)])
def test_a_lora_compiles_with_its_digest_and_scale_recorded_and_no_bytes_added(precision, students, bundles, run_cli,
                                                                               tmp_path):
    from compiler.contract.manifest import sha256_file

    folder = students["eps-turbo"]
    file = kohya_lora(folder, tmp_path / "style.safetensors")
    lora = f", lora: [{{path: {file}, scale: 0.8}}]"
    spec = ("components:\n  denoiser: {precision: %s%s}\n  text_encoder: {precision: fp32%s}\n"
            f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 1}}\n")
    code, err = compile_quietly("onnx", write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=spec % (precision, lora, lora)),
                                folder, tmp_path / "b")
    assert code == Exit.OK, err
    m = bundle_record(tmp_path / "b")
    entry = {"file": "style.safetensors", "sha256": sha256_file(file), "scale": 0.8}
    assert m["lora"] == {"text_encoder": [entry], "denoiser": [entry]}
    assert "<h2>LoRAs</h2>" in (tmp_path / "b" / "report.html").read_text(encoding="utf-8")
    assert all(run["passed"] for run in m["parity"]) and m["warnings"] == []
    if precision == "fp32":
        code, _, err = run_cli("verify", "--bundle", tmp_path / "b", "--model", folder, "--quiet", "--num-prompts", 1)
        assert code == Exit.OK, err
        kohya_lora(folder, file, seed=1)          # another LoRA at the same path
        code, _, err = run_cli("verify", "--bundle", tmp_path / "b", "--model", folder, "--quiet")
        assert code == Exit.MODEL and "style.safetensors" in err and "manifest.json lora" in err, err
    if precision == "fp32":          # the session's plain eps-turbo bundle is the same recipe without the LoRA
        plain_dir = bundles("eps-turbo")
    else:
        plain_dir = tmp_path / "plain"
        code, err = compile_quietly("onnx", write_recipe(tmp_path / "p.yaml", "eps-turbo", extra=spec % (precision, "", "")),
                                    folder, plain_dir)
        assert code == Exit.OK, err
    plain = bundle_record(plain_dir)
    assert "lora" not in plain
    for name, c in m["components"].items():      # fused into the weights: the same graphs and weight bytes
        for f in c["files"]:
            ours, theirs = m["files"][f]["size"], plain["files"][f]["size"]
            # a graph file's own bytes hold its quantization scales, whose encodings vary by a few bytes
            assert ours == theirs if f.endswith(".data") else abs(ours - theirs) <= 64, (f, ours, theirs)
        assert _ops(tmp_path / "b" / c["file"]) == _ops(plain_dir / c["file"])


def _ops(path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def test_keys_a_listed_file_holds_for_a_component_that_does_not_list_it_are_named_in_the_warnings(students, tmp_path):
    folder = students["eps-turbo"]
    file = peft_lora(folder, tmp_path / "lora")
    recipe = load_recipe(_lora_recipe(tmp_path / "r.yaml", "eps-turbo", file, 1.0, text=False))
    student = load_student(str(folder), "eps-turbo", "vae", None, recipe)
    assert any("text_encoder keys are not fused" in w and "components.text_encoder.lora" in w
               for w in student.prepare.warnings), student.prepare.warnings


def test_a_lora_for_another_model_is_refused_naming_its_first_unmatched_key_and_nothing_is_written(students, run_cli,
                                                                                                   tmp_path):
    from safetensors.torch import load_file, save_file

    folder = students["eps-turbo"]
    good = kohya_lora(folder, tmp_path / "good.safetensors", text_targets=())
    tensors = load_file(str(good))
    first = sorted(k for k in tensors if k.endswith(".lora_down.weight"))[0]
    stray = first.replace("lora_unet_", "lora_unet_mid_block_attentions_7_")
    for suffix in (".lora_down.weight", ".lora_up.weight", ".alpha"):
        tensors[stray.replace(".lora_down.weight", suffix)] = tensors[first.replace(".lora_down.weight", suffix)].clone()
    save_file(tensors, str(tmp_path / "other.safetensors"))
    total = sum(1 for k in tensors if not k.endswith(".alpha"))
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra="components:\n  denoiser: {lora: [{path: %s}]}\n"
                                                                   % (tmp_path / "other.safetensors"))
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", folder, "--out", tmp_path / "o",
                           "--quiet")
    assert code == Exit.MODEL and "other.safetensors" in err and "matches no layer of the denoiser" in err, err
    assert f"{total - 2} of {total} keys matched; nothing was fused" in err and "mid_block.attentions.7" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("lora, code, says", [
    ("{path: %(dir)s/missing.safetensors}", Exit.MODEL, "no such file (components.denoiser.lora[0].path)"),
    ("{path: %(dir)s/weights.ckpt}", Exit.MODEL, "pickle-based files can execute code"),
    ("{path: %(dir)s/x.safetensors, strength: 1}", Exit.RECIPE, "components.denoiser.lora[0].strength: unknown key"),
])
def test_bad_lora_entries_are_one_line_errors_naming_the_field(lora, code, says, students, run_cli, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo",
                          extra="components:\n  denoiser: {lora: [%s]}\n" % (lora % {"dir": tmp_path}))
    got, _, err = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", students["eps-turbo"],
                          "--out", tmp_path / "o")
    assert got == code and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_the_decoder_takes_no_lora(students, run_cli, tmp_path):
    file = kohya_lora(students["eps-turbo"], tmp_path / "l.safetensors")
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra="components:\n  vae_decoder: {lora: [{path: %s}]}\n"
                                                                   % file)
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", students["eps-turbo"],
                           "--out", tmp_path / "o")
    assert code == Exit.RECIPE and "components.vae_decoder.lora" in err, err


def test_a_family_whose_diffusers_pipeline_loads_no_lora_is_refused(students, run_cli, tmp_path):
    file = kohya_lora(students["eps-turbo"], tmp_path / "l.safetensors")
    recipe = write_recipe(tmp_path / "r.yaml", "pixart-onestep", extra="components:\n  denoiser: {lora: [{path: %s}]}\n"
                                                                        % file + TEXT)
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", students["pixart-onestep"],
                           "--out", tmp_path / "o", "--quiet")
    assert code == Exit.RECIPE and "PixArtAlphaPipeline loads no LoRA" in err, err
    assert not (tmp_path / "o").exists()
