"""Which int8 format pays off for the text encoder on this CPU? (python benchmarks/text_encoder_int8.py)

Runs on the fp32 text encoder that `benchmarks/int8.py --work W` exported (SD-Turbo's
OpenCLIP-H size, random seeded weights) and compares, side by side in one process:

    w8             the compiler's scheme (compiler.targets.onnx.quantize): ORT MatMulNBits bits=8, weight-only,
                   compute in fp32 (accuracy_level unset)
    w8 int8-dot    the same weights with MatMulNBits accuracy_level=4: activations quantized to
                   int8 per block at run time, int8 dot products
    dynamic int8   ORT quantize_dynamic on the weight MatMuls, per-channel int8 weights, activations
                   quantized per tensor at run time (ORT fuses DynamicQuantizeMatMul)

Printed per variant: median ORT CPU ms over --repeats runs after one warm-up (one session at a
time), speed-up over fp32, bytes per parameter on disk, and the worst PSNR / cosine against the
fp32 file on held-out prompts, next to the compiler's text encoder int8 gate
(compiler.parity.TOLERANCES). Nothing is asserted.

    python benchmarks/int8.py --work /tmp/int8 --prompts 8     # once: writes fp32/text_encoder.onnx
    python benchmarks/text_encoder_int8.py --work /tmp/int8
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _common import REPO, machine, timed_runs, versions

sys.path.insert(0, str(REPO))


def _variants(src: Path, out: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from compiler.targets.onnx.quantize import OnnxQuantizer, _quiet_ort_logging, _weight_only

    files = {"w8": out / "w8.onnx", "w8 int8-dot": out / "w8-int8-dot.onnx", "dynamic int8": out / "dynamic.onnx"}
    quantizer = OnnxQuantizer("text_encoder", "w8", src, files["w8"])
    quantizer.build([l.node for l in quantizer.layers() if l.reason])
    _weight_only(src, files["w8 int8-dot"], [], accuracy_level=4)
    with _quiet_ort_logging():
        quantize_dynamic(str(src), str(files["dynamic int8"]), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8)
    return files


def _time(path: Path, feeds: list[dict], repeats: int) -> tuple[float, list]:
    """Median seconds on the first prompt, and the outputs for every prompt (the first run is the warm-up)."""
    from compiler.targets.onnx import OnnxTarget

    run = OnnxTarget().runner(path)
    outputs = [run(f)[0] for f in feeds]
    return statistics.median(timed_runs(run, feeds[0], repeats)), outputs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="the --work folder of an earlier benchmarks/int8.py run")
    p.add_argument("--prompts", type=int, default=4, help="held-out prompts for the accuracy columns")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per file after one warm-up (median shown)")
    args = p.parse_args(argv)

    from compiler.metrics import compare
    from compiler.prompts import read_prompts, tokenize
    from compiler.contract.tokenizers import CLIP, load as load_tokenizer
    from compiler.parity import TOLERANCES

    work = Path(args.work)
    src = work / "fp32" / "text_encoder.onnx"
    if not src.exists():
        p.error(f"{src} not found: run `python benchmarks/int8.py --work {work}` first")
    exported = json.loads((work / "export.json").read_text())
    params = exported["components"]["text_encoder"]["params"]
    tokenizers = [load_tokenizer(Path(exported["tokenizer_dir"]), 0, CLIP)]
    prompts = read_prompts(str(REPO / "calibration" / "heldout.txt"), "held-out")[: args.prompts]
    feeds = [tokenize(tokenizers, prompt).ids for prompt in prompts]
    out = work / "text-encoder-variants"
    out.mkdir(exist_ok=True)

    m, v = machine(), versions("onnxruntime", "onnx")
    print(f"text encoder int8 formats ({params / 1e6:.1f}M parameters, random seeded weights); machine: {m['cpu']}, "
          f"{m['cores']} cores, avx2 {m['avx2']}, vnni {m['vnni']}; " + ", ".join(f"{k} {x}" for k, x in v.items()),
          flush=True)
    fp32_s, reference = _time(src, feeds, args.repeats)
    gate = TOLERANCES[("text_encoder", "int8")]
    print(f"{'variant':<14} {'ms':>8} {'speed-up':>9} {'bytes/param':>12} {'worst dB':>9} {'cosine':>9}  "
          f"gate (>= {gate.min_psnr_db:.0f} dB, cosine >= {gate.min_cosine})")
    print(f"{'fp32':<14} {fp32_s * 1e3:8.1f} {'1.00x':>9} {src.stat().st_size / params:12.3f}")
    for name, path in _variants(src, out).items():
        seconds, outputs = _time(path, feeds, args.repeats)
        metrics = [compare(r, o) for r, o in zip(reference, outputs)]
        psnr, cosine = min(x.psnr_db for x in metrics), min(x.cosine for x in metrics)
        size = sum(f.stat().st_size for f in out.iterdir() if f.name.startswith(path.name))
        verdict = "passes" if psnr >= gate.min_psnr_db and cosine >= gate.min_cosine else "MISSES"
        print(f"{name:<14} {seconds * 1e3:8.1f} {fp32_s / seconds:8.2f}x {size / params:12.3f} {psnr:9.1f} "
              f"{cosine:9.5f}  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
