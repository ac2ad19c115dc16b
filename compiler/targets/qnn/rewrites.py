"""Exact ONNX rewrites that let QNN's HTP take graphs it otherwise refuses or fails to finalize
(QNN 2.51, onnxruntime-qnn 2.7.0; each found on a tiny student of a real family, docs/targets.md):

    constant first      Mul/Add(initializer, activation) at the end of an RMSNorm (T5's and Gemma's
                        weight) fails the HTP graph's finalize with QNN_COMMON_ERROR_MEM_ALLOC; the
                        operands swapped (IEEE addition and multiplication commute exactly) compile.
    GatherND            on a bool attention mask (Gemma's, T5's) is refused; with constant indices
                        it is a Reshape of the data's indexed axes into one and a Gather of the flat
                        indices, which the HTP takes.
    repeat-interleave   Unsqueeze -> Expand -> Reshape that repeats each channel r times goes
                        through a 5-D tensor; after a scale (DC-AE's channel-duplicating shortcut)
                        the HTP fails to finalize it; a Gather of the repeated channel indices is
                        the same values. (Gemma's grouped-query attention repeats its keys the same way.)

The smallest failing graph of each is in tests/targets/qnn (each fails as is and compiles rewritten).
Every rewrite moves values, never computes new ones, so the rewritten graph's outputs equal the
original's bit for bit; it runs on the exported graph before calibration, so quantization, parity
and the context compile all see one graph. Weights stay in the external-data file untouched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COMMUTATIVE = ("Mul", "Add")


def rewrite_for_htp(path: Path) -> dict[str, int]:
    """Rewrite the ONNX file at `path` in place (its external data untouched); returns how many
    nodes each rewrite changed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = _Graph(model, path.parent)
    counts = {"constant first": _constant_second(graph), "GatherND": _gather_nd(graph),
              "repeat-interleave": _repeat_interleave(graph)}
    if any(counts.values()):
        graph.drop_unused_constants()
        onnx.save(model, str(path))
    return counts


# Ops whose meaning changed between opsets 18 and 21 (GroupNormalization-21's per-channel scale,
# GridSample-20's mode names, DFT-20's inputs); every other op of 19-21 only gained types or
# attributes whose defaults keep the old behaviour.
CHANGED_BY_21 = ("GroupNormalization", "GridSample", "DFT")


def raise_opset(path: Path, opset: int) -> None:
    """Declare the graph at `path` an opset-`opset` graph, in place, where that changes no op's
    meaning; otherwise leave it (and quantize_static converts it as before)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    default = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if default.version >= opset or any(n.op_type in CHANGED_BY_21 for n in model.graph.node):
        return
    default.version = opset
    model.ir_version = max(model.ir_version, 10)
    onnx.save(model, str(path))


class _Graph:
    def __init__(self, model, folder: Path):
        import onnx

        self.model, self.folder = model, folder
        self.inits = {i.name: i for i in model.graph.initializer}
        inferred = onnx.shape_inference.infer_shapes(model).graph
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                       for v in (*inferred.value_info, *inferred.input, *inferred.output)}
        for i in model.graph.initializer:
            self.shapes[i.name] = list(i.dims)

    def constant(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name not in self.inits:
            return None
        return numpy_helper.to_array(self.inits[name], base_dir=str(self.folder))

    def add_constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = self.model.graph.initializer[-1]
        return name

    def consumers(self, name: str) -> list:
        return [n for n in self.model.graph.node if name in n.input]

    def static_shape(self, name: str) -> list[int] | None:
        shape = self.shapes.get(name)
        return shape if shape and all(d > 0 for d in shape) else None

    def replace(self, old: list, new: list) -> None:
        """`old` nodes out (known by their outputs: each value has one producer), `new` in at the first's place."""
        gone = {o.output[0] for o in old}
        nodes = list(self.model.graph.node)
        at = next(i for i, n in enumerate(nodes) if n.output[0] == old[0].output[0])
        kept = [n for n in nodes[:at] if n.output[0] not in gone] + new + \
            [n for n in nodes[at:] if n.output[0] not in gone]
        del self.model.graph.node[:]
        self.model.graph.node.extend(kept)

    def drop_unused_constants(self) -> None:
        """Inline constants no node reads any more (external ones keep their bytes in the data file)."""
        from onnx.external_data_helper import uses_external_data

        used = {i for n in self.model.graph.node for i in n.input} | {o.name for o in self.model.graph.output}
        keep = [i for i in self.model.graph.initializer if i.name in used or uses_external_data(i)]
        del self.model.graph.initializer[:]
        self.model.graph.initializer.extend(keep)


def _constant_second(g: _Graph) -> int:
    changed = 0
    for n in g.model.graph.node:
        if n.op_type in COMMUTATIVE and n.input[0] in g.inits and n.input[1] not in g.inits:
            first, second = n.input[0], n.input[1]
            n.input[0], n.input[1] = second, first
            changed += 1
    return changed


def _gather_nd(g: _Graph) -> int:
    from onnx import helper

    changed = 0
    for n in list(g.model.graph.node):
        batch_dims = next((a.i for a in n.attribute if a.name == "batch_dims"), 0)
        indices = g.constant(n.input[1]) if n.op_type == "GatherND" else None
        data = g.static_shape(n.input[0]) if indices is not None else None
        if indices is None or data is None or batch_dims != 0:
            continue
        q = indices.shape[-1]
        lead = np.array(data[:q], dtype=np.int64)
        indices = np.where(indices < 0, indices + lead, indices).astype(np.int64)
        strides = np.array([int(np.prod(lead[k + 1:])) for k in range(q)], dtype=np.int64)
        base = n.name or n.output[0]
        shape = g.add_constant(f"{base}.htp_shape", np.array([int(np.prod(lead)), *data[q:]], dtype=np.int64))
        flat = g.add_constant(f"{base}.htp_indices", (indices * strides).sum(-1).astype(np.int64))
        g.replace([n], [helper.make_node("Reshape", [n.input[0], shape], [f"{base}.htp_flat"], name=f"{base}.htp_reshape"),
                        helper.make_node("Gather", [f"{base}.htp_flat", flat], list(n.output), name=f"{base}.htp_gather",
                                         axis=0)])
        changed += 1
    return changed


def _repeat_interleave(g: _Graph) -> int:
    """x [.., C, ..] -> Unsqueeze(axis a+1) -> Expand (r along a+1 only) -> Reshape [.., C*r, ..]
    becomes Gather(x, [0]*r + [1]*r + ..., axis=a)."""
    from onnx import helper

    changed = 0
    for n in list(g.model.graph.node):
        if n.op_type != "Unsqueeze":
            continue
        axes, x = g.constant(n.input[1]) if len(n.input) > 1 else None, g.static_shape(n.input[0])
        after = g.consumers(n.output[0])
        if axes is None or axes.size != 1 or x is None or len(after) != 1 or after[0].op_type != "Expand":
            continue
        expand = after[0]
        reshapes = g.consumers(expand.output[0])
        sizes, out = g.constant(expand.input[1]), g.static_shape(reshapes[0].output[0]) if len(reshapes) == 1 else None
        new_axis = int(axes.reshape(-1)[0]) % (len(x) + 1)
        if sizes is None or out is None or reshapes[0].op_type != "Reshape" or new_axis == 0:
            continue
        unsqueezed = [*x[:new_axis], 1, *x[new_axis:]]
        if len(sizes) != len(unsqueezed):
            continue
        axis, r = new_axis - 1, int(sizes[new_axis])
        others_kept = all(int(s) in (1, d) for i, (s, d) in enumerate(zip(sizes, unsqueezed)) if i != new_axis)
        if r < 1 or not others_kept or out != [*x[:axis], x[axis] * r, *x[axis + 1:]]:
            continue
        base = n.name or n.output[0]
        indices = g.add_constant(f"{base}.htp_repeat", np.repeat(np.arange(x[axis], dtype=np.int64), r))
        g.replace([n, expand, reshapes[0]], [helper.make_node("Gather", [n.input[0], indices], list(reshapes[0].output),
                                                              name=f"{base}.htp_repeat_gather", axis=axis)])
        changed += 1
    return changed
