"""Tiled decoding (compiler/contract/tiling.py, issue 13): the plan covers the latent with whole tiles,
the blend reproduces a decoder without cross-pixel context exactly (and not one with it), and a
compiled bundle ships its decoder at one tile's shape, calibrated and checked per tile, with the
plan in the manifest and tiling's cost in the report."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import Exit
from compiler.contract.tiling import TilePlan, axis_weights, origins
from support import bundle_record, check_runtime_manifest, compile_quietly, write_recipe


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 128), st.data())
def test_tiles_are_whole_cover_the_axis_and_overlap_by_at_least_the_overlap(length, tile, data):
    overlap = data.draw(st.integers(0, tile // 2))
    starts = origins(length, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length                       # every tile whole, the last flush
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    weights = axis_weights(starts, tile, overlap, 1)
    total = np.zeros(length, np.float32)
    for s, w in zip(starts, weights):
        total[s:s + tile] += w
    assert (total > 0).all()                                  # every pixel is someone's


def _upsample(feeds: dict) -> list[np.ndarray]:
    """A decoder with no context: each latent pixel becomes a 2x2 block of 3 channels."""
    x = feeds["latents"][:, :3].repeat(2, axis=-2).repeat(2, axis=-1)
    return [np.tanh(x) / 2 + 0.5]


def test_a_decoder_without_context_decodes_the_same_in_tiles_as_whole():
    latents = np.random.default_rng(0).standard_normal((1, 4, 20, 13)).astype(np.float32)
    plan = TilePlan.for_latent(latents.shape, tile=8, overlap=2, scale=2)
    assert plan.count == len(plan.rows) * len(plan.cols) > 4
    tiled = plan.run(_upsample, {"latents": latents})[0]
    np.testing.assert_allclose(tiled, _upsample({"latents": latents})[0], rtol=0, atol=2e-7)

    def with_context(feeds):   # each tile normalised by its own mean, as a GroupNorm would
        out = _upsample(feeds)[0]
        return [out - out.mean()]

    # The check can fail: a decoder with context shows its seams.
    assert np.abs(plan.run(with_context, {"latents": latents})[0] - with_context({"latents": latents})[0]).max() > 1e-3


def _manifest(bundle) -> dict:
    return bundle_record(bundle)


def test_a_tiled_bundle_ships_its_decoder_at_one_tile_with_the_plan_in_the_manifest(tiled_bundle):
    m = _manifest(tiled_bundle)
    dec = m["components"]["vae_decoder"]
    assert dec["inputs"][0]["shape"] == [1, 4, 8, 8] and dec["outputs"][0]["shape"] == [1, 3, 16, 16]
    assert dec["tiling"] == {"input": "latents", "latent_shape": [1, 4, 16, 16], "tile": [8, 8], "overlap": 2,
                             "scale": 2, "rows": [0, 4, 8], "cols": [0, 4, 8], "blend": "linear-ramp-v1"}
    assert m["noise"]["shape"] == [1, 4, 16, 16]
    checks = {p["label"]: p["checks"] for p in m["parity"]}
    assert all(p["passed"] for p in m["parity"])
    assert checks["onnx int8"]["vae_decoder"]["precision"] == "int8"
    # calibrated and checked per tile: 2 prompts x 9 tiles went through the tile-shaped program
    assert m["quantization"]["components"]["vae_decoder"]["calibration_prompts"] == 2
    cost = m["decoder_cost"]
    assert "9 tiles of 16x16 px, 4 px overlap" in cost["shipped"] and "whole image" in cost["compared_with"]
    assert cost["gated"] is False and cost["worst_psnr_db"] > 0
    assert "Quality cost of the tiled decoding" in (tiled_bundle / "report.html").read_text()
    check_runtime_manifest(tiled_bundle, "onnx-eps-turbo-tiled")


def test_generate_decodes_a_tiled_bundle_to_the_whole_image(tiled_bundle, run_cli, tmp_path):
    from compiler.runtime import load_bundle

    code, _, err = run_cli("generate", "--bundle", tiled_bundle, "--prompt", "a red fox", "--seed", "5",
                           "--out", tmp_path / "a.png")
    assert code == Exit.OK, err
    chain, _ = load_bundle(tiled_bundle)
    image = chain("a red fox", 5)
    assert image.shape == (1, 3, 32, 32) and np.isfinite(image).all()
    from compiler.runtime import to_png

    to_png(image, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_tiling_plan_that_is_not_the_compilers_is_refused(tiled_bundle, run_cli, tmp_path):
    """A re-signed manifest whose rows skip a band of the latent: exit 7 naming the block."""
    from compiler.contract.manifest import sign_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(tiled_bundle, bundle)
    m = _manifest(bundle)
    m["components"]["vae_decoder"]["tiling"]["rows"] = [0, 8]
    sign_manifest(bundle, m)
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "x", "--seed", "1", "--out", tmp_path / "x.png")
    assert code == Exit.BUNDLE
    assert "components.vae_decoder.tiling" in err and "tile origins" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("tiling, field, says", [
    ("{tile: 16, overlap: 12}", "components.vae_decoder.tiling", "overlap <= tile / 2"),
    ("{tile: 32, overlap: 4}", "components.vae_decoder.tiling.tile", "covers the whole 32x32 image"),
    ("{tile: 15, overlap: 4}", "components.vae_decoder.tiling.tile", "not a multiple of the decoder's scale factor 2"),
    ("{tile: 16, overlap: 4, blend: cosine}", "components.vae_decoder.tiling.blend", "unknown key"),
])
def test_a_tiling_the_decoder_cannot_follow_is_a_recipe_error(students, tmp_path, tiling, field, says):
    recipe = write_recipe(tmp_path / "r.yaml", extra=f"components: {{vae_decoder: {{tiling: {tiling}}}}}\n")
    code, err = compile_quietly("onnx", recipe, students["eps-turbo"], tmp_path / "out")
    assert code == Exit.RECIPE, err
    assert field in err and says in err, err
    assert not (tmp_path / "out").exists()
