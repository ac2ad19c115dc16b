"""The ML Program evaluator: runs the MIL program inside a Core ML package on Linux.

Why: Core ML itself (MLModel.predict) only runs on macOS, yet compile must check on any machine
that the program it wrote computes what the torch student computes. So the evaluator walks the
MIL program coremltools built -- the very ops, constants and dtypes that are in the package --
and computes each op with a torch kernel (float32 compute, CPU).

What is emulated:
- fp16 storage: every op whose output var is fp16 in the program has its result rounded to fp16
  (computed in float32, then rounded), fp16 feeds are rounded on the way in, and weights hold the
  fp16 values the package stores. An fp16 program therefore shows fp16's rounding and overflow
  (|x| > 65504 becomes inf), not just the float32 math.
- compressed weights: constexpr_* ops (int8 affine / blockwise shift-scale, lookup tables,
  sparsity masks, casts) are decompressed once, when the evaluator is built.
- int8 activations (iOS17 quantize / dequantize): round half to even, add the zero point, clamp
  to the integer range; the int8 values are carried as int8 tensors.
- integer ops and casts (truncation toward zero, wrap-around of narrow ints) as numpy does them.

What is not: how a compute unit evaluates each op inside. The Neural Engine and the GPU may
accumulate convolutions and matmuls in fp16, keep fp16 intermediates inside layer_norm, softmax
and attention, fuse ops, and approximate transcendentals; here each op is exact-ish float32 with
one rounding of its output. Expect a real device to differ from the evaluator by about fp16's
error budget -- the evaluator says "this program computes the student", it is not a bit-exact
simulator of a chip. Undefined behavior (out-of-range gather indices) is an error here.

An op type with no reference implementation (control flow, states, and the rarer ops) raises
UnsupportedOp when the evaluator is built, before anything runs: an unchecked op would make the
check meaningless. Each op's result must have the shape the program declares (EvaluationError).
The implementations live in IMPLEMENTATIONS (op type -> function), looked up at every call, so a
test can swap one for a wrong lowering and see the check fail.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.types.symbolic import is_symbolic


class UnsupportedOp(Exception):
    """An op type (or an op's parameter value) the evaluator has no reference implementation for."""

    def __init__(self, op_type: str, op_name: str = "", detail: str = ""):
        where = f" (op {op_name!r})" if op_name else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"ML Program op type {op_type!r}{where} is not supported by the evaluator{extra}")
        self.op_type = op_type
        self.op_name = op_name


class EvaluationError(RuntimeError):
    """An op failed, or produced a shape other than the one the program declares."""


# op type -> fn(op, inputs, evaluator) -> list of torch tensors (one per op output); `inputs`
# maps each input name to its value: a torch tensor, a python value for string / absent optional
# inputs (the op's declared default), or a list of tensors for tuple inputs (concat's values).
IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {}


def _implements(*op_types: str):
    def register(fn):
        for op_type in op_types:
            IMPLEMENTATIONS[op_type] = fn
        return fn
    return register


# --------------------------------------------------------------------------------------------
# dtypes


def _torch_dtype(dtype) -> Optional[torch.dtype]:
    """How values of a MIL dtype are held: floats as float32 (fp16 values rounded), integers in
    the narrowest torch dtype that holds them, strings as python values (None)."""
    if types.is_float(dtype):
        return torch.float32
    if types.is_bool(dtype):
        return torch.bool
    if types.is_int(dtype):
        width, unsigned = dtype.get_bitwidth(), dtype.is_unsigned()
        if width <= 8:
            return torch.uint8 if unsigned else torch.int8
        if width <= 16:
            return torch.int32 if unsigned else torch.int16
        if width <= 32:
            return torch.int64 if unsigned else torch.int32
        return torch.int64
    return None


_NUMPY_DTYPES = {torch.float32: np.float32, torch.bool: np.bool_, torch.int8: np.int8, torch.uint8: np.uint8,
                 torch.int16: np.int16, torch.int32: np.int32, torch.int64: np.int64}


def _round_fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(torch.float32)


def _conform(var, value, fp16_storage: bool = True):
    """`value` held as `var`'s dtype says: fp16 vars are rounded to fp16 (the storage emulation,
    unless `fp16_storage` is off), integer / bool vars converted as numpy's astype would."""
    if not torch.is_tensor(value):
        return value
    dtype = var.dtype
    if types.is_float(dtype):
        if value.dtype != torch.float32:
            value = value.to(torch.float32)
        return _round_fp16(value) if dtype == types.fp16 and fp16_storage else value
    target = _torch_dtype(dtype)
    if target is not None and value.dtype != target:
        value = value.to(target)
    return value


def _const_tensor(var):
    """A const var's value as the evaluator holds it (python value for strings)."""
    val = var.val
    if isinstance(val, (str, bytes)) or types.is_str(var.dtype):
        return val
    target = _torch_dtype(var.dtype)
    if target is None:
        return val
    array = np.asarray(val).astype(_NUMPY_DTYPES[target], copy=False)
    return torch.from_numpy(np.ascontiguousarray(array))


# --------------------------------------------------------------------------------------------
# reading parameters (const inputs arrive as tensors, defaults as python values)


def _ints(v) -> Optional[list[int]]:
    if v is None:
        return None
    if torch.is_tensor(v):
        return [int(i) for i in v.reshape(-1).tolist()]
    return [int(i) for i in np.asarray(list(v) if isinstance(v, range) else v).reshape(-1)]


def _int(v) -> Optional[int]:
    return None if v is None else int(v.item() if torch.is_tensor(v) else v)


def _float(v) -> Optional[float]:
    return None if v is None else float(v.item() if torch.is_tensor(v) else v)


def _bool(v) -> Optional[bool]:
    return None if v is None else bool(v.item() if torch.is_tensor(v) else v)


def _bools(v) -> Optional[list[bool]]:
    if v is None:
        return None
    if torch.is_tensor(v):
        return [bool(b) for b in v.reshape(-1).tolist()]
    return [bool(b) for b in np.asarray(v).reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _along(param: torch.Tensor, rank: int, axis: Optional[int]) -> torch.Tensor:
    """A scalar or per-`axis` vector parameter (scale, zero point), broadcastable over a tensor of
    `rank` dims."""
    if param.dim() in (0, rank):
        return param
    shape = [1] * rank
    shape[_axis(axis if axis is not None else 0, rank)] = param.numel()
    return param.reshape(shape)


# --------------------------------------------------------------------------------------------
# elementwise


def _unary(fn):
    return lambda op, a, ev: [fn(a["x"])]


def _binary(fn):
    return lambda op, a, ev: [fn(a["x"], a["y"])]


_UNARY = {
    "abs": torch.abs, "acos": torch.acos, "asin": torch.asin, "atan": torch.atan, "atanh": torch.atanh,
    "ceil": torch.ceil, "cos": torch.cos, "cosh": torch.cosh, "erf": torch.erf, "exp": torch.exp,
    "exp2": lambda x: torch.pow(2.0, x), "floor": torch.floor, "logical_not": torch.logical_not,
    # MIL round is numpy's: half to even
    "round": torch.round, "sign": torch.sign, "sin": torch.sin, "sinh": torch.sinh, "sqrt": torch.sqrt,
    "square": lambda x: x * x, "tan": torch.tan, "tanh": torch.tanh, "identity": lambda x: x,
    "relu": torch.relu, "relu6": lambda x: torch.clamp(x, 0.0, 6.0), "sigmoid": torch.sigmoid,
    "silu": F.silu, "softplus": F.softplus, "softsign": F.softsign,
}
_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": torch.true_divide,
    "floor_div": lambda x, y: torch.div(x, y, rounding_mode="floor"),
    "mod": torch.remainder,  # numpy's mod: the sign of the divisor
    "pow": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum,
    "equal": torch.eq, "not_equal": torch.ne, "greater": torch.gt, "greater_equal": torch.ge,
    "less": torch.lt, "less_equal": torch.le,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
}
for _name, _fn in _UNARY.items():
    IMPLEMENTATIONS[_name] = _unary(_fn)
for _name, _fn in _BINARY.items():
    IMPLEMENTATIONS[_name] = _binary(_fn)


@_implements("log")
def _log(op, a, ev):
    return [torch.log(a["x"] + _float(a["epsilon"]))]


@_implements("rsqrt")
def _rsqrt(op, a, ev):
    return [torch.rsqrt(a["x"] + _float(a["epsilon"]))]


@_implements("inverse")
def _inverse(op, a, ev):
    return [torch.reciprocal(a["x"] + _float(a["epsilon"]))]


@_implements("threshold")
def _threshold(op, a, ev):
    return [torch.clamp(a["x"], min=_float(a["alpha"]))]


@_implements("clip")
def _clip(op, a, ev):
    # min(max(x, alpha), beta), as torch.clamp
    return [torch.clamp(a["x"], _float(a["alpha"]), _float(a["beta"]))]


@_implements("cast")
def _cast(op, a, ev):
    # the conversion itself is _conform's (float -> int truncates, narrow ints wrap)
    return [a["x"]]


@_implements("select")
def _select(op, a, ev):
    return [torch.where(a["cond"].to(torch.bool), a["a"], a["b"])]


# --------------------------------------------------------------------------------------------
# activations


@_implements("gelu")
def _gelu(op, a, ev):
    x, mode = a["x"], a["mode"]
    if mode == "EXACT":
        return [F.gelu(x)]
    if mode == "TANH_APPROXIMATION":
        return [F.gelu(x, approximate="tanh")]
    if mode == "SIGMOID_APPROXIMATION":
        return [x * torch.sigmoid(1.702 * x)]
    raise UnsupportedOp(op.op_type, op.name, f"mode {mode!r}")


@_implements("softmax")
def _softmax(op, a, ev):
    return [torch.softmax(a["x"], dim=_int(a["axis"]))]


@_implements("elu")
def _elu(op, a, ev):
    return [F.elu(a["x"], alpha=_float(a["alpha"]))]


@_implements("leaky_relu")
def _leaky_relu(op, a, ev):
    return [F.leaky_relu(a["x"], _float(a["alpha"]))]


@_implements("linear_activation")
def _linear_activation(op, a, ev):
    return [_float(a["alpha"]) * a["x"] + _float(a["beta"])]


@_implements("scaled_tanh")
def _scaled_tanh(op, a, ev):
    return [_float(a["alpha"]) * torch.tanh(_float(a["beta"]) * a["x"])]


@_implements("sigmoid_hard")
def _sigmoid_hard(op, a, ev):
    return [torch.clamp(_float(a["alpha"]) * a["x"] + _float(a["beta"]), 0.0, 1.0)]


@_implements("clamped_relu")
def _clamped_relu(op, a, ev):
    x = a["x"]
    return [torch.clamp(torch.where(x >= 0, x, _float(a["alpha"]) * x), max=_float(a["beta"]))]


@_implements("thresholded_relu")
def _thresholded_relu(op, a, ev):
    x = a["x"]
    return [torch.where(x >= _float(a["alpha"]), x, torch.zeros_like(x))]


# --------------------------------------------------------------------------------------------
# linear algebra and convolution


@_implements("linear")
def _linear(op, a, ev):
    return [F.linear(a["x"], a["weight"], _tensor_or_none(a["bias"]))]


def _tensor_or_none(v):
    if v is None or torch.is_tensor(v):
        return v
    return torch.as_tensor(np.asarray(v, dtype=np.float32))


@_implements("matmul")
def _matmul(op, a, ev):
    x, y = a["x"], a["y"]
    if _bool(a["transpose_x"]) and x.dim() > 1:
        x = x.transpose(-1, -2)
    if _bool(a["transpose_y"]) and y.dim() > 1:
        y = y.transpose(-1, -2)
    return [torch.matmul(x, y)]


@_implements("einsum")
def _einsum(op, a, ev):
    return [torch.einsum(a["equation"], *a["values"])]


def _conv_pads(op, pad_type, pad, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as MIL's pad types define it."""
    n = len(kernel)
    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max(0, s * math.ceil(size / s) - size + (k - 1) * d + 1 - s)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise UnsupportedOp(op.op_type, op.name, f"pad_type {pad_type!r}")


def _pad_spatial(x: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
    flat = [p for before_after in reversed(pads) for p in before_after]
    return F.pad(x, flat)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_implements("conv")
def _conv(op, a, ev):
    x, w = a["x"], a["weight"]
    n = x.dim() - 2
    strides, dilations = _ints(a["strides"]), _ints(a["dilations"])
    pads = _conv_pads(op, a["pad_type"], _ints(a["pad"]), x.shape[2:], w.shape[2:], strides, dilations)
    if all(b == e for b, e in pads):
        padding = [b for b, _ in pads]
    else:
        x, padding = _pad_spatial(x, pads), 0
    return [_CONV[n](x, w, _tensor_or_none(a["bias"]), strides, padding, dilations, _int(a["groups"]))]


@_implements("conv_transpose")
def _conv_transpose(op, a, ev):
    """The full transposed convolution, then cropped by the op's padding to the declared size."""
    x, w = a["x"], a["weight"]
    n = x.dim() - 2
    strides, dilations = _ints(a["strides"]), _ints(a["dilations"])
    full = _CONV_T[n](x, w, None, strides, 0, 0, _int(a["groups"]), dilations)
    pad_type, pad = a["pad_type"], _ints(a["pad"])
    out_sizes = _ints(a["output_shape"])
    for i in range(n):
        k_eff = (w.shape[2 + i] - 1) * dilations[i] + 1
        if pad_type == "custom":
            before, after = pad[2 * i], pad[2 * i + 1]
        elif pad_type == "valid":
            before, after = 0, 0
        elif pad_type == "same":
            total = k_eff - strides[i]
            before, after = total // 2, total - total // 2
        else:
            raise UnsupportedOp(op.op_type, op.name, f"pad_type {pad_type!r}")
        size = full.shape[2 + i] - before - after
        if out_sizes is not None:
            size = out_sizes[-n + i]
        full = _crop_or_pad(full, 2 + i, before, size)
    bias = _tensor_or_none(a["bias"])
    if bias is not None:
        full = full + bias.reshape([1, -1] + [1] * n)
    return [full]


def _crop_or_pad(x: torch.Tensor, dim: int, start: int, size: int) -> torch.Tensor:
    """x[start:start+size] along dim; negative start / running past the end pads with zeros."""
    if start < 0:
        x = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [-start, 0])
        start = 0
    short = start + size - x.shape[dim]
    if short > 0:
        x = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [0, short])
    return x.narrow(dim, start, size)


@_implements("scaled_dot_product_attention")
def _sdpa(op, a, ev):
    mask = a.get("attn_mask")
    return [F.scaled_dot_product_attention(a["query"], a["key"], a["value"], attn_mask=mask)]


# --------------------------------------------------------------------------------------------
# normalization and reduction


@_implements("layer_norm")
def _layer_norm(op, a, ev):
    x = a["x"]
    rank = x.dim()
    axes = sorted(_axis(i, rank) for i in _ints(a["axes"]))
    gamma, beta, eps = _tensor_or_none(a["gamma"]), _tensor_or_none(a["beta"]), _float(a["epsilon"])
    if axes == list(range(rank - len(axes), rank)):
        return [F.layer_norm(x, x.shape[rank - len(axes):], gamma, beta, eps)]
    mean = x.mean(dim=axes, keepdim=True)
    var = (x - mean).square().mean(dim=axes, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(rank)]
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return [y]


@_implements("instance_norm")
def _instance_norm(op, a, ev):
    return [F.instance_norm(a["x"], weight=_tensor_or_none(a["gamma"]), bias=_tensor_or_none(a["beta"]),
                            eps=_float(a["epsilon"]))]


@_implements("batch_norm")
def _batch_norm(op, a, ev):
    return [F.batch_norm(a["x"], a["mean"].reshape(-1), a["variance"].reshape(-1),
                         _flat_or_none(a["gamma"]), _flat_or_none(a["beta"]),
                         training=False, eps=_float(a["epsilon"]))]


def _flat_or_none(v):
    v = _tensor_or_none(v)
    return None if v is None else v.reshape(-1)


def _reduction(fn):
    def reduce(op, a, ev):
        x = a["x"]
        axes = _ints(a["axes"])
        keep = bool(_bool(a["keep_dims"]))
        dims = list(range(x.dim())) if axes is None else sorted({_axis(i, x.dim()) for i in axes})
        if not dims:
            return [x]
        return [fn(x, dims, keep)]
    return reduce


def _reduce_prod(x, dims, keep):
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, dim=d, keepdim=True)
    return x if keep else x.squeeze(tuple(dims))


_REDUCTIONS = {
    "reduce_mean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "reduce_sum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "reduce_max": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "reduce_min": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "reduce_prod": _reduce_prod,
    "reduce_l1_norm": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    "reduce_l2_norm": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "reduce_sum_square": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "reduce_log_sum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "reduce_log_sum_exp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}
for _name, _fn in _REDUCTIONS.items():
    IMPLEMENTATIONS[_name] = _reduction(_fn)


@_implements("reduce_argmax", "reduce_argmin")
def _reduce_arg(op, a, ev):
    fn = torch.argmax if op.op_type == "reduce_argmax" else torch.argmin
    return [fn(a["x"], dim=_int(a["axis"]), keepdim=bool(_bool(a["keep_dims"])))]


# --------------------------------------------------------------------------------------------
# shapes and layout


@_implements("reshape")
def _reshape(op, a, ev):
    x = a["x"]
    shape = _ints(a["shape"])
    # a 0 copies the input dim it lines up with, counting from the right (iOS17; the same as
    # iOS15's rule when the ranks match); past the input's rank it is 1
    for i, s in enumerate(shape):
        if s == 0:
            j = x.dim() - (len(shape) - i)
            shape[i] = x.shape[j] if j >= 0 else 1
    return [x.reshape(shape)]


@_implements("transpose")
def _transpose(op, a, ev):
    x = a["x"]
    return [x.permute([_axis(p, x.dim()) for p in _ints(a["perm"])])]


@_implements("expand_dims")
def _expand_dims(op, a, ev):
    x = a["x"]
    axes = _ints(a["axes"])
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(i, rank) for i in axes):
        x = x.unsqueeze(axis)
    return [x]


@_implements("squeeze")
def _squeeze(op, a, ev):
    x = a["x"]
    axes = _ints(a["axes"])
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(_axis(i, x.dim()) for i in axes))]


@_implements("flatten2d")
def _flatten2d(op, a, ev):
    x = a["x"]
    axis = _axis(_int(a["axis"]), x.dim())
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


@_implements("concat")
def _concat(op, a, ev):
    values = list(a["values"])
    axis = _axis(_int(a["axis"]), values[0].dim())
    if _bool(a["interleave"]):
        # [a0, b0, a1, b1, ...] along axis: stack behind the axis, then merge
        stacked = torch.stack(values, dim=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return [stacked.reshape(shape)]
    return [torch.cat(values, dim=axis)]


@_implements("stack")
def _stack(op, a, ev):
    values = list(a["values"])
    return [torch.stack(values, dim=_axis(_int(a["axis"]), values[0].dim() + 1))]


@_implements("split")
def _split(op, a, ev):
    x = a["x"]
    axis = _axis(_int(a["axis"]), x.dim())
    sizes = _ints(a["split_sizes"])
    if sizes is None:
        sizes = x.shape[axis] // _int(a["num_splits"])
    return list(torch.split(x, sizes, dim=axis))


def _index(x: torch.Tensor, index: list) -> torch.Tensor:
    """x[index] with numpy semantics, negative steps included (torch slicing has none)."""
    for dim in reversed(range(len(index))):
        item = index[dim]
        if isinstance(item, int):
            x = x.select(dim, item + x.shape[dim] if item < 0 else item)
            continue
        start, stop, step = item.indices(x.shape[dim])
        if step == 1:
            x = x.narrow(dim, start, max(0, stop - start))
        else:
            idx = torch.arange(start, stop, step, dtype=torch.long)
            x = x.index_select(dim, idx)
    return x


@_implements("slice_by_index")
def _slice_by_index(op, a, ev):
    x = a["x"]
    rank = x.dim()
    begin, end = _ints(a["begin"]), _ints(a["end"])
    stride = _ints(a["stride"]) or [1] * rank
    begin_mask = _bools(a["begin_mask"]) or [False] * rank
    end_mask = _bools(a["end_mask"]) or [False] * rank
    squeeze_mask = _bools(a["squeeze_mask"]) or [False] * rank
    index = []
    for d in range(rank):
        if squeeze_mask[d]:
            index.append(begin[d])
        else:
            index.append(slice(None if begin_mask[d] else begin[d], None if end_mask[d] else end[d], stride[d]))
    return [_index(x, index)]


@_implements("slice_by_size")
def _slice_by_size(op, a, ev):
    x = a["x"]
    begin, size = _ints(a["begin"]), _ints(a["size"])
    index = []
    for d, (b, s) in enumerate(zip(begin, size)):
        b = b + x.shape[d] if b < 0 else b
        index.append(slice(b, None if s == -1 else b + s))
    return [_index(x, index)]


def _checked_indices(op, indices: torch.Tensor, size: int) -> torch.Tensor:
    """int64 indices; negatives count from the end before iOS17, and are out of range (undefined
    on device, an error here) from iOS17 on, which added validate_indices."""
    indices = indices.to(torch.long)
    negative_ok = "validate_indices" not in type(op).input_spec.input_types
    low = -size if negative_ok else 0
    if indices.numel() and (int(indices.min()) < low or int(indices.max()) >= size):
        raise EvaluationError(f"op {op.op_type} {op.name!r}: index out of range [{low}, {size})")
    return torch.where(indices < 0, indices + size, indices)


def _gather_plain(op, x, indices, axis, batch_dims):
    if batch_dims:
        return torch.stack([_gather_plain(op, x[i], indices[i], axis - 1, batch_dims - 1)
                            for i in range(x.shape[0])])
    idx = _checked_indices(op, indices, x.shape[axis])
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:]))


@_implements("gather")
def _gather(op, a, ev):
    x = a["x"]
    axis = _axis(_int(a["axis"]), x.dim())
    return [_gather_plain(op, x, a["indices"], axis, _int(a.get("batch_dims")) or 0)]


@_implements("gather_along_axis")
def _gather_along_axis(op, a, ev):
    x = a["x"]
    axis = _axis(_int(a["axis"]), x.dim())
    return [torch.gather(x, axis, _checked_indices(op, a["indices"], x.shape[axis]))]


def _gather_nd_plain(op, x, indices, batch_dims):
    if batch_dims:
        return torch.stack([_gather_nd_plain(op, x[i], indices[i], batch_dims - 1) for i in range(x.shape[0])])
    k = indices.shape[-1]
    flat = indices.reshape(-1, k).to(torch.long)
    picks = tuple(_checked_indices(op, flat[:, j], x.shape[j]) for j in range(k))
    return x[picks].reshape(tuple(indices.shape[:-1]) + tuple(x.shape[k:]))


@_implements("gather_nd")
def _gather_nd(op, a, ev):
    return [_gather_nd_plain(op, a["x"], a["indices"], _int(a.get("batch_dims")) or 0)]


@_implements("tile")
def _tile(op, a, ev):
    return [a["x"].repeat(_ints(a["reps"]))]


@_implements("reverse")
def _reverse(op, a, ev):
    x = a["x"]
    axes = _ints(a["axes"])
    return [torch.flip(x, list(range(x.dim())) if axes is None else [_axis(i, x.dim()) for i in axes])]


@_implements("pixel_shuffle")
def _pixel_shuffle(op, a, ev):
    return [F.pixel_shuffle(a["x"], _int(a["upscale_factor"]))]


@_implements("pixel_unshuffle")
def _pixel_unshuffle(op, a, ev):
    return [F.pixel_unshuffle(a["x"], _int(a["downscale_factor"]))]


@_implements("pad")
def _pad(op, a, ev):
    x = a["x"]
    pad = _ints(a["pad"])
    mode = a["mode"]
    # MIL pads (before, after) from the first padded dim on; torch from the last dim back
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
    flat = [p for pair in reversed(pairs) for p in pair]
    if mode == "constant":
        return [F.pad(x, flat, value=_float(a["constant_val"]))]
    if mode in ("reflect", "replicate"):
        return [_pad_batched(x, flat, mode, len(pairs))]
    raise UnsupportedOp(op.op_type, op.name, f"mode {mode!r}")


def _pad_batched(x, flat, mode, n):
    # torch's reflect / replicate want [N, C, *spatial] with 1-3 padded dims
    lead = x.shape[: x.dim() - n]
    y = x.reshape((1, -1) + tuple(x.shape[x.dim() - n:]))
    y = F.pad(y, flat, mode=mode)
    return y.reshape(tuple(lead) + tuple(y.shape[2:]))


# --------------------------------------------------------------------------------------------
# tensors made from nothing


@_implements("fill")
def _fill(op, a, ev):
    value = a["value"]
    value = value.item() if torch.is_tensor(value) else value
    return [torch.full(_ints(a["shape"]), value)]


@_implements("range_1d")
def _range_1d(op, a, ev):
    start, end, step = (a[k].item() for k in ("start", "end", "step"))
    return [torch.arange(start, end, step)]


@_implements("shape")
def _shape(op, a, ev):
    return [torch.tensor(list(a["x"].shape), dtype=torch.int32)]


@_implements("fill_like")
def _fill_like(op, a, ev):
    value = a["value"]
    return [torch.full(a["ref_tensor"].shape, value.item() if torch.is_tensor(value) else value)]


# --------------------------------------------------------------------------------------------
# resizing


def _spatial_as_4d(x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    lead = tuple(x.shape[:-2])
    return x.reshape((1, -1) + tuple(x.shape[-2:])), lead


def _nearest_indices(size_in: int, size_out: int, scale: float) -> torch.Tensor:
    idx = torch.floor(torch.arange(size_out, dtype=torch.float64) / scale).to(torch.long)
    return idx.clamp_(0, size_in - 1)


def _nearest(x: torch.Tensor, out_h: int, out_w: int, scale_h: float, scale_w: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    x = x.index_select(x.dim() - 2, _nearest_indices(h, out_h, scale_h))
    return x.index_select(x.dim() - 1, _nearest_indices(w, out_w, scale_w))


@_implements("upsample_nearest_neighbor")
def _upsample_nearest(op, a, ev):
    x = a["x"]
    sh, sw = _float(a["scale_factor_height"]), _float(a["scale_factor_width"])
    h, w = x.shape[-2:]
    if sh.is_integer() and sw.is_integer():
        y, lead = _spatial_as_4d(x)
        y = F.interpolate(y, scale_factor=(sh, sw), mode="nearest")
        return [y.reshape(lead + tuple(y.shape[-2:]))]
    return [_nearest(x, math.floor(h * sh), math.floor(w * sw), sh, sw)]


@_implements("resize_nearest_neighbor")
def _resize_nearest(op, a, ev):
    x = a["x"]
    out_h, out_w = _int(a["target_size_height"]), _int(a["target_size_width"])
    h, w = x.shape[-2:]
    return [_nearest(x, out_h, out_w, out_h / h, out_w / w)]


def _grid(mode: str, size_in: int, size_out: int) -> torch.Tensor:
    """Source coordinates of the output samples, as MIL's sampling modes define them."""
    i = torch.arange(size_out, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            g = torch.full((1,), (size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0, dtype=torch.float64)
        else:
            g = i * ((size_in - 1) / (size_out - 1))
    elif mode == "DEFAULT":
        g = i * ((size_in - size_in / size_out) / (size_out - 1)) if size_out > 1 else i * 0
    elif mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        g = i * spacing + 0.5 * spacing - 0.5
    elif mode == "ASYMMETRIC":  # align_corners=False without half-pixel centers (TF's legacy)
        g = i * (size_in / size_out)
    else:
        raise ValueError(mode)
    return g.clamp(0, size_in - 1)


def _lerp(x: torch.Tensor, dim: int, coords: torch.Tensor) -> torch.Tensor:
    lo = torch.floor(coords).to(torch.long)
    hi = torch.clamp(lo + 1, max=x.shape[dim] - 1)
    frac = (coords - lo).to(torch.float32)
    shape = [1] * x.dim()
    shape[dim] = -1
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * frac.reshape(shape)


def _bilinear(x: torch.Tensor, out_h: int, out_w: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    x = _lerp(x, x.dim() - 2, _grid(mode, h, out_h))
    return _lerp(x, x.dim() - 1, _grid(mode, w, out_w))


@_implements("upsample_bilinear")
def _upsample_bilinear(op, a, ev):
    x = a["x"]
    h, w = x.shape[-2:]
    out_h = math.floor(h * _float(a["scale_factor_height"]))
    out_w = math.floor(w * _float(a["scale_factor_width"]))
    align = bool(_bool(a["align_corners"]))
    half_pixel = _bool(a.get("half_pixel_centers"))
    half_pixel = (not align) if half_pixel is None else half_pixel
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half_pixel else "ASYMMETRIC")
    return [_bilinear(x, out_h, out_w, mode)]


@_implements("resize_bilinear")
def _resize_bilinear(op, a, ev):
    mode = a["sampling_mode"]
    if mode not in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"):
        raise UnsupportedOp(op.op_type, op.name, f"sampling_mode {mode!r}")
    return [_bilinear(a["x"], _int(a["target_size_height"]), _int(a["target_size_width"]), mode)]


# --------------------------------------------------------------------------------------------
# activation quantization (iOS17)

_INT_RANGE = {"int8": (-128, 127, torch.int8), "uint8": (0, 255, torch.uint8)}


@_implements("quantize")
def _quantize(op, a, ev):
    """clip(round(x / scale) + zero_point): round half to even (numpy's np.around, as
    coremltools' reference), computed in float32."""
    x = a["input"]
    axis = _int(a.get("axis"))
    low, high, dtype = _INT_RANGE[a["output_dtype"]]
    q = torch.round(x / _along(a["scale"].to(torch.float32), x.dim(), axis))
    zero_point = a.get("zero_point")
    if zero_point is not None:
        q = q + _along(zero_point.to(torch.float32), x.dim(), axis)
    return [q.clamp_(low, high).to(dtype)]


@_implements("dequantize")
def _dequantize(op, a, ev):
    """scale * (x - zero_point)."""
    x = a["input"].to(torch.float32)
    axis = _int(a.get("axis"))
    zero_point = a.get("zero_point")
    if zero_point is not None:
        x = x - _along(zero_point.to(torch.float32), x.dim(), axis)
    return [x * _along(a["scale"], x.dim(), axis)]


# --------------------------------------------------------------------------------------------
# compressed constants (constexpr_*): run once, when the evaluator is built


@_implements("constexpr_affine_dequantize")
def _constexpr_affine_dequantize(op, a, ev):
    data = a["quantized_data"].to(torch.float32)
    axis = _int(a["axis"])
    zero_point = _along(a["zero_point"].to(torch.float32), data.dim(), axis)
    return [(data - zero_point) * _along(a["scale"], data.dim(), axis)]


def _repeat_blocks(param: torch.Tensor, shape) -> torch.Tensor:
    """A per-block parameter repeated to `shape` (block size = shape[i] // param.shape[i])."""
    for dim, (full, blocks) in enumerate(zip(shape, param.shape)):
        if full != blocks:
            param = param.repeat_interleave(full // blocks, dim=dim)
    return param


@_implements("constexpr_blockwise_shift_scale")
def _constexpr_blockwise_shift_scale(op, a, ev):
    """scale * (data - offset), scale and offset shared by blocks of data."""
    data = a["data"].to(torch.float32)
    offset = a.get("offset")
    if offset is not None:
        data = data - _repeat_blocks(offset.to(torch.float32), data.shape)
    return [data * _repeat_blocks(a["scale"], data.shape)]


def _unpack_bits(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    """Values packed LSB-first, one byte after another (iOS16 constexpr layout)."""
    bits = np.unpackbits(packed.numpy().astype(np.uint8), bitorder="little")[: count * nbits]
    weights = (1 << np.arange(nbits, dtype=np.int64))
    return torch.from_numpy((bits.reshape(count, nbits).astype(np.int64) * weights).sum(axis=1))


@_implements("constexpr_lut_to_dense")
def _constexpr_lut_to_dense(op, a, ev):
    lut, indices = a["lut"], a["indices"]
    if "shape" in a and a["shape"] is not None:
        # iOS16: one table, indices bit-packed into bytes
        shape = _ints(a["shape"])
        nbits = int(round(math.log2(lut.numel())))
        flat = _unpack_bits(indices, nbits, int(np.prod(shape, dtype=np.int64)))
        return [lut.reshape(-1)[flat].reshape(shape)]
    return [_lut_blocks(indices, lut, _int(a.get("vector_axis")))]


def _lut_blocks(indices: torch.Tensor, lut: torch.Tensor, vector_axis: Optional[int]) -> torch.Tensor:
    """iOS18: lut [*tables, palettes, vector]; each block of indices reads its own table; a
    vector entry fills `vector` consecutive places along vector_axis."""
    shape = list(indices.shape)
    tables, palettes, vector = list(lut.shape[:-2]), lut.shape[-2], lut.shape[-1]
    # the table each element reads: its block's row-major index among the tables
    table = torch.zeros(shape, dtype=torch.long)
    stride = 1
    for dim in reversed(range(len(shape))):
        block = shape[dim] // tables[dim]
        view = [1] * len(shape)
        view[dim] = shape[dim]
        table = table + (torch.arange(shape[dim]) // block * stride).reshape(view)
        stride *= tables[dim]
    entries = lut.reshape(-1, vector)[table * palettes + indices.to(torch.long)]   # [*shape, vector]
    if vector == 1:
        return entries.squeeze(-1)
    axis = _axis(vector_axis, len(shape))
    entries = entries.movedim(-1, axis + 1)
    out = list(shape)
    out[axis] *= vector
    return entries.reshape(out)


@_implements("constexpr_sparse_to_dense")
def _constexpr_sparse_to_dense(op, a, ev):
    data, mask = a["nonzero_data"], a["mask"]
    if "shape" in a and a["shape"] is not None:
        # iOS16: a bit-packed mask over the flattened shape
        shape = _ints(a["shape"])
        mask = _unpack_bits(mask, 1, int(np.prod(shape, dtype=np.int64))).reshape(shape)
    out = torch.zeros(tuple(mask.shape), dtype=data.dtype)
    out[mask != 0] = data
    return [out]


@_implements("constexpr_cast")
def _constexpr_cast(op, a, ev):
    return [a["source_val"]]


# --------------------------------------------------------------------------------------------
# the evaluator

SUPPORTED_OPS: frozenset[str] = frozenset(IMPLEMENTATIONS) | {"const"}


def _is_constexpr(op_type: str) -> bool:
    return op_type.startswith("constexpr_")


@dataclass
class _Step:
    op: Any
    args: list            # (input name, "var" | "vars" | "default", var name(s) or default value)
    free: list[str]       # vars whose last reader this op is


class ProgramEvaluator:
    """Evaluates one function of a pymil Program ("main"; a multi-size package's per size) with torch
    kernels; see the module doc.

    `function` is that MIL function; `input_names` / `output_names` its inputs and outputs in
    program order; `input_dtypes` what each input is cast to (Core ML takes int32 token ids,
    feeds may be int64)."""

    def __init__(self, prog, fp16_storage: bool = True, function: str = "main"):
        """`fp16_storage=False` computes an fp16 program in float32 throughout (calibration: a
        last-bit difference between CPUs' kernels would otherwise flip fp16 roundings, moving
        ranges by fp16's 1e-3 instead of float32's 1e-7)."""
        self.fp16_storage = fp16_storage
        fn = prog.functions[function]
        self.function = fn
        ops = list(fn.operations)
        for op in ops:
            if op.op_type != "const" and op.op_type not in IMPLEMENTATIONS:
                raise UnsupportedOp(op.op_type, op.name)
        self.input_names: list[str] = list(fn.inputs)
        self.output_names: list[str] = [v.name for v in fn.outputs]
        self.input_dtypes: dict[str, np.dtype] = {
            name: np.dtype(types.nptype_from_builtin(var.dtype)) for name, var in fn.inputs.items()}
        self._inputs = dict(fn.inputs)
        self._outputs = list(fn.outputs)
        self._consts: dict[str, Any] = {}
        computed = [op for op in ops if not self._materialize(op)]
        self._steps = self._plan(computed)

    # ---- building

    def _materialize(self, op) -> bool:
        """Const and constexpr ops become values now (decompressed once); False for the rest."""
        if op.op_type == "const":
            for var in op.outputs:
                self._consts[var.name] = _const_tensor(var)
            return True
        if not _is_constexpr(op.op_type):
            return False
        inputs = self._gather_inputs(op, self._consts, _args(op))
        outputs = self._call(op, inputs)
        for var, value in zip(op.outputs, outputs):
            self._consts[var.name] = value
        return True

    def _plan(self, ops) -> list[_Step]:
        steps = [_Step(op, _args(op), []) for op in ops]
        last: dict[str, int] = {}
        for i, step in enumerate(steps):
            for var in step.op.outputs:
                last[var.name] = i     # never read: freed right after it is made
            for _, kind, ref in step.args:
                for name in (ref if kind == "vars" else [ref] if kind == "var" else []):
                    if name not in self._consts:
                        last[name] = i
        pinned = set(self.output_names)
        for name, i in last.items():
            if name not in pinned:
                steps[i].free.append(name)
        return steps

    # ---- running

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        values = self.run(feeds)
        return [_to_numpy(values[var.name]) for var in self._outputs]

    def run(self, feeds: dict[str, np.ndarray], observe: Optional[Callable] = None,
            keep: Optional[set[str]] = None) -> dict[str, torch.Tensor]:
        """Every op in program order; the outputs (and the vars named in `keep`) by var name.
        `observe(op, outputs)` is called after each computed (non-const) op with its output
        tensors (e.g. to gather activation ranges). A value is dropped as soon as its last reader
        has run, unless kept. Feeds the program has no input for are ignored."""
        keep = set(keep or ())
        env: dict[str, Any] = dict(self._consts)
        for name in self.input_names:
            env[name] = self._feed(name, feeds)
        with torch.no_grad():
            for step in self._steps:
                op = step.op
                outputs = self._call(op, self._gather_inputs(op, env, step.args))
                for var, value in zip(op.outputs, outputs):
                    env[var.name] = value
                if observe is not None:
                    observe(op, outputs)
                for name in step.free:
                    if name not in keep:
                        env.pop(name, None)
        missing = [n for n in keep if n not in env]
        if missing:
            raise KeyError(f"no variable {missing[0]!r} in the program")
        return {name: env[name] for name in [*self.output_names, *sorted(keep)]}

    def const_value(self, var_name: str) -> np.ndarray:
        """A const / constexpr var's value as the program computes with it (float32 for floats,
        compressed weights decompressed)."""
        if var_name not in self._consts:
            raise KeyError(f"{var_name!r} is not a const or constexpr variable of the program")
        value = self._consts[var_name]
        return value.numpy() if torch.is_tensor(value) else np.asarray(value)

    @property
    def consts(self) -> dict[str, Any]:
        """Every const / constexpr var's value as the program computes with it (decompressed)."""
        return self._consts

    def evaluate_op(self, op, env: dict[str, Any]) -> list:
        """One op on the values in `env` (var name -> value): per-layer probes swap an input,
        e.g. a float weight for a quantized one, and compare."""
        return self._call(op, self._gather_inputs(op, env, _args(op)))

    def _feed(self, name: str, feeds: dict) -> torch.Tensor:
        if name not in feeds:
            raise KeyError(f"no feed for program input {name!r} (inputs: {self.input_names})")
        var = self._inputs[name]
        array = np.asarray(feeds[name])
        if not _shape_matches(var.shape, array.shape):
            raise ValueError(f"feed {name!r} has shape {array.shape}, the program input is {tuple(var.shape)}")
        # as Core ML receives it: an int64 token array becomes int32, an fp16 input fp16
        array = array.astype(self.input_dtypes[name], copy=False)
        return _conform(var, torch.from_numpy(np.ascontiguousarray(array)), self.fp16_storage)

    def _gather_inputs(self, op, env: dict, args: list) -> dict[str, Any]:
        inputs = {}
        for name, kind, ref in args:
            if kind == "var":
                inputs[name] = env[ref]
            elif kind == "vars":
                inputs[name] = [env[r] for r in ref]
            else:
                inputs[name] = ref
        return inputs

    def _call(self, op, inputs: dict) -> list:
        impl = IMPLEMENTATIONS.get(op.op_type)
        if impl is None:
            raise UnsupportedOp(op.op_type, op.name)
        try:
            result = impl(op, inputs, self)
        except (UnsupportedOp, EvaluationError):
            raise
        except Exception as exc:
            raise EvaluationError(f"op {op.op_type} {op.name!r}: {type(exc).__name__}: {exc}") from exc
        result = [result] if torch.is_tensor(result) else list(result)
        if len(result) != len(op.outputs):
            raise EvaluationError(f"op {op.op_type} {op.name!r}: {len(result)} outputs, "
                                  f"the program declares {len(op.outputs)}")
        outputs = []
        for var, value in zip(op.outputs, result):
            value = _conform(var, value, self.fp16_storage)
            _check_shape(op, var, value)
            outputs.append(value)
        return outputs


def _args(op) -> list:
    """How to find each input of `op`: a var, a tuple of vars, or the op's declared default."""
    args = []
    for name, value in op.inputs.items():
        if isinstance(value, (list, tuple)):
            args.append((name, "vars", [v.name for v in value]))
        else:
            args.append((name, "var", value.name))
    present = set(op.inputs)
    for name, default in op.default_inputs().items():
        if name not in present:
            args.append((name, "default", default))
            present.add(name)
    # optional inputs without a declared default (quantize's zero_point): None
    for name in type(op).input_spec.input_types:
        if name not in present:
            args.append((name, "default", None))
    return args


def _shape_matches(declared, actual) -> bool:
    """`actual` fits the program's declared shape (symbolic dims match anything)."""
    return len(declared) == len(actual) and all(is_symbolic(d) or int(d) == a for d, a in zip(declared, actual))


def _check_shape(op, var, value) -> None:
    if torch.is_tensor(value) and not _shape_matches(var.shape, tuple(value.shape)):
        raise EvaluationError(f"op {op.op_type} {op.name!r}: output {var.name!r} has shape "
                              f"{tuple(value.shape)}, the program declares {tuple(var.shape)}")


def _to_numpy(value) -> np.ndarray:
    """float32 for float outputs (an fp16 output holds fp16 values), the var's integer dtype else."""
    return value.numpy() if torch.is_tensor(value) else np.asarray(value)


def evaluate_package(path, function: str | None = None) -> ProgramEvaluator:
    """An evaluator for the ML Program inside a saved .mlpackage (one function of a multifunction one)."""
    from .convert import default_function, load_program

    function = function or default_function(Path(path))
    return ProgramEvaluator(load_program(Path(path), function), function=function)
