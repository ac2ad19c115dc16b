"""The tokenizers a bundle carries, and the contract a runtime follows to reproduce their ids.

    clip-bpe       CLIP's byte-level BPE (vocab.json + merges.txt): SD, SDXL, FLUX's CLIP.
                   Output: input_ids, padded with pad_token_id to max_length.
    sentencepiece  T5's unigram (PixArt, FLUX) and Gemma's BPE with byte fallback (SANA), read from
                   the tokenizers library's tokenizer.json. Outputs: input_ids, and where the family
                   reads it (`mask_output`) attention_mask (1 for a token, 0 for padding),
                   right-padded to max_length; `prefix` is text the
                   pipeline puts before the user's prompt (SANA's complex human instruction),
                   `lowercase` whether the prompt is lower-cased and stripped first.

A family says how its pipeline formats prompts (PromptFormat); the same numbers go to
manifest.json, so the Python runtime, the device runtimes and compile tokenize alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP = "clip-bpe"
SENTENCEPIECE = "sentencepiece"
NAMES = ("tokenizer", "tokenizer_2")
ID_INPUTS = ("input_ids", "input_ids_2")
MASK_INPUTS = ("attention_mask", "attention_mask_2")


@dataclass(frozen=True)
class PromptFormat:
    """What a family's pipeline does to a prompt around the tokenizer itself."""
    max_length: int | None = None     # ids per prompt (without the prefix); None: the tokenizer's model_max_length
    prefix: str = ""
    lowercase: bool = False
    mask: bool = False                # the text encoder or denoiser reads the padding mask (PixArt, SANA)


class PromptTokenizer:
    """One tokenizer of a bundle: a transformers tokenizer plus the family's PromptFormat."""

    def __init__(self, index: int, kind: str, hf, fmt: PromptFormat = PromptFormat()):
        self.index, self.kind, self.hf, self.fmt = index, kind, hf, fmt
        self.name = NAMES[index]
        base = int(fmt.max_length or hf.model_max_length)
        # SANA keeps the prefix's ids (less its BOS and one more) on top of max_sequence_length
        # (SanaSprintPipeline._get_gemma_prompt_embeds); the text encoder graph selects the rest.
        self.max_length = base + len(hf.encode(fmt.prefix)) - 2 if fmt.prefix else base
        self.prompt_length = base

    @property
    def has_mask(self) -> bool:
        return self.fmt.mask

    @property
    def inputs(self) -> dict[str, str]:
        """Graph input name -> the source a runtime feeds it from."""
        out = {ID_INPUTS[self.index]: f"{self.name}.input_ids"}
        if self.has_mask:
            out[MASK_INPUTS[self.index]] = f"{self.name}.attention_mask"
        return out

    def text(self, prompt: str) -> str:
        return self.fmt.prefix + (prompt.lower().strip() if self.fmt.lowercase else prompt)

    def __call__(self, prompt: str) -> tuple[dict[str, np.ndarray], bool]:
        """(graph input name -> int64 [1, max_length], whether the prompt was truncated)."""
        text = self.text(prompt)
        truncated = len(self.hf(text, truncation=False)["input_ids"]) > self.max_length
        if self.kind == CLIP:
            enc = self.hf(text, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="np")
        else:
            self.hf.padding_side = "right"
            enc = self.hf(text, padding="max_length", max_length=self.max_length, truncation=True,
                          add_special_tokens=True, return_tensors="np")
        out = {ID_INPUTS[self.index]: enc["input_ids"].astype(np.int64)}
        if self.has_mask:
            out[MASK_INPUTS[self.index]] = enc["attention_mask"].astype(np.int64)
        return out, truncated

    def manifest_entry(self) -> dict:
        tok = self.hf
        entry = {"name": self.name, "type": self.kind, "folder": self.name, "max_length": self.max_length,
                 "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
                 "output": f"{self.name}.input_ids"}
        if self.kind == CLIP:
            entry.update(vocab=f"{self.name}/vocab.json", merges=f"{self.name}/merges.txt")
        else:
            entry.update(tokenizer_json=f"{self.name}/tokenizer.json", prefix=self.fmt.prefix,
                         lowercase=self.fmt.lowercase, padding_side="right", prompt_length=self.prompt_length)
        if self.has_mask:
            entry["mask_output"] = f"{self.name}.attention_mask"
        return entry


def runtime_files(kind: str) -> tuple[str, ...]:
    """The files a runtime reads from a tokenizer folder."""
    return ("vocab.json", "merges.txt") if kind == CLIP else ("tokenizer.json",)


def source_problem(folder: Path, kind: str) -> tuple[Path, str] | None:
    """What a student's tokenizer folder lacks, as (file, reason). A CLIP folder is the hub's
    vocab.json + merges.txt, or the tokenizer.json alone that transformers 5 saves (the bundle
    then ships vocab.json + merges.txt made from it); a sentencepiece folder is a tokenizer.json."""
    needed = runtime_files(kind)
    if all((folder / f).is_file() for f in needed) or (kind == CLIP and (folder / "tokenizer.json").is_file()):
        return None
    missing = next(f for f in needed if not (folder / f).is_file())
    also = ", or a tokenizer.json" if kind == CLIP else ""
    return folder / missing, f"missing: a {kind} tokenizer folder needs {' and '.join(needed)}{also}"


# Prompts that exercise what a CLIP tokenizer does around its BPE (case, accents, emoji, CJK,
# whitespace and punctuation runs, its special tokens): vocab.json + merges.txt made from a
# tokenizer.json must give the same ids as the tokenizer.json on every one.
PROBE_PROMPTS = ("a photo of a cat", "A RED Fox\u00a0in the snow, caf\u00e9 \U0001f98a!!", "  two   spaces\tand\ttabs  ",
                 "\u6771\u4eac\u306e\u591c", "na\u0131ve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m", "...!!!???",
                 "<|startoftext|> inside <|endoftext|>", "")


def load(folder: Path, index: int, kind: str, fmt: PromptFormat = PromptFormat()):
    from transformers import AutoTokenizer, CLIPTokenizer

    hf = CLIPTokenizer.from_pretrained(str(folder)) if kind == CLIP else AutoTokenizer.from_pretrained(str(folder))
    return PromptTokenizer(index, kind, hf, fmt)


def from_manifest(bundle: Path, index: int, entry: dict) -> PromptTokenizer:
    from . import bounded_json
    from .limits import MAX_TOKENIZER_BYTES

    # The runtimes' bounds before transformers parses them: a hostile file is exit 7 naming it.
    for f in sorted((bundle / entry["folder"]).glob("*.json")):
        bounded_json.read(f, MAX_TOKENIZER_BYTES)
    fmt = PromptFormat(max_length=entry.get("prompt_length", entry["max_length"]), prefix=entry.get("prefix", ""),
                       lowercase=bool(entry.get("lowercase", False)), mask="mask_output" in entry)
    return load(bundle / entry["folder"], index, entry["type"], fmt)


def save(tok: PromptTokenizer, source: Path, folder: Path) -> None:
    """The tokenizer folder a bundle ships: the runtime's files, and what transformers loads it from."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    if tok.kind == CLIP:
        if not all((source / f).is_file() for f in runtime_files(CLIP)):   # transformers 5's tokenizer.json only
            _clip_files_from_tokenizer_json(source, folder, tok.hf)
            return
        for f in sorted(source.iterdir()):   # the student's own files, byte for byte
            if f.is_file() and f.suffix in (".json", ".txt"):
                shutil.copyfile(f, folder / f.name)
        return
    save_pretrained(tok.hf, folder)
    for f in sorted(folder.iterdir()):
        if f.name not in (*runtime_files(tok.kind), "tokenizer_config.json", "special_tokens_map.json"):
            f.unlink()


def check_shippable(tok: PromptTokenizer, source: Path) -> None:
    """Refuses (ModelError) at load, before any export, a tokenizer `save` could not ship: a CLIP
    tokenizer.json is turned into vocab.json + merges.txt in a scratch folder and checked there."""
    import tempfile

    if tok.kind == CLIP and not all((source / f).is_file() for f in runtime_files(CLIP)):
        with tempfile.TemporaryDirectory() as scratch:
            _clip_files_from_tokenizer_json(source, Path(scratch), tok.hf)


def _clip_files_from_tokenizer_json(source: Path, folder: Path, hf) -> None:
    """vocab.json + merges.txt (what the runtimes read) from a tokenizer.json's BPE model, written
    as transformers writes them, plus the folder's config files; refused (ModelError) unless the
    new folder tokenizes PROBE_PROMPTS exactly as the tokenizer.json does."""
    import json
    import shutil

    from transformers import CLIPTokenizer

    from ..errors import ModelError

    where = source / "tokenizer.json"
    try:
        model = json.loads(where.read_text(encoding="utf-8"))["model"]
        vocab, merges = dict(model["vocab"]), list(model["merges"])
        if model.get("type") != "BPE":
            raise ValueError(f"model type {model.get('type')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{where}: model", f"not a CLIP BPE tokenizer.json ({exc})") from None
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    made = CLIPTokenizer.from_pretrained(str(folder))
    extra = sorted(set(hf.get_vocab()) - set(made.get_vocab()))
    if extra:   # e.g. a textual-inversion token added to the tokenizer.json only
        raise ModelError(f"{where}: added_tokens", f"{len(extra)} tokens outside the BPE vocabulary ({extra[0]!r}...): "
                                                   "the runtimes read vocab.json + merges.txt and cannot reproduce them")
    for prompt in PROBE_PROMPTS:
        if made(prompt)["input_ids"] != hf(prompt)["input_ids"]:
            raise ModelError(str(where), f"its vocab and merges as vocab.json + merges.txt tokenize {prompt!r} "
                                         "differently: a customized tokenizer the runtimes cannot reproduce")


# Arguments of the load that transformers 5 writes back into tokenizer_config.json: they depend on
# how and where it was loaded (HF_HUB_OFFLINE, a temporary folder), not on the tokenizer; the
# vocab_file it names is not shipped (tokenizer.json is).
LOAD_ARGUMENTS = ("is_local", "local_files_only", "name_or_path", "_commit_hash", "vocab_file")


def save_pretrained(hf, folder: Path) -> None:
    """hf.save_pretrained, with a tokenizer_config.json that is the same in any environment."""
    import json

    hf.save_pretrained(str(folder))
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    for key in LOAD_ARGUMENTS:
        data.pop(key, None)
    config.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
