"""The ML Program evaluator (compiler/targets/coreml/evaluate.py): Core ML programs computed on
Linux agree with the torch student, emulate fp16 storage, and catch a wrong program."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compiler.targets.coreml import convert
from compiler.targets.coreml import evaluate as E

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")


def psnr(a: np.ndarray, ref: np.ndarray) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    mse = float(np.mean((a - ref) ** 2))
    peak = float(np.max(np.abs(ref))) or 1.0
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


class Tiny:
    """One tiny eps-turbo student: its three graphs as fp32 packages, the denoiser also as fp16 and
    int8-weight packages, seeded feeds and the torch outputs for them."""

    def __init__(self, root):
        import coremltools.optimize.coreml as cto

        from compiler.load import load_student
        from compiler.recipe import recipe_from_data
        from compiler.testing.seeded_students import TinySpec, build
        from compiler.wrap import wrap

        student = build(root / "eps-turbo", TinySpec(kind="eps-turbo"))
        recipe = recipe_from_data({"version": 1, "name": "x", "family": "eps-turbo",
                                   "image": {"height": 32, "width": 32},
                                   "components": {"vae_decoder": {"subfolder": "vae"}}}, "x")
        wrapped = wrap(load_student(str(student), "eps-turbo", "vae"), recipe)
        gen = torch.Generator().manual_seed(0)
        self.packages, self.feeds, self.torch, self._evaluators = {}, {}, {}, {}
        for name in COMPONENTS:
            graph = wrapped.graphs[name]
            inputs = [torch.randint(0, 40, t.shape, generator=gen) if t.dtype == torch.int64
                      else torch.randn(t.shape, generator=gen) for t in graph.example_inputs]
            with torch.no_grad():
                ref = graph.module(*inputs)
            self.torch[name] = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
            self.feeds[name] = {n: t.numpy() for n, t in zip(graph.input_names, inputs)}
            # fp16 only for the denoiser: it holds every op kind the others have, and each
            # conversion costs seconds
            for precision in ("fp32", "fp16") if name == "denoiser" else ("fp32",):
                model = convert.convert(graph, "iOS17", precision)
                self._save(model, name, precision, root)
                if (name, precision) == ("denoiser", "fp16"):
                    denoiser16 = model
        config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                             weight_threshold=1)
        with convert.quiet():
            int8 = cto.linear_quantize_weights(denoiser16, cto.OptimizationConfig(global_config=config))
        self._save(int8, "denoiser", "int8", root)

    def _save(self, model, name, kind, root):
        path = root / f"{name}_{kind}.mlpackage"
        convert.save(model, path)
        self.packages[name, kind] = path

    def evaluator(self, name, kind) -> E.ProgramEvaluator:
        if (name, kind) not in self._evaluators:
            self._evaluators[name, kind] = E.evaluate_package(self.packages[name, kind])
        return self._evaluators[name, kind]

    def evaluate(self, name, kind) -> list[np.ndarray]:
        return self.evaluator(name, kind)(self.feeds[name])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("coreml_evaluate"))


@pytest.mark.parametrize("name", COMPONENTS)
def test_fp32_program_equals_torch(tiny, name):
    outputs = tiny.evaluate(name, "fp32")
    assert len(outputs) == len(tiny.torch[name])
    for got, want in zip(outputs, tiny.torch[name]):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-4


def test_fp16_program_rounds_like_fp16_storage(tiny):
    fp16, fp32 = tiny.evaluate("denoiser", "fp16"), tiny.evaluate("denoiser", "fp32")
    for half, full, want in zip(fp16, fp32, tiny.torch["denoiser"]):
        assert psnr(half, want) >= 40.0
        assert not np.array_equal(half, full)
        # the program's fp16 output var: every value is an fp16 value
        assert np.array_equal(half, half.astype(np.float16).astype(np.float32))


def test_int8_weight_program(tiny):
    evaluator = tiny.evaluator("denoiser", "int8")
    (latents,) = tiny.evaluate("denoiser", "int8")
    assert psnr(latents, tiny.torch["denoiser"][0]) >= 35.0
    constexprs = [op for op in evaluator.function.operations if op.op_type == "constexpr_affine_dequantize"]
    assert constexprs
    for op in constexprs[:10]:   # decompressed as coremltools' own reference does it
        want = op.materialized_val_inference().astype(np.float32)
        np.testing.assert_array_equal(evaluator.const_value(op.outputs[0].name), want)


def test_corrupted_weight_changes_the_output(tiny):
    feeds = tiny.feeds["denoiser"]
    (clean,) = tiny.evaluate("denoiser", "fp32")
    prog = convert.load_program(tiny.packages["denoiser", "fp32"])
    conv = [op for op in prog.functions["main"].operations if op.op_type == "conv"][-1]
    weight = conv.inputs["weight"].op.outputs[0].val
    weight.reshape(-1)[0] *= 3.0       # the const's stored array, scaled in place
    (corrupted,) = E.ProgramEvaluator(prog)(feeds)
    assert np.max(np.abs(corrupted - clean)) > 1e-3


def test_wrong_lowering_is_caught(tiny, monkeypatch):
    monkeypatch.setitem(E.IMPLEMENTATIONS, "silu", lambda op, a, ev: [torch.relu(a["x"])])
    (wrong,) = tiny.evaluate("denoiser", "fp32")    # an evaluator built before the patch, too
    assert np.max(np.abs(wrong - tiny.torch["denoiser"][0])) > 1e-2


def test_unsupported_op_fails_before_running(tiny, monkeypatch):
    prog = convert.load_program(tiny.packages["denoiser", "fp32"])
    monkeypatch.delitem(E.IMPLEMENTATIONS, "silu")
    with pytest.raises(E.UnsupportedOp, match="silu") as info:
        E.ProgramEvaluator(prog)
    assert info.value.op_type == "silu"


def test_feeds_are_cast_to_the_input_dtypes(tiny):
    evaluator = tiny.evaluator("text_encoder", "fp32")
    assert evaluator.input_names == ["input_ids"] and evaluator.output_names == ["prompt_embeds"]
    assert evaluator.input_dtypes["input_ids"] == np.int32
    ids = tiny.feeds["text_encoder"]["input_ids"]
    assert ids.dtype == np.int64
    (a,) = evaluator({"input_ids": ids})
    (b,) = evaluator({"input_ids": ids.astype(np.int32)})
    np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError, match="input_ids"):
        evaluator({})


def test_run_observes_every_op_and_keeps_what_is_asked(tiny):
    evaluator = tiny.evaluator("denoiser", "fp16")
    seen = []
    ops = [op for op in evaluator.function.operations
           if op.op_type != "const" and not op.op_type.startswith("constexpr_")]
    silu = next(op.outputs[0].name for op in ops if op.op_type == "silu")
    values = evaluator.run(tiny.feeds["denoiser"], observe=lambda op, outs: seen.append((op.name, outs)),
                           keep={silu})
    assert [name for name, _ in seen] == [op.name for op in ops]
    assert set(values) == {"latents", silu}
    kept = dict(seen)[next(op.name for op in ops if op.outputs[0].name == silu)][0]
    assert torch.equal(values[silu], kept)


# --- single ops, against torch or the documented semantics (programs built with the MIL builder)


def _one_op(shape, body, opset="iOS17"):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=getattr(ct.target, opset))
    def prog(x):
        return body(mb, x)

    return E.ProgramEvaluator(prog)


def test_quantize_rounds_half_to_even_and_clamps():
    x = np.array([[0.25, 0.75, 1.25, -0.75, 100.0, -100.0]], np.float32)
    ev = _one_op(x.shape, lambda mb, x: mb.dequantize(
        input=mb.quantize(input=x, scale=np.float32(0.5), zero_point=np.int8(1), output_dtype="int8"),
        scale=np.float32(0.5), zero_point=np.int8(1)))
    # x / 0.5 = 0.5, 1.5, 2.5, -1.5 -> 0, 2, 2, -2 (half to even); +1; clamp to [-128, 127]
    np.testing.assert_array_equal(ev({"x": x})[0], [[0.0, 1.0, 1.0, -1.0, 63.0, -64.5]])


@pytest.mark.parametrize("case", ["conv_transpose", "bilinear_align", "bilinear_half_pixel", "slice", "interleave"])
def test_single_ops(case):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    cases = {
        "conv_transpose": ((1, 4, 5, 6), lambda mb, x: mb.conv_transpose(x=x, weight=w, strides=[2, 2], pad_type="custom",
                                                                         pad=[1, 1, 1, 1], output_shape=[1, 3, 10, 12]),
                           lambda x: torch.nn.functional.conv_transpose2d(x, torch.from_numpy(w), stride=2, padding=1,
                                                                          output_padding=1)),
        "bilinear_align": ((1, 2, 3, 5), lambda mb, x: mb.upsample_bilinear(x=x, scale_factor_height=2.0,
                                                                            scale_factor_width=1.5, align_corners=True),
                           lambda x: torch.nn.functional.interpolate(x, size=(6, 7), mode="bilinear", align_corners=True)),
        "bilinear_half_pixel": ((1, 2, 3, 5), lambda mb, x: mb.upsample_bilinear(x=x, scale_factor_height=2.0,
                                                                                 scale_factor_width=1.5, align_corners=False),
                                lambda x: torch.nn.functional.interpolate(x, size=(6, 7), mode="bilinear",
                                                                          align_corners=False)),
        "slice": ((4, 5, 6), lambda mb, x: mb.slice_by_index(x=x, begin=[1, -1, 0], end=[3, 0, 5], stride=[1, -2, 2],
                                                             begin_mask=[False, False, True], end_mask=[False, True, False]),
                  lambda x: torch.from_numpy(x.numpy()[1:3, -1::-2, :5:2].copy())),
        "interleave": ((2, 3), lambda mb, x: mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=0, interleave=True),
                       lambda x: torch.stack([x, 2 * x], 1).reshape(4, 3)),
    }
    shape, body, ref = cases[case]
    x = rng.standard_normal(shape).astype(np.float32)
    got = _one_op(shape, body)({"x": x})[0]
    np.testing.assert_allclose(got, ref(torch.from_numpy(x)).numpy(), atol=1e-5)
