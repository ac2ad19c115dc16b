"""The suite attacks: hostile and malformed inputs of every class in shared/ERRORS.md, each ending
in its documented exit code with one line, no traceback, nothing written outside --out and no
code run (a canary file a pickle would create); and property-based fuzzing of the recipe loader,
the manifest loader and the bundle verifier, which may only accept or raise their own error."""
from __future__ import annotations

import json
import pickle
import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.contract.manifest import FOR_PEOPLE, MANIFEST, TIMINGS, sign_manifest
from compiler.contract.verifier import read_verified_manifest
from compiler.errors import BundleError, Exit, RecipeError
from compiler.recipe import load_recipe
from compiler.report import read_verified_record
from support import FUZZ_EXAMPLES, REPO, attack, write_recipe
from test_bad_inputs import Unpickled

FIXTURE_BUNDLES = REPO / "runtimes" / "fixtures" / "bundles"
CASES = json.loads((FIXTURE_BUNDLES / "cases.json").read_text())
BROKEN = sorted(name for name, v in CASES.items() if not v["ok"] or "tokenizer_where" in v)
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_line(err: str, code: int, expected: int) -> None:
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err


# --- bundles: every rule a runtime enforces, through `generate`, `package` and `verify` --------

@pytest.mark.parametrize("case", [*BROKEN, "valid"])
def test_hostile_bundles_are_refused_before_anything_is_opened(case, run_cli, tmp_path):
    """The fixtures the Kotlin and Swift runtimes are tested against, through the CLI. The valid
    fixture's programs are placeholders: a bundle whose hashes hold but whose program does not
    load is refused too (exit 7)."""
    with attack("hostile inputs"):
        bundle = tmp_path / "bundle"
        shutil.copytree(FIXTURE_BUNDLES / case, bundle, symlinks=True)
        before = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
        code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "x", "--out", tmp_path / "x.png")
        _one_line(err, code, Exit.BUNDLE)
        assert ("does not load" in err) == (case == "valid")
        if "tokenizer_where" in CASES.get(case, {}):   # hashes hold: refused when its tokenizer is read
            assert CASES[case]["tokenizer_where"].replace("BUNDLE", str(bundle)) in err
        elif case != "valid":   # package copies a bundle whose hashes hold; it never opens a program
            code, _, err = run_cli("package", "--bundle", bundle, "--out", tmp_path / "app")
            _one_line(err, code, Exit.BUNDLE)
        assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")} == before


def test_a_symlink_leaving_the_bundle_is_refused(tmp_path):
    with attack("hostile inputs"):
        bundle = tmp_path / "bundle"
        shutil.copytree(FIXTURE_BUNDLES / "valid", bundle)
        secret = tmp_path / "secret.txt"
        secret.write_text("outside")
        (bundle / "tokenizer" / "merges.txt").unlink()
        (bundle / "tokenizer" / "merges.txt").symlink_to(secret)
        with pytest.raises(BundleError, match="outside the bundle"):
            read_verified_manifest(bundle)


# --- model folders: hostile safetensors headers ------------------------------------------------

def _header(obj) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack("<Q", len(data)) + data


HOSTILE_SAFETENSORS = {
    "header length past the end": struct.pack("<Q", 2**60) + b"{}",
    "header not JSON": struct.pack("<Q", 5) + b"{{{{{",
    "offsets past the end": _header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}),
    "unknown dtype": _header({"w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}) + b"\0" * 4,
    "empty file": b"",
}


@pytest.mark.parametrize("what", sorted(HOSTILE_SAFETENSORS))
def test_hostile_safetensors_headers_are_model_errors(what, student_copy, workdir, run_cli):
    with attack("hostile inputs"):
        model = student_copy()
        weights = next((model / "unet").glob("*.safetensors"))
        weights.write_bytes(HOSTILE_SAFETENSORS[what])
        canary = workdir.parent / "canary"
        (model / "unet" / "evil.bin").write_bytes(pickle.dumps(Unpickled(canary)))
        code, _, err = run_cli("compile", "--target", "onnx", "--recipe", write_recipe(workdir.parent / "r.yaml"),
                               "--model", model, "--out", workdir / "out", "--quiet")
        _one_line(err, code, Exit.MODEL)
        assert str(weights) in err
        assert not canary.exists() and list(workdir.iterdir()) == []


# --- recipes: YAML that would construct objects, and fuzzing -----------------------------------

@pytest.mark.parametrize("payload", [
    "!!python/object/apply:os.system ['touch {canary}']",
    "!!python/object/new:subprocess.Popen [['touch', '{canary}']]",
    "&a [*a]",
    "{{version: 1, name: x, family: eps-turbo, image: {{height: 1e309, width: 512}}}}",
])
def test_recipes_never_run_code(payload, tmp_path, run_cli):
    with attack("hostile inputs"):
        canary = tmp_path / "canary"
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"version: 1\nname: {payload.format(canary=canary)}\nfamily: eps-turbo\n"
                          if not payload.startswith("{") else payload.format(canary=canary))
        code, _, err = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", tmp_path, "--out",
                               tmp_path / "out", "--dry-run")
        assert code in (Exit.RECIPE, Exit.MODEL), err
        _one_line(err, code, code)
        assert not canary.exists() and not (tmp_path / "out").exists()


YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                         st.text(max_size=20))
YAML_VALUES = st.recursive(YAML_SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids, max_size=4)), max_leaves=12)
RECIPE_KEYS = st.sampled_from(["version", "name", "family", "image", "components", "calibration", "parity",
                               "targets", "model", "height", "width", "precision", "quantization", "scheme",
                               "text_encoder", "denoiser", "vae_decoder", "onnx", "coreml", "executorch"])


@FUZZ
@given(st.dictionaries(RECIPE_KEYS, YAML_VALUES, max_size=8))
def test_fuzzed_recipes_load_or_raise_a_recipe_error(tmp_path_factory, data):
    with attack("fuzz examples"):
        import yaml

        path = tmp_path_factory.mktemp("fuzz") / "r.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "name": "x", "family": "eps-turbo", **data}))
        try:
            load_recipe(path)
        except RecipeError as exc:
            assert str(path) in exc.where


@FUZZ
@given(st.binary(max_size=300))
def test_fuzzed_recipe_bytes_load_or_raise_a_recipe_error(tmp_path_factory, raw):
    with attack("fuzz examples"):
        path = tmp_path_factory.mktemp("fuzz") / "r.yaml"
        path.write_bytes(raw)
        try:
            load_recipe(path)
        except RecipeError:
            pass


# --- manifests and bundles: fuzzing the loader and the verifier --------------------------------

def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


VALID = json.loads((FIXTURE_BUNDLES / "valid" / MANIFEST).read_text())
PATHS = [p for p in _paths(VALID) if p]
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.text(max_size=12),
                                     st.floats(allow_nan=False, allow_infinity=False)),
                           lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                  st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                           max_leaves=6)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON_VALUES, st.booleans()), min_size=1, max_size=3))
def test_fuzzed_manifests_verify_or_raise_a_bundle_error(tmp_path_factory, edits):
    """Deliberate edits (the digest rewritten too): any value anywhere replaced or deleted."""
    with attack("fuzz examples"):
        bundle = tmp_path_factory.mktemp("fuzz") / "bundle"
        shutil.copytree(FIXTURE_BUNDLES / "valid", bundle)
        manifest = json.loads(json.dumps(VALID))
        for path, value, delete in edits:
            node = manifest
            try:
                for key in path[:-1]:
                    node = node[key]
                if delete:
                    del node[path[-1]]
                else:
                    node[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue
        sign_manifest(bundle, manifest)
        try:
            read_verified_manifest(bundle)
        except BundleError:
            pass


# Every file but timings.txt, the measured latencies that are documented as outside the hashes
# (the report's files are checked by `verify`: report.sha256 and the manifest's sha256 in report.json).
BUNDLE_FILES = sorted(p.relative_to(FIXTURE_BUNDLES / "valid").as_posix()
                      for p in (FIXTURE_BUNDLES / "valid").rglob("*") if p.is_file() and p.name != TIMINGS)


@FUZZ
@given(st.sampled_from(BUNDLE_FILES), st.integers(0, 10**6), st.integers(1, 255))
def test_any_changed_byte_anywhere_is_refused(tmp_path_factory, rel, position, xor):
    with attack("fuzz examples"):
        bundle = tmp_path_factory.mktemp("fuzz") / "bundle"
        shutil.copytree(FIXTURE_BUNDLES / "valid", bundle)
        data = bytearray((bundle / rel).read_bytes())
        data[position % len(data)] ^= xor
        (bundle / rel).write_bytes(bytes(data))
        with pytest.raises(BundleError):   # a runtime's check; the report beside it is `verify`'s
            read_verified_manifest(bundle) if rel not in FOR_PEOPLE else read_verified_record(bundle)
