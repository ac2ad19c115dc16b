"""Several image sizes from one bundle at SD-Turbo size: `make bench-sizes` (python benchmarks/sizes.py).

Random seeded SD-Turbo-size weights (benchmarks/int8.py), one target (--target, default onnx), three sizes (square,
landscape, portrait; 512x512, 640x384, 384x640 width x height), everything side by side in one
process, for each size-dependent component (the UNet denoiser, the VAE decoder; the text encoder
is the same program at every size and ships once):

    bytes      one size's exported files vs the three sizes' programs over one copy of the weights
               (Target.share_weights: ONNX graphs over one data file, a Core ML multifunction
               package, an ExecuTorch program with a method per size, OpenVINO IRs over one .bin;
               goal <= 1.1x)
    compile    seconds to export each size, and to share their weights; the resident memory sharing
               adds, per size, as a multiple of one size's program (compile's memory estimate)
    latency    each size's fixed-shape export vs the same size's program in the multi-size bundle,
               interleaved rounds, medians (goal <= 1.05x; not for Core ML, whose evaluator's speed
               says nothing about a phone's)
    accuracy   each size's shared program vs torch fp32 on the same inputs (PSNR), and whether it
               computes exactly what its own fixed-shape export does

fp32 only: the int8 programs share weights the same way (per-channel weight scales come from the
weights alone), which tests/test_sizes.py checks on a tiny student (>= 90% of the tensor bytes
shared, the data file <= 1.1x one size's).

    python benchmarks/sizes.py --work /tmp/sizes
    python benchmarks/sizes.py --target coreml --components vae_decoder
    python benchmarks/sizes.py --target openvino
    python benchmarks/sizes.py --tiny          # smoke test, seconds
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, PeakRSS, interleaved_medians, peak_rss_bytes, print_header, verdict

sys.path.insert(0, str(REPO))

import int8 as bench  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

GOAL_BYTES = 1.1
GOAL_LATENCY = 1.05
SIZES = [(512, 512), (384, 640), (640, 384)]      # (height, width)
TINY_SIZES = [(32, 32), (24, 40), (40, 24)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the exported files (default: a temporary one)")
    p.add_argument("--tiny", action="store_true", help="toy-size student, to smoke-test the script")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per size (default 3)")
    p.add_argument("--target", default="onnx", choices=["onnx", "coreml", "executorch", "openvino"])
    p.add_argument("--components", default="denoiser,vae_decoder", help="size-dependent components to measure")
    args = p.parse_args()
    sizes = TINY_SIZES if args.tiny else SIZES
    print_header(f"multi-size bundles (bench-sizes, {args.target})", args.tiny, sizes[0][0], "onnxruntime", "onnx", "openvino",
                 "coremltools", "executorch")
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        _run(work, sizes, args)
    return 0


def _inputs(graph, seed: int) -> dict:
    """The graph's example inputs, its noise or latents replaced by seeded Gaussian noise."""
    import numpy as np

    from compiler.contract import noise

    feeds = {}
    for name, value in zip(graph.input_names, graph.example_inputs):
        a = value.numpy()
        feeds[name] = noise.gaussian(seed, a.shape) if name in ("noise", "latents") else np.ascontiguousarray(a)
    return feeds


def _run(work: Path, sizes: list[tuple[int, int]], args) -> None:
    import numpy as np
    import torch

    from compiler.metrics import compare
    from compiler.contract.sizes import spell
    from compiler.recipe import Image, Recipe
    from compiler.targets.registry import get_target
    from compiler.wrap import graph_module, wrap

    target = get_target(args.target)
    options = target.Options()
    student = bench._student(args.tiny, work)
    recipe = Recipe(version=1, name="bench-sizes", family="eps-turbo", image=Image(*sizes[0], sizes=tuple(sizes)))
    target.validate(recipe, options)   # Core ML: iOS 18 (multifunction)
    rows = []
    for i, name in enumerate(args.components.split(",")):
        parts, feeds, expected, export_s = [], {}, {}, {}
        for h, w in sizes:
            key = spell(h, w)
            at = recipe.at_size(h, w)
            graph = wrap(student, at).graphs[name]
            graph.module = graph_module(student, at, name)
            feeds[key] = _inputs(graph, seed=h + w)
            with torch.no_grad():
                expected[key] = graph.module(*[torch.from_numpy(feeds[key][n]) for n in graph.input_names]).numpy()
            folder = work / name / key
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            parts.append((key, folder, target.export(graph, folder, options)))
            export_s[key] = time.perf_counter() - t0
            graph.module = None
        shared_dir = work / name / "shared"
        shared_dir.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        with PeakRSS() as rss:    # what sharing adds on top of this process: Target.memory_factors' third
            artifact, programs = target.share_weights(name, parts, shared_dir, options)
        share_s = time.perf_counter() - t0
        one = sum((parts[0][1] / f).stat().st_size for f in parts[0][2].files)
        three = sum((shared_dir / f).stat().st_size for f in artifact.files)
        separate = sum((folder / f).stat().st_size for _, folder, a in parts for f in a.files)
        rows.append(f"  {name}: one size {one / 1e6:.1f} MB; three sizes {three / 1e6:.1f} MB shared = "
                    f"{three / one:.3f}x one size (goal <= {GOAL_BYTES}x: {verdict(three / one <= GOAL_BYTES)}); "
                    f"three separate bundles {separate / 1e6:.1f} MB")
        # a later component's sharing reuses memory the process already grew: only the first measures
        memory = (f", adding {rss.added / 1e9:.2f} GB resident = {rss.added / one / len(parts):.2f}x one size's "
                  f"weights per size" if i == 0 else "")
        rows.append("    compile: export " + ", ".join(f"{k} {s:.1f} s" for k, s in export_s.items())
                    + f"; sharing the weights {share_s:.1f} s{memory}")
        for key, folder, a in parts:
            fixed = target.runner(folder / a.main, options)
            out_fixed = fixed(feeds[key])[0]   # also the warm-up runs
            if not target.reports_latency:
                del fixed   # one evaluator at a time: SD-size UNets in Core ML's evaluator are several GB each
            multi = target.runner(shared_dir / programs[key]["file"], options, programs[key].get("function"))
            out_multi = multi(feeds[key])[0]
            psnr, same = compare(expected[key], out_multi).psnr_db, np.array_equal(out_fixed, out_multi)
            if not target.reports_latency:
                rows.append(f"    {key:>8}: vs torch fp32 {psnr:.1f} dB; equals its own export bit for bit: "
                            f"{'yes' if same else 'NO'} (latency: not measured on {target.name}'s checker)")
                del multi
                continue
            medians = interleaved_medians({"fixed": fixed, "multi": multi}, feeds[key], args.repeats)
            f_ms, m_ms = 1000 * medians["fixed"], 1000 * medians["multi"]
            rows.append(f"    {key:>8}: fixed-shape {f_ms:8.1f} ms, in the multi-size bundle {m_ms:8.1f} ms = "
                        f"{m_ms / f_ms:.3f}x (goal <= {GOAL_LATENCY}x: {verdict(m_ms / f_ms <= GOAL_LATENCY)}); "
                        f"vs torch fp32 {psnr:.1f} dB; equals its own export bit for bit: "
                        f"{'yes' if same else 'NO'}")
            del fixed, multi
    rows.append(f"  peak resident memory of this run: {peak_rss_bytes() / 1e9:.1f} GB")
    print("\n".join(rows))


if __name__ == "__main__":
    raise SystemExit(main())
