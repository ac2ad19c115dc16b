"""`compile --target executorch`: XNNPACK-delegated .pte programs, fp32 and int8, run for real with
ExecuTorch's runtime.

Lowering is slow in ExecuTorch's Python passes (about a minute per tiny UNet; shared/PITFALLS.md), so
`make test` compiles one small student (one-block UNet, AutoencoderTiny decoder quantized w8a8) and
checks the rewrites, the delegation report and determinism on small modules; every family in fp32 and
int8 and the whole-bundle rebuild are `make test-slow`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compiler.errors import Exit, ExportError
from compiler.wrap import Graph
from support import (CASES, REPO, assert_same_identity, bundle_record, compile_on_another_cpu, check_runtime_manifest, compile_quietly, family_of, flip_byte, tree_snapshot,
                      write_recipe)

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
CALIBRATION = f"calibration: {{prompts: {REPO / 'calibration/calibration.txt'}, num_prompts: 4, seed: 5}}\n"
SMALL = ("components: {vae_decoder: {precision: int8, subfolder: vae_tiny, quantization: {scheme: w8a8}}}\n"
         + CALIBRATION)


def _int8(decoder: str) -> str:
    return ("components: {text_encoder: {precision: int8, quantization: {scheme: w8}}, "
            "denoiser: {precision: int8, quantization: {scheme: w8a8, max_float_weight_fraction: 0.1}}, "
            f"vae_decoder: {{subfolder: {decoder}}}}}\n" + CALIBRATION)


def _manifest(bundle: Path) -> dict:
    return bundle_record(bundle)


# ------------------------------------------------------------------ rewrites and delegation, on small modules

class Blocks(torch.nn.Module):
    """Every op the rewrites replace: group norm, layer norm, chunk (GEGLU), attention (plain and
    causal), nearest upsampling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.ln = torch.nn.LayerNorm(8)
        self.proj = torch.nn.Linear(8, 16)

    def forward(self, x):
        h = self.norm(self.conv(x))
        t = self.ln(h.flatten(2).transpose(1, 2))
        a, b = self.proj(t).chunk(2, dim=-1)
        q = (a * F.gelu(b)).view(1, 64, 2, 4).transpose(1, 2)
        t = F.scaled_dot_product_attention(q, q, q) + F.scaled_dot_product_attention(q, q, q, is_causal=True)
        h = h + t.transpose(1, 2).reshape(1, 64, 8).transpose(1, 2).reshape(1, 8, 8, 8)
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class WithCumsum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.b(torch.cumsum(self.a(x), dim=-1))


def _lower(module, out: Path, channels: int = 4, **options):
    from compiler.targets.executorch import ExecuTorchOptions
    from compiler.targets.executorch.export import exported_program, lower_and_write

    x = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(1))
    graph = Graph("blocks", module.eval(), (x,), ["x"], ["y"])
    opts = ExecuTorchOptions(**options)
    out.mkdir(parents=True, exist_ok=True)
    return lower_and_write(exported_program(graph, opts), "blocks", ["x"], ["y"], out, opts), x


def test_rewrites_keep_the_numbers_and_xnnpack_takes_the_whole_graph(tmp_path):
    from compiler.targets.executorch.run import program_runner

    module = Blocks()
    rewritten, x = _lower(module, tmp_path / "rewritten", channels=8)
    plain, _ = _lower(module, tmp_path / "plain", channels=8, rewrites=False, min_delegated_flop_share=0.0)
    with torch.no_grad():
        expected = module(x).numpy()
    for artifact, root in ((rewritten, tmp_path / "rewritten"), (plain, tmp_path / "plain")):
        got = program_runner(root / artifact.main)({"x": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    report = rewritten.facts["delegation"]
    assert report["delegated_segments"] == 1 and report["delegated_flop_share"] > 0.999, report
    assert not set(report["portable_by_type"]) & {"native_group_norm", "native_layer_norm", "upsample_nearest2d",
                                                  "split_with_sizes_copy", "any", "where", "logical_not"}
    before = plain.facts["delegation"]
    # what XNNPACK leaves alone without the rewrites (shared/PITFALLS.md), measured here too
    assert {"native_group_norm", "native_layer_norm"} <= set(before["portable_by_type"]), before
    assert before["delegated_segments"] > report["delegated_segments"]


def test_upsampling_read_by_a_3x3_conv_becomes_one_phase_convolution(tmp_path):
    """diffusers' Upsample2D: no upsampled image and no ones-kernel upsampling left, the same numbers,
    and the layer still found by its module path with the weights it now ships."""
    from diffusers.models.upsampling import Upsample2D

    from compiler.targets.executorch import ExecuTorchOptions
    from compiler.targets.executorch.export import exported_program
    from compiler.targets.executorch.quantize import ExecuTorchQuantizer
    from compiler.targets.executorch.run import program_runner

    torch.manual_seed(0)
    module = Upsample2D(8, use_conv=True, out_channels=6).eval()
    source = module.conv.weight.detach().clone()
    artifact, x = _lower(module, tmp_path, channels=8)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(program_runner(tmp_path / artifact.main)({"x": x.numpy()})[0], expected,
                               rtol=1e-4, atol=1e-5)
    report = artifact.facts["delegation"]
    assert report["delegated_by_type"]["convolution"] == 1 and report["delegated_segments"] == 1, report
    assert torch.equal(module.conv.weight, source)      # the torch reference keeps its own weights
    sys.path.insert(0, str(REPO / "benchmarks"))
    from etdump_profile import by_type, events

    ran = {kind: count for kind, count, _ in by_type(events(tmp_path / artifact.main))}
    assert ran.get("Convolution (NHWC, F32) IGEMM") == 1 and not [k for k in ran if "Deconvolution" in k], ran
    program = exported_program(Graph("vae_decoder", module, (x,), ["x"], ["y"]), ExecuTorchOptions())
    assert not [n for n in program.graph.nodes if "upsample" in str(n.target)]
    layers = ExecuTorchQuantizer("vae_decoder", "w8a8", program.module(), (x,), ["x"], ["y"], tmp_path,
                                 ExecuTorchOptions()).layers()
    assert [(l.name, l.params) for l in layers] == [("conv", 4 * 6 * 8 * 2 * 2 + 4 * 6)]


def test_delegation_report_names_a_non_delegable_op_and_the_minimum_is_enforced(tmp_path):
    artifact, _ = _lower(WithCumsum(), tmp_path / "ok", min_delegated_flop_share=0.5)
    report = artifact.facts["delegation"]
    assert report["portable_by_type"].get("cumsum") == 1
    assert report["delegated_segments"] == 2 and report["delegated_by_type"]["convolution"] == 2
    assert 0.9 < report["delegated_flop_share"] < 1.0
    with pytest.raises(ExportError) as err:
        _lower(WithCumsum(), tmp_path / "strict", min_delegated_flop_share=0.999)
    assert err.value.code == Exit.EXPORT and "blocks" in str(err.value) and "cumsum x1" in str(err.value)
    assert "min_delegated_flop_share" in str(err.value)


class WithConstant(WithCumsum):
    """WithCumsum's convolutions (their weights in XNNPACK's named data), and a constant that an op
    left to the portable kernels reads from the program's own constant table."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.randn(4))

    def forward(self, x):
        return torch.cumsum(super().forward(x), dim=-2).permute(0, 2, 3, 1) + self.shift


def test_sizes_join_into_one_program_computing_what_each_did_with_weights_stored_once(tmp_path):
    """A multi-size bundle's share stage: two sizes' programs joined without lowering again."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from compiler.targets.executorch import ExecuTorchOptions
    from compiler.targets.executorch.export import exported_program, lower_and_write
    from compiler.targets.executorch.run import program_runner
    from compiler.targets.executorch.sizes import join_programs, share_weights

    module, opts, parts, inputs = WithConstant().eval(), ExecuTorchOptions(min_delegated_flop_share=0.5), [], {}
    for h, w in ((8, 8), (4, 12)):
        key, root = f"{w}x{h}", tmp_path / f"{w}x{h}"
        root.mkdir()
        inputs[key] = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(h))
        program = exported_program(Graph("blocks", module, (inputs[key],), ["x"], ["y"]), opts)
        parts.append((key, root, lower_and_write(program, "blocks", ["x"], ["y"], root, opts)))
    one = (tmp_path / "8x8" / "blocks.pte").read_bytes()
    # ExecuTorch's (de)serializer reads and writes a program faithfully: joining one gives its bytes
    assert bytes(join_programs({"forward": tmp_path / "8x8" / "blocks.pte"})) == one
    (tmp_path / "joint").mkdir()
    artifact, programs = share_weights("blocks", parts, tmp_path / "joint", opts)
    assert programs == {k: {"file": "blocks.pte", "function": f"size_{k}"} for k in ("8x8", "12x4")}
    assert artifact.files == ["blocks.pte", "blocks.pte.io.json"]
    assert artifact.facts == parts[0][2].facts
    for key, root, _ in parts:
        feeds = {"x": inputs[key].numpy()}
        want = program_runner(root / "blocks.pte")(feeds)[0]
        assert np.array_equal(program_runner(tmp_path / "joint" / "blocks.pte", f"size_{key}")(feeds)[0], want)
    joint, single = (deserialize_pte_binary(b) for b in ((tmp_path / "joint" / "blocks.pte").read_bytes(), one))
    assert [p.name for p in joint.program.execution_plan] == ["size_8x8", "size_12x4"]
    assert [len(p.delegates) for p in joint.program.execution_plan] == [len(single.program.execution_plan[0].delegates)] * 2
    assert sorted(map(bytes, joint.named_data.buffers)) == sorted(map(bytes, single.named_data.buffers))
    assert ([bytes(b.storage) for b in joint.program.constant_buffer]
            == [bytes(b.storage) for b in single.program.constant_buffer])   # the shift, once
    assert len(single.program.constant_buffer) == 2 and len(single.named_data.buffers) >= 4


def test_nothing_of_a_lowered_program_outlives_its_lowering(tmp_path):
    """ExecuTorch keeps nodes of what it lowered in module-level state (export._forget_lowered_nodes);
    at SD-Turbo size each UNet's program held on to 3.9 GB, and three sizes did not fit."""
    import gc

    from executorch.exir.lowered_backend_module import LoweredBackendModule

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, LoweredBackendModule) for o in gc.get_objects())

    before = alive()
    _lower(WithCumsum(), tmp_path, min_delegated_flop_share=0.5)   # a declined cumsum, two delegates
    assert alive() == before


def test_a_program_that_fails_at_load_is_exit_5_naming_the_component(tmp_path):
    from compiler.targets.executorch.run import load_program

    artifact, _ = _lower(WithCumsum(), tmp_path, min_delegated_flop_share=0.5)
    pte = tmp_path / artifact.main
    pte.write_bytes(pte.read_bytes()[: pte.stat().st_size // 2])
    with pytest.raises(ExportError) as err:
        load_program(pte, "denoiser")
    assert err.value.code == Exit.EXPORT and "denoiser" in str(err.value) and pte.name in str(err.value)


class TwoConvs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_fallback_keeps_the_named_layers_float_and_quantizes_the_rest(tmp_path):
    """The accuracy fallback's build with a layer kept float (XNNPACKQuantizer's own per-module
    None is an assertion in this version: the quantizer filters those modules' ops out instead)."""
    from compiler.targets.executorch import ExecuTorchOptions
    from compiler.targets.executorch.export import exported_program
    from compiler.targets.executorch.quantize import ExecuTorchQuantizer

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    opts = ExecuTorchOptions()
    program = exported_program(Graph("denoiser", TwoConvs().eval(), (x,), ["x"], ["y"]), opts)
    q = ExecuTorchQuantizer("denoiser", "w8a8", program.module(), (x,), ["x"], ["y"], tmp_path, opts)
    names = {l.name for l in q.layers()}
    assert names == {"a", "b"}
    q.calibrate(iter([{"x": x.numpy()}]))

    def quantized_weights(float_layers):
        q.build(float_layers)
        convs = [n for n in q._converted.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
        return {n.meta["nn_module_stack"] and list(n.meta["nn_module_stack"].values())[-1][0]:
                "dequantize" in str(n.args[1].target) for n in convs}

    assert quantized_weights([]) == {"a": True, "b": True}
    assert quantized_weights(["b"]) == {"a": True, "b": False}


class Residual(WithCumsum):
    """conv -> SiLU -> conv + the block's input: a ResNet block's float ops between convolutions."""

    def forward(self, x):
        return self.b(F.silu(self.a(x))) + x


def test_elementwise_ops_stay_float_unless_the_component_is_listed(tmp_path):
    """By default W8A8 annotates the convolutions and linears only (as the ONNX target quantizes);
    `targets.executorch.elementwise: [denoiser]` gives that component every pattern of XNNPACK's
    quantizer, so the residual add gets an int8 output too. Either way XNNPACK
    computes it close to float; a name that is not a component is refused."""
    from compiler.errors import RecipeError
    from compiler.metrics import compare
    from compiler.recipe import load_recipe
    from compiler.targets.executorch import ExecuTorchOptions, ExecuTorchTarget
    from compiler.targets.executorch.export import exported_program
    from compiler.targets.executorch.quantize import ExecuTorchQuantizer
    from support import write_recipe

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    want = Residual().eval()(x).detach().numpy()
    quantized = {}
    program = exported_program(Graph("denoiser", Residual().eval(), (x,), ["x"], ["y"]), ExecuTorchOptions())
    for listed in ((), ("denoiser",)):
        opts = ExecuTorchOptions(elementwise=listed)
        out = tmp_path / ("listed" if listed else "default")
        out.mkdir()
        q = ExecuTorchQuantizer("denoiser", "w8a8", program.module(), (x,), ["x"], ["y"], out, opts)
        assert {l.name for l in q.layers()} == {"a", "b"}     # fallback still ranks the convolutions only
        samples = [{"x": torch.randn(1, 4, 8, 8, generator=gen).numpy()} for _ in range(8)]
        q.calibrate(iter(samples + [{"x": x.numpy()}]))
        q.build([])
        outputs = [n.args[0] for n in q._converted.graph.nodes if n.op == "call_function"
                   and "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)]
        quantized[listed] = {str(n.target).split(".")[1] for n in outputs if n.op == "call_function"}
        assert ("set_global" in q.tool) is bool(listed)
        assert ("set_operator_type(conv, linear)" in q.tool) is not bool(listed)
        assert ExecuTorchTarget().manifest_block(opts, {}, tmp_path)["elementwise"] == list(listed)
        assert compare(want, q.runner()({"x": x.numpy()})[0]).psnr_db > 30
    assert quantized[()] == {"conv2d", "silu"}   # the convolutions' outputs and inputs
    assert quantized[("denoiser",)] == {"conv2d", "silu", "add"}
    with pytest.raises(RecipeError, match=r"targets.executorch.elementwise.*'unet' is not a component"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", extra="targets: {executorch: {elementwise: [unet]}}\n"))


class Folded(torch.nn.Module):
    """Group norm and upsampling: the rewrites fold constants (affine views, the ones kernel)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.norm = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.conv(F.interpolate(self.norm(self.conv(x)), scale_factor=2.0, mode="nearest"))


_REBUILD = """
import sys; sys.path[:0] = [{here!r}, {tests!r}, {repo!r}]
from pathlib import Path
from test_compile_executorch import Folded, _lower
_lower(Folded(), Path(sys.argv[1]))
"""


def test_programs_are_byte_identical_across_processes(tmp_path):
    _lower(Folded(), tmp_path / "here")
    script = _REBUILD.format(here=str(Path(__file__).parent), tests=str(REPO / "tests"), repo=str(REPO))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "there")], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONHASHSEED": "777"}, capture_output=True)
    a, b = tree_snapshot(tmp_path / "here"), tree_snapshot(tmp_path / "there")
    assert a.keys() == {"blocks.pte", "blocks.pte.io.json"} and a == b


# ------------------------------------------------------------------ one small student, end to end

@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    """(student, bundle): one-block UNet, AutoencoderTiny decoder quantized w8a8, compiled once."""
    from compiler.testing.seeded_students import TinySpec, build

    root = tmp_path_factory.mktemp("executorch")
    student = build(root / "student", TinySpec(kind="eps-turbo", tiny_vae=True, unet_blocks=1))
    recipe = write_recipe(root / "small.yaml", "eps-turbo", extra=SMALL)
    code, err = compile_quietly("executorch", recipe, student, root / "bundle")
    assert code == Exit.OK, err
    return student, root / "bundle"


@pytest.mark.slow   # CI's 15 minutes: the ExecuTorch tests above and test_sizes' keep a compile in the fast suite
def test_small_student_bundle_passes_parity_with_int8_decoder(small):
    m = _manifest(small[1])
    assert m["target"] == "executorch"
    check_runtime_manifest(small[1], "executorch-small-student")
    assert [p["label"] for p in m["parity"]] == ["executorch fp32", "executorch int8"]
    assert all(p["passed"] for p in m["parity"])
    assert m["components"]["vae_decoder"]["precision"] == "int8"
    q = m["quantization"]["components"]["vae_decoder"]
    assert q["scheme"] == "w8a8" and q["calibration_prompts"] == 4 and q["coverage"]["quantized_layers"] > 0
    assert any(l.get("output_sqnr_db") is not None for l in q["layers"])   # sensitivity measured in context
    assert q["sizes"]["shipped_bytes"] < q["sizes"]["float_bytes"]


@pytest.mark.slow   # CI's 15 minutes: test_quantize and test_cpu_independence keep the property in the fast suite
def test_small_student_bundle_rebuilt_on_another_cpu_is_byte_identical(small, tmp_path):
    """The fp32 denoiser's folded constants (the baked timestep's embedding) and the int8 decoder's
    calibrated ranges, computed with another CPU's torch kernels: the same bytes."""
    student, bundle = small
    again = tmp_path / "again"
    compile_on_another_cpu("executorch", bundle.parent / "small.yaml", student, again)
    assert_same_identity(bundle, again)


@pytest.mark.slow
def test_manifest_records_delegation_and_program_io(small):
    bundle = small[1]
    m = _manifest(bundle)
    block = m["targets"]["executorch"]
    assert block["min_delegated_flop_share"] == 0.98 and block["rewrites"] is True
    for name in COMPONENTS:
        d = block["delegation"][name]
        assert d["delegated_flop_share"] >= 0.98 and d["delegated_segments"] <= 2, (name, d)
        c = m["components"][name]
        assert c["file"] == f"{name}.pte" and c["files"] == [f"{name}.pte", f"{name}.pte.io.json"]
        assert c["file"] in m["files"] and f"{name}.pte.io.json" in m["files"]
    assert [i["name"] for i in m["components"]["denoiser"]["inputs"]] == ["prompt_embeds", "noise"]
    assert m["components"]["vae_decoder"]["outputs"][0] == {"name": "image", "dtype": "float32",
                                                           "shape": [1, 3, 32, 32]}
    assert "Delegation" in (bundle / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_generate_and_verify_work_on_an_executorch_bundle(small, run_cli, tmp_path):
    student, bundle = small
    pngs = [tmp_path / "a.png", tmp_path / "b.png"]
    for png in pngs:
        code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--seed", 3, "--out", png)
        assert code == 0, err
    assert pngs[0].read_bytes() == pngs[1].read_bytes() and pngs[0].read_bytes()[:4] == b"\x89PNG"
    # --shipped-only: the float pass re-lowers every program (minutes); tests/test_quantize.py runs both passes
    code, out, err = run_cli("verify", "--bundle", bundle, "--model", student, "--quiet", "--shipped-only")
    assert code == 0 and "passes" in out, err
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    flip_byte(copy / "denoiser.pte")
    code, _, err = run_cli("generate", "--bundle", copy, "--prompt", "x", "--out", tmp_path / "c.png")
    assert code == Exit.BUNDLE and "denoiser.pte" in err and not (tmp_path / "c.png").exists()


@pytest.mark.slow
def test_below_the_minimum_delegated_share_is_exit_5_naming_the_portable_ops(small, tmp_path):
    """Even with the rewrites the token embedding (a gather) stays on a portable kernel: a minimum of
    1.0 cannot be met, and the compile says which operator is to blame."""
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo",
                          extra="targets: {executorch: {min_delegated_flop_share: 1.0}}\n")
    code, err = compile_quietly("executorch", recipe, small[0], tmp_path / "o")
    assert code == Exit.EXPORT and "text_encoder" in err and "embedding x1" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ refusals before any work

def test_scheme_executorch_cannot_ship_is_refused_before_work(students, tmp_path, run_cli):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=(
        "components: {denoiser: {precision: int8, quantization: {scheme: palettize4}}}\n" + CALIBRATION))
    code, _, err = run_cli("compile", "--target", "executorch", "--recipe", recipe, "--model",
                           students["eps-turbo"], "--out", tmp_path / "o")
    assert code == Exit.RECIPE and "palettize4" in err and "executorch" in err and not (tmp_path / "o").exists()


def test_missing_executorch_is_exit_8_naming_it(students, tmp_path, run_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo")
    code, _, err = run_cli("compile", "--target", "executorch", "--recipe", recipe, "--model",
                           students["eps-turbo"], "--out", tmp_path / "o")
    assert code == Exit.ENVIRONMENT and "executorch" in err and "Traceback" not in err


def test_bad_target_option_is_a_recipe_error(students, tmp_path, run_cli):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra="targets: {executorch: {min_delegated_flop_share: 2}}\n")
    code, _, err = run_cli("compile", "--target", "executorch", "--recipe", recipe, "--model",
                           students["eps-turbo"], "--out", tmp_path / "o")
    assert code == Exit.RECIPE and "targets.executorch.min_delegated_flop_share" in err


# ------------------------------------------------------------------ every family (make test-slow)

@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_every_family_compiles_to_executorch_fp32_and_int8_within_tolerance(students, tmp_path, case):
    kind, decoder = CASES[case]
    recipe = write_recipe(tmp_path / "r.yaml", family_of(kind), extra=_int8(decoder))
    code, err = compile_quietly("executorch", recipe, students[kind], tmp_path / "b")
    assert code == Exit.OK, err
    m = _manifest(tmp_path / "b")
    assert all(p["passed"] for p in m["parity"]) and len(m["parity"]) == 2
    assert m["quantization"]["components"]["text_encoder"]["scheme"] == "w8"
    for name, d in m["targets"]["executorch"]["delegation"].items():
        assert d["delegated_flop_share"] >= 0.98 and d["delegated_segments"] <= 2, (name, d)


@pytest.mark.slow
def test_bundle_rebuild_in_another_process_is_byte_identical(students, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "eps-turbo", extra=_int8("vae"))
    outs = []
    for seed in ("1", "99"):
        out = tmp_path / f"b{seed}"
        subprocess.run([sys.executable, "-m", "compiler.commands.compile", "--target", "executorch", "--recipe", str(recipe),
                        "--model", str(students["eps-turbo"]), "--out", str(out), "--quiet"], check=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
                       capture_output=True)
        outs.append(tree_snapshot(out))
    for snap in outs:
        snap.pop("timings.txt")   # measured latencies: the one file outside the byte-identical promise
    assert outs[0] == outs[1]
