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
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_SECONDS_PER_BILLION = 60.0
GOAL_RSS_PER_WEIGHT_BYTE = 3.0
COMPONENTS = ("unet", "text_encoder", "vae_decoder")
IMAGE = 512            # SD-Turbo's native size: latents 4x64x64
TOKENS = 77

# stabilityai/sd-turbo unet/config.json (SD 2.1 architecture)
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0, upcast_attention=True,
)
# OpenCLIP ViT-H/14 text tower as diffusers ships it for SD 2.x (23 layers: penultimate layer)
OPENCLIP_H_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                       num_attention_heads=16, max_position_embeddings=TOKENS, hidden_act="gelu",
                       projection_dim=512, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              layers_per_block=2, norm_num_groups=32, sample_size=768, scaling_factor=0.18215)
SD_TURBO_SCHEDULER = dict(_class_name="EulerDiscreteScheduler", num_train_timesteps=1000, beta_start=0.00085,
                          beta_end=0.012, beta_schedule="scaled_linear", prediction_type="epsilon",
                          timestep_spacing="trailing", steps_offset=1)

# --tiny: the same classes at toy size, to smoke-test this script in seconds
TINY_UNET = dict(SD21_UNET, sample_size=8, block_out_channels=(32, 64, 64, 64), attention_head_dim=(2, 4, 4, 4),
                 cross_attention_dim=32, layers_per_block=1, norm_num_groups=8)
TINY_TEXT = dict(OPENCLIP_H_TEXT, vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, projection_dim=32, bos_token_id=998, eos_token_id=999, pad_token_id=1)
TINY_VAE = dict(SD_VAE, block_out_channels=(8, 16, 16, 16), norm_num_groups=8, layers_per_block=1)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _graph(component: str, tiny: bool):
    """(compiler.wrap.Graph, parameters the exported graph uses): the compiler's own wrappers."""
    import torch

    from compiler.wrap import DecoderGraph, Graph, TextEncoderGraph

    torch.manual_seed(0)
    image = 64 if tiny else IMAGE
    latent = (1, 4, image // 8, image // 8)
    hidden = (TINY_TEXT if tiny else OPENCLIP_H_TEXT)["hidden_size"]
    if component == "text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        encoder = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else OPENCLIP_H_TEXT))).eval()
        module = TextEncoderGraph([encoder]).eval()
        ids = torch.zeros(1, TOKENS, dtype=torch.int64)
        return Graph(component, module, (ids,), ["input_ids"], ["prompt_embeds"]), module.parameters()
    if component == "unet":
        from diffusers import UNet2DConditionModel

        from compiler.families import get_family
        from compiler.load import Student
        from compiler.recipe import load_recipe, override, Image

        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD21_UNET)).eval()
        student = Student(source="(random seeded weights)", family="eps-turbo", tokenizers=[], tokenizer_dirs=[],
                          text_encoders=[None], unet=unet, vae=None, vae_subfolder="vae",
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


def child(component: str, tiny: bool) -> None:
    """Build one component, export it as compile does, print one JSON line with the measurements."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from compiler.cli import _quiet_libraries

    _quiet_libraries()
    from compiler.targets import get_target

    t0 = time.perf_counter()
    graph, params = _graph(component, tiny)
    params = list(params)
    n = sum(p.numel() for p in params)
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    build_s = time.perf_counter() - t0
    rss_before = _peak_rss_bytes()
    target = get_target("onnx")
    with tempfile.TemporaryDirectory(prefix=f"bench-{component}-") as out:
        t0 = time.perf_counter()
        files = target.export(graph, Path(out), 18)
        export_s = time.perf_counter() - t0
        file_bytes = sum((Path(out) / f).stat().st_size for f in files)
    print(json.dumps({"component": component, "params": n, "weight_bytes": weight_bytes, "build_s": build_s,
                      "export_s": export_s, "peak_rss_bytes": _peak_rss_bytes(), "rss_after_build_bytes": rss_before,
                      "files": files, "file_bytes": file_bytes}), flush=True)


def _run_child(component: str, tiny: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", component] + (["--tiny"] if tiny else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"component": component, "error": f"child exited {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['component']:<13} FAILED: {r['error']}"
    billions = r["params"] / 1e9
    s_per_b = r["export_s"] / billions
    rss_ratio = r["peak_rss_bytes"] / r["weight_bytes"]
    time_ok = "meets" if s_per_b <= GOAL_SECONDS_PER_BILLION else "MISSES"
    rss_ok = "meets" if rss_ratio <= GOAL_RSS_PER_WEIGHT_BYTE else "MISSES"
    return (f"{r['component']:<13} {r['params'] / 1e6:9.1f}M  {r['export_s']:8.1f} s  {r['peak_rss_bytes'] / 1e9:7.2f} GB"
            f"  {r['file_bytes'] / 1e9:7.2f} GB  {s_per_b:8.1f} s/B ({time_ok} <= {GOAL_SECONDS_PER_BILLION:.0f})"
            f"  {rss_ratio:5.2f}x ({rss_ok} <= {GOAL_RSS_PER_WEIGHT_BYTE:.0f}x)"
            f"  [{', '.join(r['files'])}]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", default=",".join(COMPONENTS), help=f"comma-separated subset of {COMPONENTS}")
    p.add_argument("--tiny", action="store_true", help="toy sizes: smoke-test the script, not a measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.tiny)
        return 0
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        p.error(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    scale = "TOY SIZES (--tiny): not a measurement" if args.tiny else \
        f"SD-Turbo size, random seeded weights, {IMAGE}x{IMAGE}"
    print(f"ONNX export benchmark ({scale}); torch.onnx dynamo exporter, opset 18; "
          f"{os.cpu_count()} CPU cores; one child process per component", flush=True)
    print(f"{'component':<13} {'params':>10}  {'export':>10}  {'peak RSS':>10}  {'files':>10}  "
          f"{'time per 1e9 params':<28}  {'peak RSS / fp32 weights'}", flush=True)
    results = []
    for c in components:
        results.append(_run_child(c, args.tiny))
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
