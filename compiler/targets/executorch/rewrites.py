"""Graph rewrites applied before partitioning, so XNNPACK takes (nearly) the whole graph.

ExecuTorch's XNNPACK partitioner leaves group/layer norm, nearest upsampling, `chunk` and the
NaN guard of torch's SDPA decomposition on portable kernels (shared/PITFALLS.md): a tiny UNet
became 55 delegated pieces. Each op here is rewritten, at ATen level right after torch.export,
into ops XNNPACK does take, with the same numbers (fp32 tolerance; nearest upsampling exactly):

- group/layer norm -> two-pass mean/variance with `mean.dim` over the two innermost dims of a
  4-D view (XNNPACK's global average pooling), `rsqrt`, and the affine as mul/add; a 4-D group
  norm takes per-channel means of the activation itself and averages them per group on the
  [n, c, 1, 1] statistics, so the activation keeps XNNPACK's NHWC layout (7% of an SD decoder's
  time went to the transposes around a grouped view);
- scaled_dot_product_attention -> bmm, scale, (+ mask), softmax, bmm on 3-D views;
- nearest upsampling by an integer factor s -> a depthwise transposed convolution with an
  s x s kernel of ones and stride s (each output pixel is one input pixel times 1.0);
- chunk / split -> slices.
Before those, a nearest 2x upsampling whose only reader is a 3x3 convolution (diffusers'
Upsample2D, TAESD) is computed without the upsampled image: each of the four output phases is a
2x2 convolution of the input with taps summed from the 3x3 kernel, all four as one convolution,
interleaved by view/permute. 16/36 of the multiply-adds at 16/9 of that layer's weights; the
upsampling itself (a depthwise transposed convolution, which XNNPACK runs slowly) was 24% of an
SD decoder's time. A dense 4x4 stride-2 transposed convolution is the same arithmetic, but
XNNPACK's deconvolution ran it 2-4x slower than the phases.
Then constants are folded (`constant_prop_pass`): masks, position ids, the baked timestep's
embedding input and the ones kernels become constants instead of portable-kernel subgraphs.
Folding evaluates in float64 and rounds once to the graph's dtype: torch's float32 kernels
(sin, exp, the time MLP's matmuls) differ in their last bits between vector units
(ATEN_CPU_CAPABILITY), and the folded bytes must be the same on every build machine.
Folded constants are stored contiguous: one keeps the strides of the permute it came from (T5's
relative position bias, dim order 0,2,3,1), and portable kernels that take several tensors
(`where`) refuse inputs of mixed dim orders at run time.
"""
from __future__ import annotations

import math

import torch

from ..upsampling import phase_weights

aten = torch.ops.aten


def _mean_inner(x4: torch.Tensor) -> torch.Tensor:
    return x4.mean(dim=(2, 3), keepdim=True)


def _normalize(x4: torch.Tensor, eps: float) -> torch.Tensor:
    d = x4 - _mean_inner(x4)
    return d * torch.rsqrt(_mean_inner(d * d) + eps)


def _group_mean(s: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[n, c, 1, 1] per-channel statistics -> their group's mean, again per channel. Broadcast by a
    multiply with ones (exact) rather than expand, which XNNPACK does not take."""
    n, c = s.shape[:2]
    g = _mean_inner(s.reshape(n, num_groups, c // num_groups, 1))
    return (g * torch.ones(1, 1, c // num_groups, 1, dtype=s.dtype)).reshape(n, c, 1, 1)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    n, c = x.shape[:2]
    if x.dim() == 4:
        # Statistics per channel first, then per group on the [n, c, 1, 1] tensor: the activation
        # is never reshaped, so XNNPACK keeps it NHWC (a grouped view costs three full-size
        # transposes per norm). Equal-sized groups make the mean of means the group's mean.
        d = x - _group_mean(_mean_inner(x), num_groups)
        y = d * torch.rsqrt(_group_mean(_mean_inner(d * d), num_groups) + eps)
    else:
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


def _fusable(conv, params: dict) -> bool:
    up = conv.args[0]
    if getattr(up, "target", None) is not aten.upsample_nearest2d.vec or len(up.users) != 1 or conv.kwargs:
        return False
    weight, bias = conv.args[1], conv.args[2] if len(conv.args) > 2 else None
    stride, padding, dilation, groups = (list(conv.args[3:]) + [None] * 4)[:4]
    x, y = up.args[0].meta["val"], up.meta["val"]
    return (weight.name in params and weight.meta["val"].shape[-2:] == (3, 3) and len(weight.users) == 1
            and (bias is None or (bias.name in params and len(bias.users) == 1))
            and list(stride or [1, 1]) == [1, 1] and list(padding or [0, 0]) == [1, 1]
            and list(dilation or [1, 1]) == [1, 1] and (groups or 1) == 1
            and x.dim() == 4 and tuple(y.shape[-2:]) == (2 * x.shape[-2], 2 * x.shape[-1]))


class _Emitter:
    """Adds ATen nodes before `anchor`, each with the anchor's metadata (module path: overrides,
    fallback and sensitivity find the layer by it) and its value computed on fake tensors."""

    def __init__(self, graph, anchor, fake):
        self.graph, self.anchor, self.fake = graph, anchor, fake

    def __call__(self, op, *args, **kwargs):
        values = [a.meta["val"] if isinstance(a, torch.fx.Node) else
                  [v.meta["val"] for v in a] if isinstance(a, list) and a and isinstance(a[0], torch.fx.Node)
                  else a for a in args]
        with self.graph.inserting_before(self.anchor):
            node = self.graph.call_function(op, tuple(args), kwargs)
        node.meta = {k: v for k, v in self.anchor.meta.items() if k != "val"}
        with self.fake:
            node.meta["val"] = op(*values, **kwargs)
        return node


def _set_param(program, node, value: torch.Tensor) -> None:
    name = program.graph_signature.inputs_to_parameters[node.name]
    old = program.state_dict[name]
    program.state_dict[name] = torch.nn.Parameter(value, requires_grad=old.requires_grad)
    node.meta["val"] = node.meta["val"].new_empty(value.shape)


def fuse_upsampling_into_conv(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """conv3x3(upsample_nearest2d(x, 2))  ==>  the four output phases as one 2x2 convolution of x
    (padding 1, 4x the output channels), each phase sliced from it, interleaved by view/permute.
    The convolution's weight and bias parameters keep their names and take the phase values."""
    from torch._guards import detect_fake_mode

    params = program.graph_signature.inputs_to_parameters
    graph = program.graph
    fake = detect_fake_mode([n.meta["val"] for n in graph.nodes if "val" in n.meta])
    for conv in [n for n in graph.nodes if n.target is aten.conv2d.default]:
        if not _fusable(conv, params):
            continue
        up, weight = conv.args[0], conv.args[1]
        bias = conv.args[2] if len(conv.args) > 2 else None
        x = up.args[0]
        n, _, h, w = x.meta["val"].shape
        out = weight.meta["val"].shape[0]
        _set_param(program, weight, phase_weights(program.state_dict[params[weight.name]]))
        if bias is not None:
            _set_param(program, bias, program.state_dict[params[bias.name]].detach().repeat(4))
        emit = _Emitter(graph, conv, fake)
        phases = emit(aten.conv2d.default, x, weight, bias, [1, 1], [1, 1])        # [n, 4*out, h+1, w+1]
        blocks = []
        for a in range(2):
            for b in range(2):
                block = emit(aten.slice.Tensor, phases, 1, (2 * a + b) * out, (2 * a + b + 1) * out)
                block = emit(aten.slice.Tensor, emit(aten.slice.Tensor, block, 2, a, a + h), 3, b, b + w)
                blocks.append(block)
        grid = emit(aten.view.default, emit(aten.cat.default, blocks, 1), [n, 2, 2, out, h, w])
        interleaved = emit(aten.clone.default, emit(aten.permute.default, grid, [0, 3, 4, 1, 5, 2]),
                           memory_format=torch.contiguous_format)
        fused = emit(aten.view.default, interleaved, [n, out, 2 * h, 2 * w])
        conv.replace_all_uses_with(fused)
        graph.erase_node(conv)
        graph.erase_node(up)
    program.graph_module.recompile()
    return program


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
    """The rewrites above, then constant folding (in float64)."""
    from unittest import mock

    from executorch.exir.passes import constant_prop_pass as folding

    program = fuse_upsampling_into_conv(program).run_decompositions(TABLE)
    exact = _folded_in_float64(folding)
    # ExecuTorch's pass with its evaluation step replaced: it has no hook for the precision
    with mock.patch.object(folding, "get_propagated_const_tensor_dict", exact):
        program = folding.constant_prop_pass(program)
    return contiguous_constants(program)


def _folded_in_float64(folding):
    """ExecuTorch's get_propagated_const_tensor_dict, evaluating every foldable node with float
    tensors (and float32 dtype arguments) in float64, each result rounded once to its own dtype."""
    from collections import OrderedDict

    from torch.utils import _pytree as pytree

    def wide(x):
        if isinstance(x, torch.Tensor) and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return x.double()
        return torch.float64 if x in (torch.float32, torch.float16, torch.bfloat16) else x

    def propagate(program, custom_skip_targets=None) -> OrderedDict:
        exact = folding.get_constant_placeholder_dict(program)   # node -> value, float64 once computed
        rounded = OrderedDict(exact)
        skip = custom_skip_targets if custom_skip_targets is not None else folding._DEFAULT_SKIP_TARGETS
        for node in program.graph.nodes:
            if (node.op != "call_function" or node.target is folding.memory.alloc or node.target in skip
                    or node.is_impure() or not folding.is_const(node.args, program, exact)
                    or not folding.is_const(node.kwargs, program, exact)):
                continue
            args, kwargs = pytree.tree_map(lambda x: folding.get_data(x, program, exact), (node.args, node.kwargs))
            args, kwargs = pytree.tree_map(wide, (args, kwargs))
            with torch.no_grad():
                value = node.target(*args, **kwargs)
            exact[node] = value
            expected = node.meta.get("val")
            if isinstance(value, torch.Tensor) and isinstance(expected, torch.Tensor):
                value = value.to(expected.dtype)
                if 0 in value.stride():
                    value = value.contiguous()
            rounded[node] = value
        return rounded

    return propagate


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
