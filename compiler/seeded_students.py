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

from .clip_bytes import bytes_to_unicode

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
KINDS = tuple(_LAYOUT)


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


def build(folder: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a tiny seeded student of family layout `spec.kind` to `folder`."""
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
