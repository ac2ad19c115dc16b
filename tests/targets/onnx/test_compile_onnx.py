"""End to end through the CLI: `compile --target onnx` for every family on tiny seeded students
(AutoencoderKL and AutoencoderTiny decoders), the manifest the runtimes read, `generate`, and
the bundle's integrity and reproducibility. Each student is compiled once per session."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.errors import Exit
from support import (CASES, LONG_PROMPT, LONG_PROMPT_CASE, REPO, bundle_record, check_runtime_manifest, compile_quietly, family_of,
                      flip_byte, onnx_recipe, tree_snapshot)

# SD and SDXL layouts in `make test`; the other families (same code paths, other samplers: their
# oracles run in test_oracle.py) in `make test-slow`, for the suite's 15-minute budget
FAST = ("eps-turbo", "eps-turbo-xl")
FAMILIES = [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES]

DECODER_CLASS = {"vae": "AutoencoderKL", "vae_tiny": "AutoencoderTiny"}
TINY = 32                    # image side (write_recipe)
LATENT = TINY // 2           # both tiny decoders upsample by 2
TOKENS = 16                  # TinySpec.max_length
TEXT_HIDDEN = 32             # TinySpec.text_hidden
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
PARITY_CHECKS = (*COMPONENTS, "end_to_end")


def _compile(recipe: Path, model: Path, out: Path, *extra: str) -> None:
    code, err = compile_quietly("onnx", recipe, model, out, *extra)
    assert code == Exit.OK, err


def _manifest(bundle: Path) -> dict:
    return bundle_record(bundle)


def _expected_io(case: str) -> dict[str, tuple[list, list]]:
    """component -> (inputs, outputs) as (name, shape, dtype) triples, from the tiny student's config."""
    dual = CASES[case][0] in ("eps-turbo-xl", "sample-lightning")
    ids = [("input_ids", [1, TOKENS], "int64")] + ([("input_ids_2", [1, TOKENS], "int64")] if dual else [])
    embeds = [("prompt_embeds", [1, TOKENS, TEXT_HIDDEN * (2 if dual else 1)], "float32")]
    pooled = [("pooled_prompt_embeds", [1, TEXT_HIDDEN], "float32")] if dual else []
    latents = ("latents", [1, 4, LATENT, LATENT], "float32")
    return {
        "text_encoder": (ids, embeds + pooled),
        "denoiser": (embeds + [("noise", [1, 4, LATENT, LATENT], "float32")] + pooled, [latents]),
        "vae_decoder": ([latents], [("image", [1, 3, TINY, TINY], "float32")]),
    }


def _triples(specs: list[dict]) -> list[tuple]:
    return [(s["name"], s["shape"], s["dtype"]) for s in specs]


@pytest.mark.parametrize("case", FAMILIES)
def test_manifest_lists_every_file_with_sha256_and_size(bundles, case):
    bundle = bundles(case)
    files = _manifest(bundle)["files"]
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    # every file but the manifest, its digest and the report beside it (what compile measured)
    assert set(files) == on_disk - {"manifest.json", "manifest.sha256", "report.html", "report.json", "report.sha256",
                                    "timings.txt"}
    digest = (bundle / "manifest.sha256").read_text()
    assert digest == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest() + "  manifest.json\n"
    assert "report.html" not in files
    for rel, entry in files.items():
        data = (bundle / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), rel
        assert entry["size"] == len(data), rel
    for name in COMPONENTS:
        assert f"{name}.onnx" in files
    assert "tokenizer/vocab.json" in files and "tokenizer/merges.txt" in files


@pytest.mark.parametrize("case", FAMILIES)
def test_manifest_describes_component_inputs_and_outputs(bundles, case):
    import onnxruntime as ort

    bundle = bundles(case)
    components = _manifest(bundle)["components"]
    assert set(components) == set(COMPONENTS)
    for name, (inputs, outputs) in _expected_io(case).items():
        c = components[name]
        assert c["file"] == f"{name}.onnx" and c["file"] in c["files"] and c["precision"] == "fp32"
        assert c["opset"] == 18
        assert _triples(c["inputs"]) == inputs, name
        assert _triples(c["outputs"]) == outputs, name
        # the file really has that interface (what a runtime binds to)
        session = ort.InferenceSession(str(bundle / c["file"]), providers=["CPUExecutionProvider"])
        assert [(i.name, i.shape) for i in session.get_inputs()] == [(n, s) for n, s, _ in inputs]
        assert [(o.name, o.shape) for o in session.get_outputs()] == [(n, s) for n, s, _ in outputs]


@pytest.mark.parametrize("case", FAMILIES)
def test_manifest_records_image_latent_noise_and_tokenizers(bundles, case):
    kind, decoder = CASES[case]
    m = _manifest(bundles(case))
    assert m["family"] == family_of(kind) and m["target"] == "onnx" and m["schema_version"] == 2
    assert m["image"] == {"height": TINY, "width": TINY, "channels": 3, "layout": "NCHW", "dtype": "float32",
                          "range": [0.0, 1.0]}
    assert m["latent"]["decoder_class"] == DECODER_CLASS[decoder]
    assert m["latent"]["shape"] == m["noise"]["shape"] == [1, 4, LATENT, LATENT]
    assert m["noise"]["algorithm"] == "splitmix64-box-muller-v1"
    dual = kind in ("eps-turbo-xl", "sample-lightning")
    names = [t["name"] for t in m["tokenizers"]]
    assert names == [t["folder"] for t in m["tokenizers"]] == (["tokenizer", "tokenizer_2"] if dual else ["tokenizer"])
    for t in m["tokenizers"]:
        assert t["max_length"] == TOKENS and t["type"] == "clip-bpe" and t["output"] == f"{t['name']}.input_ids"
        assert t["vocab"] == f"{t['name']}/vocab.json" and t["merges"] == f"{t['name']}/merges.txt"
        assert t["vocab"] in m["files"] and t["merges"] in m["files"]
    # The wiring a runtime follows, named rather than implied by the number of tokenizers.
    embeds = {"prompt_embeds": "text_encoder.prompt_embeds"}
    if dual:
        embeds["pooled_prompt_embeds"] = "text_encoder.pooled_prompt_embeds"
    assert m["wiring"] == {
        "order": ["text_encoder", "denoiser", "vae_decoder"],
        "inputs": {"text_encoder": {"input_ids": "tokenizer.input_ids",
                                    **({"input_ids_2": "tokenizer_2.input_ids"} if dual else {})},
                   "denoiser": {**embeds, "noise": "noise.sample"},
                   "vae_decoder": {"latents": "denoiser.latents"}},
        "image": "vae_decoder.image"}
    # a tiny decoder's price against the full decoder the student also has: measured, shown, not gated
    cost = m["decoder_cost"]
    if decoder == "vae":
        assert cost is None
    else:
        heldout = [p["prompt"] for p in m["parity"][0]["prompts"]]
        assert cost["shipped"] == "AutoencoderTiny (vae_tiny)" and cost["compared_with"] == "AutoencoderKL (vae)"
        assert [r["prompt"] for r in cost["per_prompt"]] == heldout and cost["gated"] is False
        assert cost["worst_psnr_db"] == min(r["psnr_db"] for r in cost["per_prompt"]) < 60   # other weights, other image
        assert "Quality cost of the tiny decoder" in (bundles(case) / "report.html").read_text(encoding="utf-8")
    check_runtime_manifest(bundles(case), f"onnx-{case}")


def _euler_trailing(student: Path, prediction_type: str | None):
    from diffusers import EulerDiscreteScheduler

    overrides = {"timestep_spacing": "trailing", **({"prediction_type": prediction_type} if prediction_type else {})}
    sched = EulerDiscreteScheduler.from_pretrained(str(student / "scheduler"), **overrides)
    sched.set_timesteps(1)
    return sched


@pytest.mark.parametrize("case", FAMILIES)
def test_manifest_records_the_baked_sampler_constants(bundles, students, case):
    kind, _ = CASES[case]
    s = _manifest(bundles(case))["sampler"]
    if case in ("eps-turbo", "eps-turbo-xl", "sample-lightning"):
        sched = _euler_trailing(students[kind], "sample" if case == "sample-lightning" else None)
        assert s["scheduler"] == "EulerDiscreteScheduler" and s["timestep_spacing"] == "trailing"
        assert s["timestep"] == 999.0 == float(sched.timesteps[0])
        # float64 from the scheduler's config (the same on every CPU: compiler/families/schedules.py);
        # diffusers' own float32 cumprod drifts by about 4e-7 over 1000 steps
        cfg = sched.config
        betas = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, cfg.num_train_timesteps, dtype=np.float64) ** 2
        abar = float(np.cumprod(1.0 - betas)[-1])
        assert s["sigma"] == float(np.float32(((1 - abar) / abar) ** 0.5))
        assert s["sigma"] == pytest.approx(float(sched.sigmas[0]), rel=1e-6)
        assert s["init_noise_sigma"] == pytest.approx(float(sched.init_noise_sigma), rel=1e-6)
        assert s["prediction_type"] == ("sample" if case == "sample-lightning" else "epsilon")
    elif case == "lcm":
        from diffusers import LCMScheduler

        sched = LCMScheduler.from_pretrained(str(students[kind] / "scheduler"))
        sched.set_timesteps(1)
        t = sched.timesteps[0]
        c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(t)
        assert s["scheduler"] == "LCMScheduler" and s["timestep"] == float(t) == 999.0
        assert s["c_skip"] == pytest.approx(float(c_skip)) and s["c_out"] == pytest.approx(float(c_out))
        assert s["alpha_prod"] == pytest.approx(float(sched.alphas_cumprod[int(t)]))
        assert s["guidance_scale"] == 8.5  # LatentConsistencyModelPipeline's default
    else:
        assert s == {"timestep": 1000.0, "dt": 1.0, "prediction_type": "velocity", "reference": "InstaFlow"}


@pytest.mark.parametrize("case", FAMILIES)
def test_parity_passed_for_every_component(bundles, case):
    parity = _manifest(bundles(case))["parity"]
    assert parity, "no parity results recorded"
    for run in parity:
        assert run["passed"] is True, run["label"]
        assert set(PARITY_CHECKS) <= set(run["checks"])
        for name in PARITY_CHECKS:
            check = run["checks"][name]
            assert check["passed"] is True, (run["label"], name)
            assert check["worst"]["finite"] is True
            assert check["worst"]["psnr_db"] >= check["tolerance"]["min_psnr_db"]
            assert check["worst"]["cosine"] >= check["tolerance"]["min_cosine"]
        assert len(run["prompts"]) == 2


@pytest.mark.slow   # compiles the LCM bundle for this alone; make test's budget
def test_prompt_longer_than_the_tokenizer_is_truncated_with_a_recorded_warning(bundles, run_cli, tmp_path):
    bundle = bundles(LONG_PROMPT_CASE)
    m = _manifest(bundle)
    assert [p["truncated"] for p in m["parity"][0]["prompts"]] == [False, True]
    assert len(m["warnings"]) == 1 and "truncated" in m["warnings"][0] and str(TOKENS) in m["warnings"][0]
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", LONG_PROMPT, "--out", tmp_path / "x.png")
    assert code == Exit.OK
    assert "truncated" in err and "Traceback" not in err


def test_prompts_within_the_limit_leave_no_warning(bundles):
    m = _manifest(bundles("eps-turbo"))
    assert m["warnings"] == [] and not any(p["truncated"] for p in m["parity"][0]["prompts"])


def _png_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("case", FAMILIES)
def test_generate_writes_a_deterministic_png(bundles, run_cli, tmp_path, case):
    bundle = bundles(case)
    paths = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        paths[name] = tmp_path / f"{name}.png"
        code, out, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox in the snow",
                                 "--seed", seed, "--out", paths[name])
        assert code == Exit.OK, err
        assert str(paths[name]) in out
    assert paths["a"].read_bytes() == paths["b"].read_bytes()
    assert paths["a"].read_bytes() != paths["c"].read_bytes()
    pixels = _png_pixels(paths["a"])
    assert pixels.shape == (TINY, TINY, 3) and pixels.std() > 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]  # no temp file left


@pytest.mark.parametrize("component", COMPONENTS)
def test_generate_refuses_a_bundle_with_one_flipped_byte(bundles, run_cli, tmp_path, component):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("eps-turbo"), bundle)
    flip_byte(bundle / f"{component}.onnx")
    out = tmp_path / "x.png"
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--out", out)
    assert code == Exit.BUNDLE
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{component}.onnx" in err and "sha256" in err
    assert not out.exists()


def test_generate_refuses_a_bundle_with_a_missing_file(bundles, run_cli, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("eps-turbo"), bundle)
    (bundle / "tokenizer" / "merges.txt").unlink()
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--out", tmp_path / "x.png")
    assert code == Exit.BUNDLE and "merges.txt" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow   # CI's 15 minutes: the fast suite's rebuilds under another CPU's kernels assert the same bytes
def test_two_compiles_of_the_same_inputs_are_byte_identical(bundles, students, tmp_path):
    """Rebuilt into another directory, which held a stale file: --force replaces it, and every
    byte of the result equals the first build."""
    first = bundles("eps-turbo-xl")
    again = tmp_path / "again"
    again.mkdir()
    (again / "stale.txt").write_text("old")
    _compile(onnx_recipe(tmp_path / "r.yaml", "eps-turbo-xl"), students["eps-turbo-xl"], again, "--force")
    a, b = tree_snapshot(first), tree_snapshot(again)
    assert sorted(a) == sorted(b)
    # The promise covers every file the manifest hashes, and the manifest itself.
    promised = set(_manifest(first)["files"]) | {"manifest.json", "manifest.sha256"}
    assert len(promised) >= 8
    assert [rel for rel in sorted(promised) if a[rel] != b[rel]] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "r.yaml"]  # no staging or old dirs left


def test_exported_files_keep_layer_names_but_no_stack_traces(bundles):
    """Stack traces hold absolute paths of this checkout: they would break byte-identity across
    machines. Name scopes name the layers in the quantization tables, so they stay."""
    bundle = bundles("eps-turbo-xl")
    for name in ("text_encoder", "denoiser", "vae_decoder"):
        model = onnx.load(str(bundle / f"{name}.onnx"), load_external_data=False)
        keys = {p.key for n in model.graph.node for p in n.metadata_props}
        assert "pkg.torch.onnx.stack_trace" not in keys, name
        assert "pkg.torch.onnx.name_scopes" in keys, name
    assert str(REPO).encode() not in (bundle / "denoiser.onnx").read_bytes()


@pytest.mark.parametrize("case", FAMILIES)
def test_dry_run_prints_the_plan_and_writes_nothing(students, run_cli, tmp_path, case):
    kind, decoder = CASES[case]
    recipe = onnx_recipe(tmp_path / "r.yaml", case)
    out = tmp_path / "bundle"
    before = tree_snapshot(tmp_path)
    code, stdout, _ = run_cli("compile", "--target", "onnx", "--recipe", recipe, "--model", students[kind],
                              "--out", out, "--dry-run")
    assert code == Exit.OK
    plan = json.loads(stdout)
    assert plan["recipe"]["family"] == family_of(kind)
    assert plan["plan"]["target"] == "onnx" and plan["plan"]["out"] == str(out)
    assert plan["plan"]["model"] == str(students[kind]) and plan["plan"]["decoder"] == {"subfolder": decoder, "model": str(students[kind])}
    assert plan["plan"]["stages"][0] == "load" and plan["plan"]["stages"][-1] == "bundle"
    assert set(plan["plan"]["components"]) == set(COMPONENTS)
    assert not out.exists()
    assert tree_snapshot(tmp_path) == before and len(list(tmp_path.iterdir())) == len(before)


def test_sdxl_text_encoder_reads_both_token_inputs(bundles, students, tmp_path):
    """The two SDXL tokenizers pad differently, so the exported text encoder must read input_ids and
    input_ids_2 separately (torch.export once merged them when both example inputs were one tensor)."""
    import onnxruntime as ort
    import torch

    from compiler.load import load_student
    from compiler.recipe import load_recipe
    from compiler.wrap import wrap

    bundle = bundles("eps-turbo-xl")
    session = ort.InferenceSession(str(bundle / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, size=(1, TOKENS), dtype=np.int64)
    ids_2 = rng.integers(0, 40, size=(1, TOKENS), dtype=np.int64)
    recipe = load_recipe(onnx_recipe(tmp_path / "r.yaml", "eps-turbo-xl"))
    graph = wrap(load_student(str(students["eps-turbo-xl"]), "eps-turbo", "vae_tiny"), recipe).graphs["text_encoder"]
    with torch.no_grad():
        expected = [t.numpy() for t in graph.module(torch.from_numpy(ids), torch.from_numpy(ids_2))]
    got = session.run(None, {"input_ids": ids, "input_ids_2": ids_2})
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-4)


def test_a_decoder_published_on_its_own_ships_in_place_of_the_students(students, tmp_path):
    """`vae_decoder.model`: a TAESD from its own folder (config at the root, as madebyollin/taesd
    publishes it) instead of the student's vae/; its weights are fingerprinted and its price is
    measured against the student's own full decoder."""
    from support import write_recipe

    taesd = tmp_path / "taesd"
    shutil.copytree(students["eps-turbo"] / "vae_tiny", taesd)
    recipe = write_recipe(tmp_path / "r.yaml", extra=f"components: {{vae_decoder: {{model: {taesd}, subfolder: .}}}}\n")
    out = tmp_path / "bundle"
    _compile(recipe, students["eps-turbo"], out)
    m = _manifest(out)
    assert m["latent"]["decoder_class"] == "AutoencoderTiny"
    assert m["recipe"]["components"]["vae_decoder"]["model"] == str(taesd)
    assert list(m["source"]["decoder"]["weights_sha256"]) == ["diffusion_pytorch_model.safetensors"]
    assert m["source"]["decoder"]["folder_name"] == "taesd"
    cost = m["decoder_cost"]
    assert cost["shipped"] == f"AutoencoderTiny ({taesd})" and cost["compared_with"] == "AutoencoderKL (vae)"
