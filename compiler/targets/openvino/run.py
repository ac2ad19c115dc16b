"""OpenVINO CPU inference: how this machine computes an OpenVINO IR's outputs (verify, generate)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BundleError
from .export import read_ir, weights_file

# Parity runs in fp32 on every CPU: OpenVINO's CPU plugin otherwise computes in bf16 on CPUs with
# AMX or AVX-512 BF16 (its default there), and the same bundle would check differently per machine.
CHECK_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def compiled_runner(path: Path):
    """A Runner over the IR at `path` (its .xml; its weights_file beside it) compiled for this CPU as parity checks it."""
    import openvino as ov

    _check_weights_file(path)
    try:
        compiled = ov.Core().compile_model(read_ir(path), "CPU", CHECK_CONFIG)
    except Exception as exc:
        raise BundleError(str(path), f"OpenVINO could not load it: {str(exc).strip().splitlines()[0][:200]}") from exc
    return runner_of(compiled)


def runner_of(compiled):
    """The feeds its inputs name, every output, as float32 / int64 arrays in output order."""
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = request.infer({n: feeds[n] for n in names})
        return [np.array(results[o]) for o in compiled.outputs]

    return run


def _check_weights_file(path: Path) -> None:
    """An IR reads its weights from its component's .bin, beside it (ERRORS.md: nothing a bundle
    names may leave the bundle); a missing one is named rather than OpenVINO's error."""
    weights = weights_file(path)
    if weights.is_symlink() or not weights.is_file():
        raise BundleError(str(weights), "missing (an OpenVINO IR's weights file, beside its .xml)")
