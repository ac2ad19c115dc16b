"""LoRAs fused into the weights as each component loads (issue 28), so calibration, quantization,
parity and the report all see the fused model, and a fused LoRA costs nothing at run time.

The files are the ones people download: diffusers/PEFT or kohya (`lora_unet_...`, `lora_te_...`)
safetensors. diffusers reads them as its pipelines do (the student's pipeline class's
`lora_state_dict` converts kohya and older layouts) and fuses them as `load_lora_weights` +
`fuse_lora(lora_scale=...)` + `unload_lora_weights` do, one component's modules at a time. Before
anything is fused, every key meant for a component must name one of its layers: a LoRA that does
not match is ModelError (exit 3) naming the first unmatched key and how many matched, never a
silent partial merge. Keys a file holds for a component whose `lora` list does not name it are not
fused, and the manifest's warnings say so.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelError, RecipeError, first_line


def listed(recipe) -> dict[str, tuple]:
    """component -> its recipe LoRAs, for the components that have any."""
    return {name: spec.lora for name, spec in recipe.component_specs().items() if getattr(spec, "lora", ())}


def check_files(recipe) -> None:
    """Before any work: each listed file exists and is safetensors."""
    for name, entries in listed(recipe).items():
        for i, entry in enumerate(entries):
            path = Path(entry.path)
            if path.suffix != ".safetensors":
                raise ModelError(str(path), "LoRAs are read from .safetensors only (pickle-based files can execute code)")
            if not path.is_file():
                raise ModelError(str(path), f"no such file (components.{name}.lora[{i}].path)")


def check_family(recipe, source: str) -> None:
    """LoRAs need a family whose diffusers pipeline loads them: it is the reference they are fused
    and checked as."""
    cls = pipeline_class(Path(source))
    if listed(recipe) and not hasattr(cls, "lora_state_dict"):
        raise RecipeError(f"components.{next(iter(listed(recipe)))}.lora", f"diffusers' {cls.__name__} loads no "
                                                                          f"LoRA, so there is no reference to fuse "
                                                                          f"and check one against")


def pipeline_class(root: Path):
    import diffusers

    name = json.loads((root / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "")
    return getattr(diffusers, name, None) or diffusers.StableDiffusionPipeline


class Fuser:
    """Fuses a recipe's LoRAs into each component's modules as the student loads them."""

    def __init__(self, recipe, source: str):
        self.entries = listed(recipe)
        self.cls = pipeline_class(Path(source))
        self.warnings: list[str] = []

    def __call__(self, component: str, modules: list) -> None:
        targets = list(zip(self._prefixes(component, len(modules)), modules))
        for i, entry in enumerate(self.entries.get(component, ())):
            where = f"components.{component}.lora[{i}]"
            state_dict, alphas, metadata = self._read(entry.path)
            fused = [(prefix, module, keys) for prefix, module in targets if (keys := _keys(state_dict, prefix))]
            if not fused:
                raise ModelError(entry.path, f"has no keys for the {component} ({where}; its keys begin "
                                             f"{sorted({k.split('.')[0] for k in state_dict})})")
            for prefix, module, keys in fused:
                _require_matched(entry.path, component, prefix, keys, module)
            for prefix, module, _ in fused:
                self._fuse(prefix, module, state_dict, alphas, metadata, entry.scale, f"lora{i}")
            self._warn_unlisted(component, entry.path, state_dict)

    def _prefixes(self, component: str, count: int) -> list[str]:
        if component == "denoiser":
            return [getattr(self.cls, "unet_name", None) if hasattr(self.cls, "load_lora_into_unet")
                    else getattr(self.cls, "transformer_name", "transformer")]
        if component == "text_encoder":
            return ["text_encoder", "text_encoder_2"][:count]
        return []

    def _read(self, path: str):
        try:
            read = self.cls.lora_state_dict(path, return_lora_metadata=True)
        except Exception as exc:
            raise ModelError(path, f"not a LoRA diffusers' {self.cls.__name__} reads: {first_line(exc)}") from None
        # (state_dict, network_alphas, metadata); the transformer pipelines' files carry no alphas apart
        return read if len(read) == 3 else (read[0], None, read[1])

    def _fuse(self, prefix: str, module, state_dict, alphas, metadata, scale: float, name: str) -> None:
        from diffusers.loaders.lora_base import _remove_text_encoder_monkey_patch, fuse_text_encoder_lora

        if prefix.startswith("text_encoder"):
            self.cls.load_lora_into_text_encoder(state_dict, alphas, text_encoder=module, prefix=prefix,
                                                 adapter_name=name, metadata=metadata)
            fuse_text_encoder_lora(module, lora_scale=scale, adapter_names=[name])
            _remove_text_encoder_monkey_patch(module)
            return
        if hasattr(self.cls, "load_lora_into_unet"):
            self.cls.load_lora_into_unet(state_dict, alphas, unet=module, adapter_name=name, metadata=metadata)
        else:
            kwargs = {"network_alphas": alphas} if "network_alphas" in _parameters(self.cls.load_lora_into_transformer) \
                else {}
            self.cls.load_lora_into_transformer(state_dict, transformer=module, adapter_name=name, metadata=metadata,
                                                **kwargs)
        module.fuse_lora(lora_scale=scale, adapter_names=[name])
        module.unload_lora()

    def _warn_unlisted(self, component: str, path: str, state_dict: dict) -> None:
        """Keys this file, listed for `component`, holds for another component that does not list it."""
        for other in ("text_encoder", "denoiser"):
            if other == component or path in {e.path for e in self.entries.get(other, ())}:
                continue
            count = sum(len(_keys(state_dict, p)) for p in self._prefixes(other, 2))
            message = f"{Path(path).name}: its {count} {other} keys are not fused (components.{other}.lora does not list it)"
            if count and message not in self.warnings:
                self.warnings.append(message)


def _parameters(fn) -> set[str]:
    import inspect

    return set(inspect.signature(fn).parameters)


def _keys(state_dict: dict, prefix: str | None) -> list[str]:
    return [k for k in state_dict if prefix and k.startswith(prefix + ".")]


def _layers(keys: list[str], prefix: str) -> dict[str, str]:
    """Each key -> the layer it adapts, after the conversions diffusers applies before injecting
    (older layouts' `to_q_lora.down` names become PEFT's `q_proj.lora_A`)."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from diffusers.utils.state_dict_utils import DIFFUSERS_OLD_TO_PEFT, DIFFUSERS_TO_PEFT, convert_state_dict

    out = {}
    for key in keys:
        one = {key[len(prefix) + 1:]: None}
        if prefix.startswith("text_encoder"):
            peft = convert_state_dict(convert_state_dict(one, DIFFUSERS_OLD_TO_PEFT), DIFFUSERS_TO_PEFT)
        else:
            peft = convert_unet_state_dict_to_peft(one)
        path = next(iter(peft))
        out[key] = path[:path.index(".lora")] if ".lora" in path else path.rsplit(".", 1)[0]
    return out


def _require_matched(path: str, component: str, prefix: str, keys: list[str], module) -> None:
    names = [n for n, _ in module.named_modules()]
    layers = _layers(keys, prefix)
    unmatched = [k for k in keys if not any(n == layers[k] or n.endswith("." + layers[k]) for n in names)]
    if unmatched:
        raise ModelError(path, f"key {unmatched[0]!r} (as diffusers reads it) matches no layer of the {component}: "
                               f"{len(keys) - len(unmatched)} of {len(keys)} keys matched; nothing was fused")


def describe(recipe) -> dict | None:
    """The manifest's record of what was fused: per component, each file's name, digest and scale."""
    from .contract.manifest import sha256_file

    entries = listed(recipe)
    if not entries:
        return None
    return {name: [{"file": Path(e.path).name, "sha256": sha256_file(Path(e.path)), "scale": e.scale} for e in items]
            for name, items in entries.items()}
