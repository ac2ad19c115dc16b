"""Tiny seeded LoRAs in the layouts people download, for the tiny seeded students
(seeded_students.py), written as the tools that make them write them: diffusers' own
`save_lora_weights` for diffusers/PEFT files, and kohya's key layout (`lora_unet_...`,
`lora_te_...`, `.lora_down` / `.lora_up` / `.alpha`) for sd-scripts files, convolutions included
as LCM-LoRA has them."""
from __future__ import annotations

from pathlib import Path

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "v_proj")
# what sd-scripts adapts in a CLIP text encoder (every attention projection and the MLP)
KOHYA_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def peft_lora(student: Path, out: Path, seed: int = 0, rank: int = 4, unet_targets=UNET_TARGETS,
              text_targets=TEXT_TARGETS) -> Path:
    """A diffusers/PEFT LoRA of the student's denoiser (and text encoders, when `text_targets`),
    random but seeded, saved by the student's pipeline class's save_lora_weights."""
    import json

    import diffusers
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    cls = getattr(diffusers, json.loads((student / "model_index.json").read_text())["_class_name"])
    index = json.loads((student / "model_index.json").read_text())
    torch.manual_seed(seed)
    layers = {}
    denoiser = "unet" if "unet" in index else "transformer"
    den_cls = getattr(diffusers, index[denoiser][1])
    module = den_cls.from_pretrained(str(student / denoiser))
    module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(unet_targets), init_lora_weights=False))
    layers[f"{denoiser}_lora_layers"] = get_peft_model_state_dict(module)
    if text_targets:
        import transformers

        for name in ("text_encoder", "text_encoder_2"):
            if (index.get(name) or [None])[0] is None:
                continue
            te = getattr(transformers, index[name][1]).from_pretrained(str(student / name))
            te.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(text_targets),
                                      init_lora_weights=False))
            layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(te))
    cls.save_lora_weights(str(out), safe_serialization=True, **layers)
    return out / "pytorch_lora_weights.safetensors"


def kohya_lora(student: Path, path: Path, seed: int = 0, rank: int = 4, alpha: float = 2.0,
               unet_targets=("to_q", "to_v", "proj_in", "conv1"), text_targets=KOHYA_TEXT_TARGETS) -> Path:
    """An sd-scripts (kohya) LoRA of an SD-layout student's UNet and text encoder: module paths
    with `_` for `.`, `lora_down` / `lora_up` / `alpha`; 3x3 convolutions get a 3x3 down and a
    1x1 up, as LCM-LoRA's."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    g = torch.Generator().manual_seed(seed)
    tensors = {}

    def add(prefix: str, name: str, layer) -> None:
        key = f"{prefix}_{name.replace('.', '_')}"
        if isinstance(layer, torch.nn.Conv2d):
            k = layer.kernel_size
            down = torch.randn(rank, layer.in_channels, *k, generator=g) * 0.1
            up = torch.randn(layer.out_channels, rank, 1, 1, generator=g) * 0.1
        else:
            down = torch.randn(rank, layer.in_features, generator=g) * 0.1
            up = torch.randn(layer.out_features, rank, generator=g) * 0.1
        tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(alpha)})

    unet = UNet2DConditionModel.from_pretrained(str(student / "unet"))
    for name, layer in unet.named_modules():
        if name.split(".")[-1] in unet_targets and isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            add("lora_unet", name, layer)
    if text_targets:
        te = CLIPTextModel.from_pretrained(str(student / "text_encoder"))
        for name, layer in te.named_modules():
            if name.split(".")[-1] in text_targets and isinstance(layer, torch.nn.Linear):
                add("lora_te", name, layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
