"""Tiny, seeded students of the real diffusers/transformers classes, built offline.

Tests use them the way diffusers' own tests use `get_dummy_components()`; `make demo`
falls back to one when no trained student ships. Each is saved as a normal diffusers
folder (model_index.json + component subfolders, safetensors only), so it goes through
exactly the loading code a hub checkpoint does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..contract.clip_bytes import bytes_to_unicode

WORDS = (
    "a an the of in on with and photo painting red green blue yellow purple orange black white "
    "cat dog fox car house tree mountain sky city street portrait snow sea flower apple two three "
    "small large left right above below watercolor render drawing light night day"
).split()

# Family -> (pipeline class for model_index, scheduler class, scheduler overrides, sdxl?)
_LAYOUT = {
    "eps-turbo": ("StableDiffusionPipeline", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, False),
    "eps-turbo-xl": ("StableDiffusionXLPipeline", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, True),
    "sample-lightning": ("StableDiffusionXLPipeline", "EulerDiscreteScheduler", {"timestep_spacing": "trailing", "prediction_type": "sample"}, True),
    "lcm": ("LatentConsistencyModelPipeline", "LCMScheduler", {}, False),
    "rectified-flow": ("StableDiffusionPipeline", "EulerDiscreteScheduler", {}, False),
}
# The transformer families: pipeline class for model_index, scheduler class and config.
_TRANSFORMER_LAYOUT = {
    "pixart-onestep": ("PixArtAlphaPipeline", "DDPMScheduler",
                       dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                            prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)),
    "flow-match": ("FluxPipeline", "FlowMatchEulerDiscreteScheduler",
                   dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)),
    "trigflow-scm": ("SanaSprintPipeline", "SCMScheduler",
                     dict(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5)),
}
KINDS = (*_LAYOUT, *_TRANSFORMER_LAYOUT)


@dataclass(frozen=True)
class TinySpec:
    kind: str = "eps-turbo"
    image_size: int = 32
    text_hidden: int = 32
    max_length: int = 16
    tiny_vae: bool = False  # also write vae_tiny/ (AutoencoderTiny)
    unet_blocks: int = 2    # 1: one cross-attention block, no down/upsampling (the smallest graph)
    seed: int = 0


def write_tokenizer(folder: Path, max_length: int, words=WORDS) -> int:
    """A CLIP BPE tokenizer whose merges spell each word of `words` as one token."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = bytes_to_unicode()
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
                vocab.append(merged)
            parts = [merged] + parts[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False, sort_keys=True))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return len(ids)


def write_sentencepiece_tokenizer(folder: Path, kind: str, max_length: int, vocab_size: int | None = None) -> int:
    """A tiny SentencePiece tokenizer with the real one's id layout, trained on WORDS and the SANA
    instruction: T5 (unigram; pad 0, eos 1, unk 2, no BOS) or Gemma (BPE with byte fallback;
    pad 0, eos 1, bos 2, unk 3, BOS added). Saved as tokenizer.json, as the hub ships them.
    `vocab_size`: more pieces spell the instruction in fewer tokens (benchmarks/sana_scale.py)."""
    import shutil
    import tempfile

    import sentencepiece as spm
    from transformers import GemmaTokenizer, T5Tokenizer

    from ..families.trigflow import _call_default
    from ..contract.tokenizers import save_pretrained

    text = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] + list(_call_default("complex_human_instruction"))
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(sentence_iterator=iter(text * 4), character_coverage=1.0, minloglevel=2, num_threads=1,
                      pad_id=0, eos_id=1, **({"hard_vocab_limit": False} if vocab_size else {}))
        if kind == "t5":
            spm.SentencePieceTrainer.train(model_prefix=f"{tmp}/spiece", vocab_size=vocab_size or 120, model_type="unigram",
                                           unk_id=2, bos_id=-1, **common)
            tok = T5Tokenizer.from_pretrained(tmp, extra_ids=0, model_max_length=max_length)
        else:
            spm.SentencePieceTrainer.train(model_prefix=f"{tmp}/tokenizer", vocab_size=vocab_size or 400, model_type="bpe",
                                           bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
                                           unk_piece="<unk>", byte_fallback=True, **common)
            tok = GemmaTokenizer.from_pretrained(tmp, add_bos_token=True, padding_side="right",
                                                 model_max_length=max_length)
        shutil.rmtree(folder, ignore_errors=True)
        save_pretrained(tok, folder)
    return len(tok)


def _build_transformer_student(folder: Path, spec: TinySpec) -> Path:
    import torch
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, Gemma2Config, Gemma2Model, T5Config, T5EncoderModel

    pipeline_cls, sched_cls, sched_cfg = _TRANSFORMER_LAYOUT[spec.kind]
    torch.manual_seed(spec.seed)
    h = spec.text_hidden
    t5 = dict(d_model=h, d_kv=8, d_ff=2 * h, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
              relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
              eos_token_id=1, decoder_start_token_id=0)
    kl = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
              down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
              layers_per_block=1, norm_num_groups=4, sample_size=spec.image_size)
    latent = spec.image_size // 2
    components: dict = {}

    def save(sub: str, model, lib: str) -> None:
        model.eval().save_pretrained(folder / sub, safe_serialization=True)
        components[sub] = [lib, type(model).__name__]

    if spec.kind == "pixart-onestep":
        vocab = write_sentencepiece_tokenizer(folder / "tokenizer", "t5", spec.max_length)
        components["tokenizer"] = ["transformers", "T5Tokenizer"]
        save("text_encoder", T5EncoderModel(T5Config(vocab_size=vocab, **t5)), "transformers")
        save("transformer", diffusers.PixArtTransformer2DModel(
            sample_size=latent, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
            caption_channels=h, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6), "diffusers")
        save("vae", diffusers.AutoencoderKL(**kl, scaling_factor=0.18215), "diffusers")
    elif spec.kind == "flow-match":
        vocab = write_tokenizer(folder / "tokenizer", spec.max_length)
        from transformers import CLIPTokenizer

        clip_tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        components["tokenizer"] = ["transformers", "CLIPTokenizer"]
        save("text_encoder", CLIPTextModel(CLIPTextConfig(
            hidden_size=h, intermediate_size=2 * h, num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab,
            max_position_embeddings=spec.max_length, projection_dim=h, hidden_act="quick_gelu",
            bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id)), "transformers")
        vocab2 = write_sentencepiece_tokenizer(folder / "tokenizer_2", "t5", spec.max_length)
        components["tokenizer_2"] = ["transformers", "T5Tokenizer"]
        save("text_encoder_2", T5EncoderModel(T5Config(vocab_size=vocab2, **t5)), "transformers")
        save("transformer", diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=h, pooled_projection_dim=h, guidance_embeds=False,
            axes_dims_rope=(4, 6, 6)), "diffusers")
        save("vae", diffusers.AutoencoderKL(**kl, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                                            use_post_quant_conv=False), "diffusers")
    else:   # trigflow-scm
        vocab = write_sentencepiece_tokenizer(folder / "tokenizer", "gemma", spec.max_length)
        components["tokenizer"] = ["transformers", "GemmaTokenizer"]
        save("text_encoder", Gemma2Model(Gemma2Config(
            vocab_size=vocab, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=2048,
            pad_token_id=0, eos_token_id=1, bos_token_id=2)), "transformers")
        save("transformer", diffusers.SanaTransformer2DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
            num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=h,
            mlp_ratio=2.5, sample_size=latent, patch_size=1, guidance_embeds=True, guidance_embeds_scale=0.1,
            qk_norm="rms_norm_across_heads", interpolation_scale=None, attention_bias=False), "diffusers")
        save("vae", diffusers.AutoencoderDC(
            in_channels=3, latent_channels=4, attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
            upsample_block_type="interpolate", downsample_block_type="conv", decoder_norm_types="rms_norm",
            decoder_act_fns="silu", scaling_factor=0.41407), "diffusers")
    getattr(diffusers, sched_cls)(**sched_cfg).save_pretrained(folder / "scheduler")
    components["scheduler"] = ["diffusers", sched_cls]
    index = {"_class_name": pipeline_cls, "_diffusers_version": diffusers.__version__, **components}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return folder


def build(folder: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a tiny seeded student of family layout `spec.kind` to `folder`."""
    if spec.kind in _TRANSFORMER_LAYOUT:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return _build_transformer_student(folder, spec)
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    import diffusers

    pipeline_cls, sched_cls, sched_overrides, sdxl = _LAYOUT[spec.kind]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)

    vocab_size = write_tokenizer(folder / "tokenizer", spec.max_length)
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_cfg = dict(
        hidden_size=spec.text_hidden, intermediate_size=2 * spec.text_hidden, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=vocab_size, max_position_embeddings=spec.max_length,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        projection_dim=spec.text_hidden, hidden_act="gelu",
    )
    components = {"tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"]}
    CLIPTextModel(CLIPTextConfig(**text_cfg)).eval().save_pretrained(folder / "text_encoder", safe_serialization=True)

    cross_dim = spec.text_hidden
    unet_extra: dict = {}
    if sdxl:
        write_tokenizer(folder / "tokenizer_2", spec.max_length)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
        te2.eval().save_pretrained(folder / "text_encoder_2", safe_serialization=True)
        components.update(tokenizer_2=["transformers", "CLIPTokenizer"], text_encoder_2=["transformers", "CLIPTextModelWithProjection"])
        cross_dim = 2 * spec.text_hidden
        time_dim = 8
        unet_extra = dict(addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                          projection_class_embeddings_input_dim=spec.text_hidden + 6 * time_dim)
    if spec.kind == "lcm":
        unet_extra = dict(time_cond_proj_dim=16)

    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=spec.image_size, scaling_factor=0.5,
    )
    latent = spec.image_size // 2
    blocks = {2: dict(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
              1: dict(block_out_channels=(16,), down_block_types=("CrossAttnDownBlock2D",),
                      up_block_types=("CrossAttnUpBlock2D",))}[spec.unet_blocks]
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, layers_per_block=1, **blocks,
        cross_attention_dim=cross_dim, attention_head_dim=4, norm_num_groups=8, **unet_extra,
    )
    unet.eval().save_pretrained(folder / "unet", safe_serialization=True)
    vae.eval().save_pretrained(folder / "vae", safe_serialization=True)
    components.update(unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"])
    if spec.tiny_vae:
        taesd = AutoencoderTiny(
            in_channels=3, out_channels=3, latent_channels=4, encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
        )
        taesd.eval().save_pretrained(folder / "vae_tiny", safe_serialization=True)

    scheduler = getattr(diffusers, sched_cls)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **sched_overrides
    )
    scheduler.save_pretrained(folder / "scheduler")
    components["scheduler"] = ["diffusers", sched_cls]
    if not sdxl:
        components.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    if spec.kind == "lcm":
        components.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    index = {"_class_name": pipeline_cls, "_diffusers_version": diffusers.__version__, **components}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return folder
