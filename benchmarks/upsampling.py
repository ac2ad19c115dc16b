"""Phase upsampling in the ONNX export: `make bench-upsampling` (python benchmarks/upsampling.py).

The SD-Turbo-size AutoencoderKL decoder (random seeded weights) and UNet exported to ONNX twice,
with diffusers' Upsample2D as exported by torch (Resize nearest 2x, then a 3x3 Conv on the upsampled
image) and as its four phase convolutions (compiler/targets/upsampling.py), both timed on ONNX Runtime
and OpenVINO CPU in interleaved rounds in one process, outputs compared.

    python benchmarks/upsampling.py --work /tmp/up            # 512 px decoder and UNet
    python benchmarks/upsampling.py --tiny                    # smoke test, seconds
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, interleaved_medians, machine, versions

sys.path.insert(0, str(REPO))


def _graphs(tiny: bool, image: int, work: Path):
    import int8 as bench_int8

    from compiler.wrap import wrap

    student = bench_int8._student(tiny, work)
    wrapped = wrap(student, bench_int8._recipe(image))
    return {name: wrapped.graphs[name] for name in ("vae_decoder", "denoiser")}


def _runners(path: Path) -> dict:
    import openvino as ov

    from compiler.targets.onnx.run import session_runner
    from compiler.targets.openvino.run import CHECK_CONFIG, runner_of

    core = ov.Core()
    return {"onnxruntime": session_runner(path),
            "openvino": runner_of(core.compile_model(core.read_model(str(path)), "CPU", CHECK_CONFIG))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the exported files (default: a temporary one)")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--image", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--components", default="vae_decoder,denoiser")
    args = p.parse_args(argv)
    if args.tiny and args.image == 512:
        args.image = 64
    from compiler.cli import _quiet_libraries
    from compiler.metrics import compare
    from compiler.targets.onnx.export import export

    _quiet_libraries()
    m = machine()
    print(f"phase upsampling benchmark ({'TOY SIZES' if args.tiny else 'SD-Turbo size, random seeded weights'}, "
          f"{args.image}x{args.image}); {m['cpu']}, {m['cores']} cores; "
          + ", ".join(f"{k} {v}" for k, v in versions("torch", "onnxruntime", "openvino").items()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        graphs = _graphs(args.tiny, args.image, work)
        for name in args.components.split(","):
            graph = graphs[name]
            files = {}
            for form, phases in (("resize+conv", False), ("phases", True)):
                folder = work / name / form
                folder.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                files[form] = folder / export(graph, folder, 18, phases=phases).main
                print(f"  {name} exported as {form} in {time.perf_counter() - t0:.0f} s", flush=True)
            rng = np.random.default_rng(0)
            feeds = {n: (rng.integers(0, 100, v.shape) if v.dtype.is_floating_point is False else
                         rng.standard_normal(tuple(v.shape))).astype(str(v.dtype).replace("torch.", ""))
                     for n, v in zip(graph.input_names, graph.example_inputs)}
            for runtime in ("onnxruntime", "openvino"):
                runs = {form: _runners(path)[runtime] for form, path in files.items()}
                outs = {form: run(feeds)[0] for form, run in runs.items()}       # warm-up
                medians = interleaved_medians(runs, feeds, args.repeats)
                a, b = medians["resize+conv"], medians["phases"]
                diff = compare(outs["resize+conv"], outs["phases"])
                print(f"{name:12} {runtime:12} resize+conv {a * 1e3:8.0f} ms   phases {b * 1e3:8.0f} ms   "
                      f"{a / b:5.2f}x   outputs agree at {diff.psnr_db:.1f} dB (max abs {diff.max_abs:.2e})",
                      flush=True)
                del runs
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
