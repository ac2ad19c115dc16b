"""diffusers' Upsample2D exported as its four phase convolutions (issue 30; targets/upsampling.py):
no upsampled image in the ONNX graph, the same numbers, the same layer names and weight names, the
torch module put back after export; OpenVINO reads the same form."""
from __future__ import annotations

import numpy as np
import torch

from compiler.wrap import Graph


class _Decoderish(torch.nn.Module):
    """A conv, diffusers' Upsample2D, a conv: an AutoencoderKL up block in miniature."""

    def __init__(self):
        from diffusers.models.upsampling import Upsample2D

        super().__init__()
        self.conv_in = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.up = Upsample2D(8, use_conv=True, out_channels=6)
        self.conv_out = torch.nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.up(torch.relu(self.conv_in(x))))


def test_the_phase_form_computes_what_upsample_then_conv_computes():
    from compiler.targets.upsampling import PhaseConv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, 6, 9)
    with torch.no_grad():
        expected = conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        got = PhaseConv(conv)(x)
    assert got.shape == expected.shape == (2, 7, 12, 18)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_onnx_export_has_no_upsampled_image_and_keeps_names_and_numbers(tmp_path):
    import onnx

    from compiler.targets.onnx import OnnxOptions, OnnxTarget
    from compiler.targets.onnx.quantize import weight_layers
    from compiler.targets.onnx.run import session_runner

    torch.manual_seed(0)
    module = _Decoderish().eval()
    up = module.up
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = module(x).numpy()
    graph = Graph("vae_decoder", module, (x,), ["latents"], ["image"])
    target = OnnxTarget()
    forms = {}
    for phases in (True, False):
        out = tmp_path / str(phases)
        out.mkdir()
        path = out / target.export(graph, out, OnnxOptions(phase_upsampling=phases)).main
        model = onnx.load(str(path))
        forms[phases] = model
        np.testing.assert_allclose(session_runner(path)({"latents": x.numpy()})[0], expected, rtol=1e-4, atol=1e-5)
    assert module.up is up                                # the torch module is put back
    ops = {p: [n.op_type for n in m.graph.node] for p, m in forms.items()}
    assert "Resize" in ops[False] and "Resize" not in ops[True]
    layers = {p: {l.name: l for l in weight_layers(m)} for p, m in forms.items()}
    assert sorted(layers[True]) == sorted(layers[False]) == ["conv_in", "conv_out", "up.conv"]
    assert layers[True]["up.conv"].params == 4 * 6 * 8 * 2 * 2 + 4 * 6                   # the phase kernels ship
    # 16/36 of the work, and a one-pixel border of the phases: (9/8)^2 more at this 8x8 input
    assert layers[True]["up.conv"].flops == layers[False]["up.conv"].flops * 16 / 36 * 81 / 64
    assert {"up.conv.weight", "up.conv.bias"} <= {i.name for i in forms[True].graph.initializer}


def test_openvino_reads_the_phase_form_and_keeps_no_onnx(tmp_path):
    import openvino as ov

    from compiler.targets.openvino import OpenVinoTarget

    torch.manual_seed(0)
    module = _Decoderish().eval()
    x = torch.randn(1, 4, 8, 8)
    graph = Graph("vae_decoder", module, (x,), ["latents"], ["image"])
    artifact = OpenVinoTarget().export(graph, tmp_path, OpenVinoTarget.Options())
    types = {op.get_type_name() for op in ov.Core().read_model(str(tmp_path / artifact.main)).get_ops()}
    assert "Interpolate" not in types and "Convolution" in types
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae_decoder.bin", "vae_decoder.xml"]   # no ONNX left
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(OpenVinoTarget().runner(tmp_path / artifact.main)({"latents": x.numpy()})[0], expected,
                               rtol=1e-4, atol=1e-5)
