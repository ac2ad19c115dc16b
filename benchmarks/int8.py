"""int8 at real scale: `make bench-int8` (python benchmarks/int8.py).

Does int8 post-training quantization pay off on this CPU, at SD-Turbo size? Builds SD-Turbo-size
components with random seeded weights (no download; configs shared with benchmarks/export.py):
the SD 2.1 UNet (~866M parameters) with the eps-turbo one-step sampler baked in, the
OpenCLIP-H-size CLIP text encoder (hidden 1024, 23 layers, 16 heads, ~340M) and the SD
AutoencoderKL decoder. They go through the compiler's own stages: compiler.wrap graphs ->
ONNX export (compiler.targets.onnx) -> compiler.quantization.quantize_component, exactly as
compiler/pipeline.quantize calls it:

    denoiser      w8a8: ORT quantize_static (QDQ, per-channel int8 weights, uint8 activations),
                  calibrated by streaming calibration/calibration.txt prompts through the torch
                  fp32 wrapped graphs (pipeline.torch_chain); max_float_weight_fraction 0, i.e.
                  no layer may fall back to float (a miss is reported, not raised)
    text_encoder  w8: weight-only int8 MatMulNBits (no calibration)
    vae_decoder   left fp32 (as recipes/sd-turbo-int8.yaml ships it): timed, not quantized

Run:

    python benchmarks/int8.py                      # 512x512, calibration at 8 and 64 prompts
    python benchmarks/int8.py --image 256          # about 4x cheaper per denoiser run
    python benchmarks/int8.py --prompts 8,32,64 --repeats 5 --work /tmp/int8-files
    python benchmarks/int8.py --tiny               # tiny seeded student at 32x32: smoke test only
    python benchmarks/int8.py --work W --reuse-export   # a second run on the fp32 files of the first

Real size is heavy (estimates, not measurements): roughly 12 GB of temporary files (fp32 and int8
ONNX, ORT's augmented calibration model), calibration children that hold the torch reference
(~5 GB of fp32 weights) next to ORT's calibration session, and one fp32 UNet run per
calibration prompt (an ORT fp32 UNet run at 512 px takes about 6 s on this 2-core machine,
shared/PITFALLS.md), so expect tens of minutes. Nothing else should run meanwhile: timings are
wall-clock on a shared CPU.

What is printed (measured side by side in one run; goals are printed, never asserted):

  speed-up      per component, median ORT CPU seconds of the fp32 and int8 files over --repeats
                runs after one warm-up, on held-out prompt 1; speed-up = fp32 time / int8 time.
                Goal: denoiser int8 >= 1.3x faster than fp32 and never slower (the slowest int8
                run beats the fastest fp32 run).
  bytes/param   size of each int8 file on disk (.onnx plus .onnx.data) / the component's torch
                parameter count (fp32 files are ~4). Goal: <= 1.02 for the denoiser.
  peak RSS      of the calibration child process (one per --prompts setting, so each peak is its
                own), taken right after quantize_component returns; in GB and as a multiple of the
                denoiser's fp32 weight bytes. "before" is the peak once the torch reference chain
                is built; the torch graphs are then released as compile does (compiler/streaming.py)
                once what verify asks of it is recorded. Goal: <= 3x, and flat in the number of
                prompts (the largest setting's peak within 10% of the smallest's).
  accuracy      int8 vs the torch fp32 reference on 2 held-out prompts (calibration/heldout.txt,
                never calibrated on), each component fed the reference's inputs as compiler.parity
                does: worst PSNR (dB, against the reference's peak-to-peak range) and cosine. The
                compiler's own gate (compiler.parity.TOLERANCES) is shown beside it. "calib check"
                is quantize_component's own check on 2 calibration prompts.
  machine       CPU model, cores, avx2 / avx512 / vnni / amx flags (VNNI gives int8 dot
                products; without it ORT's int8 kernels lose much of their edge), and the
                onnxruntime and torch versions.

The exit status is 1 when a child process fails (crash, out of memory), else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from _common import (child_result, verdict, OPENCLIP_H_TEXT, REPO, SD21_UNET, SD_TURBO_SCHEDULER, SD_VAE, TOKENS, machine,
                     peak_rss_bytes, run_child, timed_runs, versions)

sys.path.insert(0, str(REPO))

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
GOAL_SPEEDUP = 1.3
GOAL_BYTES_PER_PARAM = 1.02
GOAL_RSS_PER_WEIGHT_BYTE = 3.0
FLAT_RSS = 1.10          # "flat in the number of prompts": largest setting's peak within 10% of the smallest's
SEED = 0                 # torch seed of the random weights; every child rebuilds the same model from it
TINY_IMAGE = 32          # TinySpec's image size


# ---------------------------------------------------------------- the model under test

def _recipe(image: int, prompts: int = 1):
    """A recipe as sd-turbo-int8.yaml, but with no float fallback for the denoiser (the
    question is whether a fully int8 denoiser pays off) and this run's image size."""
    from compiler.recipe import Calibration, Component, Components, Image, Quantization, Recipe

    return Recipe(version=1, name="bench-int8", family="eps-turbo", image=Image(image, image),
                  components=Components(
                      text_encoder=Component("int8", Quantization(scheme="w8")),
                      denoiser=Component("int8", Quantization(scheme="w8a8", max_float_weight_fraction=0.0))),
                  calibration=Calibration(num_prompts=prompts))


def _student(tiny: bool, work: Path):
    """The same weights in every child: the tiny seeded student is written once and loaded through
    compiler.load; the real-size one is rebuilt from SEED (3.5 GB would be slow to write and read)."""
    if tiny:
        from compiler.load import load_student
        from compiler.testing.seeded_students import TinySpec, build

        folder = work / "student"
        if not (folder / "model_index.json").exists():
            build(folder, TinySpec(kind="eps-turbo", tiny_vae=True))
        return load_student(str(folder), "eps-turbo", "vae")
    return _random_sd_turbo(work / "tokenizer")


def _random_sd_turbo(tokenizer_dir: Path):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from compiler.load import Student
    from compiler.testing.seeded_students import write_tokenizer

    # A small-vocabulary CLIP BPE tokenizer (offline); the text encoder keeps the real 49408-row
    # embedding so the parameter count and file sizes are SD-Turbo's.
    if not (tokenizer_dir / "vocab.json").exists():
        write_tokenizer(tokenizer_dir, TOKENS)
    tok = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(SEED)
    text = CLIPTextModel(CLIPTextConfig(**dict(OPENCLIP_H_TEXT, bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)))
    unet = UNet2DConditionModel(**SD21_UNET)
    vae = AutoencoderKL(**SD_VAE)
    from compiler.contract.tokenizers import CLIP, PromptTokenizer

    return Student(source="(random seeded weights)", family="eps-turbo", tokenizers=[PromptTokenizer(0, CLIP, tok)],
                   tokenizer_dirs=[tokenizer_dir], text_encoders=[text.eval()], denoiser=unet.eval(), vae=vae.eval(),
                   vae_subfolder="vae", scheduler_config=SD_TURBO_SCHEDULER)


def _parameters(name: str, graph) -> int:
    """Parameters the exported graph carries (the VAE's encoder is not exported)."""
    if name == "vae_decoder":
        vae = graph.module.vae
        return sum(p.numel() for m in (vae.decoder, getattr(vae, "post_quant_conv", None)) if m is not None
                   for p in m.parameters())
    return sum(p.numel() for p in graph.module.parameters())


def _checksum(student) -> float:
    """Guards the 'same seed, same weights' assumption between children."""
    import torch

    with torch.no_grad():
        return sum(float(p.double().sum()) for m in (*student.text_encoders, student.denoiser) for p in m.parameters())


def _files(folder: Path, main: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(main))


def _size(folder: Path, files: list[str]) -> int:
    return sum((folder / f).stat().st_size for f in files)


def _heldout_file(recipe) -> list[str]:
    from compiler.prompts import read_prompts

    return read_prompts(recipe.parity.prompts, "parity.prompts")


def _heldout(recipe) -> list[str]:
    return _heldout_file(recipe)[: recipe.parity.num_prompts]


def _progress():
    from compiler.progress import Progress

    return Progress(stream=sys.stderr)


# ---------------------------------------------------------------- child processes

def child_export(work: Path, tiny: bool, image: int) -> dict:
    """fp32 ONNX of all three components, and the w8 text encoder (needs no calibration)."""
    from compiler.quantization import ComponentQuant, _mark
    from compiler.targets.onnx import OnnxTarget
    from compiler.targets.onnx.quantize import OnnxQuantizer
    from compiler.wrap import wrap

    progress, target, recipe = _progress(), OnnxTarget(), _recipe(image)
    student = _student(tiny, work)
    wrapped = wrap(student, recipe)
    fp32, int8 = work / "fp32", work / "int8"
    fp32.mkdir(exist_ok=True)
    int8.mkdir(exist_ok=True)
    out = {"components": {}, "checksum": _checksum(student), "latent_shape": list(wrapped.latent_shape),
           "tokenizer_dir": str(student.tokenizer_dirs[0]), "image": image, "tiny": tiny}
    for name in COMPONENTS:
        graph = wrapped.graphs[name]
        progress.step(f"export {name} (fp32)")
        t0 = time.perf_counter()
        files = target.export(graph, fp32, recipe.target_options("onnx")).files
        out["components"][name] = {"params": _parameters(name, graph), "fp32_files": files,
                                   "fp32_bytes": _size(fp32, files), "export_s": time.perf_counter() - t0}
    progress.step("text_encoder: weight-only int8 (w8)")
    quantizer = OnnxQuantizer("text_encoder", "w8", fp32 / "text_encoder.onnx", int8 / "text_encoder.onnx")
    layers = quantizer.layers()
    quantizer.build([l.node for l in layers if l.reason])   # w8 needs no calibration; accuracy is measured below
    _mark(layers, "w8")
    q = ComponentQuant("text_encoder", "w8", quantizer.tool, layers)
    files = _files(int8, "text_encoder.onnx")
    out["components"]["text_encoder"].update(int8_files=files, int8_bytes=_size(int8, files), scheme=q.scheme,
                                             coverage=q.coverage())
    (work / "export.json").write_text(json.dumps(out))
    return out


def child_calibrate(work: Path, tiny: bool, image: int, prompts: int) -> dict:
    """Calibrate and quantize the denoiser on `prompts` calibration prompts; peak RSS of this process."""
    from compiler.errors import ParityError
    from compiler.pipeline import precisions, torch_chain
    from compiler.streaming import compile_questions, record_reference
    from compiler.prompts import calibration_prompts
    from compiler.quantization import QuantJob, quantize_component
    from compiler.targets.onnx import OnnxTarget
    from compiler.targets.onnx.quantize import OnnxQuantizer
    from compiler.parity import TOLERANCES
    from compiler.wrap import wrap

    exported = json.loads((work / "export.json").read_text())
    progress, target, recipe = _progress(), OnnxTarget(), _recipe(image, prompts)
    student = _student(tiny, work)
    if not math.isclose(_checksum(student), exported["checksum"], rel_tol=1e-9):
        raise SystemExit("rebuilt weights differ from the exported ones (seeded init not reproducible here)")
    wrapped = wrap(student, recipe)
    reference = torch_chain(wrapped, student)
    rss_before = peak_rss_bytes()
    calib = calibration_prompts(recipe, _heldout_file(recipe))
    # as compiler.pipeline does: record what the later stages will ask the torch graphs, release them
    record_reference(student, recipe, wrapped, reference,
                     compile_questions(reference, recipe, _heldout(recipe), calib, precisions(recipe)))
    # A folder per setting: ORT reuses a calibration cache it finds in the work folder, which
    # would hand the 64-prompt run the 8-prompt ranges.
    out_dir = work / f"int8-{prompts}"
    out_dir.mkdir(exist_ok=True)
    dst = out_dir / "denoiser.onnx"
    result = {"prompts": len(calib), "rss_before_bytes": rss_before, "file": str(dst)}
    t0 = time.perf_counter()
    try:
        job = QuantJob("denoiser", recipe.components.denoiser, reference, calib, recipe.calibration.seed,
                       TOLERANCES[("denoiser", "int8")], progress)
        q, _ = quantize_component(job, OnnxQuantizer("denoiser", "w8a8", work / "fp32" / "denoiser.onnx", dst))
        result.update(coverage=q.coverage(), fallback=q.fallback, check=q.check.get("before_fallback", {}))
    except ParityError as exc:  # no fallback allowed: the miss is a result, and the file is still written
        result["parity_error"] = exc.message
    result["calibrate_s"] = time.perf_counter() - t0
    result["peak_rss_bytes"] = peak_rss_bytes()  # taken before the held-out check below loads its own sessions
    files = _files(out_dir, "denoiser.onnx")
    result.update(int8_files=files, int8_bytes=_size(out_dir, files))
    result["heldout"] = _heldout_accuracy(reference, recipe, target, dst, work / "int8" / "text_encoder.onnx")
    return result


def _heldout_accuracy(reference, recipe, target, denoiser: Path, text_encoder: Path) -> dict:
    """int8 vs torch fp32 on the held-out prompts, each component fed the reference's inputs."""
    from compiler.metrics import compare
    from compiler.cases import heldout_cases

    run_denoiser, run_text = target.runner(denoiser), target.runner(text_encoder)
    rows = {"denoiser": [], "text_encoder": []}
    for case in heldout_cases(reference, _heldout(recipe), recipe.parity.seed):
        embeds = reference.embed(case.tokens)
        rows["denoiser"].append(compare(reference.denoise(embeds, case.z), run_denoiser({**embeds, "noise": case.z})[0]))
        rows["text_encoder"].append(compare(embeds["prompt_embeds"], run_text(case.tokens.ids)[0]))
    return {name: {"psnr_db": min(m.psnr_db for m in ms), "cosine": min(m.cosine for m in ms),
                   "finite": all(m.finite for m in ms), "prompts": len(ms)} for name, ms in rows.items()}


def child_latency(work: Path, image: int, repeats: int, denoiser: Path) -> dict:
    """Median ORT CPU seconds, fp32 vs int8, one session at a time (the fp32 UNet alone is 3.5 GB)."""
    from compiler.contract import noise
    from compiler.prompts import tokenize
    from compiler.contract.tokenizers import CLIP, load as load_tokenizer

    exported = json.loads((work / "export.json").read_text())
    recipe = _recipe(image)
    tokens = tokenize([load_tokenizer(Path(exported["tokenizer_dir"]), 0, CLIP)], _heldout(recipe)[0])
    z = noise.gaussian(recipe.parity.seed, tuple(exported["latent_shape"]))
    fp32, int8 = work / "fp32", work / "int8"
    out = {}
    # Each component is fed the fp32 chain's upstream output, as in pipeline.measure_latency.
    out["text_encoder"], (embeds,) = _time_pair(fp32 / "text_encoder.onnx", int8 / "text_encoder.onnx",
                                                tokens.ids, repeats)
    out["denoiser"], (latents,) = _time_pair(fp32 / "denoiser.onnx", denoiser,
                                             {"prompt_embeds": embeds, "noise": z}, repeats)
    out["vae_decoder"], _ = _time_pair(fp32 / "vae_decoder.onnx", None, {"latents": latents}, repeats)
    return out


def _time_pair(fp32: Path, int8: Path | None, feeds: dict, repeats: int) -> tuple[dict, list]:
    times, outputs = _time(fp32, feeds, repeats)
    row = {"fp32_runs_s": times}
    if int8 is not None:
        row["int8_runs_s"], _ = _time(int8, feeds, repeats)
    return row, outputs


def _time(path: Path, feeds: dict, repeats: int) -> tuple[list[float], list]:
    from compiler.targets.onnx import OnnxTarget

    run = OnnxTarget().runner(path)
    outputs = run(feeds)  # warm-up: first-run allocations and kernel selection stay out of the median
    return timed_runs(run, feeds, repeats), outputs


def child(args) -> None:
    work = Path(args.work)
    if args.child == "export":
        child_result(lambda: child_export(work, args.tiny, args.image))
    elif args.child == "calibrate":
        child_result(lambda: child_calibrate(work, args.tiny, args.image, int(args.prompts)))
    else:
        child_result(lambda: child_latency(work, args.image, args.repeats, Path(args.denoiser)))


# ---------------------------------------------------------------- parent: run children, print

def _run(stage: str, work: Path, args, *extra: str) -> dict:
    argv = ["--child", stage, "--work", str(work), "--image", str(args.image), "--repeats", str(args.repeats),
            *extra] + (["--tiny"] if args.tiny else [])
    return run_child(Path(__file__).resolve(), argv, echo_stderr=True)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2



def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _header(args) -> list[str]:
    m, v = machine(), versions("onnxruntime", "torch", "onnx", "diffusers", "transformers")
    scale = (f"TOY SIZES (--tiny, seeded tiny student, {TINY_IMAGE}x{TINY_IMAGE}): a smoke test, not a measurement"
             if args.tiny else f"SD-Turbo size, random seeded weights, {args.image}x{args.image}")
    return [f"int8 benchmark ({scale})",
            "schemes: denoiser w8a8 (ORT quantize_static QDQ, no float fallback); text_encoder w8 (MatMulNBits); "
            "vae_decoder fp32",
            f"machine: {m['cpu']}; {m['cores']} cores ({m['usable_cores']} usable); avx2 {_yes(m['avx2'])}, "
            f"avx512 {_yes(m['avx512'])}, vnni {_yes(m['vnni'])}, amx {_yes(m['amx'])}",
            "versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]


def _latency_table(exported: dict, calib: dict | None, latency: dict, repeats: int) -> list[str]:
    lines = [f"latency: ONNX Runtime CPU, median of {repeats} runs after 1 warm-up, held-out prompt 1",
             f"{'component':<13} {'params':>9} {'fp32 ms':>10} {'int8 ms':>10} {'speed-up':>9} "
             f"{'fp32 bytes/param':>17} {'int8 bytes/param':>17}  int8 coverage"]
    for name in COMPONENTS:
        c = exported["components"][name]
        t = latency.get(name, {})
        int8_bytes, coverage = c.get("int8_bytes"), c.get("coverage")
        if name == "denoiser" and calib is not None:
            int8_bytes, coverage = calib["int8_bytes"], calib.get("coverage")
        fp32_ms = _median(t["fp32_runs_s"]) * 1e3 if t.get("fp32_runs_s") else None
        int8_ms = _median(t["int8_runs_s"]) * 1e3 if t.get("int8_runs_s") else None
        cells = [f"{name:<13}", f"{_count(c['params']):>9}", _num(fp32_ms, 10, ".1f"), _num(int8_ms, 10, ".1f"),
                 _num(fp32_ms / int8_ms if fp32_ms and int8_ms else None, 8, ".2f") + ("x" if int8_ms else " "),
                 _num(c["fp32_bytes"] / c["params"], 17, ".3f"),
                 _num(int8_bytes / c["params"] if int8_bytes else None, 17, ".3f")]
        cov = (f"{coverage['quantized_layers']} int8 / {coverage['float_layers']} float layers, "
               f"{coverage['quantized_weight_share']:.1%} of layer weights" if coverage else "fp32 (not quantized)")
        lines.append(" ".join(cells) + "  " + cov)
    return lines


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _num(v, width: int, fmt: str) -> str:
    return f"{v:{width}{fmt}}" if v is not None else f"{'-':>{width}}"


def _calibration_table(calibs: list[dict], weight_bytes: int) -> list[str]:
    from compiler.parity import TOLERANCES

    gate = TOLERANCES[("denoiser", "int8")]
    lines = [f"calibration (denoiser w8a8, one child process per setting; x = multiple of the denoiser's fp32 "
             f"weights, {_gb(weight_bytes)}) and held-out accuracy (int8 vs torch fp32; compiler gate "
             f">= {gate.min_psnr_db:.0f} dB, cosine >= {gate.min_cosine})",
             f"{'prompts':>7} {'time s':>8} {'RSS before':>16} {'peak RSS':>16} {'calib check dB':>15} "
             f"{'held-out dB':>12} {'cosine':>9}  result"]
    for r in calibs:
        if "error" in r:
            lines.append(f"{r['setting']:>7} FAILED: {r['error']}")
            continue
        h = r["heldout"]["denoiser"]
        check = r.get("check", {}).get("worst_psnr_db")
        held_ok = h["finite"] and h["psnr_db"] >= gate.min_psnr_db and h["cosine"] >= gate.min_cosine
        result = f"int8 misses its gate on calibration prompts: {r['parity_error']}" if "parity_error" in r else \
            ("passes the compiler gate" if held_ok else "FAILS the compiler gate on held-out prompts")
        lines.append(f"{r['prompts']:>7} {r['calibrate_s']:8.1f} {_gb_x(r['rss_before_bytes'], weight_bytes):>16} "
                     f"{_gb_x(r['peak_rss_bytes'], weight_bytes):>16} {_num(check, 15, '.1f')} "
                     f"{h['psnr_db']:12.1f} {h['cosine']:9.5f}  {result}")
    return lines


def _gb_x(n: int, weight_bytes: int) -> str:
    return f"{_gb(n)} {n / weight_bytes:4.1f}x"


def _goals(exported: dict, calibs: list[dict], latency: dict) -> list[str]:
    lines = ["goals (printed, never asserted):"]
    den = exported["components"]["denoiser"]
    t = latency.get("denoiser", {})
    if t.get("int8_runs_s"):
        speedup = _median(t["fp32_runs_s"]) / _median(t["int8_runs_s"])
        never_slower = max(t["int8_runs_s"]) < min(t["fp32_runs_s"])
        lines.append(f"  denoiser int8 >= {GOAL_SPEEDUP}x faster than fp32 and never slower: speed-up {speedup:.2f}x; "
                     f"slowest int8 run {max(t['int8_runs_s']) * 1e3:.1f} ms vs fastest fp32 run "
                     f"{min(t['fp32_runs_s']) * 1e3:.1f} ms -> {verdict(speedup >= GOAL_SPEEDUP and never_slower)}")
    else:
        lines.append("  denoiser speed-up: not measured (no int8 denoiser)")
    ok = [r for r in calibs if "error" not in r]
    if ok:
        bpp = ok[-1]["int8_bytes"] / den["params"]
        lines.append(f"  denoiser int8 bytes/param <= {GOAL_BYTES_PER_PARAM}: {bpp:.3f} -> "
                     f"{verdict(bpp <= GOAL_BYTES_PER_PARAM)}")
        weight_bytes = den["params"] * 4
        ratios = [r["peak_rss_bytes"] / weight_bytes for r in ok]
        per = ", ".join(f"{x:.2f}x at {r['prompts']} prompts" for x, r in zip(ratios, ok))
        if len(ok) < 2:  # flatness needs two settings that both finished
            flat, growth_text = False, "flatness not measured (one setting finished)"
        else:
            growth = ok[-1]["peak_rss_bytes"] / ok[0]["peak_rss_bytes"]
            flat, growth_text = growth <= FLAT_RSS, f"{ok[-1]['prompts']} vs {ok[0]['prompts']} prompts {growth - 1:+.1%}"
        lines.append(f"  calibration peak RSS <= {GOAL_RSS_PER_WEIGHT_BYTE:.0f}x fp32 weights and flat in the number "
                     f"of prompts: {per}; {growth_text} -> "
                     f"{verdict(max(ratios) <= GOAL_RSS_PER_WEIGHT_BYTE and flat)}")
    return lines


def _reusable_export(work: Path, args) -> dict | None:
    """With --reuse-export, an earlier run's fp32 export in the same --work folder at the same size."""
    path = work / "export.json"
    if not (args.reuse_export and path.exists()):
        return None
    exported = json.loads(path.read_text())
    if exported.get("image") != args.image or exported.get("tiny") != args.tiny:
        return None
    print(f"reusing the fp32 export in {work} (--reuse-export)", flush=True)
    return exported


@contextlib.contextmanager
def _workdir(path: str | None):
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
            yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=int, default=512, help="image size in pixels (512 native; 256 is ~4x cheaper)")
    p.add_argument("--prompts", default="8,64", help="calibration prompt counts, one child process each")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per file after one warm-up (median shown)")
    p.add_argument("--work", help="keep the ONNX files in this folder (default: a temporary folder, removed)")
    p.add_argument("--reuse-export", action="store_true",
                   help="reuse the fp32 export an earlier run left in --work (same --image); skips ~3 min at 512 px")
    p.add_argument("--tiny", action="store_true", help=f"tiny seeded student at {TINY_IMAGE}x{TINY_IMAGE}: smoke test")
    p.add_argument("--child", choices=("export", "calibrate", "latency"), help=argparse.SUPPRESS)
    p.add_argument("--denoiser", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.image = TINY_IMAGE
    if args.child:
        child(args)
        return 0
    try:
        settings = sorted({int(n) for n in args.prompts.split(",") if n.strip()})
    except ValueError:
        p.error(f"--prompts takes comma-separated integers, got {args.prompts!r}")
    if not settings or min(settings) < 1 or args.repeats < 1 or args.image <= 0 or args.image % 8:
        p.error("need --prompts >= 1, --repeats >= 1 and --image a positive multiple of 8")

    print("\n".join(_header(args)), flush=True)
    with _workdir(args.work) as work:
        exported = _reusable_export(work, args) or _run("export", work, args)
        if "error" in exported:
            print(f"export FAILED: {exported['error']}", flush=True)
            return 1
        calibs = [{"setting": n, **_run("calibrate", work, args, "--prompts", str(n))} for n in settings]
        done = [r for r in calibs if "error" not in r]
        # Latency uses the int8 denoiser from the largest calibration setting that produced one.
        latency = _run("latency", work, args, "--denoiser", done[-1]["file"]) if done else {}
    if "error" in latency:
        print(f"latency FAILED: {latency['error']}", flush=True)
        latency = {}
    weight_bytes = exported["components"]["denoiser"]["params"] * 4
    lines = ["", *_latency_table(exported, done[-1] if done else None, latency, args.repeats), "",
             *_calibration_table(calibs, weight_bytes)]
    if done:
        te = done[-1]["heldout"]["text_encoder"]
        lines.append(f"text_encoder w8 held-out accuracy vs torch fp32: {te['psnr_db']:.1f} dB, cosine "
                     f"{te['cosine']:.5f}")
    lines += ["", *_goals(exported, calibs, latency)]
    print("\n".join(lines), flush=True)
    return 1 if len(done) < len(calibs) or not latency else 0


if __name__ == "__main__":
    sys.exit(main())
