"""Image-to-image (issue 28): the picture fitting every runtime does, the stepped denoiser against
diffusers' own img2img pipelines, and img2img bundles compiled, checked and generated from.

Oracle rule as in test_oracle.py: the exported graphs (the VAE encoder; the stepped denoiser at
the text-to-image row and at each strength) equal diffusers' pipeline at the step it runs,
`StableDiffusion(XL)Img2ImgPipeline` / `LatentConsistencyModelImg2ImgPipeline` /
`FluxImg2ImgPipeline`, fed the same noise and the encoder's mean as the picture's latents."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from compiler.contract import init_image, noise
from compiler.families import get_family
from compiler.load import load_student
from compiler.prompts import tokenize
from compiler.recipe import load_recipe
from compiler.wrap import wrap
from test_runtime_kotlin import kotlin_jar  # noqa: F401  (the session's built runtimes)
from test_runtime_swift_pipeline import onestep_generate  # noqa: F401
from support import REPO, check_runtime_manifest, family_of, write_recipe

PICTURES = REPO / "calibration" / "init_images"
MAX_ABS_ROUNDOFF = 1e-4
STRENGTHS = (0.5, 0.25)
IMG2IMG = "img2img: {strengths: [0.5, 0.25], images: %s}\n" % PICTURES


def _picture(name: str, size: int = 32) -> torch.Tensor:
    return torch.from_numpy(init_image.to_tensor(init_image.fit(init_image.read_picture(PICTURES / name), size, size)))


def _setup(students, tmp_path, kind, decoder="vae"):
    family = family_of(kind)
    text = "text: {max_sequence_length: 16}\n" if kind in ("flow-match", "trigflow-scm") else ""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, extra=f"components: {{vae_decoder: {{subfolder: "
                                                                         f"{decoder}}}}}\n{text}{IMG2IMG}"))
    student = load_student(str(students[kind]), family, decoder, None, recipe)
    return family, student, recipe, wrap(student, recipe)


def _image(wrapped, student, prompt, z, init, step):
    g = wrapped.graphs
    values = {n: torch.from_numpy(v) for n, v in tokenize(student.tokenizers, prompt).ids.items()}
    with torch.no_grad():
        out = g["text_encoder"].module(*[values[n] for n in g["text_encoder"].input_names])
        values.update(zip(g["text_encoder"].output_names, out if isinstance(out, tuple) else (out,)))
        values.update(noise=z, init_latents=init, step=torch.from_numpy(step))
        latents = g["denoiser"].module(*[values[n] for n in g["denoiser"].input_names])
        return g["vae_decoder"].module(latents)


def _diffusers_latents(student, picture):
    """The picture's latents as the img2img pipelines compute them, with the encoder's mean."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    with torch.no_grad():
        out = student.vae.encode(picture * 2 - 1)
        z = out.latent if hasattr(out, "latent") else retrieve_latents(out, sample_mode="argmax")   # DC-AE: no posterior
    return (z - (student.vae.config.get("shift_factor") or 0.0)) * student.scaling_factor


ORACLE_CASES = [("eps-turbo", "vae"), ("eps-turbo", "vae_tiny"), ("lcm", "vae")]
SLOW_CASES = [("eps-turbo-xl", "vae"), ("sample-lightning", "vae"), ("flow-match", "vae"), ("trigflow-scm", "vae")]


@pytest.mark.parametrize("kind, decoder", ORACLE_CASES + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_CASES],
                         ids=lambda v: str(v))
def test_stepped_graphs_match_diffusers_img2img_pipeline(students, tmp_path, kind, decoder):
    family, student, recipe, wrapped = _setup(students, tmp_path, kind, decoder)
    fam = get_family(family)
    picture = _picture("portrait.png")
    with torch.no_grad():
        ours_init = wrapped.graphs["vae_encoder"].module(picture)
    theirs_init = _diffusers_latents(student, picture)
    assert (ours_init - theirs_init).abs().max().item() < MAX_ABS_ROUNDOFF
    prompt = "a red fox in the snow"
    z = torch.from_numpy(noise.gaussian(5, wrapped.latent_shape))
    images = {}
    for strength in (None, *STRENGTHS):
        step = wrapped.img2img.row(strength)
        if strength is None:   # text-to-image through the same program: the init latents are ignored
            ours = _image(wrapped, student, prompt, z, torch.zeros_like(ours_init), step)
            theirs = fam.oracle(student, recipe, prompt, z.clone())
        else:
            ours = _image(wrapped, student, prompt, z, ours_init, step)
            theirs = fam.img2img_oracle(student, recipe, prompt, z.clone(), theirs_init.clone(), strength)
        err = (ours - theirs.float()).abs().max().item()
        assert err < MAX_ABS_ROUNDOFF, f"{kind}/{decoder} strength {strength}: max-abs {err:.3g} vs the pipeline"
        images[strength] = ours
    # each strength is its own step, and the picture matters
    assert (images[0.5] - images[0.25]).abs().max().item() > 100 * MAX_ABS_ROUNDOFF
    other = _image(wrapped, student, prompt, z, wrapped.graphs["vae_encoder"].module(_picture("city-night.png")),
                   wrapped.img2img.row(0.25))
    assert (other - images[0.25]).abs().max().item() > 100 * MAX_ABS_ROUNDOFF


def test_step_rows_are_the_schedulers_own(students, tmp_path):
    """SD-Turbo at strength 1/N: the last step of the trailing N-step Euler schedule (t = 499 at 0.5)."""
    _, _, _, wrapped = _setup(students, tmp_path, "eps-turbo")
    spec = wrapped.img2img
    assert [(s.strength, s.num_inference_steps, s.step[0]) for s in spec.strengths] == [(0.5, 2, 499.0), (0.25, 4, 249.0)]
    assert spec.text_to_image[0] == 999.0 and spec.text_to_image[1] == 0.0
    with pytest.raises(KeyError, match="0.3 is not in this bundle"):
        spec.row(0.3)


# ---- the picture fitting every runtime does (compiler/contract/init_image.py) ----

def test_fit_keeps_a_picture_of_the_right_size_and_a_flat_one_flat():
    rgb = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    assert np.array_equal(init_image.fit(rgb, 24, 40), rgb)
    flat = np.full((300, 500, 3), 77, np.uint8)
    assert (init_image.fit(flat, 32, 64) == 77).all()


def test_fit_crops_the_centre_and_box_filters_before_resizing():
    # a 3:1 picture whose centre third is white: a square fit keeps exactly that third
    rgb = np.zeros((60, 180, 3), np.uint8)
    rgb[:, 60:120] = 255
    assert (init_image.fit(rgb, 30, 30) == 255).all()
    # 4x4 blocks of one value each, read at a quarter of the size: the box filter returns them exactly
    blocks = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    big = blocks.repeat(4, axis=0).repeat(4, axis=1)
    assert np.array_equal(init_image.fit(big, 8, 8), blocks)


def test_fit_upsamples_bilinearly_between_neighbours():
    rgb = np.array([[[0, 0, 0], [200, 100, 40]]], np.uint8)       # 1 x 2
    out = init_image.fit(rgb, 1, 4)[0, :, 0]                     # half-pixel centres: 0, 50, 150, 200
    assert out.tolist() == [0, 50, 150, 200]


# ---- recipes ----

@pytest.mark.parametrize("extra, where", [
    ("img2img: {strengths: [0.3]}", "img2img.strengths[0]"),
    ("img2img: {strengths: [0.5, 0.5]}", "img2img.strengths[1]"),
    ("img2img: {strengths: []}", "img2img.strengths"),
    ("img2img: {strength: [0.5]}", "img2img.strength"),
    ("components: {vae_encoder: {precision: int8}}", "components.vae_encoder"),
    ("components: {vae_encoder: {lora: [{path: x.safetensors}]}}\nimg2img: {}", "components.vae_encoder.lora"),
], ids=lambda v: str(v)[:30])
def test_bad_img2img_recipes_are_exit_2_naming_the_key(tmp_path, extra, where):
    from compiler.errors import RecipeError

    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(tmp_path / "r.yaml", extra=extra + "\n"))
    assert where in exc.value.where


def test_families_without_an_img2img_pipeline_and_executorch_elementwise_int8_are_refused(tmp_path):
    from compiler.errors import RecipeError
    from compiler.families import img2img_family, stepped
    from compiler.targets.registry import get_target

    for family in stepped.WITHOUT:
        with pytest.raises(RecipeError, match=f"family {family}"):
            img2img_family(load_recipe(write_recipe(tmp_path / f"{family}.yaml", family, extra=IMG2IMG)).family)
    int8 = IMG2IMG + "components: {denoiser: {precision: int8}}\n"
    target = get_target("executorch")
    recipe = load_recipe(write_recipe(tmp_path / "et.yaml", extra=int8 + "targets: {executorch: {elementwise: [denoiser]}}\n"))
    with pytest.raises(RecipeError, match="not available on executorch") as refused:
        target.validate(recipe, recipe.target_options("executorch"))
    assert refused.value.where == "targets.executorch.elementwise"
    recipe = load_recipe(write_recipe(tmp_path / "et-default.yaml", extra=int8))   # convolutions and linears only
    target.validate(recipe, recipe.target_options("executorch"))


def test_a_recipe_without_img2img_records_what_it_did_before():
    from compiler.recipe import recipe_from_data

    d = recipe_from_data({"version": 1, "name": "x", "family": "eps-turbo"}, "t").to_dict()
    assert "img2img" not in d and "vae_encoder" not in d["components"]


# ---- compiled bundles ----

def _cli(command, *args):
    return subprocess.run([str(REPO / ".venv/bin" / command), *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def onnx_bundle(students, tmp_path_factory):
    """An SD student compiled to ONNX with img2img: encoder and denoiser int8."""
    from compiler.pipeline import compile_bundle

    tmp = tmp_path_factory.mktemp("img2img")
    recipe = load_recipe(write_recipe(tmp / "r.yaml", extra=IMG2IMG + (
        "calibration: {num_prompts: 4}\ncomponents: {vae_encoder: {precision: int8, quantization: "
        "{max_float_weight_fraction: 0.5}}, denoiser: {precision: int8}}\n")))
    result = compile_bundle(recipe, "onnx", str(students["eps-turbo"]), tmp / "bundle")
    return result


def test_img2img_bundle_ships_the_encoder_and_passes_parity_at_every_strength(onnx_bundle):
    check_runtime_manifest(onnx_bundle.out, "onnx-eps-turbo-img2img")
    m = onnx_bundle.manifest
    assert m["wiring"]["order"] == ["text_encoder", "vae_encoder", "denoiser", "vae_decoder"]
    assert m["wiring"]["inputs"]["vae_encoder"] == {"image": "init_image.pixels"}
    assert m["wiring"]["inputs"]["denoiser"]["step"] == "sampler.step"
    assert m["components"]["vae_encoder"]["precision"] == "int8"
    assert [s["strength"] for s in m["img2img"]["strengths"]] == list(STRENGTHS)
    for parity in onnx_bundle.parity:
        assert parity.passed
        strengths = {s.strength for s in parity.samples}
        assert strengths == {None, *STRENGTHS}, "parity runs text-to-image and every strength shipped"
        encoder = next(c for c in parity.checks if c.name == "vae_encoder")
        assert len(encoder.per_prompt) == 2 * len(STRENGTHS)
    report = (onnx_bundle.out / "report.html").read_text()
    assert "init image, strength" in report and "still-life.png" in report


def test_generate_runs_img2img_and_refuses_what_the_bundle_does_not_ship(onnx_bundle, tmp_path, capsys):
    from compiler.runtime import load_bundle

    bundle = str(onnx_bundle.out)
    picture = str(PICTURES / "city-night.png")
    out = tmp_path / "i2i.png"
    r = _cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--seed", "3", "--out", str(out),
             "--init-image", picture, "--strength", "0.25")
    assert r.returncode == 0, r.stderr
    chain, _ = load_bundle(bundle)
    rgb = init_image.read_picture(picture)
    expected = chain("a red fox", 3, init_image.to_tensor(init_image.fit(rgb, 32, 32)), 0.25)
    from compiler.contract import png

    assert out.read_bytes() == png.encode(png.to_pixels(expected))
    t2i = chain("a red fox", 3)
    assert np.abs(t2i - expected).max() > 1e-2
    from compiler.commands import generate

    for args, message in [(("--init-image", picture, "--strength", "0.3"), "0.3 is not in this bundle"),
                          (("--strength", "0.5"), "needs --init-image"),
                          (("--init-image", str(REPO / "README.md")), "not a picture"),
                          (("--init-image", str(tmp_path / "none.png")), "file not found")]:
        code = generate.main(["--bundle", bundle, "--prompt", "x", "--out", str(tmp_path / "x.png"), *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_verify_rechecks_an_img2img_bundle(onnx_bundle, students):
    r = _cli("verify", "--bundle", str(onnx_bundle.out), "--model", str(students["eps-turbo"]),
             "--quiet")
    assert r.returncode == 0, r.stderr
    assert "vae_encoder" in r.stdout


def test_init_image_on_a_text_to_image_bundle_is_exit_2():
    from types import SimpleNamespace

    from compiler.commands.generate import _init_image
    from compiler.errors import RecipeError

    args = SimpleNamespace(bundle="b", init_image=str(PICTURES / "portrait.png"), strength=None)
    with pytest.raises(RecipeError, match="b has no image-to-image"):
        _init_image(SimpleNamespace(img2img=None), args)


@pytest.mark.slow   # CI's 15 minutes: the Swift pipeline's img2img test below stays in the fast suite
def test_kotlin_pipeline_writes_the_img2img_png_generate_writes(kotlin_jar, onnx_bundle, generated_png, tmp_path):
    """The Kotlin Pipeline, handed the picture's RGB bytes (decoded by the JVM), fits it, runs the
    encoder and the strength's step, and writes `generate --init-image`'s PNG byte for byte."""
    picture = PICTURES / "still-life.png"
    expected = tmp_path / "generate.png"
    r = _cli("generate", "--bundle", str(onnx_bundle.out), "--prompt", "a red fox", "--seed", "9", "--out", str(expected),
             "--init-image", str(picture), "--strength", "0.25")
    assert r.returncode == 0, r.stderr
    done = subprocess.run(["java", f"-Dinit.image={picture}", "-Dstrength=0.25", "-cp", kotlin_jar,
                           "dev.onestep.runtime.EndToEndKt", str(onnx_bundle.out), "a red fox", sys.executable, str(REPO),
                           str(tmp_path / "kotlin"), "9"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vae_encoder" in done.stdout
    assert (tmp_path / "kotlin-9.png").read_bytes() == expected.read_bytes()
    # text-to-image from the same bundle skips the encoder and is another image
    done = subprocess.run(["java", "-cp", kotlin_jar, "dev.onestep.runtime.EndToEndKt", str(onnx_bundle.out), "a red fox",
                           sys.executable, str(REPO), str(tmp_path / "t2i"), "9"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "vae_encoder" not in done.stdout, done.stdout
    assert (tmp_path / "t2i-9.png").read_bytes() == generated_png(onnx_bundle.out, "a red fox", "9")
    assert (tmp_path / "t2i-9.png").read_bytes() != expected.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["coreml", "executorch", "qnn"])
def test_img2img_compiles_on_every_target_with_an_int8_encoder(students, tmp_path, target):
    """Core ML (its ML Program evaluator here), ExecuTorch (XNNPACK; convolutions and linears int8,
    see test_families_without_...) and QNN (HTP simulator) ship the encoder and the stepped int8
    denoiser, pass parity at every strength, and generate from a picture."""
    from compiler.pipeline import compile_bundle
    from compiler.runtime import load_bundle

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", extra=IMG2IMG + (
        "calibration: {num_prompts: 4}\ncomponents: {vae_encoder: {precision: int8, quantization: "
        "{max_float_weight_fraction: 0.5}}, denoiser: {precision: int8}}\n")))
    result = compile_bundle(recipe, target, str(students["eps-turbo"]), tmp_path / "bundle")
    assert all(p.passed for p in result.parity)
    assert {s.strength for s in result.parity[-1].samples} == {None, *STRENGTHS}
    chain, manifest = load_bundle(result.out)
    assert manifest["components"]["vae_encoder"]["precision"] == "int8"
    picture = init_image.to_tensor(init_image.fit(init_image.read_picture(PICTURES / "portrait.png"), 32, 32))
    image = chain("a red fox", 3, picture, 0.5)
    assert image.shape == (1, 3, 32, 32) and np.abs(image - chain("a red fox", 3)).max() > 1e-2


def test_swift_pipeline_writes_the_img2img_png_generate_writes(onestep_generate, onnx_bundle, tmp_path):
    """The Swift Pipeline, handed the picture's RGB bytes, writes `generate --init-image`'s PNG byte for byte."""
    picture = PICTURES / "sunset-hills.png"
    rgb = init_image.read_picture(picture)
    (tmp_path / "picture.rgb").write_bytes(rgb.tobytes())
    expected = tmp_path / "generate.png"
    r = _cli("generate", "--bundle", str(onnx_bundle.out), "--prompt", "a red fox", "--seed", "4", "--out", str(expected),
             "--init-image", str(picture), "--strength", "0.5")
    assert r.returncode == 0, r.stderr
    done = subprocess.run([str(onestep_generate), "--reference", sys.executable, str(REPO), str(onnx_bundle.out),
                           "a red fox", "4", str(tmp_path / "swift.png"), "--init-rgb", str(tmp_path / "picture.rgb"),
                           f"{rgb.shape[1]}x{rgb.shape[0]}", "0.5"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vae_encoder" in done.stdout
    assert (tmp_path / "swift.png").read_bytes() == expected.read_bytes()
