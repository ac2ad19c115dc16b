"""Snapdragon NPU target at real scale: `make bench-qnn` (python benchmarks/qnn_bench.py).

SD-Turbo-size components with random seeded weights (the builders of benchmarks/int8.py), 512 px,
taken through the compiler's own QNN target as `compile` does: wrap -> QnnTarget.export (the ONNX
path) -> compiler.quantization.quantize_component with the target's quantizer (W8A16 denoiser and
decoder, as recipes/sd-turbo-qnn.yaml; the text encoder stays a float graph the HTP runs in fp16)
-> the offline HTP context compile per SoC (QNN's own compile, one fresh process each) -> QNN's
HTP simulator (x86) on a compiled program where --simulate names the component. One child process
per component, so each peak RSS is its own (the context compiles' processes included).

Printed, never asserted:

    compile time      export, quantize, and the context compile per SoC
    peak RSS          export + quantize (the child), and each context compile (its own process),
                      as a multiple of the component's fp32 weight bytes
    bytes / param     the context binary's bytes per parameter (goal <= 1.05 for the W8A16 UNet)
    accuracy          the graph each binary is compiled from, on ONNX Runtime CPU, vs torch fp32 on
                      held-out prompt 1 (goals: denoiser >= 40 dB, decoder >= 35 dB)
    end to end        the three graphs chained on the held-out prompts vs the torch fp32 chain's image
                      (goal >= 30 dB)
    simulator         seconds per call, its ratio to ONNX Runtime CPU on the same graph, and its
                      agreement with that graph in dB: simulated arithmetic on this x86 CPU, not a
                      phone's latency (Qualcomm AI Hub's published per-component times are the
                      reference: README)

    python benchmarks/qnn_bench.py --work /tmp/bench/qnn                      # 512 px, text encoder simulated
    python benchmarks/qnn_bench.py --simulate text_encoder,denoiser           # + a UNet call (tens of minutes)
    python benchmarks/qnn_bench.py --tiny --work /tmp/bench/qnn-tiny          # smoke test of this script
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from _common import REPO, PeakRSS, child_result, print_header, run_child, verdict

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
# as recipes/sd-turbo-qnn.yaml: scheme and the float fallback budget of each quantized component
SHIPPED = {"denoiser": ("w8a16", 0.05), "vae_decoder": ("w8a16", 0.1)}
GOAL_BYTES_PER_PARAM = 1.05
GOAL_PSNR = {"denoiser": 40.0, "vae_decoder": 35.0, "end_to_end": 30.0}
CALIBRATION_PROMPTS, HELDOUT_PROMPTS = 4, 2


def _setup(work: Path, tiny: bool, image: int):
    import int8 as bench

    from compiler.recipe import Calibration, Parity, override
    from compiler.wrap import wrap

    recipe = override(bench._recipe(image, CALIBRATION_PROMPTS), calibration=Calibration(num_prompts=CALIBRATION_PROMPTS),
                      parity=Parity(num_prompts=HELDOUT_PROMPTS))
    student = bench._student(tiny, work)
    return recipe, student, wrap(student, recipe)


def _job(component: str, reference, recipe):
    import int8 as bench

    from compiler.parity import TOLERANCES
    from compiler.prompts import calibration_prompts
    from compiler.quantization import QuantJob
    from compiler.recipe import Component, Quantization

    scheme, fraction = SHIPPED[component]
    return QuantJob(component, Component("int8", Quantization(scheme=scheme, max_float_weight_fraction=fraction)),
                    reference, calibration_prompts(recipe, bench._heldout_file(recipe)), recipe.calibration.seed,
                    TOLERANCES[(component, "int8")], bench._progress())


def child_component(work: Path, tiny: bool, image: int, component: str, socs: list[str], simulate: bool) -> dict:
    import int8 as bench

    from compiler.errors import ParityError
    from compiler.metrics import compare
    from compiler.pipeline import torch_chain
    from compiler.quantization import calibration_feeds, quantize_component
    from compiler.targets.onnx import OnnxTarget
    from compiler.targets.qnn import QnnTarget
    from compiler.targets.qnn.htp import compile_context, context_files, simulator_runner

    recipe, student, wrapped = _setup(work, tiny, image)
    graph = wrapped.graphs[component]
    params = bench._parameters(component, graph)
    reference = torch_chain(wrapped, student)
    feeds = next(calibration_feeds(component, reference, bench._heldout(recipe), recipe.parity.seed, "benchmark"))
    expected = reference.runners[component](feeds)
    target, options = QnnTarget(), recipe.target_options("qnn")
    result = {"component": component, "params": params, "weight_bytes": 4 * params, "socs": {}}
    fp32_dir, out = work / "fp32", work / ("w8a16" if component in SHIPPED else "fp32")
    fp32_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        artifact = target.export(graph, fp32_dir, options)
        result["export_s"] = time.perf_counter() - t0
        if component in SHIPPED:
            quantizer = target.quantizer(component, SHIPPED[component][0], artifact, fp32_dir, out, options)
            t0 = time.perf_counter()
            try:
                q, artifact = quantize_component(_job(component, reference, recipe), quantizer)
                result["fallback"] = q.as_dict().get("fallback")
            except ParityError as exc:      # beyond the gate: still compiled and measured, reported as such
                result["gate"] = exc.message
            result["quantize_s"] = time.perf_counter() - t0
    result["peak_rss_bytes"] = rss.peak
    source = out / artifact.main
    del wrapped, student, graph
    cpu = OnnxTarget().runner(source)
    cpu(feeds)                                             # warm-up
    t0 = time.perf_counter()
    on_cpu = cpu(feeds)
    result["cpu_s"] = time.perf_counter() - t0
    del cpu
    data_range = 1.0 if component == "vae_decoder" else None
    result["graph_vs_torch_db"] = min(compare(e, g, data_range=data_range).psnr_db for e, g in zip(expected, on_cpu))
    for soc in socs:
        context = work / "contexts" / f"{component}.{soc}.onnx"
        context.parent.mkdir(parents=True, exist_ok=True)
        with PeakRSS(interval=0.1, children=True) as compile_rss:      # QNN's compile runs in its own process
            t0 = time.perf_counter()
            partition = compile_context(source, context, soc)
            elapsed = time.perf_counter() - t0
        result["socs"][soc] = {"compile_s": elapsed, "partition": partition, "peak_rss_bytes": compile_rss.peak,
                               "binary_bytes": context_files(context)[1].stat().st_size}
    if simulate:
        soc = socs[0]
        context = work / "contexts" / f"{component}.{soc}.onnx"
        t0 = time.perf_counter()
        run = simulator_runner(context, soc)
        result["simulator_load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        simulated = run(feeds)
        result["simulator_s"] = time.perf_counter() - t0
        result["simulator_vs_graph_db"] = min(compare(g, s, data_range=data_range).psnr_db
                                              for g, s in zip(on_cpu, simulated))
        result["simulator_vs_torch_db"] = min(compare(e, s, data_range=data_range).psnr_db
                                              for e, s in zip(expected, simulated))
    result["source"] = str(source)
    return result


def child_chain(work: Path, tiny: bool, image: int, sources: str) -> dict:
    """The three graphs the binaries are compiled from, chained, vs the torch fp32 chain on the
    held-out prompts (compiler.parity.check_parity: each component fed the reference's inputs, and
    the candidate chain alone end to end)."""
    import int8 as bench

    from compiler.parity import END_TO_END, check_parity
    from compiler.pipeline import torch_chain
    from compiler.runtime import Deferred
    from compiler.targets.onnx import OnnxTarget

    recipe, student, wrapped = _setup(work, tiny, image)
    reference = torch_chain(wrapped, student)
    runner = OnnxTarget().runner
    candidate = dataclasses.replace(reference, runners={n: Deferred(runner, Path(p)) for n, p in json.loads(sources).items()})
    precisions = {n: ("int8" if n in SHIPPED else "fp16") for n in COMPONENTS}
    parity = check_parity(reference, candidate, precisions, bench._heldout(recipe), recipe.parity.seed, "qnn graphs",
                          bench._progress())
    return {"checks": {c.name: {"worst_db": c.worst.psnr_db, "passed": c.passed} for c in parity.checks},
            "end_to_end": END_TO_END}


def child(args) -> None:
    work = Path(args.work)
    if args.child == "chain":
        child_result(lambda: child_chain(work, args.tiny, args.image, args.sources))
    else:
        child_result(lambda: child_component(work, args.tiny, args.image, args.child, args.socs.split(","),
                                             args.simulate_this))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/bench/qnn", help="folder for the graphs and context binaries")
    p.add_argument("--components", default=",".join(COMPONENTS))
    p.add_argument("--socs", default="SM8750,SM8650", help="SoCs to compile each component for (the first is simulated)")
    p.add_argument("--simulate", default="text_encoder",
                   help="components whose first-SoC program the simulator runs once (about 500x ONNX Runtime CPU: "
                        "a minute for the text encoder, tens of minutes for the UNet, hours for the decoder)")
    p.add_argument("--image", type=int, default=512)
    p.add_argument("--tiny", action="store_true", help="toy sizes: smoke-test the script, not a measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--sources", help=argparse.SUPPRESS)
    p.add_argument("--simulate-this", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.image = 32
    if args.child:
        child(args)
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    components = [c for c in args.components.split(",") if c]
    socs = [s for s in args.socs.split(",") if s]
    simulate = {c for c in args.simulate.split(",") if c}
    print_header("QNN", args.tiny, args.image,
                 "onnxruntime", "onnxruntime-qnn", "onnx", "torch", "diffusers", "transformers")
    common = ["--work", str(args.work), "--image", str(args.image)] + (["--tiny"] if args.tiny else [])
    rows, failed = {}, 0
    for c in components:
        extra = ["--socs", ",".join(socs)] + (["--simulate-this"] if c in simulate else [])
        r = run_child(Path(__file__).resolve(), ["--child", c, *common, *extra], echo_stderr=True)
        if "error" in r:
            failed += 1
            print(f"{c}: FAILED: {r['error']}", flush=True)
            continue
        rows[c] = r
    print(f"\n{'component':<13} {'scheme':<6} {'params':>9} {'export':>8} {'quantize':>9} {'RSS x':>6} "
          f"{'graph dB':>9} {'CPU ms':>9}")
    for c, r in rows.items():
        scheme = SHIPPED[c][0] if c in SHIPPED else "fp16"
        print(f"{c:<13} {scheme:<6} {r['params'] / 1e6:8.1f}M {r['export_s']:7.1f}s {r.get('quantize_s', 0):8.1f}s "
              f"{r['peak_rss_bytes'] / r['weight_bytes']:6.2f} {r['graph_vs_torch_db']:9.2f} {r['cpu_s'] * 1e3:9.1f}"
              + (f"  {len(r['fallback'])} layers kept float by fallback" if r.get("fallback") else "")
              + (f"  (missed its gate: {r['gate']})" if "gate" in r else ""))
    print(f"\nHTP context compile (QNN offline, one fresh process each)\n{'component':<13} {'SoC':<7} {'compile':>8} "
          f"{'HTP nodes':>11} {'binary MB':>10} {'B/param':>8} {'RSS x':>6}")
    for c, r in rows.items():
        for soc, s in r["socs"].items():
            part = s["partition"]
            print(f"{c:<13} {soc:<7} {s['compile_s']:7.1f}s {part['htp_nodes']:>5}/{part['nodes']:<5} "
                  f"{s['binary_bytes'] / 1e6:10.1f} {s['binary_bytes'] / r['params']:8.3f} "
                  f"{s['peak_rss_bytes'] / r['weight_bytes']:6.2f}")
    simulated = {c: r for c, r in rows.items() if "simulator_s" in r}
    if simulated:
        print(f"\nQNN HTP simulator ({socs[0]} programs; simulated arithmetic on this CPU, not a phone's latency)\n"
              f"{'component':<13} {'load':>7} {'call':>9} {'vs ORT CPU':>10} {'vs graph dB':>11} {'vs torch dB':>11}")
        for c, r in simulated.items():
            print(f"{c:<13} {r['simulator_load_s']:6.1f}s {r['simulator_s']:8.1f}s {r['simulator_s'] / r['cpu_s']:9.0f}x "
                  f"{r['simulator_vs_graph_db']:11.2f} {r['simulator_vs_torch_db']:11.2f}")
    chain = None
    if set(rows) == set(COMPONENTS):
        sources = json.dumps({c: r["source"] for c, r in rows.items()})
        chain = run_child(Path(__file__).resolve(), ["--child", "chain", *common, "--sources", sources], echo_stderr=True)
        if "error" in chain:
            failed += 1
            print(f"end to end: FAILED: {chain['error']}")
            chain = None
    print("\ngoals (printed, not asserted)")
    if "denoiser" in rows:
        for soc, s in rows["denoiser"]["socs"].items():
            bpp = s["binary_bytes"] / rows["denoiser"]["params"]
            print(f"  W8A16 UNet context binary ({soc}): {bpp:.3f} bytes/param "
                  f"({verdict(bpp <= GOAL_BYTES_PER_PARAM)} <= {GOAL_BYTES_PER_PARAM})")
    for c in ("denoiser", "vae_decoder"):
        if c in rows:
            db = rows[c]["graph_vs_torch_db"]
            print(f"  {c} W8A16 vs torch fp32: {db:.2f} dB ({verdict(db >= GOAL_PSNR[c])} >= {GOAL_PSNR[c]})")
    if chain:
        for name, c in chain["checks"].items():
            print(f"  held-out parity {name}: worst {c['worst_db']:.2f} dB ({'pass' if c['passed'] else 'FAIL'} "
                  f"against the tolerance table)")
        e2e = chain["checks"][chain["end_to_end"]]["worst_db"]
        print(f"  end to end vs torch fp32: {e2e:.2f} dB ({verdict(e2e >= GOAL_PSNR['end_to_end'])} "
              f">= {GOAL_PSNR['end_to_end']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
