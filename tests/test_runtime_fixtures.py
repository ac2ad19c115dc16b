"""runtimes/fixtures are what the Kotlin and Swift runtimes are tested against: they must be
exactly what the Python reference writes today (`make fixtures` regenerates them)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from compiler.contract.verifier import read_verified_manifest
from support import REPO

FIXTURES = REPO / "runtimes" / "fixtures"


def _generator():
    spec = importlib.util.spec_from_file_location("fixtures_generate", FIXTURES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in ("manifests", "generate.py", "README.md")}


def test_committed_fixtures_equal_what_the_python_reference_writes(tmp_path):
    _generator().write_all(tmp_path)
    fresh, committed = _tree(tmp_path), _tree(FIXTURES)
    assert sorted(fresh) == sorted(committed), "fixture files added or removed: run `make fixtures`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale fixtures {stale}: run `make fixtures`"


def test_fixtures_cover_the_contract():
    tokens = json.loads((FIXTURES / "tokens.json").read_text(encoding="utf-8"))
    names = {c["name"] for c in tokens["cases"]}
    assert {"empty", "two_hundred_words", "emoji", "accents", "cjk", "punctuation_runs", "mixed_case",
            "whitespace_runs", "at_boundary_77", "over_boundary_77"} <= names
    by_name = {(c["name"], c["max_length"]): c for c in tokens["cases"]}
    assert not by_name[("at_boundary_77", 77)]["truncated"] and by_name[("over_boundary_77", 77)]["truncated"]
    assert by_name[("at_boundary_77", 77)]["ids"][-1] == tokens["eos_token_id"]   # exactly full, no padding
    seeds = {int(c["seed"]) for c in json.loads((FIXTURES / "noise.json").read_text())}
    assert {0, 1, 2**63, 2**64 - 1} <= seeds
    cases = json.loads((FIXTURES / "bundles" / "cases.json").read_text())
    assert cases["valid"] == {"ok": True} and sum(not v["ok"] for v in cases.values()) >= 10
    manifests = {p.stem for p in (FIXTURES / "manifests").glob("*.json")}
    assert {"onnx-eps-turbo", "onnx-eps-turbo-xl", "coreml-eps-turbo", "executorch-small-student"} <= manifests


def test_the_python_loader_gives_every_bundle_fixture_its_recorded_verdict():
    """The same verdicts the runtimes must reach (the generator records them; this re-checks them
    on the committed files, which are what the runtimes read)."""
    from compiler.errors import BundleError

    root = FIXTURES / "bundles"
    for name, verdict in json.loads((root / "cases.json").read_text()).items():
        try:
            read_verified_manifest(root / name)
            where = None
        except BundleError as exc:
            where = exc.where.replace(str(root / name), "BUNDLE")
        assert (verdict["ok"] and where is None) or verdict.get("where") == where, name


def test_sentencepiece_fixtures_cover_masks_truncation_and_the_instruction_prefix():
    """The transformer families' tokenizer contract, as golden data for a device tokenizer: T5
    (no BOS, EOS, pad 0) and Gemma (BOS, SANA's instruction before the lower-cased prompt)."""
    from compiler.contract.tokenizers import PromptFormat, PromptTokenizer
    from transformers import AutoTokenizer

    fixtures = json.loads((FIXTURES / "sentencepiece_tokens.json").read_text(encoding="utf-8"))
    assert set(fixtures) == {"t5", "gemma"}
    for name, data in fixtures.items():
        entry = data["entry"]
        assert entry["type"] == "sentencepiece" and entry["mask_output"] == "tokenizer.attention_mask"
        cases = {c["name"]: c for c in data["cases"]}
        for case in cases.values():
            assert len(case["ids"]) == len(case["attention_mask"]) == entry["max_length"]
            n = sum(case["attention_mask"])
            assert case["attention_mask"] == [1] * n + [0] * (entry["max_length"] - n)    # right padding
            assert all(i == entry["pad_token_id"] for i in case["ids"][n:])
        assert cases["two_hundred_words"]["truncated"] and cases["over_boundary_77"]["truncated"]
        assert not cases["mixed_case"]["truncated"] and not cases["empty"]["truncated"]
        # the committed tokenizer.json gives the same ids through the same PromptTokenizer
        hf = AutoTokenizer.from_pretrained(str(FIXTURES / data["tokenizer_json"]).rsplit("/", 1)[0])
        tok = PromptTokenizer(0, "sentencepiece", hf, PromptFormat(**data["format"]))
        for case in cases.values():
            ids, truncated = tok(case["prompt"])
            assert ids["input_ids"][0].tolist() == case["ids"] and truncated == case["truncated"], case["name"]
    t5, gemma = fixtures["t5"], fixtures["gemma"]
    assert t5["entry"]["bos_token_id"] is None and t5["entry"]["prefix"] == ""
    assert t5["cases"][0]["ids"][0] == t5["entry"]["eos_token_id"]          # the empty prompt: EOS, then padding
    assert gemma["entry"]["prefix"].startswith("Given a user prompt") and gemma["entry"]["lowercase"]
    assert all(c["ids"][0] == gemma["entry"]["bos_token_id"] for c in gemma["cases"])
    assert gemma["entry"]["max_length"] > gemma["entry"]["prompt_length"]   # the prefix's ids come on top
