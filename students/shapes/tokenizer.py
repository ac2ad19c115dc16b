"""Train a CLIP-format BPE tokenizer on the shapes captions.

The `tokenizers` trainer runs with CLIPTokenizer's own normalizer and pre-tokenizer (lower
case, CLIP split regex, byte-level) and `end_of_word_suffix="</w>"`; the result is written
the way CLIP's vocab is laid out: 256 byte symbols, the same 256 with "</w>", one token per
merge in merge order, then "<|startoftext|>" and "<|endoftext|>"."""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from compiler.contract.clip_bytes import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_clip_bpe(captions: list[str], out_dir: str | Path, model_max_length: int) -> None:
    chars = bytes_to_unicode()
    tok = Tokenizer(BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = BpeTrainer(vocab_size=4096, min_frequency=1, show_progress=False, initial_alphabet=chars,
                         end_of_word_suffix="</w>", special_tokens=[])
    tok.train_from_iterator(sorted(set(captions)), trainer=trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    vocab: dict[str, int] = {}
    for sym in chars + [c + "</w>" for c in chars] + ["".join(m.split(" ")) for m in merges] + [BOS, EOS]:
        vocab.setdefault(sym, len(vocab))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
        "do_lower_case": True, "clean_up_tokenization_spaces": False, "add_prefix_space": False,
        "errors": "replace"}, indent=2) + "\n")
