"""Stage 1, load: a diffusers-format student from a local folder (or a hub id resolved to one).

Only safetensors are read. Pickle-based weights (.bin, .ckpt, .pt, .pth, .pkl) are refused
before anything is loaded, and every tensor is checked for NaN/Inf after loading.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import lora
from .errors import ModelError, first_line
from .student import Student, _load, _skeleton, _weight_variant

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(model: str) -> Path:
    """A local folder as is; a hub id (org/name) downloaded as safetensors + configs only."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(model, "model must be a diffusers folder (with model_index.json), not a file")
        return path
    if not HUB_ID.match(model):
        raise ModelError(model, "no such folder, and not a hub id of the form org/name")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
    except Exception as exc:  # network, auth, missing repo: all the same to the user
        raise ModelError(model, f"no such local folder, and fetching it as a hub id failed ({type(exc).__name__}); "
                                f"this machine may be offline: download it on a networked machine and pass "
                                f"the local folder") from None


def load_student(model: str, family: str, decoder_subfolder: str = "vae", decoder_model: str | None = None,
                 recipe=None, lazy: bool = False) -> Student:
    """The folders and classes are the family's Layout. `decoder_model`: another diffusers folder
    or hub id whose `decoder_subfolder` holds the VAE to ship (a TAESD published on its own).
    `recipe`: for the family's prompt format (e.g. max_sequence_length); defaults otherwise.
    `lazy`: every file is checked now, but the modules are weightless skeletons (configs only)
    until `Student.load(component)`, so a compile holds one component's weights at a time."""
    from .families import get_family
    from .contract.tokenizers import check_shippable, source_problem

    fam = get_family(family)
    layout = fam.layout
    root = resolve_source(model)
    vae_root = resolve_source(decoder_model) if decoder_model else root
    index = _read_json(root / "model_index.json")
    slots = [t for t in layout.text if not t.optional or (index.get(t.encoder) or [None])[0] is not None]
    for sub in [*(t.encoder for t in slots), layout.denoiser]:
        _check_weights(root, sub)
    _check_weights(vae_root, decoder_subfolder)
    for slot in slots:   # what the on-device tokenizers read, or what they are made from (runtimes/README.md)
        if problem := source_problem(root / slot.tokenizer, slot.kind):
            raise ModelError(str(problem[0]), problem[1])

    import transformers
    import diffusers

    tokenizers = [_load_tokenizer(root / slot.tokenizer, i, slot.kind, fam.prompt_format(i, recipe))
                  for i, slot in enumerate(slots)]
    for tok, slot in zip(tokenizers, slots):
        check_shippable(tok, root / slot.tokenizer)
    sources = {"text_encoder": [], "denoiser": [], "vae_decoder": []}
    for slot in slots:
        cls_name = _class_name(root, slot.encoder, index, default=slot.encoder_classes[0])
        if cls_name not in slot.encoder_classes:
            raise ModelError(f"{root / slot.encoder / 'config.json'}: architectures",
                             f"unsupported text encoder {cls_name} (this family reads {', '.join(slot.encoder_classes)})")
        sources["text_encoder"].append((root, slot.encoder, getattr(transformers, cls_name)))
    den_cls = _class_name(root, layout.denoiser, index, default=layout.denoiser_class)
    if den_cls != layout.denoiser_class:
        raise ModelError(f"{root / layout.denoiser / 'config.json'}: _class_name",
                         f"is {den_cls}; family {family} needs a {layout.denoiser_class}")
    sources["denoiser"].append((root, layout.denoiser, getattr(diffusers, den_cls)))
    vae_cls = _class_name(vae_root, decoder_subfolder, index if vae_root == root else {}, default="AutoencoderKL")
    if vae_cls not in layout.decoder_classes:
        raise ModelError(f"{vae_root / decoder_subfolder / 'config.json'}: _class_name",
                         f"unsupported decoder {vae_cls} (family {family} reads {' or '.join(layout.decoder_classes)})")
    sources["vae_decoder"].append((vae_root, decoder_subfolder, getattr(diffusers, vae_cls)))
    prepare = None
    if recipe is not None and lora.listed(recipe):
        lora.check_files(recipe)
        lora.check_family(recipe, str(root))
        prepare = lora.Fuser(recipe, str(root))
    read = _read_skeleton if lazy else _load
    modules = {name: [read(*source) for source in entries] for name, entries in sources.items()}
    sources["vae_encoder"] = sources["vae_decoder"]   # the encoder of the VAE whose decoder ships (img2img)
    if prepare and not lazy:
        for name, loaded in modules.items():
            prepare(name, loaded)
    sched_path = root / "scheduler" / "scheduler_config.json"
    scheduler_config = _read_json(sched_path) if sched_path.exists() else {}
    student = Student(str(root), family, tokenizers, [root / t.tokenizer for t in slots], modules["text_encoder"],
                      modules["denoiser"][0], modules["vae_decoder"][0], decoder_subfolder, scheduler_config,
                      str(vae_root), sources, set() if lazy else set(sources), prepare)
    fam.check_compatible(student)
    return student


def _load_tokenizer(folder: Path, index: int, kind: str, fmt):
    from .contract.tokenizers import load

    try:
        return load(folder, index, kind, fmt)
    except Exception as exc:
        raise ModelError(str(folder), f"tokenizer could not load: {first_line(exc)}") from None


def load_recipe_student(model: str, recipe, lazy: bool = False) -> Student:
    decoder = recipe.components.vae_decoder
    return load_student(model, recipe.family, decoder.subfolder, decoder.model, recipe, lazy)


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise ModelError(str(path), "missing (a diffusers folder needs model_index.json and component subfolders)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(str(path), f"not valid JSON ({exc})") from None


def _class_name(root: Path, sub: str, index: dict, default: str) -> str:
    cfg = _read_json(root / sub / "config.json")
    if "_class_name" in cfg:
        return cfg["_class_name"]
    if cfg.get("architectures"):
        return cfg["architectures"][0]
    entry = index.get(sub)
    return entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[1] else default


def _check_weights(root: Path, sub: str) -> None:
    folder = root / sub
    if not folder.is_dir():
        raise ModelError(str(folder), "component folder missing")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if not safetensors:
        if pickles:
            raise ModelError(str(pickles[0]), "pickle-based weights are refused (they can execute code); "
                                              "convert them to .safetensors")
        raise ModelError(str(folder), "no .safetensors weights found")
    _weight_variant(folder)
    from safetensors import safe_open

    for p in safetensors:
        try:
            with safe_open(str(p), framework="pt"):
                pass
            _check_lengths(p, p.stat().st_size)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(str(p), f"unreadable safetensors file ({first_line(exc, 120)})") from None


def _check_lengths(path: Path, size: int) -> None:
    """A truncated file can still have a valid header: compare the header's data end with the size."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n > size - 8:
            raise ModelError(str(path), f"header length {n} is past the end of the file ({size} bytes)")
        header = json.loads(fh.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ModelError(str(path), f"truncated or padded: header says {8 + n + end} bytes, file has {size}")


def _read_skeleton(root: Path, sub: str, cls: Any) -> Any:
    """The module's class built from its config on the meta device: no weight is read or allocated."""
    try:
        if hasattr(cls, "load_config"):   # diffusers
            config = cls.load_config(str(root / sub))
        else:
            config = cls.config_class.from_pretrained(str(root / sub))
        return _skeleton(cls, config)
    except Exception as exc:
        raise ModelError(str(root / sub), f"{cls.__name__} could not load it: {first_line(exc)}") from None


def load_full_decoder(root: Path, sub: str):
    """The AutoencoderKL in `root/sub`, with the checks load_student applies, or None when the
    folder has none (a model shipped with only a tiny decoder)."""
    if not (root / sub / "config.json").is_file():
        return None
    if _class_name(root, sub, {}, default="AutoencoderKL") != "AutoencoderKL":
        return None
    _check_weights(root, sub)
    import diffusers

    return _load(root, sub, diffusers.AutoencoderKL)
