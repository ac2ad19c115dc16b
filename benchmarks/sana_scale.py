"""SANA-Sprint-0.6B at real size: the whole `compile --target onnx` (int8) on this machine, one run.

    make bench-sana    # python benchmarks/sana_scale.py --work build/bench-sana

Builds a student of SANA-Sprint-0.6B's size with random seeded weights, stored in bf16 as the hub
ships it (Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers: a 0.6B SanaTransformer2DModel,
a Gemma-2-2B-size Gemma2Model, the AutoencoderDC f32c32 decoder), one component per child
process. Then runs the real compile with recipes/sana-sprint-0.6b.yaml (1024 px; fewer prompts:
--calibration, --heldout) in a child whose resident memory is sampled every 0.1 s and whose
progress lines are timestamped. Everything printed comes from that one compile:

- per component: export seconds per billion parameters (goal <= 60) and the peak resident
  memory while it exports over its fp32 weights (goal <= 1.5x);
- the transformer's calibration peak over its fp32 weights (goal <= 3x);
- the compile's peak against this machine's memory and the compiler's own estimate;
- int8 vs fp32 ONNX Runtime latency per component at 1024 px (the bundle's timings.txt; goal
  >= 1.3x on the transformer, never slower), bytes per parameter shipped;
- held-out accuracy per component (manifest parity) and the DC-AE decoder's share of the
  shipped chain's time.

`--tiny`: the same classes at toy size and 64 px, to smoke-test the script in a minute.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, child_result, machine, run_child, verdict, versions  # noqa: E402

sys.path.insert(0, str(REPO))

# google/gemma-2-2b-it config.json (SANA-Sprint's text encoder)
GEMMA2_2B = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                 sliding_window=4096, max_position_embeddings=8192, final_logit_softcapping=30.0,
                 attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                 pad_token_id=0, eos_token_id=1, bos_token_id=2)
# Sana_Sprint_0.6B_1024px_diffusers transformer/config.json
SANA_SPRINT_06B = dict(in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
                       num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
                       caption_channels=2304, mlp_ratio=2.5, sample_size=32, patch_size=1, guidance_embeds=True,
                       guidance_embeds_scale=0.1, qk_norm="rms_norm_across_heads", interpolation_scale=None,
                       attention_bias=False)
# mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers vae/config.json
DC_AE_F32C32 = dict(in_channels=3, latent_channels=32, attention_head_dim=32,
                    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                    encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
                    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                    decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                    upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
                    decoder_act_fns="silu", scaling_factor=0.41407)
TINY = {"text_encoder": dict(GEMMA2_2B, vocab_size=4000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32),
        "transformer": dict(SANA_SPRINT_06B, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                            num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32,
                            caption_channels=64),
        "vae": dict(DC_AE_F32C32, attention_head_dim=8, encoder_block_out_channels=(8, 8, 16, 16, 32, 32),
                    decoder_block_out_channels=(8, 8, 16, 16, 32, 32), encoder_layers_per_block=(1,) * 6,
                    decoder_layers_per_block=(1,) * 6)}
# A Gemma-like vocabulary: the SANA instruction encodes to about as many tokens as with the real
# tokenizer (a 400-piece toy vocabulary spells it in 712 tokens, which the 2B encoder would pay for).
TOKENIZER_VOCAB = 2000
GOALS = {"export_s_per_b": 60.0, "export_rss_x": 1.5, "calibration_rss_x": 3.0, "transformer_speedup": 1.3}


def child_build(work: Path, tiny: bool, component: str) -> dict:
    """One component of the student, seeded, saved in bf16 (the published dtype) unless --tiny."""
    import torch

    folder = _model_dir(work)
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed({"text_encoder": 1, "transformer": 2, "vae": 3}[component])
    configs = TINY if tiny else {"text_encoder": GEMMA2_2B, "transformer": SANA_SPRINT_06B, "vae": DC_AE_F32C32}
    t0 = time.perf_counter()
    if component == "text_encoder":
        from transformers import Gemma2Config, Gemma2Model

        model = Gemma2Model(Gemma2Config(**configs[component]))
    elif component == "transformer":
        from diffusers import SanaTransformer2DModel

        model = SanaTransformer2DModel(**configs[component])
    else:
        from diffusers import AutoencoderDC

        model = AutoencoderDC(**configs[component])
    model = model.to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder / component, safe_serialization=True)
    return {"component": component, "params": params, "build_s": time.perf_counter() - t0}


def build(work: Path, tiny: bool) -> dict:
    """The folder layout, tokenizer and scheduler of the seeded tiny SANA-Sprint student, each
    model replaced by one of real size (one child process each, so none holds two)."""
    from compiler.testing.seeded_students import TinySpec, build as build_tiny, write_sentencepiece_tokenizer

    folder = _model_dir(work)
    if (folder / "model_index.json").exists() and (folder / "done.json").exists():
        return json.loads((folder / "done.json").read_text())
    build_tiny(folder, TinySpec(kind="trigflow-scm"))
    write_sentencepiece_tokenizer(folder / "tokenizer", "gemma", 16, vocab_size=TOKENIZER_VOCAB)
    out = {}
    for component in ("text_encoder", "transformer", "vae"):
        for old in (folder / component).glob("*"):
            old.unlink()
        r = run_child(Path(__file__), ["--child", "build", "--component", component, "--work", str(work),
                                       *(["--tiny"] if tiny else [])])
        if "error" in r:
            raise SystemExit(f"building the {component}: {r['error']}")
        print(f"built {component}: {r['params'] / 1e9:.3f}B parameters in {r['build_s']:.0f}s", file=sys.stderr)
        out[component] = r
    (folder / "done.json").write_text(json.dumps(out))
    return out


def write_recipe(work: Path, tiny: bool, calibration: int, heldout: int) -> Path:
    """recipes/sana-sprint-0.6b.yaml with fewer prompts (each costs a 2B-parameter encoder run)."""
    import yaml

    data = yaml.safe_load((REPO / "recipes" / "sana-sprint-0.6b.yaml").read_text())
    data["calibration"] = {**data["calibration"], "num_prompts": calibration,
                           "prompts": str(REPO / data["calibration"]["prompts"])}
    data["parity"] = {**data["parity"], "num_prompts": heldout, "prompts": str(REPO / data["parity"]["prompts"])}
    if tiny:
        data["image"] = {"height": 64, "width": 64}
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Sampler:
    """A process's resident memory every `interval` seconds, with timestamps."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval, self.samples = pid, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.is_set():
            try:
                rss = next(int(l.split()[1]) * 1024 for l in status.read_text().splitlines() if l.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        return max((r for t, r in self.samples if t0 <= t < t1), default=0)


def run_compile(work: Path, recipe: Path) -> tuple[int, list[tuple[float, str]], Sampler, float]:
    out = work / "bundle"
    # `-m` from the repository root: this checkout's compiler, whatever the venv has installed
    cmd = [sys.executable, "-m", "compiler.commands.compile", "--target", "onnx", "--recipe", str(recipe),
           "--model", str(_model_dir(work)), "--out", str(out), "--force"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    sampler = Sampler(proc.pid)
    lines = []
    for line in proc.stderr:
        lines.append((time.monotonic(), line.rstrip()))
        print(f"  | {time.monotonic() - start:7.1f}s {line.rstrip()}", file=sys.stderr, flush=True)
    code = proc.wait()
    sampler.stop()
    return code, lines, sampler, time.monotonic() - start


def segments(lines: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """(start, end, text) of each progress line until the next one."""
    return [(t, lines[i + 1][0] if i + 1 < len(lines) else end, text.strip()) for i, (t, text) in enumerate(lines)]


def dry_run_estimate(work: Path, recipe: Path) -> dict:
    cmd = [sys.executable, "-m", "compiler.commands.compile", "--target", "onnx", "--recipe", str(recipe),
           "--model", str(_model_dir(work)), "--dry-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    return json.loads(proc.stdout)["plan"]["peak_memory_estimate_gb"] if proc.returncode == 0 else {}


def report(work: Path, code: int, lines, sampler: Sampler, total_s: float, estimate: dict) -> bool:
    from compiler.memory import machine_memory

    gb = 1e9
    segs = segments(lines, sampler.samples[-1][0] if sampler.samples else time.monotonic())
    peak = sampler.peak()
    print(f"\ncompile exit {code} in {total_s / 60:.1f} min; peak resident {peak / gb:.2f} GB of this machine's "
          f"{machine_memory() / gb:.1f} GB; the compiler's estimate: "
          + ", ".join(f"{k} {v} GB" for k, v in estimate.items()))
    if code != 0:
        print("FAILED: " + next((t for _, t in reversed(lines) if t.strip()), "no output"))
        return False
    # the manifest, with what compile measured (report.json: parity, quantization) beside it
    manifest = {**json.loads((work / "bundle" / "manifest.json").read_text()),
                **json.loads((work / "bundle" / "report.json").read_text())}
    ok = True
    print(f"\n{'component':<14}{'params':>9}{'export s':>10}{'s/B':>8}{'peak GB':>9}{'x fp32':>8}  "
          f"(goals <= {GOALS['export_s_per_b']:.0f} s/B, <= {GOALS['export_rss_x']}x)")
    params = {}
    for t0, t1, text in segs:
        m = re.match(r"(\w+): exporting \(([\d.]+)M parameters\)", text)
        if not m:
            continue
        name, p = m.group(1), float(m.group(2)) * 1e6
        params[name] = p
        seconds, rss = t1 - t0, sampler.peak(t0, t1)
        s_per_b, x = seconds / (p / 1e9), rss / (4 * p)
        good = s_per_b <= GOALS["export_s_per_b"] and x <= GOALS["export_rss_x"]
        ok &= good
        print(f"{name:<14}{p / 1e9:>8.3f}B{seconds:>10.1f}{s_per_b:>8.1f}{rss / gb:>9.2f}{x:>8.2f}  {verdict(good)}")
    for t0, t1, text in segs:
        if text.startswith("denoiser: calibrating"):
            rss = sampler.peak(t0, t1)
            x = rss / (4 * params["denoiser"])
            good = x <= GOALS["calibration_rss_x"]
            ok &= good
            print(f"\ncalibration ({text.split('calibrating on ')[1]}): {t1 - t0:.0f}s, peak {rss / gb:.2f} GB = "
                  f"{x:.2f}x the transformer's fp32 weights (goal <= {GOALS['calibration_rss_x']}x): {verdict(good)}")
    print(f"\n{'stage / step':<64}{'s':>8}{'peak GB':>9}")
    for t0, t1, text in segs:
        if re.match(r"\[\d+/\d+\] |\w+: (loading|recording|exporting|calibrating|quantizing|keeping)", text):
            stage = re.match(r"\[\d+/\d+\] (\w+)", text)
            if stage:   # a stage runs until its "<stage> done in" line
                t1 = next((t for t, _, s in segs if t > t0 and s.startswith(f"{stage.group(1)} done in")), t1)
            print(f"{text[:62]:<64}{t1 - t0:>8.1f}{sampler.peak(t0, t1) / gb:>9.2f}")

    timings = _timings(work / "bundle" / "timings.txt")
    print(f"\n{'component':<14}{'fp32 s':>9}{'shipped s':>11}{'speedup':>9}{'shipped MB':>12}{'B/param':>9}"
          f"{'held-out PSNR':>15}")
    int8_parity = manifest["parity"][-1]["checks"]
    for name in ("text_encoder", "denoiser", "vae_decoder"):
        c = manifest["components"][name]
        fp, shipped = timings[name]
        size = sum((work / "bundle" / f).stat().st_size for f in c["files"])
        p = params[name]
        speedup = fp / shipped
        psnr = int8_parity[name]["worst"]["psnr_db"]
        print(f"{name:<14}{fp:>9.2f}{shipped:>11.2f}{speedup:>8.2f}x{size / 1e6:>12.1f}{size / p:>9.2f}"
              f"{psnr:>12.1f} dB  ({c['precision']}, gate {int8_parity[name]['tolerance']['min_psnr_db']})")
        if c["precision"] == "int8":
            ok &= speedup >= 1.0
    t_fp, t_int8 = timings["denoiser"]
    good = t_fp / t_int8 >= GOALS["transformer_speedup"]
    ok &= good
    e2e = int8_parity["end_to_end"]["worst"]
    total = sum(s for _, s in timings.values())
    print(f"\ntransformer int8 vs fp32 at {manifest['image']['height']} px: {t_fp / t_int8:.2f}x "
          f"(goal >= {GOALS['transformer_speedup']}x): {verdict(good)}")
    print(f"end to end (int8 chain vs torch fp32): PSNR {e2e['psnr_db']:.1f} dB, "
          f"SSIM {int8_parity['end_to_end'].get('min_ssim', float('nan')):.4f}")
    print(f"DC-AE decoder share of the shipped chain's time: {timings['vae_decoder'][1] / total:.0%} "
          f"({timings['vae_decoder'][1]:.1f} of {total:.1f} s)")
    fallback = (manifest.get("quantization") or {}).get("components", {}).get("denoiser", {}).get("fallback", [])
    print(f"transformer layers kept float by the fallback: {len(fallback)}")
    return ok


def _timings(path: Path) -> dict[str, tuple[float, float]]:
    """component -> (fp32 s, shipped s) from the bundle's timings.txt."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("text_encoder", "denoiser", "vae_decoder"):
            nums = [float(x.rstrip("s")) for x in parts[1:] if re.fullmatch(r"[\d.]+s?", x)]
            out[parts[0]] = (nums[0] / 1e3, nums[1] / 1e3)   # the file says ms
    return out


def _model_dir(work: Path) -> Path:
    return work / "sana-sprint-0.6b-size"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "build" / "bench-sana")
    p.add_argument("--tiny", action="store_true", help="toy sizes at 64 px: smoke-test the script")
    p.add_argument("--calibration", type=int, default=4, help="calibration prompts (default 4)")
    p.add_argument("--heldout", type=int, default=1, help="held-out prompts checked (default 1)")
    p.add_argument("--child", choices=["build"], help=argparse.SUPPRESS)
    p.add_argument("--component", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_result(lambda: child_build(args.work, args.tiny, args.component))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"machine": machine(), "versions": versions("torch", "diffusers", "transformers", "onnxruntime")}))
    build(args.work, args.tiny)
    recipe = write_recipe(args.work, args.tiny, args.calibration, args.heldout)
    estimate = dry_run_estimate(args.work, recipe)
    code, lines, sampler, total = run_compile(args.work, recipe)
    ok = report(args.work, code, lines, sampler, total, estimate)
    print("\nall goals met" if ok else "\nsome goals MISSED (see above)")
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
