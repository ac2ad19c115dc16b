"""A nearest 2x upsampling read by a 3x3 convolution (diffusers' Upsample2D: every SD UNet and
AutoencoderKL decoder up block) computed without the upsampled image.

Output row 2i+a of conv3x3(upsample2x(x)) (padding 1) reads input rows i+a-1 and i+a only: per
output phase (a, b) a 2x2 kernel whose taps are sums of the 3x3 taps. All four phases are one
2x2 convolution of x (padding 1, 4x the output channels) and are interleaved by a view / permute:
16/36 of the multiply-adds, no upsampled copy. The ExecuTorch target rewrites its ATen program so
(executorch/rewrites.py); the ONNX-based targets swap the module before export (`phase_upsampling`).
"""
from __future__ import annotations

import contextlib

import torch

# _PHASE_TAPS[a][u] marks the 3x3 rows that meet row u of phase a's 2x2 kernel.
_PHASE_TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.float64)


def phase_weights(w: torch.Tensor) -> torch.Tensor:
    """[out, in, 3, 3] -> [4*out, in, 2, 2]: the four phases' kernels, phase (a, b) at block 2a+b,
    summed in float64 and rounded once."""
    k = torch.einsum("auk,oikl,bvl->aboiuv", _PHASE_TAPS, w.detach().double(), _PHASE_TAPS)
    return k.reshape(4 * w.shape[0], w.shape[1], 2, 2).to(w.dtype).contiguous()


class PhaseConv(torch.nn.Module):
    """conv3x3(upsample_nearest2x(x)) as one 2x2 convolution and an interleave. Its parameters are
    named as the convolution's (`weight`, `bias`), and it sits where the convolution sat, so layer
    names (recipe overrides, fallback, reports) are the same as without the rewrite."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.weight = torch.nn.Parameter(phase_weights(conv.weight), requires_grad=False)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach().repeat(4),
                                                                      requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out = self.weight.shape[0] // 4
        phases = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)      # [n, 4*out, h+1, w+1]
        blocks = [phases[:, (2 * a + b) * out:(2 * a + b + 1) * out, a:a + h, b:b + w] for a in (0, 1) for b in (0, 1)]
        grid = torch.cat(blocks, 1).view(n, 2, 2, out, h, w)
        return grid.permute(0, 3, 4, 1, 5, 2).reshape(n, out, 2 * h, 2 * w)


class _PhaseUpsample2D(torch.nn.Module):
    def __init__(self, up):
        super().__init__()
        self.conv = PhaseConv(up.conv)
        self._original = [up]        # not a submodule: its parameters must not reach the export

    def forward(self, hidden_states, output_size=None, *args, **kwargs):
        if output_size is not None and tuple(output_size) != tuple(2 * s for s in hidden_states.shape[-2:]):
            return self._original[0](hidden_states, output_size, *args, **kwargs)
        return self.conv(hidden_states)


def _swappable(module) -> bool:
    from diffusers.models.upsampling import Upsample2D

    conv = getattr(module, "conv", None)
    return (isinstance(module, Upsample2D) and module.interpolate and module.use_conv and not module.use_conv_transpose
            and module.norm is None and module.name == "conv" and isinstance(conv, torch.nn.Conv2d)
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


@contextlib.contextmanager
def phase_upsampling(module: torch.nn.Module):
    """Every swappable Upsample2D inside `module` replaced by its phase form for the block, put back after."""
    swapped = []
    for name, child in list(module.named_modules()):
        if name and _swappable(child):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, _PhaseUpsample2D(child))
            swapped.append((parent, attr, child))
    try:
        yield len(swapped)
    finally:
        for parent, attr, child in swapped:
            setattr(parent, attr, child)
