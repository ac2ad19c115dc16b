"""Several image sizes from one bundle (issue 29): recipe checks, programs per size over weights
stored once, parity at every size, `generate --size`, and the Kotlin and Swift pipelines at each
size byte for byte with `generate`."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from compiler.contract.manifest import write_manifest
from compiler.contract.verifier import read_verified_manifest
from compiler.errors import BundleError, RecipeError
from compiler.recipe import load_recipe
from compiler.targets.onnx.shared_weights import INLINE_BYTES
from test_runtime_kotlin import kotlin_jar  # noqa: F401  (the session's built runtimes)
from test_runtime_swift_pipeline import onestep_generate  # noqa: F401
from support import REPO, check_runtime_manifest, write_recipe

SIZES = "image: {sizes: [[32, 32], [24, 40]]}\n"       # [height, width]: square, landscape (bench-sizes adds portrait)
KEYS = ["32x32", "40x24"]                                 # width x height, as --size spells them
INT8_DENOISER = "calibration: {num_prompts: 2}\ncomponents: {denoiser: {precision: int8}}\n"


def _recipe(tmp_path, extra: str, family: str = "eps-turbo"):
    path = write_recipe(tmp_path / "r.yaml", family, extra=extra)
    path.write_text(path.read_text().replace("image: {height: 32, width: 32}\n", ""))
    return path


@pytest.mark.parametrize("image, where", [
    ("image: {sizes: [[32, 32], [24, 44]]}", "image.sizes[1]"),            # not a multiple of 8
    ("image: {sizes: [[32, 32], [32, 32]]}", "image.sizes[1]"),            # twice
    ("image: {sizes: [[32, 32], [32]]}", "image.sizes[1]"),                # not [height, width]
    ("image: {sizes: [[32, 32], [8192, 32]]}", "image.sizes[1]"),          # beyond any student
    ("image: {height: 24, sizes: [[32, 32], [24, 40]]}", "image.height"),  # not the default
    ("image: {sizes: [[32, 32], 40]}", "image.sizes[1]"),                  # not a list
])
def test_bad_sizes_are_exit_2_naming_the_key(tmp_path, image, where):
    with pytest.raises(RecipeError, match=re.escape(f"{where}:")):
        load_recipe(_recipe(tmp_path, image + "\n"))


def test_a_one_size_recipe_records_what_it_did_before(tmp_path):
    one = load_recipe(write_recipe(tmp_path / "one.yaml"))
    assert one.sizes() == [(32, 32)] and "sizes" not in one.to_dict()["image"]
    several = load_recipe(_recipe(tmp_path, SIZES))
    assert several.sizes() == [(32, 32), (24, 40)] and (several.image.height, several.image.width) == (32, 32)
    assert several.to_dict()["image"]["sizes"] == [[32, 32], [24, 40]]


def test_qnn_refuses_sizes_before_any_work(tmp_path):
    from compiler.targets.registry import get_target

    recipe = load_recipe(_recipe(tmp_path, SIZES))
    with pytest.raises(RecipeError, match="image.sizes: .*not available on qnn yet .*simulator cannot load"):
        get_target("qnn").validate(recipe, recipe.target_options("qnn"))


def test_coreml_sizes_need_ios18_multifunction_packages(tmp_path):
    from compiler.targets.registry import get_target

    t = get_target("coreml")
    recipe = load_recipe(_recipe(tmp_path, SIZES))
    t.validate(recipe, recipe.target_options("coreml"))
    assert t.deployment(recipe.target_options("coreml")) == "iOS18"
    pinned = load_recipe(_recipe(tmp_path, SIZES + "targets: {coreml: {minimum_deployment_target: iOS17}}\n"))
    with pytest.raises(RecipeError, match="minimum_deployment_target: iOS17 cannot run a multifunction package "
                                          r"\(image.sizes"):
        t.validate(pinned, pinned.target_options("coreml"))


def test_a_size_the_model_cannot_take_is_refused_before_any_export(students, tmp_path, monkeypatch):
    """FLUX packs 2x2 latent pixels into a token: with an 8x VAE, sizes are multiples of 16; the
    second size is refused before the first is compiled (as test_bad_inputs, the tiny VAE's factor
    is raised, since its own 2 leaves no multiple of 8 to refuse)."""
    from compiler.pipeline import compile_bundle
    from compiler.student import Student

    monkeypatch.setattr(Student, "vae_scale_factor", property(lambda self: 8))
    recipe = load_recipe(_recipe(tmp_path, "text: {max_sequence_length: 16}\nimage: {sizes: [[32, 32], [32, 40]]}\n",
                                 "flow-match"))
    with pytest.raises(RecipeError, match=r"image.sizes\[1\]: 40 is not a multiple of 16 \(the decoder's scale factor 8 "
                                          r"x 2 latent pixels per token\)"):
        compile_bundle(recipe, "onnx", str(students["flow-match"]), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


@pytest.fixture(scope="module")
def sized(students, tmp_path_factory):
    """An SD student at two sizes, its denoiser int8: one bundle."""
    from compiler.pipeline import compile_bundle

    tmp = tmp_path_factory.mktemp("sizes")
    return compile_bundle(load_recipe(_recipe(tmp, SIZES + INT8_DENOISER)), "onnx", str(students["eps-turbo"]),
                          tmp / "bundle")


def test_each_size_has_its_programs_over_weights_stored_once(sized):
    import onnx

    check_runtime_manifest(sized.out, "onnx-eps-turbo-sizes")
    m = sized.manifest
    assert [(s["width"], s["height"]) for s in m["sizes"]] == [(32, 32), (40, 24)]
    assert [s["noise_shape"][-2:] for s in m["sizes"]] == [[16, 16], [12, 20]]
    # the text encoder does not depend on the size: one program; the denoiser and decoder one per size
    assert m["components"]["text_encoder"]["files"] == ["text_encoder.onnx", "text_encoder.onnx.data"]
    for name in ("denoiser", "vae_decoder"):
        files = m["components"][name]["files"]
        assert files == sorted([f"{name}.onnx.data"] + [f"{name}.{k}.onnx" for k in KEYS])
        assert [s["components"][name]["file"] for s in m["sizes"]] == [f"{name}.{k}.onnx" for k in KEYS]
        assert m["components"][name]["file"] == f"{name}.32x32.onnx"
        # every tensor worth sharing lies in the one data file, written once: the graphs
        # point at the same offsets, and the file holds no more than one size's tensors
        offsets = []
        for key in KEYS:
            model = onnx.load(str(sized.out / f"{name}.{key}.onnx"), load_external_data=False)
            external = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer
                        if t.data_location == onnx.TensorProto.EXTERNAL}
            assert external and all(e["location"] == f"{name}.onnx.data" for e in external.values())
            assert all(len(t.raw_data) < INLINE_BYTES for t in model.graph.initializer if t.name not in external)
            offsets.append({n: (e["offset"], e["length"]) for n, e in external.items()})
        shared = set(offsets[0].items()) & set(offsets[1].items())
        one_size = sum(int(length) for _, length in offsets[0].values())
        assert sum(int(length) for _, (_, length) in shared) >= 0.9 * one_size
        assert (sized.out / f"{name}.onnx.data").stat().st_size <= 1.1 * one_size + 64 * 1024


def test_every_size_passes_parity_and_has_its_rows_in_the_report(sized):
    labels = [p.label for p in sized.parity]
    assert labels == [f"{k} onnx {p}" for k in KEYS for p in ("fp32", "int8")]
    assert all(p.passed for p in sized.parity)
    report = (sized.out / "report.html").read_text(encoding="utf-8")
    assert all(f"{k} onnx int8" in report for k in KEYS)
    assert len(json.loads((sized.out / "report.json").read_text())["quantization"]["components"]) == 2


def test_generate_makes_every_size_and_refuses_one_not_shipped(sized, run_cli, tmp_path):
    from PIL import Image

    pngs = {}
    for key in KEYS:
        code, out, err = run_cli("generate", "--bundle", sized.out, "--prompt", "a red fox", "--seed", 5,
                                 "--out", tmp_path / f"{key}.png", "--size", key)
        assert code == 0, err
        assert f"({key}, computed by" in out
        with Image.open(tmp_path / f"{key}.png") as im:
            assert f"{im.width}x{im.height}" == key
        pngs[key] = (tmp_path / f"{key}.png").read_bytes()
    code, _, _ = run_cli("generate", "--bundle", sized.out, "--prompt", "a red fox", "--seed", 5,
                         "--out", tmp_path / "default.png")
    assert code == 0 and (tmp_path / "default.png").read_bytes() == pngs["32x32"]
    code, _, err = run_cli("generate", "--bundle", sized.out, "--prompt", "a red fox", "--out", tmp_path / "no.png",
                           "--size", "48x48")
    assert code == 2 and "--size 48x48: 48x48 is not a size of this bundle (it ships 32x32, 40x24)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "no.png").exists()


@pytest.mark.parametrize("change, where", [
    (lambda m: m["sizes"][1]["components"]["denoiser"].update(file="vae_decoder.40x24.onnx"),
     "sizes[1].components.denoiser.file"),                                            # another component's file
    (lambda m: m["sizes"].append(dict(m["sizes"][1])), "sizes[2]"),                    # a size twice
    (lambda m: m["sizes"][0].update(noise_shape=[1, 4, 8, 8]), "sizes[0]"),             # not the default
    (lambda m: m["sizes"][1]["components"].update(ghost={"file": "x"}), "sizes[1].components.ghost"),
    (lambda m: m.update(sizes=m["sizes"][:1]), "sizes"),
])
def test_the_loader_refuses_sizes_that_do_not_hold_together(sized, tmp_path, change, where):
    bundle = tmp_path / "b"
    shutil.copytree(sized.out, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    for key in ("schema_version", "files"):
        manifest.pop(key)
    write_manifest(bundle, manifest)
    with pytest.raises(BundleError) as exc:
        read_verified_manifest(bundle)
    assert exc.value.where.startswith(f"{bundle / 'manifest.json'}: {where}"), exc.value.where


def test_kotlin_pipeline_writes_generates_png_at_every_size(kotlin_jar, sized, tmp_path, run_cli):
    for key in KEYS:
        expected = tmp_path / f"generate-{key}.png"
        code, _, err = run_cli("generate", "--bundle", sized.out, "--prompt", "a red fox", "--seed", 9,
                               "--out", expected, "--size", key)
        assert code == 0, err
        done = subprocess.run(["java", f"-Dsize={key}", "-cp", kotlin_jar, "dev.onestep.runtime.EndToEndKt",
                               str(sized.out), "a red fox", sys.executable, str(REPO), str(tmp_path / key), "9"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (tmp_path / f"{key}-9.png").read_bytes() == expected.read_bytes(), key


def test_swift_pipeline_writes_generates_png_at_a_size(onestep_generate, sized, tmp_path, run_cli):
    expected = tmp_path / "generate.png"
    code, _, err = run_cli("generate", "--bundle", sized.out, "--prompt", "a red fox", "--seed", 4, "--out", expected,
                           "--size", "40x24")
    assert code == 0, err
    done = subprocess.run([str(onestep_generate), "--reference", sys.executable, str(REPO), str(sized.out), "a red fox",
                           "4", str(tmp_path / "swift.png"), "--size", "40x24"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "swift.png").read_bytes() == expected.read_bytes()


@pytest.mark.slow
def test_a_size_of_a_multi_size_bundle_is_its_own_one_size_bundle(sized, students, tmp_path, run_cli):
    """The 40x24 programs are exactly what a one-size compile at 40x24 ships: same image, byte for
    byte; a rebuild of the multi-size bundle is byte-identical; verify re-checks every size."""
    from compiler.pipeline import compile_bundle
    from support import assert_same_identity

    one = compile_bundle(load_recipe(_recipe(tmp_path, "image: {height: 24, width: 40}\n" + INT8_DENOISER)), "onnx",
                         str(students["eps-turbo"]), tmp_path / "one")
    for bundle, size in ((sized.out, ["--size", "40x24"]), (one.out, [])):
        code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--seed", 2,
                               "--out", tmp_path / f"{bundle.name}.png", *size)
        assert code == 0, err
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "bundle.png").read_bytes()
    again = compile_bundle(load_recipe(_recipe(tmp_path, SIZES + INT8_DENOISER)), "onnx", str(students["eps-turbo"]),
                           tmp_path / "again")
    assert_same_identity(sized.out, again.out)
    code, out, err = run_cli("verify", "--bundle", sized.out, "--model", students["eps-turbo"], "--quiet")
    assert code == 0, err
    assert all(f"{k} onnx int8" in out for k in KEYS)


def _blobs(package) -> dict[str, dict[int, int]]:
    """function -> {offset: bytes} of every weight blob its ops read from weight.bin (the blob
    header at each offset holds its size: coremltools' blob storage format)."""
    import struct

    import coremltools as ct
    from google.protobuf.message import Message

    spec = ct.utils.load_spec(str(package / "Data/com.apple.CoreML/model.mlmodel"))
    data = (package / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()
    out = {}

    def walk(message, found):
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                items = list(value.values())
            else:
                items = [value] if isinstance(value, Message) else list(value)
            for item in items:
                if field.message_type.name == "BlobFileValue":
                    found[item.offset] = struct.unpack_from("<Q", data, item.offset + 8)[0]
                else:
                    walk(item, found)

    for name, fn in spec.mlProgram.functions.items():
        out[name] = {}
        walk(fn, out[name])
    return out


@pytest.mark.slow
def test_coreml_ships_every_size_as_one_multifunction_package(students, tmp_path, run_cli):
    """Two sizes, the denoiser int8 (W8A8): one package per size-dependent component, a function per
    size, each weight blob stored once; parity at both sizes; generate at both (the evaluator)."""
    from compiler.pipeline import compile_bundle

    recipe = load_recipe(_recipe(tmp_path, "image: {sizes: [[32, 32], [24, 40]]}\n" + INT8_DENOISER))
    result = compile_bundle(recipe, "coreml", str(students["eps-turbo"]), tmp_path / "bundle")
    check_runtime_manifest(result.out, "coreml-eps-turbo-sizes")
    m = result.manifest
    assert m["targets"]["coreml"]["minimum_deployment_target"] == "iOS18"
    assert [p.label for p in result.parity] == [f"{k} coreml {p}" for k in ("32x32", "40x24") for p in ("fp16", "int8")]
    for name in ("denoiser", "vae_decoder"):
        assert [s["components"][name] ["function"] for s in m["sizes"]] == ["size_32x32", "size_40x24"]
        assert {s["components"][name]["file"] for s in m["sizes"]} == {f"{name}.mlpackage"}
        blobs = _blobs(result.out / f"{name}.mlpackage")
        first, second = blobs["size_32x32"], blobs["size_40x24"]
        shared = sum(n for o, n in first.items() if o in second)
        assert shared >= 0.9 * sum(first.values()), (name, shared, sum(first.values()))
    assert "function" not in m["components"]["text_encoder"]
    for key in ("32x32", "40x24"):
        code, _, err = run_cli("generate", "--bundle", result.out, "--prompt", "a red fox", "--out",
                               tmp_path / f"{key}.png", "--size", key)
        assert code == 0, err


@pytest.mark.slow
def test_executorch_ships_every_size_as_one_program_with_a_method_per_size(tmp_path, run_cli):
    """Two sizes of a one-block student (as test_compile_executorch's), the decoder int8 (W8A8):
    one .pte per size-dependent component, a method per size, each weight in XNNPACK's named data
    stored once (the fp32 denoiser's weights: its parameters' bytes, not twice); parity at both
    sizes; generate at both."""
    from diffusers import UNet2DConditionModel
    from executorch.exir._serialize._program import deserialize_pte_binary

    from compiler.pipeline import compile_bundle
    from compiler.testing.seeded_students import TinySpec, build

    student = build(tmp_path / "student", TinySpec(kind="eps-turbo", tiny_vae=True, unet_blocks=1))
    recipe = load_recipe(_recipe(tmp_path, "image: {sizes: [[32, 32], [24, 40]]}\ncalibration: {num_prompts: 2}\n"
                                           "components: {vae_decoder: {precision: int8}}\n"))
    result = compile_bundle(recipe, "executorch", str(student), tmp_path / "bundle")
    check_runtime_manifest(result.out, "executorch-eps-turbo-sizes")
    m = result.manifest
    assert [p.label for p in result.parity] == [f"{k} executorch {p}" for k in ("32x32", "40x24") for p in ("fp32", "int8")]
    for name in ("denoiser", "vae_decoder"):
        assert [s["components"][name]["function"] for s in m["sizes"]] == ["size_32x32", "size_40x24"]
        assert m["components"][name]["files"] == [f"{name}.pte", f"{name}.pte.io.json"]
        pte = deserialize_pte_binary((result.out / f"{name}.pte").read_bytes())
        assert [p.name for p in pte.program.execution_plan] == ["size_32x32", "size_40x24"]
    weights = deserialize_pte_binary((result.out / "denoiser.pte").read_bytes()).named_data.buffers
    unet = UNet2DConditionModel.from_pretrained(str(student / "unet"))
    parameter_bytes = 4 * sum(p.numel() for p in unet.parameters())
    assert sum(len(b) for b in weights) <= 1.1 * parameter_bytes   # a copy per size would be twice
    for key in ("32x32", "40x24"):
        code, _, err = run_cli("generate", "--bundle", result.out, "--prompt", "a red fox", "--out",
                               tmp_path / f"{key}.png", "--size", key)
        assert code == 0, err


def _ir_constants(xml) -> set[tuple[int, int]]:
    """(offset, size) in the weights file of every Const of an OpenVINO IR."""
    import xml.etree.ElementTree as ET

    return {(int(d.get("offset")), int(d.get("size"))) for layer in ET.parse(xml).iter("layer")
            if layer.get("type") == "Const" and (d := layer.find("data")) is not None and d.get("offset")}


@pytest.mark.slow
def test_openvino_ships_an_ir_per_size_over_one_weights_file(students, tmp_path, run_cli):
    """Two sizes, the denoiser int8 (NNCF W8A8): per size-dependent component an IR per size and
    one .bin holding one size's weights (its int8 weights and scales the same at both sizes);
    parity at both sizes; generate at both."""
    from compiler.pipeline import compile_bundle

    recipe = load_recipe(_recipe(tmp_path, SIZES + INT8_DENOISER))
    result = compile_bundle(recipe, "openvino", str(students["eps-turbo"]), tmp_path / "bundle")
    m = result.manifest
    assert [p.label for p in result.parity] == [f"{k} openvino {p}" for k in KEYS for p in ("fp32", "int8")]
    assert m["components"]["text_encoder"]["files"] == ["text_encoder.bin", "text_encoder.xml"]
    for name in ("denoiser", "vae_decoder"):
        assert m["components"][name]["files"] == sorted([f"{name}.bin"] + [f"{name}.{k}.xml" for k in KEYS])
        assert [s["components"][name]["file"] for s in m["sizes"]] == [f"{name}.{k}.xml" for k in KEYS]
        first, second = (_ir_constants(result.out / f"{name}.{k}.xml") for k in KEYS)
        one_size = sum(size for _, size in first)
        assert sum(size for _, size in first & second) >= 0.9 * one_size
        assert (result.out / f"{name}.bin").stat().st_size <= 1.1 * one_size
    for key in KEYS:
        code, _, err = run_cli("generate", "--bundle", result.out, "--prompt", "a red fox", "--out",
                               tmp_path / f"{key}.png", "--size", key)
        assert code == 0, err


@pytest.mark.slow
def test_a_tiled_decoder_ships_once_with_a_tile_plan_per_size(students, tmp_path, run_cli):
    """The decoder ships at its tile, the same program at every size: one file, and each size's
    manifest entry carries its own tile plan (3x3 tiles at 32x32, 2x3 at 40x24)."""
    from compiler.pipeline import compile_bundle

    recipe = load_recipe(_recipe(tmp_path, SIZES + "components: {vae_decoder: {tiling: {tile: 16, overlap: 4}}}\n"))
    result = compile_bundle(recipe, "onnx", str(students["eps-turbo"]), tmp_path / "bundle")
    m = result.manifest
    assert m["components"]["vae_decoder"]["files"] == ["vae_decoder.onnx", "vae_decoder.onnx.data"]
    plans = [s["components"]["vae_decoder"]["tiling"] for s in m["sizes"]]
    assert [(len(p["rows"]), len(p["cols"])) for p in plans] == [(3, 3), (2, 3)]
    assert all(s["components"]["vae_decoder"]["file"] == "vae_decoder.onnx" for s in m["sizes"])
    for key in KEYS:
        code, _, err = run_cli("generate", "--bundle", result.out, "--prompt", "a red fox", "--out",
                               tmp_path / f"{key}.png", "--size", key)
        assert code == 0, err


@pytest.mark.slow
def test_img2img_ships_an_encoder_per_size_and_fits_pictures_to_the_size(students, tmp_path, run_cli):
    from PIL import Image

    from compiler.pipeline import compile_bundle

    pictures = REPO / "calibration" / "init_images"
    recipe = load_recipe(_recipe(tmp_path, SIZES + f"img2img: {{strengths: [0.5], images: {pictures}}}\n"))
    result = compile_bundle(recipe, "onnx", str(students["eps-turbo"]), tmp_path / "bundle")
    assert all(p.passed for p in result.parity)
    assert [s["components"]["vae_encoder"]["file"] for s in result.manifest["sizes"]] == \
        [f"vae_encoder.{k}.onnx" for k in KEYS]
    for key in KEYS:
        out = tmp_path / f"{key}.png"
        code, _, err = run_cli("generate", "--bundle", result.out, "--prompt", "a red fox", "--out", out, "--size", key,
                               "--init-image", pictures / "portrait.png", "--strength", "0.5")
        assert code == 0, err
        with Image.open(out) as im:
            assert f"{im.width}x{im.height}" == key
