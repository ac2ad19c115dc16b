"""OpenVINO target: Intel CPUs, GPUs and NPUs in PCs. Each component is our ONNX export read by
OpenVINO's ONNX frontend and saved as IR (`.xml` + `.bin`), int8 through NNCF fed by the shared
calibration stream, checked by running the IR with OpenVINO on this machine's CPU in fp32.

    export.py          ONNX export -> openvino.convert_model -> <name>.xml + <name>.bin, deterministic names
    quantize.py        NNCF: nncf.quantize (w8a8), nncf.compress_weights (w8), the fallback as its ignored scope
    run.py             OpenVINO CPU inference (verify, generate)
    shared_weights.py  several sizes: an IR per size over one .bin (recipe image.sizes)

The device an app runs the IR on (CPU, GPU, NPU) is the recipe's `targets.openvino.device`; only the
CPU can be checked here, and the manifest says which device was checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .. import AppRuntime, check_schemes, toolkit_problem

OPENVINO_VERSION = "2026.4.1"    # pinned in pyproject.toml with nncf 3.4.0
DEVICES = ("CPU", "GPU", "NPU")


@dataclass(frozen=True)
class OpenVinoOptions:
    # the OpenVINO device an app compiles the IR for: CPU, GPU (Intel integrated or discrete) or NPU
    # (Intel Core Ultra). Parity always runs on this machine's CPU.
    device: Literal["CPU", "GPU", "NPU"] = "CPU"
    # W8A8 weights in 7 bits in every layer (NNCF's overflow_fix: ENABLE), as the onnx target's
    # reduce_range: x86 CPUs without VNNI add pairs of u8 x s8 products in saturating int16
    # (VPMADDUBSW) in OpenVINO's kernels too. false ships 8 bits (NNCF's default: 7 in the first
    # layer only), for CPUs with VNNI or AMX; the file is the same whichever machine compiles it.
    reduce_range: bool = True

    def problems(self) -> list[tuple[str, str]]:
        if self.device not in DEVICES:
            return [("device", f"{self.device!r} is not an OpenVINO device this target ships for ({', '.join(DEVICES)})")]
        return []


class OpenVinoTarget:
    name = "openvino"
    Options = OpenVinoOptions
    schemes = ("w8a8", "w8")
    packages = ("onnx", "onnxruntime", "onnxscript", "openvino", "nncf")
    reports_latency = True        # OpenVINO CPU timings are what a PC with this CPU sees
    # measured at SD-Turbo size on the UNet: the ONNX export, then OpenVINO's conversion and IR save
    # peak at 2.62x its fp32 weights, the torch weights included (bench-export --target openvino; the
    # ONNX export alone 2.26x); NNCF's calibration and quantization add 2.33x (bench-peers); sharing
    # reads every size's IR to find each constant by content, +3.25 GB for three sizes (0.31x per
    # size, bench-sizes)
    memory_factors = (1.7, 2.4, 0.35)
    # PCs: an app loads the IR with OpenVINO's own runtime (C++, Python, ...); `package` builds phone apps
    app = AppRuntime("pc", "OpenVINO", (f"openvino=={OPENVINO_VERSION}",))

    def __init__(self):
        from ..onnx import OnnxTarget

        self._onnx = OnnxTarget()

    def unavailable_reason(self) -> str | None:
        return toolkit_problem(self.packages)

    def validate(self, recipe, options: OpenVinoOptions) -> None:
        check_schemes(self, recipe)

    def float_precision(self, options: OpenVinoOptions) -> str:
        return "fp32"

    def export(self, graph, out_dir: Path, options: OpenVinoOptions):
        from .export import export

        return export(graph, out_dir, self._onnx)

    def quantizer(self, component, scheme, src, src_root: Path, out_dir: Path, options):
        from .quantize import OpenVinoQuantizer

        return OpenVinoQuantizer(component, scheme, src_root / src.main, out_dir / src.main, src.layer_names,
                                 options.reduce_range)

    def runner(self, path: Path, options=None, function: str | None = None):
        from .run import compiled_runner

        return compiled_runner(path)

    def checker(self, options) -> str:
        return f"openvino {OPENVINO_VERSION} CPU plugin (INFERENCE_PRECISION_HINT f32)"

    def describe_io(self, path: Path, function: str | None = None) -> dict:
        from .export import describe_io

        return describe_io(path)

    def share_weights(self, name: str, parts: list, out_dir: Path, options) -> tuple:
        from .shared_weights import share_weights

        artifact, files = share_weights(name, parts, out_dir)
        return artifact, {key: {"file": file} for key, file in files.items()}

    def for_device(self, artifacts: dict, precisions: dict, root: Path, work: Path, options, feeds,
                   progress) -> tuple[dict, dict]:
        return artifacts, {}     # the IR an app compiles for its device is the checked one

    def manifest_block(self, options: OpenVinoOptions, artifacts: dict, root: Path) -> dict:
        from .run import CHECK_CONFIG

        return {"device": options.device, "config": dict(CHECK_CONFIG) if options.device == "CPU" else {},
                "reduce_range": options.reduce_range,
                "checker": self.checker(options), "checked_on": "CPU",
                # GPU and NPU compile the same IR with their own kernels (fp16 by default): not checked here
                "device_checked": options.device == "CPU"}
