"""Graph rewrites applied before partitioning, so XNNPACK takes (nearly) the whole graph.

ExecuTorch's XNNPACK partitioner leaves group/layer norm, nearest upsampling, `chunk` and the
NaN guard of torch's SDPA decomposition on portable kernels (shared/PITFALLS.md): a tiny UNet
became 55 delegated pieces. Each op here is rewritten, at ATen level right after torch.export,
into ops XNNPACK does take, with the same numbers (fp32 tolerance; nearest upsampling exactly):

- group/layer norm -> two-pass mean/variance with `mean.dim` over the two innermost dims of a
  4-D view (XNNPACK's global average pooling), `rsqrt`, and the affine as mul/add;
- scaled_dot_product_attention -> bmm, scale, (+ mask), softmax, bmm on 3-D views;
- nearest upsampling by an integer factor s -> a depthwise transposed convolution with an
  s x s kernel of ones and stride s (each output pixel is one input pixel times 1.0);
- chunk / split -> slices.
Then constants are folded (`constant_prop_pass`): masks, position ids, the baked timestep's
embedding input and the ones kernels become constants instead of portable-kernel subgraphs.
Folded constants are stored contiguous: one keeps the strides of the permute it came from (T5's
relative position bias, dim order 0,2,3,1), and portable kernels that take several tensors
(`where`) refuse inputs of mixed dim orders at run time.
"""
from __future__ import annotations

import math

import torch

aten = torch.ops.aten


def _mean_inner(x4: torch.Tensor) -> torch.Tensor:
    return x4.mean(dim=(2, 3), keepdim=True)


def _normalize(x4: torch.Tensor, eps: float) -> torch.Tensor:
    d = x4 - _mean_inner(x4)
    return d * torch.rsqrt(_mean_inner(d * d) + eps)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    n, c = x.shape[:2]
    spatial = math.prod(x.shape[2:])
    y = _normalize(x.reshape(n, num_groups, c // num_groups, spatial), eps).reshape(x.shape)
    affine_shape = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(affine_shape)
    if bias is not None:
        y = y + bias.reshape(affine_shape)
    return y


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    inner = math.prod(normalized_shape)
    y = _normalize(x.reshape(1, x.numel() // inner, inner, 1), eps).reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    *batch, L, E = q.shape
    S, Ev = k.shape[-2], v.shape[-1]
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        return NotImplemented
    b = math.prod(batch)
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    scores = torch.bmm(q.reshape(b, L, E) * scale, k.reshape(b, S, E).transpose(1, 2))
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool).tril()
    if attn_mask is not None:
        scores = scores.reshape(*batch, L, S)
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype).masked_fill(~attn_mask, float("-inf"))
        scores = (scores + attn_mask).reshape(b, L, S)
    out = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(b, S, Ev))
    return out.reshape(*batch, L, Ev)


def upsample_nearest2d(x, output_size, scale_factors):
    h, w = x.shape[-2:]
    if output_size is not None:
        oh, ow = output_size
    else:
        oh, ow = int(h * scale_factors[0]), int(w * scale_factors[1])
    if oh % h or ow % w or oh // h != ow // w:
        return NotImplemented
    s, c = oh // h, x.shape[1]
    kernel = torch.ones(c, 1, s, s, dtype=x.dtype)
    return torch.nn.functional.conv_transpose2d(x, kernel, stride=s, groups=c)


def _slices(x, dim, sizes):
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [aten.slice.Tensor(x, dim, a, a + n) for a, n in zip(starts, sizes)]


def chunk(x, chunks, dim=0):
    size = x.shape[dim]
    step = -(-size // chunks)
    return _slices(x, dim, [min(step, size - a) for a in range(0, size, step)])


def split(x, split_size, dim=0):
    size = x.shape[dim]
    return _slices(x, dim, [min(split_size, size - a) for a in range(0, size, split_size)])


def split_with_sizes(x, split_sizes, dim=0):
    return _slices(x, dim, list(split_sizes))


TABLE = {
    aten.group_norm.default: group_norm,
    aten.layer_norm.default: layer_norm,
    aten.scaled_dot_product_attention.default: scaled_dot_product_attention,
    aten.upsample_nearest2d.vec: upsample_nearest2d,
    aten.chunk.default: chunk,
    aten.split.Tensor: split,
    aten.split_with_sizes.default: split_with_sizes,
}


def for_xnnpack(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The rewrites above, then constant folding."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return contiguous_constants(constant_prop_pass(program.run_decompositions(TABLE)))


def contiguous_constants(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Every lifted constant, buffer and parameter in the default (contiguous) dim order."""
    sig = program.graph_signature
    targets = {**sig.inputs_to_lifted_tensor_constants, **sig.inputs_to_buffers, **sig.inputs_to_parameters}
    for node in program.graph.nodes:
        name = targets.get(node.name) if node.op == "placeholder" else None
        table = program.constants if name in program.constants else program.state_dict
        value = table.get(name) if name else None
        if value is None or value.is_contiguous():
            continue
        contiguous = value.contiguous()
        if isinstance(value, torch.nn.Parameter):
            contiguous = torch.nn.Parameter(contiguous, requires_grad=value.requires_grad)
        table[name] = contiguous
        node.meta["val"] = node.meta["val"].contiguous()
    return program
