"""Per-layer sensitivity of a quantized Core ML program, measured in context on one input:

- activation SQNR: the float tensor entering the layer vs the same after quantize/dequantize
  (w8a8 only: weight-only schemes leave activations float);
- output SQNR: the layer's output in the quantized program vs the same op computed with its
  float weight (from the unquantized package) on its unquantized input: the error this layer adds
  by itself. The generic fallback ranks layers by it (lowest first).
"""
from __future__ import annotations

from ...quantization import Layer, sqnr

CHUNK = 128  # layers probed per evaluation: bounds the captured activations (~2 GB for a 512 px UNet)


def measure(layers: list[Layer], float_program, quantized, feeds: dict) -> None:
    """`float_program`: the unquantized MIL program (its weights are read one layer at a time);
    `quantized`: a ProgramEvaluator of the quantized one."""
    import torch

    ops = {op.name: op for op in quantized.function.operations}
    float_ops = {op.name: op for op in float_program.functions["main"].operations}
    # layer node -> (unquantized input, input the op reads, output, its weight, the float program's weight var)
    probes = {}
    for l in layers:
        op, fop = ops.get(l.node), float_ops.get(l.node)
        if l.reason or op is None or fop is None:
            continue
        x = op.inputs["x"]
        pre = x
        if x.op is not None and x.op.op_type == "dequantize":
            q = x.op.inputs["input"].op
            if q is not None and q.op_type == "quantize":
                pre = q.inputs["input"]
        key = "y" if op.op_type == "matmul" else "weight"
        probes[l.node] = (pre.name, x.name, op.outputs[0].name, op.inputs[key].name, fop.inputs[key])
    items = sorted(probes.items())
    for start in range(0, len(items), CHUNK):
        chunk = dict(items[start:start + CHUNK])
        keep = {name for p in chunk.values() for name in p[:3]}
        values = quantized.run(feeds, keep=keep)
        for l in layers:
            if l.node not in chunk:
                continue
            pre, x, out, weight, float_weight = chunk[l.node]
            op = ops[l.node]
            if pre != x:
                l.act_sqnr_db = sqnr(values[pre].float().numpy(), values[x].float().numpy())
            env = {**quantized.consts, **values}
            env[x] = values[pre]
            env[weight] = torch.from_numpy(float_weight.val.astype("float32"))
            reference = quantized.evaluate_op(op, env)[0]
            l.output_sqnr_db = sqnr(reference.float().numpy(), values[out].float().numpy())
