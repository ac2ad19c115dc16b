"""QNN target: Snapdragon NPU bundles. Each component is exported and quantized as the ONNX
target does (W8A16 or W8A8 QDQ, full-range weights; float components as fp32 graphs the HTP runs
in fp16), checked on ONNX Runtime CPU, then compiled offline into an EPContext model and its HTP
context binary per SoC the recipe names, so a phone loads without compiling. Everything runs on
the HTP or the compile is refused (exit 5); the HTP backend's x86 build (a simulator) checks the
compiled programs against the graphs they came from.

    htp.py    QNN execution provider: context compile per SoC, partition, simulator runner
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from .. import AppRuntime, Artifact, check_schemes, toolkit_problem
from ..onnx import OnnxTarget
from .htp import SOCS

QNN_VERSION = "2.7.0"   # onnxruntime-qnn, pinned in pyproject.toml (extra `qnn`)


@dataclass(frozen=True)
class QnnOptions:
    # SoCs to compile a context binary for (the first is the one `generate` and `verify` simulate)
    soc_models: tuple[str, ...] = ("SM8750",)
    # which compiled programs the simulator runs against their source graphs, on the first held-out
    # input: the first SoC's, every SoC's, or none (a simulated SD-Turbo-size UNet call takes tens of minutes)
    simulate: Literal["first", "all", "none"] = "first"

    def problems(self) -> list[tuple[str, str]]:
        if not self.soc_models:
            return [("soc_models", f"must name at least one SoC ({', '.join(SOCS)})")]
        unknown = [s for s in self.soc_models if s not in SOCS]
        if unknown:
            return [("soc_models", f"{unknown[0]!r} is not a known Snapdragon SoC ({', '.join(SOCS)})")]
        if len(set(self.soc_models)) != len(self.soc_models):
            return [("soc_models", "names a SoC twice")]
        return []


class QnnTarget:
    name = "qnn"
    Options = QnnOptions
    schemes = ("w8a16", "w8a8")
    packages = ("onnx", "onnxruntime", "onnxruntime-qnn")
    reports_latency = False       # the simulator's time is not a phone's
    memory_factors = OnnxTarget.memory_factors
    # the QNN execution provider plugin for ONNX Runtime Android (Maven Central, Qualcomm), the version checked here
    app = AppRuntime("android", "OnnxRuntimeEngine", f"com.qualcomm.qti:onnxruntime-android-qnn:{QNN_VERSION}")

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

    def float_precision(self, options: QnnOptions) -> str:
        return "fp16"

    def export(self, graph, out_dir: Path, options: QnnOptions) -> Artifact:
        return self._onnx.export(graph, out_dir, self._onnx.Options())

    def quantizer(self, component, scheme, src: Artifact, src_root: Path, out_dir: Path, options):
        from ..onnx.quantize import OnnxQuantizer

        return OnnxQuantizer(component, scheme, src_root / src.main, out_dir / src.main, reduce_range=False)

    def runner(self, path: Path, options: QnnOptions | None = None):
        """A compiled context runs on the simulator; the graph it is compiled from, on ONNX Runtime CPU."""
        from .htp import is_context, simulator_runner

        if is_context(path):
            return simulator_runner(path, (options or QnnOptions()).soc_models[0])
        return self._onnx.runner(path)

    def checker(self, options: QnnOptions) -> str:
        return ("onnxruntime CPUExecutionProvider on the QDQ / float graph each context binary is compiled from; "
                f"the QNN HTP simulator (x86) on the compiled programs ({options.simulate} SoC)")

    def describe_io(self, path: Path) -> dict:
        return self._onnx.describe_io(path)

    def for_device(self, artifacts: dict[str, Artifact], precisions: dict[str, str], root: Path, work: Path,
                   options: QnnOptions, feeds: Callable[[str], dict], progress) -> tuple[dict[str, Artifact], dict]:
        """Each checked graph -> an EPContext model + HTP context binary per SoC (the graphs move
        to `work`). Where `simulate` asks, the simulator runs the compiled program on the first
        held-out input and must agree with the graph within the component's row of the tolerance
        table (exit 6 otherwise)."""
        from ...errors import ParityError
        from ...metrics import compare
        from ...parity import TOLERANCES
        from .htp import compile_context, context_files, simulator_runner

        source = work / "qnn-source"
        shipped, checks = {}, {}
        for name, artifact in artifacts.items():
            for f in artifact.files:
                (source / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(root / f, source / f)
            graph = source / artifact.main
            feed = expected = None     # computed once, and only when something is simulated
            files, partition = [], {}
            for i, soc in enumerate(options.soc_models):
                progress.step(f"{name}: compiling the HTP context for {soc}")
                context = root / f"{name}.{soc}.onnx"
                partition[soc] = compile_context(graph, context, soc)
                files += [f.name for f in context_files(context)]
                if options.simulate == "all" or (options.simulate == "first" and i == 0):
                    progress.step(f"{name}: running the {soc} program on the HTP simulator")
                    if expected is None:
                        feed = feeds(name)
                        expected = self._onnx.runner(graph)(feed)
                    simulated = simulator_runner(context, soc)(feed)
                    metrics = [compare(g, s) for g, s in zip(expected, simulated)]
                    checks.setdefault(name, {})[soc] = [m.as_dict() for m in metrics]
                    floor = TOLERANCES[(name, precisions[name])].min_psnr_db
                    worst = min(m.psnr_db if m.finite else 0.0 for m in metrics)
                    if worst < floor:
                        raise ParityError(f"{name} (qnn {soc})", f"the HTP simulator's output is {worst:.1f} dB from "
                                                                 f"the graph it was compiled from (min {floor} dB)")
            shipped[name] = Artifact(name, f"{name}.{options.soc_models[0]}.onnx", sorted(files),
                                     facts={"partition": partition})
        return shipped, checks

    def manifest_block(self, options: QnnOptions, artifacts: dict, root: Path) -> dict:
        return {"soc_models": {soc: {"soc_model": int(SOCS[soc][0]), "htp_arch": f"v{SOCS[soc][1]}",
                                     "programs": {n: f"{n}.{soc}.onnx" for n in artifacts}}
                               for soc in options.soc_models},
                "backend": "QNN HTP", "cpu_fallback": False, "qnn_ep_version": QNN_VERSION,
                "partition": {n: a.facts.get("partition") for n, a in artifacts.items()},
                "simulated": {"first": list(options.soc_models[:1]), "all": list(options.soc_models),
                              "none": []}[options.simulate],
                "checker": self.checker(options),
                # what `generate` and `verify` run a bundle's programs on here
                "runs_here": f"the QNN HTP simulator (x86), {options.soc_models[0]} programs"}
