"""Export cost at real scale: `make bench-export` (python benchmarks/export.py).

Builds SD-Turbo-size components with random seeded weights (no download): the SD 2.1 UNet
(~866M parameters) with the eps-turbo one-step sampler baked in, the OpenCLIP-H-size CLIP text
encoder (~340M) and the SD AutoencoderKL decoder (~50M), and exports each exactly as `compile`
does (compiler.wrap graphs -> compiler.targets onnx: torch.onnx dynamo exporter, opset 18,
external data over 2 GB, onnx.checker). Each component runs in its own child process so its
peak RSS is its own. Printed against the goals, never asserted:

    export time  <= 60 s per billion parameters
    peak RSS     <= 3x the fp32 weight bytes

    python benchmarks/export.py                         # all three: a few minutes, ~5 GB RAM, ~3.5 GB temp disk
    python benchmarks/export.py --components unet
    python benchmarks/export.py --tiny                  # seconds: smoke test of this script only
    python benchmarks/export.py --target openvino       # the ONNX export, then OpenVINO's IR, as that target does

Peak RSS / fp32 weights, less the 1 of the torch weights held while exporting, is the target's
export factor in compile's memory estimate (Target.memory_factors).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import (OPENCLIP_H_TEXT, REPO, SD21_UNET, SD_TURBO_SCHEDULER, SD_VAE, TINY_TEXT, TINY_UNET, TINY_VAE,
                     TOKENS, child_result, peak_rss_bytes, run_child, verdict)

sys.path.insert(0, str(REPO))

GOAL_SECONDS_PER_BILLION = 60.0
GOAL_RSS_PER_WEIGHT_BYTE = 3.0
COMPONENTS = ("unet", "text_encoder", "vae_decoder")
IMAGE = 512            # SD-Turbo's native size: latents 4x64x64


def _graph(component: str, tiny: bool):
    """(compiler.wrap.Graph, parameters the exported graph uses): the compiler's own wrappers."""
    import torch

    from compiler.families.common import CLIPTextGraph
    from compiler.wrap import DecoderGraph, Graph

    torch.manual_seed(0)
    image = 64 if tiny else IMAGE
    latent = (1, 4, image // 8, image // 8)
    if component == "text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        encoder = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else OPENCLIP_H_TEXT))).eval()
        module = CLIPTextGraph([encoder]).eval()
        ids = torch.zeros(1, TOKENS, dtype=torch.int64)
        return Graph(component, module, (ids,), ["input_ids"], ["prompt_embeds"]), module.parameters()
    if component == "unet":
        from diffusers import UNet2DConditionModel

        from compiler.families import get_family
        from compiler.load import Student
        from compiler.recipe import load_recipe, override, Image

        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD21_UNET)).eval()
        student = Student(source="(random seeded weights)", family="eps-turbo", tokenizers=[], tokenizer_dirs=[],
                          text_encoders=[None], denoiser=unet, vae=None, vae_subfolder="vae",
                          scheduler_config=SD_TURBO_SCHEDULER)
        recipe = override(load_recipe(REPO / "recipes" / "sd-turbo.yaml"), image=Image(height=image, width=image))
        module = get_family("eps-turbo").denoiser(student, recipe)
        inputs = (torch.zeros(1, TOKENS, (TINY_UNET if tiny else SD21_UNET)["cross_attention_dim"]),
                  torch.zeros(latent))
        return Graph("denoiser", module, inputs, ["prompt_embeds", "noise"], ["latents"]), unet.parameters()
    if component == "vae_decoder":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(**(TINY_VAE if tiny else SD_VAE)).eval()
        module = DecoderGraph(vae, vae.config.scaling_factor).eval()
        used = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]  # the encoder is not exported
        return Graph(component, module, (torch.zeros(latent),), ["latents"], ["image"]), used
    raise SystemExit(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")


def child(component: str, tiny: bool, target: str) -> None:
    """Build one component, export it as compile does, print one JSON line with the measurements."""
    child_result(lambda: _measure(component, tiny, target))


def _measure(component: str, tiny: bool, target_name: str) -> dict:
    from compiler.targets.registry import get_target

    t0 = time.perf_counter()
    graph, params = _graph(component, tiny)
    params = list(params)
    n = sum(p.numel() for p in params)
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    build_s = time.perf_counter() - t0
    rss_before = peak_rss_bytes()
    target = get_target(target_name)
    with tempfile.TemporaryDirectory(prefix=f"bench-{component}-") as out:
        t0 = time.perf_counter()
        files = target.export(graph, Path(out), target.Options()).files
        export_s = time.perf_counter() - t0
        file_bytes = sum((Path(out) / f).stat().st_size for f in files)
    return {"component": component, "params": n, "weight_bytes": weight_bytes, "build_s": build_s,
            "export_s": export_s, "peak_rss_bytes": peak_rss_bytes(), "rss_after_build_bytes": rss_before,
            "files": files, "file_bytes": file_bytes}


def _run_child(component: str, tiny: bool, target: str) -> dict:
    result = run_child(Path(__file__).resolve(), ["--child", component, "--target", target] + (["--tiny"] if tiny else []))
    return {"component": component, **result}


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['component']:<13} FAILED: {r['error']}"
    billions = r["params"] / 1e9
    s_per_b = r["export_s"] / billions
    rss_ratio = r["peak_rss_bytes"] / r["weight_bytes"]
    time_ok, rss_ok = verdict(s_per_b <= GOAL_SECONDS_PER_BILLION), verdict(rss_ratio <= GOAL_RSS_PER_WEIGHT_BYTE)
    return (f"{r['component']:<13} {r['params'] / 1e6:9.1f}M  {r['export_s']:8.1f} s  {r['peak_rss_bytes'] / 1e9:7.2f} GB"
            f"  {r['file_bytes'] / 1e9:7.2f} GB  {s_per_b:8.1f} s/B ({time_ok} <= {GOAL_SECONDS_PER_BILLION:.0f})"
            f"  {rss_ratio:5.2f}x ({rss_ok} <= {GOAL_RSS_PER_WEIGHT_BYTE:.0f}x)"
            f"  [{', '.join(r['files'])}]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", default=",".join(COMPONENTS), help=f"comma-separated subset of {COMPONENTS}")
    p.add_argument("--tiny", action="store_true", help="toy sizes: smoke-test the script, not a measurement")
    p.add_argument("--target", default="onnx", choices=["onnx", "openvino"],
                   help="onnx (default), or openvino: the ONNX export, then OpenVINO's conversion to IR, as its target does")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.tiny, args.target)
        return 0
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        p.error(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    scale = "TOY SIZES (--tiny): not a measurement" if args.tiny else \
        f"SD-Turbo size, random seeded weights, {IMAGE}x{IMAGE}"
    print(f"{args.target} export benchmark ({scale}); torch.onnx dynamo exporter, opset 18; "
          f"{os.cpu_count()} CPU cores; one child process per component", flush=True)
    print(f"{'component':<13} {'params':>10}  {'export':>10}  {'peak RSS':>10}  {'files':>10}  "
          f"{'time per 1e9 params':<28}  {'peak RSS / fp32 weights'}", flush=True)
    results = []
    for c in components:
        results.append(_run_child(c, args.tiny, args.target))
        print(_row(results[-1]), flush=True)
    ok = [r for r in results if "error" not in r]
    if ok:
        params = sum(r["params"] for r in ok)
        seconds = sum(r["export_s"] for r in ok)
        print(f"{'total':<13} {params / 1e6:9.1f}M  {seconds:8.1f} s  "
              f"{seconds / (params / 1e9):8.1f} s per billion parameters overall", flush=True)
    print(f"goals (printed, not asserted): <= {GOAL_SECONDS_PER_BILLION:.0f} s and <= "
          f"{GOAL_RSS_PER_WEIGHT_BYTE:.0f}x fp32 weight bytes of peak RSS per component", flush=True)
    return 1 if len(ok) < len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
