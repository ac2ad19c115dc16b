"""ExecuTorch target at real scale: `make bench-executorch` (python benchmarks/executorch_bench.py;
not `executorch.py`: a script's folder comes first on sys.path, and that name would shadow the package).

SD-Turbo-size components with random seeded weights (the builders of benchmarks/int8.py), taken
through the compiler's own ExecuTorch target exactly as `compile` does: wrap -> ExecuTorchTarget.export
(torch.export -> rewrites -> XNNPACK lowering -> .pte) -> compiler.quantization.quantize_component
with ExecuTorchQuantizer -> ExecuTorch's runtime. ONNX Runtime runs the same component, exported by the
ONNX target, side by side. One child process per (component, precision), so each peak RSS is its own.
Printed, never asserted:

    export              <= 60 s per billion parameters, peak RSS <= 1.5x fp32 weight bytes
    delegation          segments and FLOP share per component (from the .pte's own lowering)
    .pte bytes/param    int8 <= 1.05
    latency             int8 vs fp32 >= 1.5x on the denoiser; ExecuTorch <= 1.2x ONNX Runtime at fp32
                        and at int8 (one child runs all four programs in turn, a call of each per round)
    running memory      RSS added by loading and running the program <= 1.5x its bytes

    python benchmarks/executorch_bench.py --work /tmp/bench/executorch                 # everything (hours on 2 cores)
    python benchmarks/executorch_bench.py --components vae_decoder --precisions fp32    # a subset
    python benchmarks/executorch_bench.py --tiny --work /tmp/bench/et-tiny             # smoke test of this script
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REPO, PeakRSS, child_result, print_header, run_child, timed_runs, verdict

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
PRECISIONS = ("fp32", "int8")
SCHEME = {"text_encoder": "w8", "denoiser": "w8a8", "vae_decoder": "w8a8"}
GOAL_SECONDS_PER_BILLION, GOAL_RSS, GOAL_RUN_RSS = 60.0, 1.5, 1.5
GOAL_INT8_BYTES_PER_PARAM, GOAL_DENOISER_SPEEDUP, GOAL_VS_ORT = 1.05, 1.5, 1.2
CALIBRATION_PROMPTS, HELDOUT_PROMPTS, REPEATS = 4, 1, 3


def _setup(work: Path, tiny: bool, image: int):
    import int8 as bench

    from compiler.recipe import Calibration, Parity, override
    from compiler.wrap import wrap

    recipe = override(bench._recipe(image, CALIBRATION_PROMPTS), calibration=Calibration(num_prompts=CALIBRATION_PROMPTS),
                      parity=Parity(num_prompts=HELDOUT_PROMPTS))
    student = bench._student(tiny, work)
    return recipe, student, wrap(student, recipe)


def _feeds(reference, recipe, component: str) -> dict:
    import int8 as bench

    from compiler.quantization import calibration_feeds

    return next(calibration_feeds(component, reference, bench._heldout(recipe), recipe.parity.seed, "benchmark"))


def _int8_job(component: str, reference, recipe):
    """The quantization job both targets' int8 programs come from: same scheme, prompts and gate."""
    import int8 as bench

    from compiler.prompts import calibration_prompts
    from compiler.quantization import QuantJob
    from compiler.recipe import Component, Quantization
    from compiler.parity import TOLERANCES

    return QuantJob(component, Component("int8", Quantization(scheme=SCHEME[component])), reference,
                    calibration_prompts(recipe, bench._heldout_file(recipe)), recipe.calibration.seed,
                    TOLERANCES[(component, "int8")], bench._progress())


def child_step(work: Path, tiny: bool, image: int, component: str, precision: str) -> dict:
    """Export (and quantize) one component as compile does, then run it: delegation, size,
    accuracy vs torch, latency, and the running process's peak RSS beyond the weights."""
    import int8 as bench

    from compiler.metrics import compare
    from compiler.pipeline import torch_chain
    from compiler.quantization import quantize_component
    from compiler.targets.executorch import ExecuTorchTarget

    recipe, student, wrapped = _setup(work, tiny, image)
    graph = wrapped.graphs[component]
    params = bench._parameters(component, graph)
    reference = torch_chain(wrapped, student)
    feeds = _feeds(reference, recipe, component)
    expected = reference.runners[component](feeds)[0]
    target = ExecuTorchTarget()
    options = recipe.target_options("executorch")
    out = work / precision
    out.mkdir(parents=True, exist_ok=True)
    target._int8 = {component} if precision == "int8" else set()
    result = {"component": component, "precision": precision, "params": params, "weight_bytes": 4 * params}
    if precision == "fp32":
        # as compile does not need them either: the export peak RSS is this component's own
        from compiler.streaming import return_freed_memory

        reference = None
        for other in [n for n in wrapped.graphs if n != component]:
            del wrapped.graphs[other]
        student.denoiser = student.vae = None
        student.text_encoders = []
        return_freed_memory()
    export_dir = work / "fp32-for-int8" if precision == "int8" else out
    export_dir.mkdir(parents=True, exist_ok=True)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        artifact = target.export(graph, export_dir, options)
        result["export_s"] = time.perf_counter() - t0
    result["export_peak_rss_bytes"] = rss.peak
    if precision == "int8":
        quantizer = target.quantizer(component, SCHEME[component], artifact, export_dir, out, options)
        t0 = time.perf_counter()
        q, artifact = quantize_component(_int8_job(component, reference, recipe), quantizer)
        result.update(quantize_s=time.perf_counter() - t0, coverage=q.coverage())
    result["delegation"] = artifact.facts["delegation"]
    result["pte_bytes"] = (out / artifact.main).stat().st_size
    del wrapped, student, graph
    with PeakRSS() as rss:     # loading the program and running it: what an app would hold
        run = target.runner(out / artifact.main)
        got = run(feeds)[0]
        result["latency_s"] = sorted(timed_runs(run, feeds, REPEATS))[REPEATS // 2]
    result["run_peak_rss_bytes"] = rss.added
    m = compare(expected, got, data_range=1.0 if component == "vae_decoder" else None)
    result.update(psnr_db=m.psnr_db, cosine=m.cosine)
    return result


def child_ort(work: Path, tiny: bool, image: int, component: str, int8: bool) -> dict:
    """The same component through the ONNX target, fp32 and (when int8 is measured) quantized with
    the same scheme and calibration: the programs child_latency times beside ExecuTorch's."""
    from compiler.errors import ParityError
    from compiler.pipeline import torch_chain
    from compiler.quantization import quantize_component
    from compiler.targets.onnx import OnnxTarget

    recipe, student, wrapped = _setup(work, tiny, image)
    target, options = OnnxTarget(), recipe.target_options("onnx")
    fp32_dir, int8_dir = work / "onnx-fp32", work / "onnx-int8"
    fp32_dir.mkdir(parents=True, exist_ok=True)
    artifact = target.export(wrapped.graphs[component], fp32_dir, options)
    paths = {"fp32": str(fp32_dir / artifact.main)}
    if int8:
        int8_dir.mkdir(parents=True, exist_ok=True)
        quantizer = target.quantizer(component, SCHEME[component], artifact, fp32_dir, int8_dir, options)
        try:
            quantize_component(_int8_job(component, torch_chain(wrapped, student), recipe), quantizer)
        except ParityError as exc:   # beyond the gate: still timed, reported as such
            paths["int8 parity"] = exc.message
        paths["int8"] = str(int8_dir / artifact.main)
    return {"component": component, "paths": paths}


def child_latency(work: Path, tiny: bool, image: int, component: str, ort_paths: str) -> dict:
    """ExecuTorch and ONNX Runtime, fp32 and int8, on the same feeds, one call of each per round, so
    a machine that speeds up or slows down between minutes moves them all alike."""
    import statistics

    from compiler.pipeline import torch_chain
    from compiler.targets.executorch import ExecuTorchTarget
    from compiler.targets.onnx import OnnxTarget

    recipe, student, wrapped = _setup(work, tiny, image)
    feeds = _feeds(torch_chain(wrapped, student), recipe, component)
    del wrapped, student
    programs = {p: work / p / f"{component}.pte" for p in PRECISIONS}
    runs = {f"executorch {p}": ExecuTorchTarget().runner(path) for p, path in programs.items() if path.exists()}
    for precision, path in json.loads(ort_paths).items():
        if precision in PRECISIONS:
            runs[f"onnxruntime {precision}"] = OnnxTarget().runner(Path(path))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(feeds)                                    # warm-up
    for _ in range(REPEATS):
        for name, run in runs.items():
            times[name] += timed_runs(run, feeds, 1)
    return {"component": component, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "rounds_s": times}


def child(args) -> None:
    work = Path(args.work)
    if args.child == "ort":
        child_result(lambda: child_ort(work, args.tiny, args.image, args.component, args.int8))
    elif args.child == "latency":
        child_result(lambda: child_latency(work, args.tiny, args.image, args.component, args.ort))
    else:
        child_result(lambda: child_step(work, args.tiny, args.image, args.component, args.child))


def _run(step: str, component: str, args, *extra: str) -> dict:
    argv = ["--child", step, "--component", component, "--work", str(args.work), "--image", str(args.image), *extra]
    return run_child(Path(__file__).resolve(), argv + (["--tiny"] if args.tiny else []), echo_stderr=True)



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/bench/executorch", help="folder for the programs")
    p.add_argument("--components", default=",".join(COMPONENTS))
    p.add_argument("--precisions", default=",".join(PRECISIONS), help=f"subset of {PRECISIONS}")
    p.add_argument("--image", type=int, default=512)
    p.add_argument("--tiny", action="store_true", help="toy sizes: smoke-test the script, not a measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--component", help=argparse.SUPPRESS)
    p.add_argument("--ort", help=argparse.SUPPRESS)
    p.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.image = 32
    if args.child:
        child(args)
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    components = [c for c in args.components.split(",") if c]
    precisions = [s for s in args.precisions.split(",") if s]
    print_header("ExecuTorch", args.tiny, args.image,
                 "executorch", "torchao", "torch", "onnxruntime", "diffusers", "transformers")
    print(f"{'component':<13} {'prec':<5} {'params':>9} {'export':>8} {'s/1e9':>7} {'RSS x':>6} {'segments':>8} "
          f"{'deleg':>7} {'B/param':>8} {'PSNR dB':>8} {'ms':>9} {'run RSS x':>9}")
    failed, rows = 0, {}
    for c in components:
        for s in precisions:
            r = _run(s, c, args)
            if "error" in r:
                failed += 1
                print(f"{c:<13} {s:<5} FAILED: {r['error']}", flush=True)
                continue
            rows[(c, s)] = r
            d = r["delegation"]
            spb = r["export_s"] / (r["params"] / 1e9)
            print(f"{c:<13} {s:<5} {r['params'] / 1e6:8.1f}M {r['export_s']:7.1f}s {spb:7.1f} "
                  f"{r['export_peak_rss_bytes'] / r['weight_bytes']:6.2f} {d['delegated_segments']:8d} "
                  f"{d['delegated_flop_share']:7.2%} {r['pte_bytes'] / r['params']:8.3f} {r['psnr_db']:8.2f} "
                  f"{r['latency_s'] * 1e3:9.1f} {r['run_peak_rss_bytes'] / (r['pte_bytes'] or 1):9.2f}", flush=True)
    print("\nratios (one run, same machine; latencies interleaved, one call of each per round)")
    for c in components:
        fp32, int8 = rows.get((c, "fp32")), rows.get((c, "int8"))
        if fp32:
            spb = fp32["export_s"] / (fp32["params"] / 1e9)
            rss = fp32["export_peak_rss_bytes"] / fp32["weight_bytes"]
            print(f"  {c}: export {verdict(spb <= GOAL_SECONDS_PER_BILLION)} <= {GOAL_SECONDS_PER_BILLION:.0f} s/B, "
                  f"{verdict(rss <= GOAL_RSS)} <= {GOAL_RSS}x RSS; running RSS "
                  f"{verdict(fp32['run_peak_rss_bytes'] / fp32['pte_bytes'] <= GOAL_RUN_RSS)} <= {GOAL_RUN_RSS}x weights")
        if not (fp32 or int8):
            continue
        ort = _run("ort", c, args, *(["--int8"] if int8 else []))
        timing = _run("latency", c, args, "--ort", json.dumps(ort["paths"])) if "error" not in ort else ort
        if "error" in timing:
            print(f"  {c}: latency comparison FAILED: {timing['error']}")
            continue
        med = timing["median_s"]
        print(f"  {c}: median of {REPEATS} rounds: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items()))
        if "executorch fp32" in med:
            ratio = med["executorch fp32"] / med["onnxruntime fp32"]
            print(f"  {c}: ExecuTorch fp32 vs ONNX Runtime fp32 = {ratio:.2f}x "
                  f"({verdict(ratio <= GOAL_VS_ORT)} <= {GOAL_VS_ORT}x)")
        if "executorch int8" in med and "onnxruntime int8" in med:
            vs_ort = med["executorch int8"] / med["onnxruntime int8"]
            print(f"  {c}: ExecuTorch int8 vs ONNX Runtime int8 = {vs_ort:.2f}x "
                  f"({verdict(vs_ort <= GOAL_VS_ORT)} <= {GOAL_VS_ORT}x)"
                  + (f"; the ONNX int8 file missed its gate: {ort['paths']['int8 parity']}"
                     if "int8 parity" in ort["paths"] else ""))
        if "executorch fp32" in med and "executorch int8" in med:
            speedup = med["executorch fp32"] / med["executorch int8"]
            goal = f" ({verdict(speedup >= GOAL_DENOISER_SPEEDUP)} >= {GOAL_DENOISER_SPEEDUP}x)" if c == "denoiser" else ""
            print(f"  {c}: int8 ({SCHEME[c]}) vs fp32 {speedup:.2f}x{goal}")
        if int8:
            bpp = int8["pte_bytes"] / int8["params"]
            print(f"  {c}: int8 .pte {bpp:.3f} bytes per source parameter "
                  f"({verdict(bpp <= GOAL_INT8_BYTES_PER_PARAM)} <= {GOAL_INT8_BYTES_PER_PARAM})")
    print("goals printed, not asserted.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
