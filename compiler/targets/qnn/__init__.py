"""QNN target: Snapdragon NPU bundles. Each component is exported and quantized as the ONNX
target does (W8A16 or W8A8 QDQ, full-range weights; float components as fp32 graphs the HTP runs
in fp16), checked on ONNX Runtime CPU, then compiled offline into an EPContext model and its HTP
context binary per SoC the recipe names, so a phone loads without compiling. Everything runs on
the HTP or the compile is refused (exit 5); the HTP backend's x86 build (a simulator) checks the
compiled programs against the graphs they came from.

    htp.py       QNN execution provider: context compile per SoC, partition, simulator runner
    rewrites.py  exact graph rewrites for ops the HTP refuses or fails to finalize
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from .. import AppRuntime, Artifact, check_schemes, toolkit_problem, refuse_sizes
from ..onnx import ORT_ANDROID, OnnxTarget
from .htp import SOCS

QNN_VERSION = "2.7.0"   # onnxruntime-qnn, pinned in pyproject.toml (extra `qnn`)
# int16 QuantizeLinear (w8a16) needs opset 21: quantize_static would otherwise convert the graph
# through one in-memory proto, which cannot hold an SD-size UNet (protobuf's 2 GB limit). Exported at
# the ONNX target's opset 18 and raised: exported at 21, torch emits GroupNormalization-21, which
# QNN's layout pass breaks in an AutoencoderKL decoder.
HTP_OPSET = 21
QAIRT_VERSION = "2.51.0"   # the QNN SDK inside it (onnxruntime_qnn.build_and_package_info.qnn_version)


@dataclass(frozen=True)
class QnnOptions:
    # SoCs to compile a context binary for (the first is the one `generate` and `verify` simulate)
    soc_models: tuple[str, ...] = ("SM8750",)
    # which compiled programs the simulator runs against their source graphs, on the first held-out
    # input: the first SoC's, every SoC's, or none
    simulate: Literal["first", "all", "none"] = "first"
    # seconds the simulator may take in all: a program whose estimate (its graph's time on ONNX
    # Runtime CPU x SIMULATOR_SLOWDOWN) does not fit what is left is not simulated, and the report
    # says so (a simulated SD-Turbo-size UNet call takes tens of minutes, its decoder hours)
    simulate_budget_s: float = 600.0

    def problems(self) -> list[tuple[str, str]]:
        if not self.soc_models:
            return [("soc_models", f"must name at least one SoC ({', '.join(SOCS)})")]
        unknown = [s for s in self.soc_models if s not in SOCS]
        if unknown:
            return [("soc_models", f"{unknown[0]!r} is not a known Snapdragon SoC ({', '.join(SOCS)})")]
        if len(set(self.soc_models)) != len(self.soc_models):
            return [("soc_models", "names a SoC twice")]
        if not self.simulate_budget_s >= 0:
            return [("simulate_budget_s", "must be a number of seconds >= 0")]
        return []


class QnnTarget:
    name = "qnn"
    Options = QnnOptions
    schemes = ("w8a16", "w8a8")
    packages = ("onnx", "onnxruntime", "onnxruntime-qnn")
    reports_latency = False       # the simulator's time is not a phone's
    memory_factors = OnnxTarget.memory_factors
    # ONNX Runtime Android at the version parity ran with, Qualcomm's QNN execution provider plugin for it (which
    # declares neither) at the version that compiled the contexts, and the QNN runtime libraries of that plugin's
    # QAIRT (the phone's runtime must be at least the one that compiled a context binary)
    app = AppRuntime("android", "OnnxRuntimeEngine", (ORT_ANDROID, f"com.qualcomm.qti:onnxruntime-android-qnn:{QNN_VERSION}",
                                                      f"com.qualcomm.qti:qnn-runtime:{QAIRT_VERSION}"))

    def __init__(self):
        self._onnx = OnnxTarget()

    def unavailable_reason(self) -> str | None:
        problem = toolkit_problem(("onnx", "onnxruntime", "onnxruntime_qnn"))
        if problem and "onnxruntime_qnn" in problem:
            return (f"missing Python package onnxruntime-qnn=={QNN_VERSION} (QNN's HTP backend, Linux x86-64 and "
                    f"Windows); install it with `pip install -e .[qnn]`")
        return problem

    def validate(self, recipe, options: QnnOptions) -> None:
        check_schemes(self, recipe)
        # QNN compiles one context binary with a graph per size over one copy of the weights
        # (htp.compile_shared_context), but no such program could be checked here: tested in
        # tests/targets/qnn, where the day the simulator loads one is the day to lift this
        refuse_sizes(self, recipe, "QNN can compile one context binary with a graph per size and the weights once, "
                                   "but its HTP simulator cannot load such a binary, so none could be checked")

    def float_precision(self, options: QnnOptions) -> str:
        return "fp16"

    def export(self, graph, out_dir: Path, options: QnnOptions) -> Artifact:
        """The ONNX target's graph, with the exact rewrites the HTP needs (rewrites.py) made before
        calibration, so every check sees the graph the context is compiled from."""
        from .rewrites import raise_opset, rewrite_for_htp

        artifact = self._onnx.export(graph, out_dir, self._onnx.Options())
        rewrite_for_htp(out_dir / artifact.main)
        raise_opset(out_dir / artifact.main, HTP_OPSET)
        return artifact

    def quantizer(self, component, scheme, src: Artifact, src_root: Path, out_dir: Path, options):
        from ..onnx.quantize import OnnxQuantizer

        return OnnxQuantizer(component, scheme, src_root / src.main, out_dir / src.main, reduce_range=False)

    def runner(self, path: Path, options: QnnOptions | None = None, function: str | None = None):
        """A compiled context runs on the simulator; the graph it is compiled from, on ONNX Runtime CPU."""
        from .htp import is_context, simulator_runner

        if is_context(path):
            return simulator_runner(path, (options or QnnOptions()).soc_models[0])
        return self._onnx.runner(path)

    def checker(self, options: QnnOptions) -> str:
        return ("onnxruntime CPUExecutionProvider on the QDQ / float graph each context binary is compiled from; "
                f"the QNN HTP simulator (x86) on the compiled programs ({options.simulate} SoC)")

    def describe_io(self, path: Path, function: str | None = None) -> dict:
        return self._onnx.describe_io(path)

    def for_device(self, artifacts: dict[str, Artifact], precisions: dict[str, str], root: Path, work: Path,
                   options: QnnOptions, feeds: Callable[[str], dict], progress) -> tuple[dict[str, Artifact], dict]:
        """Each checked graph -> an EPContext model + HTP context binary per SoC (the graphs move
        to `work`). Where `simulate` asks and the budget allows, the simulator runs the compiled
        program on the first held-out input and must agree with the graph within the component's
        row of the tolerance table (exit 6 otherwise). Returns, per component and SoC, the
        simulator's metrics or why it did not run."""
        from .htp import compile_context, context_files

        source = work / "qnn-source"
        simulator = _Simulator(options.simulate_budget_s, feeds, self._onnx.runner, progress)
        shipped, checks = {}, {}
        for name, artifact in artifacts.items():
            for f in artifact.files:
                (source / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(root / f, source / f)
            graph = source / artifact.main
            files, partition = [], {}
            for i, soc in enumerate(options.soc_models):
                progress.step(f"{name}: compiling the HTP context for {soc}")
                context = root / f"{name}.{soc}.onnx"
                partition[soc] = compile_context(graph, context, soc)
                files += [f.name for f in context_files(context)]
                if options.simulate == "all" or (options.simulate == "first" and i == 0):
                    checks.setdefault(name, {})[soc] = simulator.check(name, precisions[name], graph, context, soc)
            shipped[name] = Artifact(name, f"{name}.{options.soc_models[0]}.onnx", sorted(files),
                                     facts={"partition": partition})
        return shipped, checks

    def manifest_block(self, options: QnnOptions, artifacts: dict, root: Path) -> dict:
        return {"soc_models": {soc: {"soc_model": int(SOCS[soc][0]), "htp_arch": f"v{SOCS[soc][1]}",
                                     "programs": {n: f"{n}.{soc}.onnx" for n in artifacts}}
                               for soc in options.soc_models},
                "backend": "QNN HTP", "cpu_fallback": False, "qnn_ep_version": QNN_VERSION,
                "partition": {n: a.facts.get("partition") for n, a in artifacts.items()},
                "checker": self.checker(options),
                # what `generate` and `verify` run a bundle's programs on here
                "runs_here": f"the QNN HTP simulator (x86), {options.soc_models[0]} programs"}


# The simulator's time over ONNX Runtime CPU's on the same graph, rounded up from the largest
# measured here (shared/PITFALLS.md: 513x for a UNet, 522x for a decoder, fp16 on v79; the
# SD-Turbo-size text encoder only 63x, make bench-qnn): an estimate errs towards not simulating
SIMULATOR_SLOWDOWN = 600


class _Simulator:
    """The simulator runs of one compile, within its budget. Each component's graph runs on ONNX
    Runtime CPU once: the expected outputs, and the time its estimate scales."""

    def __init__(self, budget_s: float, feeds, cpu_runner, progress):
        self.left_s, self.feeds, self.cpu_runner, self.progress = budget_s, feeds, cpu_runner, progress
        self.graphs: dict[str, tuple[dict, list, float]] = {}

    def _on_cpu(self, name: str, graph: Path) -> tuple[dict, list, float]:
        import time

        if name not in self.graphs:
            feed = self.feeds(name)
            run = self.cpu_runner(graph)
            t0 = time.perf_counter()
            expected = run(feed)
            self.graphs = {name: (feed, expected, time.perf_counter() - t0)}   # one component's at a time
        return self.graphs[name]

    def check(self, name: str, precision: str, graph: Path, context: Path, soc: str) -> dict:
        import time

        from ...errors import ParityError
        from ...metrics import compare
        from ...parity import TOLERANCES, Check
        from .htp import simulator_runner

        feed, expected, cpu_s = self._on_cpu(name, graph)
        estimate = cpu_s * SIMULATOR_SLOWDOWN
        if estimate > self.left_s:
            reason = (f"not simulated: about {estimate:.0f} s estimated ({cpu_s:.2f} s on ONNX Runtime CPU x "
                      f"{SIMULATOR_SLOWDOWN}), {self.left_s:.0f} s left of simulate_budget_s")
            self.progress.step(f"{name}: {soc} program {reason}")
            return {"skipped": reason}
        self.progress.step(f"{name}: running the {soc} program on the HTP simulator (about {estimate:.0f} s)")
        t0 = time.perf_counter()
        simulated = simulator_runner(context, soc)(feed)
        self.left_s -= time.perf_counter() - t0
        metrics = [compare(g, s) for g, s in zip(expected, simulated)]
        for m in metrics:       # each output within the component's row (PSNR and cosine), as parity gates
            miss = Check(name, precision, TOLERANCES[(name, precision)], per_prompt=[m]).first_miss()
            if miss:
                raise ParityError(f"{name} (qnn {soc})", f"the HTP simulator's output is off the graph it was "
                                                         f"compiled from: {miss[1]}")
        return {"outputs": [m.as_dict() for m in metrics]}
