"""Peers side by side: `make bench-peers` (python benchmarks/peers.py).

The same SD-Turbo-size random student (random seeded weights, 512 px) through each target's own
toolchain, fp32 and int8, timed side by side: ONNX Runtime (the onnx target), OpenVINO (the
openvino target) and, with --targets, ExecuTorch (XNNPACK, lowered from the same torch graphs), each
in its own child process with interleaved fp32 / int8 rounds, with this machine's peak measured in
the same child.

    export     benchmarks/int8.py's child: fp32 ONNX of text encoder, UNet and decoder
    prepare    the torch fp32 reference on held-out prompt 1 (ids, embeddings, noise, latents,
               image) and the calibration samples of the UNet and the decoder, as compile streams
               them (compiler.quantization.calibration_feeds), saved as .npz
    build      per target: fp32 (OpenVINO: the ONNX files read by its frontend, as the target
               does) and int8 through the target's own quantizer (ONNX Runtime QDQ W8A8; NNCF W8A8)
               on the same samples, UNet and decoder fully int8 (no fallback), text encoder fp32
    time       per target, one child: the chain tokens -> text encoder -> UNet -> decoder, fp32 and
               int8 chains in interleaved rounds, the median per component and in total; each
               output against torch fp32 (PSNR); peak RSS; then this machine's peak in the same
               process: fp32 GEMM (numpy's BLAS, 2048^3) and int8 GEMM (ONNX Runtime's
               MatMulInteger, u8 x s8, the VNNI kernels where the CPU has them)

The limit: each component's multiply-accumulates are counted from its exported ONNX graph (every
Conv / MatMul / Gemm, attention's activation x activation products included) and divided by the
measured time: achieved GFLOP/s (fp32) or GOP/s (int8), as a percent of the measured peak.

    python benchmarks/peers.py --work /tmp/peers              # 512 px, 8 calibration prompts
    python benchmarks/peers.py --work /tmp/peers --reuse      # after a first run: time (and build targets it lacks)
    python benchmarks/peers.py --tiny                         # smoke test, seconds
    python benchmarks/peers.py --targets onnx,openvino,executorch   # ExecuTorch too (its lowering is slow at SD size)
    python benchmarks/peers.py --student shapes --targets onnx,openvino,executorch

`--student shapes`: the trained shapes student (students/shapes-rf, 64 px) compiled by `compile`
itself with its shipped recipes (recipes/shapes-rf.yaml fp32, recipes/shapes-rf-int8.yaml: W8A8
denoiser with fallback) for each target, one child per target; each bundle's chain is then run as
`generate` runs it (compiler.runtime.load_bundle), fp32 and int8 in interleaved rounds, timed per
component; accuracy is what compile's parity measured against torch fp32 on the recipe's held-out
prompts (the worst prompt, the shipped chain).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, PeakRSS, machine, run_child, timed_runs, verdict, versions

sys.path.insert(0, str(REPO))

import int8 as bench_int8  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

TARGETS = ("onnx", "openvino", "executorch")   # --targets picks; ExecuTorch lowers from torch (slow at SD size)
COMPONENTS = ("text_encoder", "denoiser", "vae_decoder")
INT8 = ("denoiser", "vae_decoder")        # the components the int8 chain quantizes (W8A8)
GOAL_BEST, GOAL_PSNR, GOAL_ONNX = 4.0, 35.0, 2.0   # issue 30's goals, printed, never asserted
HYBRID = "int8 hybrid"     # OpenVINO: optimum-intel's split (MatMuls weight-only, convolutions W8A8), measured beside
SHAPES = {"fp32": "recipes/shapes-rf.yaml", "int8": "recipes/shapes-rf-int8.yaml"}   # --student shapes: as shipped


def _suffix(target: str) -> str:
    return {"onnx": ".onnx", "openvino": ".xml", "executorch": ".pte"}[target]


# ---------------------------------------------------------------- children

def child_prepare(work: Path, tiny: bool, image: int, prompts: int) -> dict:
    """The torch reference on held-out prompt 1 and the calibration samples, as compile makes them."""
    from compiler.contract import noise
    from compiler.pipeline import precisions, torch_chain
    from compiler.prompts import calibration_prompts, tokenize
    from compiler.quantization import calibration_feeds, program_feeds
    from compiler.streaming import compile_questions, record_reference
    from compiler.wrap import wrap

    recipe = _recipe(image, prompts)
    student = bench_int8._student(tiny, work)
    wrapped = wrap(student, recipe)
    reference = torch_chain(wrapped, student)
    heldout = bench_int8._heldout(recipe)
    calib = calibration_prompts(recipe, bench_int8._heldout_file(recipe))
    record_reference(student, recipe, wrapped, reference,
                     compile_questions(reference, recipe, heldout, calib, precisions(recipe)))
    tokens = tokenize(student.tokenizers, heldout[0])
    z = noise.gaussian(recipe.parity.seed, tuple(wrapped.latent_shape))
    embeds = reference.embed(tokens)
    latents = reference.denoise(embeds, z)
    image_out = reference.decode(latents)
    np.savez(work / "reference.npz", **{**tokens.ids, "prompt_embeds": embeds["prompt_embeds"], "noise": z,
                                        "latents": latents, "image": image_out})
    for name in INT8:
        feeds = list(program_feeds(reference, name, calibration_feeds(name, reference, calib, recipe.calibration.seed,
                                                                       f"calibration ({name})")))
        np.savez(work / f"calibration-{name}.npz", **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    return {"prompts": len(calib)}


def _samples(work: Path, name: str) -> list[dict]:
    data = np.load(work / f"calibration-{name}.npz")
    out: dict[int, dict] = {}
    for key in data.files:
        i, k = key.split("/", 1)
        out.setdefault(int(i), {})[k] = data[key]
    return [out[i] for i in sorted(out)]


def _torch_graphs(work: Path, target, tiny: bool, image: int, prompts: int) -> dict:
    """The wrapped torch graphs of the same seeded student, for a target that exports from torch
    (its validate sees the recipe's int8 components first, as compile's does)."""
    from compiler.wrap import wrap

    recipe = _recipe(image, prompts)
    target.validate(recipe, recipe.target_options(target.name))
    return wrap(bench_int8._student(tiny, work), recipe).graphs


def child_build(work: Path, target_name: str, tiny: bool, image: int, prompts: int) -> dict:
    """fp32 and W8A8 files of one target, from the same fp32 ONNX export (ExecuTorch: the same
    torch graphs) and calibration samples."""
    from compiler.targets.registry import get_target

    from compiler.targets import Artifact
    from compiler.targets.openvino.export import from_onnx

    target = get_target(target_name)
    own = work / target_name / "fp32"
    own.mkdir(parents=True, exist_ok=True)
    graphs = _torch_graphs(work, target, tiny, image, prompts) if target_name == "executorch" else {}
    out, measured = {}, False
    for name in COMPONENTS:
        src = work / "fp32" / f"{name}.onnx"
        t0 = time.perf_counter()
        if target_name == "openvino":     # what the target's export does after its ONNX export
            artifact, root = from_onnx(src, own, name), own
        elif target_name == "executorch":   # torch.export -> XNNPACK, from the same seeded weights
            artifact, root = target.export(graphs[name], own, target.Options()), own
        else:
            artifact, root = Artifact(name, src.name, [src.name, f"{src.name}.data"]), src.parent
        row = {"fp32_s": time.perf_counter() - t0, "fp32_bytes": sum((root / f).stat().st_size for f in artifact.files)}
        for chain, options in _int8_chains(target) if name in INT8 else ():
            t0 = time.perf_counter()
            folder = work / target_name / chain
            folder.mkdir(exist_ok=True)
            with PeakRSS() as rss:    # what calibration and quantization add: Target.memory_factors' second
                quantizer = target.quantizer(name, "w8a8", artifact, root, folder, options)
                quantizer.layers()
                quantizer.calibrate(iter(_samples(work, name)))
                built = quantizer.build([])
            row[chain] = {"s": time.perf_counter() - t0, "tool": quantizer.tool,
                          "bytes": sum((folder / f).stat().st_size for f in built.files)}
            if not measured:   # later builds reuse memory the process already grew, so only the first measures
                row[chain]["rss_added_x"], measured = rss.added / row["fp32_bytes"], True
        if target_name == "openvino" and name in INT8:
            t0 = time.perf_counter()
            folder = work / target_name / HYBRID
            folder.mkdir(exist_ok=True)
            row[HYBRID] = {"tool": _hybrid(root / artifact.main, _samples(work, name), folder / f"{name}.xml"),
                           "s": time.perf_counter() - t0}
        out[name] = row
    return out


def _int8_chains(target) -> list[tuple[str, object]]:
    """(chain, target options) of the int8 chains: ONNX Runtime's and NNCF's W8A8 as the targets ship
    them (7-bit weights), with all 8 bits (`reduce_range: false`, for CPUs with VNNI and ARM), and
    ONNX Runtime's with the elementwise ops int8 too (`elementwise: [denoiser, vae_decoder]`)."""
    if target.name == "onnx":
        return [("int8", target.Options()), ("int8 8-bit", target.Options(reduce_range=False)),
                ("int8 elementwise", target.Options(elementwise=INT8))]
    if target.name == "openvino":
        return [("int8", target.Options()), ("int8 8-bit", target.Options(reduce_range=False))]
    return [("int8", target.Options())]


def _hybrid(src: Path, samples: list[dict], dst: Path) -> str:
    """optimum-intel's split for diffusion UNets, with NNCF's own calls: every weight int8
    (compress_weights), activations quantized into the convolutions only (MatMuls weight-only)."""
    import logging

    import nncf
    import openvino as ov

    from compiler.targets.openvino.export import save
    from compiler.targets.openvino.quantize import stable_activation_ranges

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(src))
    matmuls = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM,
                                  ignored_scope=nncf.IgnoredScope(types=["Convolution", "GroupConvolution"], validate=False))
    model = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples), preset=nncf.QuantizationPreset.MIXED,
                          model_type=nncf.ModelType.TRANSFORMER, ignored_scope=nncf.IgnoredScope(names=matmuls),
                          advanced_parameters=nncf.AdvancedQuantizationParameters(
                              disable_bias_correction=True,
                              smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)))
    stable_activation_ranges(model, dst.stem)
    save(model, dst.parent, dst.stem, {})
    return "nncf.compress_weights(INT8_SYM) on MatMuls + nncf.quantize on convolutions"


def _files(work: Path, target_name: str) -> dict[str, dict[str, Path]]:
    """chain -> component -> the file it runs."""
    from compiler.targets.registry import target_class

    fp32 = work / "fp32" if target_name == "onnx" else work / target_name / "fp32"
    chains = {"fp32": {n: fp32 / f"{n}{_suffix(target_name)}" for n in COMPONENTS}}
    names = [c for c, _ in _int8_chains(target_class(target_name)())] + ([HYBRID] if target_name == "openvino" else [])
    for chain in names:
        chains[chain] = {n: (work / target_name / chain if n in INT8 else fp32) / f"{n}{_suffix(target_name)}"
                         for n in COMPONENTS}
    return chains


def child_time(work: Path, target_name: str, repeats: int) -> dict:
    """Both chains in interleaved rounds; outputs vs torch fp32; peak RSS; the machine's peak."""
    from compiler.metrics import compare
    from compiler.targets.registry import get_target

    target = get_target(target_name)
    ref = dict(np.load(work / "reference.npz"))
    ids = {"input_ids": ref["input_ids"]}   # the SD-Turbo-size student: one CLIP tokenizer
    with PeakRSS() as rss:
        runners = {chain: {n: target.runner(p) for n, p in files.items()} for chain, files in _files(work, target_name).items()}
        times = {chain: {n: [] for n in (*COMPONENTS, "total")} for chain in runners}
        outputs = {}
        for round_ in range(repeats + 1):          # round 0 warms up (allocations, kernel choice)
            for chain, run in runners.items():
                t = {}
                t0 = time.perf_counter()
                embeds = run["text_encoder"](ids)[0]
                t["text_encoder"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                latents = run["denoiser"]({"prompt_embeds": embeds, "noise": ref["noise"]})[0]
                t["denoiser"] = time.perf_counter() - t1
                t2 = time.perf_counter()
                image = run["vae_decoder"]({"latents": latents})[0]
                t["vae_decoder"] = time.perf_counter() - t2
                t["total"] = time.perf_counter() - t0
                if round_:
                    for k, v in t.items():
                        times[chain][k].append(v)
                else:
                    # each component on the reference's own input, and the image the chain makes
                    outputs[chain] = {
                        "text_encoder": compare(ref["prompt_embeds"], embeds).psnr_db,
                        "denoiser": compare(ref["latents"], run["denoiser"]({"prompt_embeds": ref["prompt_embeds"],
                                                                             "noise": ref["noise"]})[0]).psnr_db,
                        "vae_decoder": compare(ref["image"], run["vae_decoder"]({"latents": ref["latents"]})[0],
                                               data_range=1.0).psnr_db,
                        "image": compare(ref["image"], image, data_range=1.0).psnr_db}
    return {"median_s": {c: {k: statistics.median(v) for k, v in row.items()} for c, row in times.items()},
            "psnr_db": outputs, "peak_rss_bytes": rss.peak, "peak": machine_peak()}


def child_compile(work: Path, target_name: str) -> dict:
    """The shapes student compiled by `compile` with its shipped recipes for one target."""
    from compiler.pipeline import compile_bundle
    from compiler.recipe import load_recipe

    out = {}
    for chain, recipe in SHAPES.items():
        t0 = time.perf_counter()
        recipe = load_recipe(REPO / recipe)
        result = compile_bundle(recipe, target_name, str(REPO / recipe.model), work / target_name / chain)
        tools = {n: c["tool"] for n, c in (result.manifest.get("quantization") or {}).get("components", {}).items()}
        for name, tool in tools.items():
            out.setdefault(name, {})[chain] = {"s": time.perf_counter() - t0, "tool": tool}
    return out


def child_time_bundles(work: Path, target_name: str, repeats: int) -> dict:
    """The fp32 and int8 bundles' chains, as `generate` runs them, in interleaved rounds; accuracy
    from each bundle's own parity (the shipped chain vs torch fp32, worst held-out prompt)."""
    from compiler.prompts import read_prompts
    from compiler.recipe import load_recipe
    from compiler.runtime import load_bundle

    parity = load_recipe(REPO / SHAPES["fp32"]).parity
    prompt = read_prompts(str(REPO / parity.prompts), "parity.prompts")[0]   # the first held-out prompt
    times: dict[str, dict[str, list[float]]] = {}
    psnr = {}
    with PeakRSS() as rss:
        chains = {}
        for chain in SHAPES:
            loaded, _ = load_bundle(work / target_name / chain)
            figures = json.loads((work / target_name / chain / "report.json").read_text())   # compile's parity
            shipped = figures["parity"][-1]["checks"]
            psnr[chain] = {**{n: shipped[n]["worst"]["psnr_db"] for n in COMPONENTS},
                           "image": shipped["end_to_end"]["worst"]["psnr_db"]}
            times[chain] = {n: [] for n in (*COMPONENTS, "total")}
            for name in COMPONENTS:
                loaded.runners[name] = _timed(loaded.runners[name], times[chain][name])
            chains[chain] = loaded
        for round_ in range(repeats + 1):          # round 0 warms up (allocations, kernel choice)
            for chain, run in chains.items():
                t0 = time.perf_counter()
                run(prompt, seed=0)
                times[chain]["total"].append(time.perf_counter() - t0)
                if not round_:
                    for row in times[chain].values():
                        row.clear()
    return {"median_s": {c: {k: statistics.median(v) for k, v in row.items()} for c, row in times.items()},
            "psnr_db": psnr, "peak_rss_bytes": rss.peak, "peak": machine_peak()}


def _timed(run, log: list[float]):
    def timed(feeds):
        t0 = time.perf_counter()
        out = run(feeds)
        log.append(time.perf_counter() - t0)
        return out

    return timed


def machine_peak(size: int = 2048, repeats: int = 5) -> dict:
    """Best-of GEMM throughput in this process: fp32 (numpy's BLAS) and int8 (ONNX Runtime
    MatMulInteger, u8 activations x s8 weights: MLAS's VNNI kernels where present)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    best = min(timed_runs(lambda _: a @ b, {}, repeats))
    fp32 = 2 * size ** 3 / best / 1e9
    w = rng.integers(-127, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.integers(0, 256, (size, size), dtype=np.uint8)
    session.run(None, {"x": x})
    best = min(timed_runs(lambda feeds: session.run(None, feeds), {"x": x}, repeats))
    return {"fp32_gflops": fp32, "int8_gops": 2 * size ** 3 / best / 1e9}


def graph_flops(path: Path) -> int:
    """2 x multiply-accumulates of every Conv / MatMul / Gemm in an ONNX graph: those with a constant
    weight (compiler.targets.onnx.quantize.weight_layers) and attention's activation products."""
    import onnx

    from compiler.targets.onnx.quantize import _value_shapes, weight_layers

    model = onnx.load(str(path), load_external_data=False)
    layers = weight_layers(model)
    weighted = {l.node for l in layers}
    shapes = _value_shapes(model)
    total = sum(l.flops for l in layers)
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name not in weighted:
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a is None or out is None:
                raise SystemExit(f"{path.name}: no shape for {node.name}; cannot count its operations")
            total += 2 * int(np.prod(out)) * int(a[-1])
    return total


# ---------------------------------------------------------------- parent

def _recipe(image: int, prompts: int):
    """bench-int8's recipe with the decoder W8A8 too: the reference answers both calibrations."""
    import dataclasses

    from compiler.recipe import Quantization

    recipe = bench_int8._recipe(image, prompts)
    decoder = dataclasses.replace(recipe.components.vae_decoder, precision="int8", quantization=Quantization("w8a8"))
    return dataclasses.replace(recipe, components=dataclasses.replace(recipe.components, vae_decoder=decoder))


def _run(stage: str, work: Path, args, *extra: str) -> dict:
    argv = ["--child", stage, "--work", str(work), "--image", str(args.image), "--repeats", str(args.repeats),
            "--prompts", str(args.prompts), *extra] + (["--tiny"] if args.tiny else [])
    result = run_child(Path(__file__).resolve(), argv, echo_stderr=True)
    if "error" in result:
        raise SystemExit(f"{stage} {' '.join(extra)}: {result['error']}")
    return result


def _report(builds: dict, timed: dict, flops: dict, int8: tuple[str, ...] = INT8, goals: bool = True) -> list[str]:
    """The side-by-side table; `int8`: the components the int8 chains quantize; `goals`: issue 30's
    (SD-Turbo size, the full decoder int8)."""
    peers = list(timed)
    columns = [(t, c) for t in peers for c in timed[t]["median_s"]]
    head = [f"{t} {c}" for t, c in columns]
    lines = [f"{'':26}" + "".join(f"{h:>21}" for h in head)]
    for name in (*COMPONENTS, "total"):
        lines.append(f"{name:26}" + "".join(f"{timed[t]['median_s'][c][name] * 1e3:>19.0f}ms" for t, c in columns))
    base = timed["onnx"]["median_s"]["fp32"]["total"]
    lines.append(f"{'whole image vs ORT fp32':26}" + "".join(
        f"{base / timed[t]['median_s'][c]['total']:>20.2f}x" for t, c in columns))
    lines.append(f"{'image PSNR vs torch fp32':26}" + "".join(f"{timed[t]['psnr_db'][c]['image']:>19.1f}dB"
                                                            for t, c in columns))
    lines.append("peak RSS of each target's child (all its chains loaded): " + ", ".join(
        f"{t} {timed[t]['peak_rss_bytes'] / 1e9:.2f} GB" for t in peers))
    lines.append("")
    lines.append("each component on the reference's own input, PSNR vs torch fp32 (dB):")
    for name in COMPONENTS:
        lines.append(f"  {name:24}" + "".join(f"{timed[t]['psnr_db'][c][name]:>21.1f}" for t, c in columns))
    lines.append("")
    lines.append("the limit: operations counted from the exported graph / median time, against the peak measured "
                 "in the same child")
    gaps = []
    for t in peers:
        peak = timed[t]["peak"]
        lines.append(f"  {t}: peak fp32 {peak['fp32_gflops']:.0f} GFLOP/s (numpy BLAS GEMM), int8 {peak['int8_gops']:.0f} "
                     f"GOP/s (ONNX Runtime MatMulInteger)")
        for name in COMPONENTS:
            cells = []
            for c in timed[t]["median_s"]:
                quantized = c != "fp32" and name in int8
                rate = flops[name] / timed[t]["median_s"][c][name] / 1e9
                pct = 100 * rate / (peak["int8_gops"] if quantized else peak["fp32_gflops"])
                cells.append(f"{c} {rate:6.0f} {'GOP/s' if quantized else 'GFLOP/s'} {pct:5.1f}%")
                if name in int8:
                    gaps.append((pct, f"{t} {c} {name}"))
            lines.append(f"    {name:14} {flops[name] / 1e9:7.1f} G   " + "   ".join(cells))
    pct, where = min(gaps)
    lines.append(f"largest remaining gap ({', '.join(int8)}): {where} at {pct:.1f}% of its peak")
    lines.append("")
    if goals:
        speed = {(t, c): base / timed[t]["median_s"][c]["total"] for t, c in columns}
        good = [(x, t, c) for (t, c), x in speed.items() if c != "fp32" and timed[t]["psnr_db"][c]["image"] >= GOAL_PSNR]
        x, t, c = max(good, default=(0.0, "-", "-"))
        lines.append(f"goal: an int8 chain (full decoder) >= {GOAL_BEST}x ONNX Runtime fp32 at >= {GOAL_PSNR} dB: best "
                     f"{t} {c} {x:.2f}x: {verdict(x >= GOAL_BEST)}")
        lines.append(f"goal: ONNX Runtime int8 (as shipped) >= {GOAL_ONNX}x fp32: {speed[('onnx', 'int8')]:.2f}x: "
                     f"{verdict(speed[('onnx', 'int8')] >= GOAL_ONNX)}")
        lines.append("")
    lines.append("int8 build (s; --student shapes: the whole int8 compile; for each child's first build, the "
                 "resident memory it added as a multiple of the fp32 program): " + "; ".join(
        f"{t} {n} {c} {row[c]['s']:.0f}" + (f" (+{row[c]['rss_added_x']:.2f}x)" if "rss_added_x" in row[c] else "")
        for t in peers for n, row in builds[t].items() for c in row if isinstance(row[c], dict)))
    lines.append("int8 tools: " + "; ".join(sorted({f"{t} {c}: {row[c]['tool']}" for t in peers
                                                     for row in builds[t].values() for c in row
                                                     if isinstance(row[c], dict)})))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the exported files (default: a temporary one)")
    p.add_argument("--tiny", action="store_true", help="toy-size student, to smoke-test the script")
    p.add_argument("--image", type=int, default=512)
    p.add_argument("--prompts", type=int, default=8, help="calibration prompts (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds per target (default 3)")
    p.add_argument("--reuse", action="store_true", help="time the files a previous run left in --work, building only the --targets it did not")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--targets", default="onnx,openvino",
                   help="peers to run, from onnx, openvino, executorch (default onnx,openvino; onnx is the baseline)")
    p.add_argument("--student", choices=["sd-turbo-size", "shapes"], default="sd-turbo-size",
                   help="sd-turbo-size (default): random seeded SD-Turbo-size weights, each toolkit's int8 on the "
                        "same samples; shapes: the trained shapes student compiled by `compile` with its shipped "
                        "recipes")
    p.add_argument("--target", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny and args.image == 512:
        args.image = 64
    if args.child:
        from _common import child_result

        work = Path(args.work)
        if args.child == "export":
            child_result(lambda: bench_int8.child_export(work, args.tiny, args.image))
        elif args.child == "prepare":
            child_result(lambda: child_prepare(work, args.tiny, args.image, args.prompts))
        elif args.child == "build":
            child_result(lambda: child_build(work, args.target, args.tiny, args.image, args.prompts))
        elif args.child == "compile":
            child_result(lambda: child_compile(work, args.target))
        elif args.child == "time-bundles":
            child_result(lambda: child_time_bundles(work, args.target, args.repeats))
        else:
            child_result(lambda: child_time(work, args.target, args.repeats))
        return 0
    targets = args.targets.split(",")
    if "onnx" not in targets or set(targets) - set(TARGETS):
        p.error(f"--targets: a comma-separated list from {', '.join(TARGETS)}, onnx included (the baseline)")
    if args.student == "shapes":
        return _shapes(args, targets)
    with bench_int8._workdir(args.work) as work:
        m = machine()
        print(f"peers benchmark ({'TOY SIZES (--tiny)' if args.tiny else f'SD-Turbo size, random seeded weights, {args.image}x{args.image}'}); "
              f"{m['cpu']}, {m['cores']} cores, AVX-512 {m['avx512']}, VNNI {m['vnni']}, AMX {m['amx']}; "
              + ", ".join(f"{k} {v}" for k, v in versions("onnxruntime", "openvino", "nncf").items()), flush=True)
        builds = {}
        if args.reuse:
            builds = json.loads((work / "builds.json").read_text())
        else:
            _run("export", work, args)
            _run("prepare", work, args)
        for t in targets:     # with --reuse: only the targets the earlier run did not build
            if t not in builds:
                builds[t] = _run("build", work, args, "--target", t)
                (work / "builds.json").write_text(json.dumps(builds))
        flops = {n: graph_flops(work / "fp32" / f"{n}.onnx") for n in COMPONENTS}
        timed = {t: _run("time", work, args, "--target", t) for t in targets if t in builds}
        print("\n".join(_report(builds, timed, flops)))
        (work / "peers.json").write_text(json.dumps({"builds": builds, "timed": timed, "flops": flops}))
    return 0


def _shapes(args, targets: list[str]) -> int:
    with bench_int8._workdir(args.work) as work:
        m = machine()
        print(f"peers benchmark (the trained shapes student, 64x64, compiled with {', '.join(SHAPES.values())}); "
              f"{m['cpu']}, {m['cores']} cores, AVX-512 {m['avx512']}, VNNI {m['vnni']}, AMX {m['amx']}; "
              + ", ".join(f"{k} {v}" for k, v in versions("onnxruntime", "openvino", "nncf", "executorch").items()),
              flush=True)
        if not args.reuse:
            (work / "builds.json").write_text(json.dumps({t: _run("compile", work, args, "--target", t) for t in targets}))
        builds = json.loads((work / "builds.json").read_text())
        flops = {n: graph_flops(work / "onnx" / "fp32" / f"{n}.onnx") for n in COMPONENTS}
        timed = {t: _run("time-bundles", work, args, "--target", t) for t in targets if t in builds}
        int8 = tuple(n for n in COMPONENTS if n in builds["onnx"])
        print("\n".join(_report(builds, timed, flops, int8, goals=False)))
        print("accuracy: compile's parity of each bundle (its shipped chain vs torch fp32, the worst held-out prompt)")
        (work / "peers.json").write_text(json.dumps({"builds": builds, "timed": timed, "flops": flops}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
