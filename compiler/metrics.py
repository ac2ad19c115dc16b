"""Accuracy metrics. NaN or Inf anywhere in either tensor is a failure, never a number."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

PSNR_CAP_DB = 200.0  # identical tensors; keeps reports finite and JSON-valid


@dataclass(frozen=True)
class Metrics:
    psnr_db: float
    cosine: float
    max_abs: float
    finite: bool

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def compare(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> Metrics:
    """PSNR against the reference's peak-to-peak range (or `data_range`, 1.0 for images)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(test, dtype=np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(out).all()):
        return Metrics(psnr_db=0.0, cosine=0.0, max_abs=math.inf, finite=False)
    diff = ref - out
    mse = float(np.mean(diff * diff))
    peak = data_range if data_range is not None else float(ref.max() - ref.min()) or 1.0
    psnr = PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(peak * peak / mse))
    denom = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = float(ref @ out / denom) if denom else float(np.array_equal(ref, out))
    return Metrics(psnr_db=psnr, cosine=cosine, max_abs=float(np.abs(diff).max()), finite=True)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM over channels with an 7x7 uniform window (images [C, H, W] or [1, C, H, W])."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, *np.asarray(a).shape[-2:])
    b = np.asarray(b, dtype=np.float64).reshape(-1, *np.asarray(b).shape[-2:])
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    k = min(7, a.shape[-1], a.shape[-2])
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def box(x):
        from numpy.lib.stride_tricks import sliding_window_view

        return sliding_window_view(x, (k, k), axis=(-2, -1)).mean(axis=(-2, -1))

    mu_a, mu_b = box(a), box(b)
    va = box(a * a) - mu_a**2
    vb = box(b * b) - mu_b**2
    cov = box(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())
