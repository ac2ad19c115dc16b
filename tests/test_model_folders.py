"""Model folders as people have them (issue 24): written by the real save_pretrained of the pinned
diffusers and transformers, not by hand. transformers 5 saves a CLIP tokenizer as tokenizer.json
alone; hub downloads with variant="fp16" carry only *.fp16.safetensors; large weights come
sharded with an index; SDXL adds text_encoder_2; configs carry keys a loader does not know."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.errors import Exit
from support import compile_quietly, write_recipe


def _pipeline(student: Path, sdxl: bool):
    """The seeded student's components as the real diffusers pipeline a user would save."""
    import diffusers
    import transformers

    cls = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    parts = dict(vae=diffusers.AutoencoderKL.from_pretrained(student / "vae"),
                 text_encoder=transformers.CLIPTextModel.from_pretrained(student / "text_encoder"),
                 tokenizer=transformers.CLIPTokenizer.from_pretrained(student / "tokenizer"),
                 unet=diffusers.UNet2DConditionModel.from_pretrained(student / "unet"),
                 scheduler=diffusers.EulerDiscreteScheduler.from_pretrained(student / "scheduler"))
    if sdxl:
        parts.update(text_encoder_2=transformers.CLIPTextModelWithProjection.from_pretrained(student / "text_encoder_2"),
                     tokenizer_2=transformers.CLIPTokenizer.from_pretrained(student / "tokenizer_2"))
        return cls(**parts)
    return cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _add_unknown_keys(folder: Path) -> None:
    for path in [folder / "scheduler" / "scheduler_config.json", folder / "unet" / "config.json"]:
        config = json.loads(path.read_text())
        config["a_key_from_a_newer_release"] = {"nested": [1, 2]}
        path.write_text(json.dumps(config))


@pytest.mark.parametrize("layout", ["sd-fp16-variant", pytest.param("sdxl-sharded", marks=pytest.mark.slow)])
def test_a_pipeline_saved_by_diffusers_compiles(students, tmp_path, run_cli, layout):
    import torch

    sdxl = layout == "sdxl-sharded"
    pipe = _pipeline(students["eps-turbo-xl" if sdxl else "eps-turbo"], sdxl)
    folder = tmp_path / "user-student"
    if sdxl:
        pipe.save_pretrained(folder, safe_serialization=True, max_shard_size="40KB")
        assert list((folder / "unet").glob("*.safetensors.index.json")), "the UNet was not sharded"
    else:
        pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
        assert {p.name for p in (folder / "unet").glob("*.safetensors")} == {"diffusion_pytorch_model.fp16.safetensors"}
    _add_unknown_keys(folder)
    for name in ("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",):
        assert sorted(p.name for p in (folder / name).iterdir()) == ["tokenizer.json", "tokenizer_config.json"]

    recipe = write_recipe(tmp_path / "recipe.yaml", "eps-turbo")
    code, err = compile_quietly("onnx", recipe, folder, tmp_path / "bundle")
    assert code == Exit.OK, err
    bundle = tmp_path / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [t["vocab"] for t in manifest["tokenizers"]] == [f"{n}/vocab.json" for n in
                                                            (("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",))]
    # the runtimes' files made from tokenizer.json give the student's own ids
    from transformers import CLIPTokenizer

    from compiler.contract.tokenizers import PROBE_PROMPTS

    assert not (bundle / "tokenizer" / "tokenizer.json").exists()
    made = CLIPTokenizer.from_pretrained(bundle / "tokenizer")
    own = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert all(made(p)["input_ids"] == own(p)["input_ids"] for p in PROBE_PROMPTS)
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--out", tmp_path / "fox.png")
    assert code == Exit.OK, err


def test_weights_in_two_variants_and_none_plain_are_refused_naming_the_folder(student_copy, tmp_path):
    folder = student_copy("eps-turbo")
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.rename(unet.with_name("diffusion_pytorch_model.fp16.safetensors"))
    (folder / "unet" / "diffusion_pytorch_model.bf16.safetensors").write_bytes(
        (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").read_bytes())
    code, err = compile_quietly("onnx", write_recipe(tmp_path / "recipe.yaml"), folder, tmp_path / "bundle")
    assert code == Exit.MODEL, err
    assert f"{folder / 'unet'}: weights in several variants (bf16, fp16)" in err
    assert not (tmp_path / "bundle").exists()


def test_a_tokenizer_json_with_tokens_the_runtimes_cannot_reproduce_is_refused_before_any_export(students, tmp_path,
                                                                                                   monkeypatch):
    import shutil

    import compiler.pipeline

    def export(*args, **kwargs):
        raise AssertionError("exported before the tokenizer was checked")

    monkeypatch.setattr(compiler.pipeline, "export", export)

    folder = tmp_path / "student"
    shutil.copytree(students["eps-turbo"], folder)
    pipe_tok = folder / "tokenizer"
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(pipe_tok)
    shutil.rmtree(pipe_tok)
    tok.save_pretrained(pipe_tok)
    data = json.loads((pipe_tok / "tokenizer.json").read_text())
    data["added_tokens"].append({"id": len(data["model"]["vocab"]), "content": "<cat-toy>", "single_word": False,
                                 "lstrip": False, "rstrip": False, "normalized": True, "special": False})
    (pipe_tok / "tokenizer.json").write_text(json.dumps(data))   # a textual-inversion token, as trainers add them
    code, err = compile_quietly("onnx", write_recipe(tmp_path / "recipe.yaml"), folder, tmp_path / "bundle")
    assert code == Exit.MODEL, err
    assert f"{pipe_tok / 'tokenizer.json'}: added_tokens: 1 tokens outside the BPE vocabulary ('<cat-toy>'" in err
    assert not (tmp_path / "bundle").exists()
