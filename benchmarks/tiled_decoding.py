"""The decoder at 1024 px: `make bench-tiled` (python benchmarks/tiled_decoding.py).

At 1024 px (an SDXL-size image, 128x128 latents) the AutoencoderKL decoder's activations, not
its weights, set the memory a phone needs: its last blocks hold 128-channel 1024x1024 tensors
(512 MB each in float32) against 198 MB of weights. This measures, side by side in one run, the
ways a recipe can ship it, each in its own process so a peak RSS is its own:

    fp32              the whole latent at once (what an untiled recipe ships)
    fp32 tiled        components.vae_decoder.tiling {tile: 576, overlap: 64}: one 576 px tile
                      program, 2x2 tiles blended by compiler.contract.tiling (what the runtimes run)
    int8              W8A8 through the compiler's ONNX quantizer, calibrated on latents
    int8 tiled        the same, calibrated per tile
    tiny              a TAESD-size AutoencoderTiny, whole (speed and memory only: random weights)

SDXL's VAE decoder (diffusers' AutoencoderKL, 4 latent channels, scaling 0.13025) with random
seeded weights; latents are unit Gaussian, as the denoiser's output is in scaled-latent space.

Printed: per variant, ms (median of --repeats after a warm-up), speed-up over fp32, image PSNR
against the fp32 whole-image decode, peak RSS of the decoding process (less what it held before
opening the program) and its ratio to the program's weight bytes; then the SDXL-size compile's
memory estimate (compiler.memory, from parameter counts of the real classes built on the meta
device): whether the int8 chain at 1024 px fits this machine at all.

    python benchmarks/tiled_decoding.py --work /tmp/tiled           # 1024 px, ~25 min on 2 cores
    python benchmarks/tiled_decoding.py --work /tmp/tiled --reuse-export
    python benchmarks/tiled_decoding.py --tiny                        # smoke test, seconds
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SD_VAE, TINY_VAE, PeakRSS, machine, run_child, verdict, versions

sys.path.insert(0, str(REPO))

SDXL_SCALING = 0.13025
TILE, OVERLAP = 576, 64     # recipe pixels: 2x2 tiles at 1024 px
GOAL_RSS = 1.5
VARIANTS = {  # name -> (program folder under --work, tiled)
    "fp32": ("whole-fp32", False),
    "fp32 tiled": ("tile-fp32", True),
    "int8": ("whole-int8", False),
    "int8 tiled": ("tile-int8", True),
    "tiny": ("tiny-fp32", False),
}

# stabilityai/sdxl-turbo unet/config.json and its two text encoders (CLIP ViT-L, OpenCLIP bigG)
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768)
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, projection_dim=1280)


def _latent(image: int) -> int:
    return image // 8


def _graph(tiny: bool, side: int):
    import torch
    from diffusers import AutoencoderKL

    from compiler.wrap import DecoderGraph, Graph

    torch.manual_seed(0)
    vae = AutoencoderKL(**dict(TINY_VAE if tiny else SD_VAE, scaling_factor=SDXL_SCALING)).eval()
    return Graph("vae_decoder", DecoderGraph(vae, SDXL_SCALING).eval(), (torch.zeros(1, 4, side, side),),
                 ["latents"], ["image"])


def _plan(args):
    from compiler.contract.tiling import TilePlan

    latent = _latent(args.image)
    return TilePlan.for_latent((1, 4, latent, latent), args.tile // 8, args.overlap // 8, 8)


def _latents(args, seed: int):
    from compiler.contract import noise

    return noise.gaussian(seed, (1, 4, _latent(args.image), _latent(args.image)))


# ---------------------------------------------------------------- child processes

def child_export(args) -> dict:
    import torch
    from diffusers import AutoencoderTiny

    from compiler.targets.onnx import OnnxTarget
    from compiler.wrap import DecoderGraph, Graph

    work, target, out = Path(args.work), OnnxTarget(), {}
    options = target.Options()
    plan = _plan(args)
    for folder, side in (("whole-fp32", _latent(args.image)), ("tile-fp32", plan.tile[0])):
        graph = _graph(args.tiny, side)
        (work / folder).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        target.export(graph, work / folder, options)
        out[folder] = {"export_s": time.perf_counter() - t0,
                       "params": sum(p.numel() for p in graph.module.vae.decoder.parameters())}
    torch.manual_seed(0)
    taesd = AutoencoderTiny().eval()
    graph = Graph("vae_decoder", DecoderGraph(taesd, 1.0).eval(),
                  (torch.zeros(1, 4, _latent(args.image), _latent(args.image)),), ["latents"], ["image"])
    (work / "tiny-fp32").mkdir(parents=True, exist_ok=True)
    target.export(graph, work / "tiny-fp32", options)
    return out


def child_quantize(args) -> dict:
    from compiler.targets.onnx.quantize import OnnxQuantizer

    work, plan = Path(args.work), _plan(args)
    out = {}
    for src, dst, tiled in (("whole-fp32", "whole-int8", False), ("tile-fp32", "tile-int8", True)):
        (work / dst).mkdir(exist_ok=True)
        q = OnnxQuantizer("vae_decoder", "w8a8", work / src / "vae_decoder.onnx", work / dst / "vae_decoder.onnx")
        q.layers()

        def feeds():
            for i in range(args.prompts):
                whole = {"latents": _latents(args, 1000 + i)}
                yield from (plan.split(whole) if tiled else (whole,))

        t0 = time.perf_counter()
        q.calibrate(feeds())
        q.build([])
        out[dst] = {"quantize_s": time.perf_counter() - t0}
    return out


def child_run(args) -> dict:
    import numpy as np

    from compiler.targets.onnx import OnnxTarget

    folder, tiled = VARIANTS[args.variant]
    work = Path(args.work)
    path = work / folder / "vae_decoder.onnx"
    feeds = {"latents": _latents(args, 7)}
    plan = _plan(args)
    before = PeakRSS.current()
    with PeakRSS() as rss:
        run = OnnxTarget().runner(path)

        def decode():
            return (plan.run(run, feeds) if tiled else run(feeds))[0]

        decode()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            image = decode()
            times.append(time.perf_counter() - t0)
    np.save(work / f"image-{folder}.npy", image)
    weights = sum(p.stat().st_size for p in (work / folder).glob("vae_decoder.onnx*"))
    return {"ms": statistics.median(times) * 1e3, "peak_rss_bytes": rss.peak - before, "weight_bytes": weights,
            "image": str(work / f"image-{folder}.npy"), "tiles": plan.count if tiled else 1}


def sdxl_estimate() -> dict:
    """compiler.memory's estimate for an SDXL-size int8 compile at 1024 px, from parameter
    counts of the real classes (built on the meta device: no memory, no weights)."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from compiler.memory import FP32, machine_memory
    from compiler.targets.onnx import OnnxTarget

    from diffusers import AutoencoderKL

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**SD_VAE)
        text = [CLIPTextModel(CLIPTextConfig(**CLIP_L)), CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG))]

    def count(m):
        return sum(p.numel() for p in m.parameters())

    weights = {"text_encoder": FP32 * sum(count(t) for t in text), "denoiser": FP32 * count(unet),
               "vae_decoder": FP32 * (count(vae.decoder) + count(vae.post_quant_conv))}
    export_k, quantize_k, _ = OnnxTarget.memory_factors
    student = sum(weights.values())
    stages = {"load": student, "export": student + int(export_k * max(weights.values())),
              "quantize": student + int(quantize_k * weights["denoiser"]), "verify": 2 * student}
    return {"weights": weights, "stages": stages, "machine": machine_memory()}


def child(args) -> None:
    from _common import child_result

    child_result({"export": lambda: child_export(args), "quantize": lambda: child_quantize(args),
                  "run": lambda: child_run(args), "estimate": sdxl_estimate}[args.child])


# ---------------------------------------------------------------- parent

def _psnr(a: str, b: str) -> float:
    import numpy as np

    from compiler.metrics import compare

    return compare(np.load(a), np.load(b), data_range=1.0).psnr_db


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=int, default=1024, help="image side in pixels")
    p.add_argument("--tile", type=int, default=TILE, help="tile side in pixels (recipe tiling.tile)")
    p.add_argument("--overlap", type=int, default=OVERLAP, help="tile overlap in pixels (recipe tiling.overlap)")
    p.add_argument("--prompts", type=int, default=4, help="calibration latents for the int8 decoders")
    p.add_argument("--repeats", type=int, default=2, help="timed decodes after one warm-up (median shown)")
    p.add_argument("--work", help="folder for the ONNX files (default: a temporary folder)")
    p.add_argument("--reuse-export", action="store_true", help="reuse the ONNX files in --work")
    p.add_argument("--tiny", action="store_true", help="tiny decoder at 128 px in 2x2 tiles: smoke test")
    p.add_argument("--child", choices=("export", "quantize", "run", "estimate"), help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny and args.image == 1024:
        args.image, args.tile, args.overlap = 128, 72, 8
    if args.child:
        child(args)
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-tiled-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--work", str(work), "--image", str(args.image), "--tile", str(args.tile), "--overlap",
              str(args.overlap), "--prompts", str(args.prompts), "--repeats", str(args.repeats)] + \
             (["--tiny"] if args.tiny else [])
    me = Path(__file__)
    info = {"machine": machine(), "versions": versions("onnxruntime", "torch", "diffusers"),
            "image": args.image, "tile": args.tile, "overlap": args.overlap}
    print(json.dumps(info), flush=True)
    if not args.reuse_export:
        for step in ("export", "quantize"):
            print(f"[{step}] ...", file=sys.stderr, flush=True)
            r = run_child(me, ["--child", step, *common], echo_stderr=True)
            if "error" in r:
                print(f"{step} FAILED: {r['error']}")
                return 1
            print(f"{step}: {json.dumps(r)}", flush=True)
    results = {}
    for name in VARIANTS:
        print(f"[run] {name} ...", file=sys.stderr, flush=True)
        results[name] = run_child(me, ["--child", "run", "--variant", name, *common])
    base = results["fp32"]
    print(f"\ndecoder at {args.image}x{args.image} px ({_latent(args.image)}x{_latent(args.image)} latents), tiles "
          f"{args.tile} px with {args.overlap} px overlap")
    print(f"{'variant':<14}{'tiles':>6}{'ms':>10}{'speed-up':>10}{'PSNR vs fp32':>14}{'peak RSS':>11}{'RSS/weights':>13}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<14} FAILED: {r['error']}")
            continue
        psnr = "" if name == "fp32" else "n/a" if name == "tiny" else f"{_psnr(r['image'], base['image']):.1f} dB"
        print(f"{name:<14}{r['tiles']:>6}{r['ms']:>10.0f}{base['ms'] / r['ms']:>9.2f}x{psnr:>14}"
              f"{r['peak_rss_bytes'] / 1e9:>9.2f} GB{r['peak_rss_bytes'] / r['weight_bytes']:>12.1f}x")
    print("peak RSS: the decoding process's, less what it held before opening the program; tiny: random weights, "
          "its image is not comparable")
    for name in ("fp32 tiled", "int8 tiled"):
        whole, tiled = results[name.split()[0]], results[name]
        if "error" not in whole and "error" not in tiled:
            print(f"  {name}: peak RSS {whole['peak_rss_bytes'] / tiled['peak_rss_bytes']:.2f}x lower than whole, "
                  f"{tiled['ms'] / whole['ms']:.2f}x the time")
    est = run_child(me, ["--child", "estimate"])
    if "error" not in est:
        from compiler.memory import describe, gb

        peak = max(est["stages"].values())
        print(f"SDXL-size int8 compile (onnx): weights {', '.join(f'{k} {gb(v)}' for k, v in est['weights'].items())}"
              f"; estimated {describe(est['stages'])}; this machine {gb(est['machine'])}: "
              f"{'fits' if peak <= est['machine'] else 'REFUSED before any work (exit 8)'}")
        chain = est["weights"]["text_encoder"] + est["weights"]["denoiser"] / 4 + base.get("weight_bytes", 0) / 4
        extra = {n: results[n]["peak_rss_bytes"] for n in ("int8", "int8 tiled") if "error" not in results[n]}
        for n, b in extra.items():
            ratio = (chain + b) / chain
            print(f"  int8 chain at 1024 px with the {n} decoder: ~{ratio:.2f}x its weights at the decoder's peak "
                  f"(goal <= {GOAL_RSS}x): {verdict(ratio <= GOAL_RSS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
