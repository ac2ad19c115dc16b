"""ONNX target: torch.onnx dynamo export, ONNX Runtime int8 (QDQ static, MatMulNBits), checked
by running the files with ONNX Runtime on this machine.

    export.py    torch.onnx.export(dynamo=True) -> <name>.onnx + <name>.onnx.data
    quantize.py  ONNX Runtime's quantizers fed by the shared calibration stream
    run.py       ONNX Runtime CPU sessions (verify, generate)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import AppRuntime, Artifact, check_schemes, component_problems, toolkit_problem

# ONNX Runtime Android at the onnxruntime version parity runs with (pyproject.toml)
ORT_ANDROID = "com.microsoft.onnxruntime:onnxruntime-android:1.32.0"


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = 18
    # W8A8 weights in 7 bits (ONNX Runtime's advice for x86 CPUs without VNNI, whose u8 x s8
    # kernels saturate pairs of products: quantize.py); false ships all 8 bits, for phones (ARM
    # dot products) and x86 CPUs with VNNI. The file is the same whichever machine compiles it.
    reduce_range: bool = True
    # Components whose W8A8 also quantizes the float ops between the convolutions (Add, Mul, Sigmoid:
    # residual adds, SiLU, GroupNorm's affine), which ONNX Runtime then runs as QLinearAdd /
    # QLinearMul / QLinearSigmoid on uint8 tensors. At SD-Turbo size the decoder is 1.10x faster
    # at 2.3 dB less; the UNet gains nothing and loses 3 dB (make bench-peers, docs/targets.md).
    # Fallback still ranks the weight-carrying layers only.
    elementwise: tuple[str, ...] = ()
    # diffusers' Upsample2D (nearest 2x, then a 3x3 convolution) exported as its four phase
    # convolutions (targets/upsampling.py): at SD-Turbo size the decoder 1.04x and the UNet 1.01x
    # faster on ONNX Runtime, 1.15x and 1.08x on OpenVINO, which exports through this
    # (make bench-upsampling)
    phase_upsampling: bool = True

    def problems(self) -> list[tuple[str, str]]:
        out = [("opset", "must be >= 17 (LayerNormalization, dynamo exporter)")] if self.opset < 17 else []
        return out + component_problems("elementwise", self.elementwise)


class OnnxTarget:
    name = "onnx"
    Options = OnnxOptions
    schemes = ("w8a8", "w8")
    packages = ("onnx", "onnxruntime", "onnxscript")
    reports_latency = True        # ORT CPU timings say something about ORT on a device
    # export: bench-sana's Gemma-2-2B peaked at 1.85x its weights, the torch weights included (the SD
    # UNet's 2.26x reads 1.2 GB over this, far from any limit); bench-int8 calibration 2.2x; bench-sizes:
    # sharing the SD UNet's three sizes streams tensors into one data file, +0.15 GB on 3.6 GB (0.01x
    # per size)
    memory_factors = (0.9, 2.2, 0.02)
    app = AppRuntime("android", "OnnxRuntimeEngine", (ORT_ANDROID,))

    def unavailable_reason(self) -> str | None:
        return toolkit_problem(self.packages)

    def validate(self, recipe, options: OnnxOptions) -> None:
        check_schemes(self, recipe)

    def float_precision(self, options: OnnxOptions) -> str:
        return "fp32"

    def export(self, graph, out_dir: Path, options: OnnxOptions) -> Artifact:
        from .export import export

        return export(graph, out_dir, options.opset, options.phase_upsampling)

    def quantizer(self, component, scheme, src: Artifact, src_root: Path, out_dir: Path, options):
        from .quantize import OnnxQuantizer

        return OnnxQuantizer(component, scheme, src_root / src.main, out_dir / src.main, options.reduce_range,
                             component in options.elementwise)

    def runner(self, path: Path, options=None, function: str | None = None):   # a graph per file
        from .run import session_runner

        return session_runner(path)

    def checker(self, options) -> str:
        return "onnxruntime CPUExecutionProvider"

    def describe_io(self, path: Path, function: str | None = None) -> dict:
        from .export import describe_io

        return describe_io(path)

    def share_weights(self, name: str, parts: list, out_dir: Path, options) -> tuple[Artifact, dict]:
        from .shared_weights import share_weights

        artifact, files = share_weights(name, parts, out_dir)
        return artifact, {key: {"file": file} for key, file in files.items()}

    def for_device(self, artifacts: dict, precisions: dict, root: Path, work: Path, options, feeds,
                   progress) -> tuple[dict, dict]:
        return artifacts, {}     # the checked artifacts are what the device loads

    def manifest_block(self, options: OnnxOptions, artifacts: dict, root: Path) -> dict:
        return {"opset": options.opset, "reduce_range": options.reduce_range, "elementwise": list(options.elementwise),
                "execution_provider_checked": "CPUExecutionProvider",
                "checker": self.checker(options)}
