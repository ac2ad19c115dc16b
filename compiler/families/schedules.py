"""A discrete scheduler's noise schedule in float64, so a baked constant cannot depend on the CPU.

diffusers builds `betas` with torch.linspace and `alphas_cumprod` with torch.cumprod in float32,
and torch picks those kernels by the CPU's vector unit: `alphas_cumprod[999]` of the linear
schedule is 4.0358307160204276e-05 under ATEN_CPU_CAPABILITY=default and 4.035830352222547e-05
under avx2/avx512 (shared/PITFALLS.md, "Numerics that depend on the CPU"). A bundle baked from
one would differ by machine. Here the same arrays are computed from the scheduler's config with
NumPy in float64 (element-wise IEEE operations and a sequential cumprod, the same bits on every
CPU) and put in the scheduler's place, so the baked graph and the diffusers oracle both read
them; each constant is rounded to float32 once, where the graph stores it.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _cosine_betas(n: int, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' betas_for_alpha_bar(alpha_transform_type="cosine") without its float32 cast."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], dtype=np.float64)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1) in float64."""
    abar_sqrt = np.sqrt(np.cumprod(1.0 - betas))
    first, last = abar_sqrt[0], abar_sqrt[-1]
    abar_sqrt = (abar_sqrt - last) * (first / (first - last))
    abar = abar_sqrt ** 2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def betas(config) -> np.ndarray:
    n = int(config["num_train_timesteps"])
    kind = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        out = np.asarray(config["trained_betas"], dtype=np.float64)
    elif kind == "linear":
        out = np.linspace(float(config["beta_start"]), float(config["beta_end"]), n, dtype=np.float64)
    elif kind == "scaled_linear":
        out = np.linspace(float(config["beta_start"]) ** 0.5, float(config["beta_end"]) ** 0.5, n, dtype=np.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        out = _cosine_betas(n)
    else:   # diffusers itself refuses any other name for these schedulers
        raise NotImplementedError(f"beta_schedule {kind}")
    return _rescale_zero_terminal_snr(out) if config.get("rescale_betas_zero_snr") else out


def exact(sched):
    """Replace a DDPM-style scheduler's betas, alphas and alphas_cumprod with float64 values from its
    config. Call before set_timesteps, which derives sigmas and timesteps from them."""
    b = betas(sched.config)
    alphas_cumprod = np.cumprod(1.0 - b)
    if sched.config.get("rescale_betas_zero_snr") and hasattr(sched, "sigmas"):
        alphas_cumprod[-1] = 2.0 ** -24     # EulerDiscreteScheduler's own guard against an infinite sigma
    sched.betas = torch.from_numpy(b)
    sched.alphas = torch.from_numpy(1.0 - b)
    sched.alphas_cumprod = torch.from_numpy(alphas_cumprod)
    if hasattr(sched, "final_alpha_cumprod"):   # DDIM, LCM
        one = sched.config.get("set_alpha_to_one", True)
        sched.final_alpha_cumprod = torch.tensor(1.0 if one else float(alphas_cumprod[0]), dtype=torch.float64)
    return sched
