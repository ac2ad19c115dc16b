"""Core ML target at real scale: `make bench-coreml` (python benchmarks/coreml.py).

SD-Turbo-size components with random seeded weights (no download; the same builders as
benchmarks/int8.py), taken through the compiler's own Core ML target exactly as `compile` does:
wrap -> CoreMLTarget.export (torch.export -> coremltools ML Program, fp16) -> per scheme
compiler.quantization.quantize_component with CoreMLQuantizer -> the ML Program evaluator.
One child process per (component, step), so each peak RSS is its own. Printed, never asserted:

    conversion          <= 60 s per billion parameters, peak RSS <= 1.5x fp32 weight bytes
    package bytes/param fp16 ~2.0, w8 <= 1.02, palettize6 <= 0.8, palettize4 <= 0.55
    accuracy vs torch   w8 and w8a8 denoiser >= 35 dB on held-out prompts
    evaluator seconds   per component (this machine's CPU; says nothing about a phone)

Neural Engine latency needs a Mac: benchmarks/coreml_device.py measures it there on the
packages this script leaves in --work.

    python benchmarks/coreml.py --work /tmp/bench/coreml                  # everything: about an hour, ~12 GB RAM
    python benchmarks/coreml.py --components denoiser --schemes fp16,w8   # a subset
    python benchmarks/coreml.py --tiny --work /tmp/bench/coreml-tiny      # a minute: smoke test of this script
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REPO, PeakRSS, child_result, peak_rss_bytes, print_header, run_child, verdict

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
SCHEMES = ("fp16", "w8", "w8a8", "palettize6", "palettize4")
W8A8_COMPONENTS = ("denoiser",)            # activations: where the FLOPs and the speed-up are
GOAL_SECONDS_PER_BILLION, GOAL_RSS = 60.0, 1.5
GOAL_BYTES_PER_PARAM = {"fp16": 2.05, "w8": 1.02, "w8a8": 1.02, "palettize6": 0.8, "palettize4": 0.55}
GOAL_DENOISER_DB = 35.0
CALIBRATION_PROMPTS = 4
HELDOUT_PROMPTS = 2


def _setup(work: Path, tiny: bool, image: int):
    """(recipe, student, wrapped) as benchmarks/int8.py builds them, deployment iOS18 so one fp16
    conversion serves every scheme (palettes per grouped channel need iOS18)."""
    import int8 as bench

    from compiler.recipe import Calibration, Parity, override
    from compiler.targets.coreml import CoreMLOptions
    from compiler.wrap import wrap

    recipe = override(bench._recipe(image, CALIBRATION_PROMPTS), calibration=Calibration(num_prompts=CALIBRATION_PROMPTS),
                      parity=Parity(num_prompts=HELDOUT_PROMPTS),
                      targets={"coreml": CoreMLOptions(minimum_deployment_target="iOS18")})
    student = bench._student(tiny, work)
    return recipe, student, wrap(student, recipe)


def child_convert(work: Path, tiny: bool, image: int, component: str) -> dict:
    """Conversion time and peak RSS. The student is built whole (the scheme children need the same
    weights), then everything but this component is released, so the peak sampled during the
    conversion is this component's torch module plus what conversion adds."""
    import gc

    import int8 as bench

    from compiler.streaming import return_freed_memory
    from compiler.targets.coreml import CoreMLTarget

    recipe, student, wrapped = _setup(work, tiny, image)
    graph = wrapped.graphs[component]
    params = bench._parameters(component, graph)
    weight_bytes = 4 * params
    del student, wrapped
    gc.collect()
    return_freed_memory()
    target = CoreMLTarget()
    options = recipe.target_options("coreml")
    target.validate(recipe, options)
    out = work / "fp16"
    out.mkdir(parents=True, exist_ok=True)
    with PeakRSS() as rss:
        baseline = rss.peak
        t0 = time.perf_counter()
        artifact = target.export(graph, out, options)
        seconds = time.perf_counter() - t0
    (work / f"{component}.names.json").write_text(json.dumps(artifact.layer_names))
    return {"component": component, "params": params, "weight_bytes": weight_bytes, "convert_s": seconds,
            "peak_rss_bytes": rss.peak, "rss_before_bytes": baseline,
            "package_bytes": sum((out / f).stat().st_size for f in artifact.files)}


def child_scheme(work: Path, tiny: bool, image: int, component: str, scheme: str) -> dict:
    """Quantize (unless fp16) as compile does, then held-out accuracy and evaluator time."""
    import int8 as bench

    from compiler.errors import ParityError
    from compiler.metrics import compare
    from compiler.pipeline import precisions, torch_chain
    from compiler.streaming import compile_questions, record_reference
    from compiler.prompts import calibration_prompts
    from compiler.quantization import QuantJob, quantize_component
    from compiler.recipe import Component, Quantization
    from compiler.targets.coreml.evaluate import evaluate_package
    from compiler.targets.coreml.quantize import CoreMLQuantizer
    from compiler.cases import heldout_cases
    from compiler.parity import TOLERANCES

    recipe, student, wrapped = _setup(work, tiny, image)
    params = bench._parameters(component, wrapped.graphs[component])
    reference = torch_chain(wrapped, student)
    if component == "denoiser" and scheme != "fp16":
        # as compile does: record what the later stages will ask the torch graphs (held-out and
        # calibration prompts), then release them
        record_reference(student, recipe, wrapped, reference, compile_questions(
            reference, recipe, bench._heldout(recipe), calibration_prompts(recipe, bench._heldout_file(recipe)),
            precisions(recipe)))
    src = work / "fp16" / f"{component}.mlpackage"
    result = {"component": component, "scheme": scheme, "params": params}
    path = src
    if scheme != "fp16":
        path = work / scheme / src.name
        path.parent.mkdir(exist_ok=True)
        names = json.loads((work / f"{component}.names.json").read_text())
        quantizer = CoreMLQuantizer(component, scheme, src, path, recipe.target_options("coreml"), names)
        spec = Component("int8", Quantization(scheme=scheme))
        calib = calibration_prompts(override_quantized(recipe, component, spec), bench._heldout_file(recipe))
        job = QuantJob(component, spec, reference, calib, recipe.calibration.seed,
                       TOLERANCES[(component, "int8")], bench._progress())
        t0 = time.perf_counter()
        try:
            q, _ = quantize_component(job, quantizer)
            result.update(coverage=q.coverage(), check=q.check.get("before_fallback", {}))
        except ParityError as exc:     # no fallback allowed here: the miss is a result; the package exists
            result["parity_error"] = exc.message
        result["quantize_s"] = time.perf_counter() - t0
        result["quantize_peak_rss_bytes"] = peak_rss_bytes()
    result["package_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    evaluator = evaluate_package(path)
    metrics, seconds = [], []
    for case in heldout_cases(reference, bench._heldout(recipe), recipe.parity.seed):
        embeds = reference.embed(case.tokens)
        if component == "text_encoder":
            feeds, expected = case.tokens.ids, embeds["prompt_embeds"]
        elif component == "denoiser":
            feeds, expected = reference.denoiser_feeds(embeds, case.z), reference.denoise(embeds, case.z)
        else:
            latents = reference.denoise(embeds, case.z)
            feeds, expected = {"latents": latents}, reference.decode(latents)
        t0 = time.perf_counter()
        out = evaluator(feeds)[0]
        seconds.append(time.perf_counter() - t0)
        metrics.append(compare(expected, out, data_range=1.0 if component == "vae_decoder" else None))
    result.update(psnr_db=min(m.psnr_db for m in metrics), cosine=min(m.cosine for m in metrics),
                  finite=all(m.finite for m in metrics), evaluate_s=min(seconds), peak_rss_bytes=peak_rss_bytes())
    return result


def override_quantized(recipe, component: str, spec):
    """The recipe with `component` quantized as `spec` (so calibration_prompts reads its file)."""
    import dataclasses

    return dataclasses.replace(recipe, components=dataclasses.replace(recipe.components, **{component: spec}))


def child(args) -> None:
    work = Path(args.work)
    if args.child == "convert":
        child_result(lambda: child_convert(work, args.tiny, args.image, args.component))
    else:
        child_result(lambda: child_scheme(work, args.tiny, args.image, args.component, args.child))


def _run(step: str, component: str, args) -> dict:
    argv = ["--child", step, "--component", component, "--work", str(args.work), "--image", str(args.image)]
    result = run_child(Path(__file__).resolve(), argv + (["--tiny"] if args.tiny else []), echo_stderr=True)
    return {"component": component, "scheme": step, **result}



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/bench/coreml", help="folder for packages (kept for coreml_device.py)")
    p.add_argument("--components", default=",".join(COMPONENTS))
    p.add_argument("--schemes", default=",".join(SCHEMES), help=f"subset of {SCHEMES}")
    p.add_argument("--image", type=int, default=512)
    p.add_argument("--tiny", action="store_true", help="toy sizes: smoke-test the script, not a measurement")
    p.add_argument("--reuse", action="store_true", help="skip the conversion of components whose fp16 package "
                                                       "an earlier run left in --work")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--component", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.image = 32
    if args.child:
        child(args)
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    components = [c for c in args.components.split(",") if c]
    schemes = [s for s in args.schemes.split(",") if s]
    print_header("Core ML", args.tiny, args.image, "coremltools", "torch", "diffusers", "transformers", "scikit-learn")
    failed = 0
    print(f"{'component':<13} {'params':>9} {'convert':>9} {'s per 1e9':>10} {'peak RSS':>9} {'x weights':>10}")
    for c in components:
        if args.reuse and (Path(args.work) / "fp16" / f"{c}.mlpackage").is_dir():
            print(f"{c:<13} (reusing {Path(args.work) / 'fp16' / c}.mlpackage)", flush=True)
            continue
        r = _run("convert", c, args)
        if "error" in r:
            failed += 1
            print(f"{c:<13} FAILED: {r['error']}", flush=True)
            continue
        spb = r["convert_s"] / (r["params"] / 1e9)
        ratio = r["peak_rss_bytes"] / r["weight_bytes"]
        print(f"{c:<13} {r['params'] / 1e6:8.1f}M {r['convert_s']:8.1f}s {spb:9.1f}s {r['peak_rss_bytes'] / 1e9:8.2f}G "
              f"{ratio:9.2f}x   ({verdict(spb <= GOAL_SECONDS_PER_BILLION)} <= {GOAL_SECONDS_PER_BILLION:.0f} s/B, "
              f"{verdict(ratio <= GOAL_RSS)} <= {GOAL_RSS}x; {r['rss_before_bytes'] / 1e9:.2f} GB before converting, "
              f"the torch module included)", flush=True)
    print(f"\n{'component':<13} {'scheme':<11} {'bytes/param':>11} {'PSNR dB':>8} {'cosine':>9} {'evaluate':>9} "
          f"{'quantize':>9} {'coverage':>9}  goals")
    for c in components:
        for s in schemes:
            if s == "w8a8" and c not in W8A8_COMPONENTS:
                continue
            r = _run(s, c, args)
            if "error" in r:
                failed += 1
                print(f"{c:<13} {s:<11} FAILED: {r['error']}", flush=True)
                continue
            bpp = r["package_bytes"] / r["params"]
            goals = [f"{verdict(bpp <= GOAL_BYTES_PER_PARAM[s])} <= {GOAL_BYTES_PER_PARAM[s]} B/param"]
            if c == "denoiser" and s in ("w8", "w8a8"):
                goals.append(f"{verdict(r['psnr_db'] >= GOAL_DENOISER_DB)} >= {GOAL_DENOISER_DB:.0f} dB")
            if "parity_error" in r:
                goals.append(f"calibration check: {r['parity_error'][:80]}")
            cov = r.get("coverage", {}).get("quantized_weight_share")
            print(f"{c:<13} {s:<11} {bpp:11.3f} {r['psnr_db']:8.2f} {r['cosine']:9.5f} {r['evaluate_s']:8.1f}s "
                  f"{r.get('quantize_s', 0):8.1f}s {'' if cov is None else f'{cov:8.1%}'}  {'; '.join(goals)}",
                  flush=True)
    print("goals printed, not asserted. Neural Engine latency: run benchmarks/coreml_device.py on a Mac.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
