"""Core ML's own runtime (MLModel.predict): how a Mac checks a package. Not importable on Linux,
where coremltools has no runtime ("Model prediction is only supported on macOS")."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ExportError, ParityError
from ...metrics import compare

# MLModel.predict vs the evaluator, when asked for both: the same fp16 program on two engines.
AGREEMENT_MIN_PSNR_DB = 40.0


def predict_runner(path: Path, compare_with_evaluator: bool = False, function: str | None = None):
    import coremltools as ct

    try:
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL, function_name=function)
    except Exception as exc:
        raise ExportError(str(path), f"Core ML could not load it: {str(exc)[:200]}") from exc
    spec = model.get_spec()
    from .convert import description

    inputs = {f.name: f.type.multiArrayType.dataType for f in description(spec, function).input}
    outputs = [f.name for f in description(spec, function).output]
    int32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
    evaluator = None
    if compare_with_evaluator:
        from .evaluate import evaluate_package

        evaluator = evaluate_package(path, function)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = {n: feeds[n].astype(np.int32 if t == int32 else np.float32) for n, t in inputs.items()}
        result = model.predict(args)
        out = [np.asarray(result[n], dtype=np.float32) for n in outputs]
        if evaluator is not None:
            for name, a, b in zip(outputs, out, evaluator(feeds)):
                m = compare(a, b)
                if not m.finite or m.psnr_db < AGREEMENT_MIN_PSNR_DB:
                    raise ParityError(str(path), f"Core ML and the ML Program evaluator disagree on {name}: PSNR "
                                                 f"{m.psnr_db:.1f} dB (min {AGREEMENT_MIN_PSNR_DB})")
        return out

    return run
