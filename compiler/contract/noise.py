"""Portable seeded Gaussian noise.

torch's RNG cannot be reproduced on a phone, so the bundle documents this algorithm and
the Swift/Kotlin runtimes implement it bit for bit:

    for element i (row-major, 0-based), pair k = i // 2:
        a = splitmix64(seed, 2k), b = splitmix64(seed, 2k + 1)
        u1 = ((a >> 11) + 1) * 2^-53          # (0, 1], never 0 so log is finite
        u2 = (b >> 11) * 2^-53                # [0, 1)
        r = sqrt(-2 ln u1); theta = 2 pi u2
        element 2k = r cos theta, element 2k + 1 = r sin theta   (float64, then float32)

    splitmix64(seed, n): z = seed + (n + 1) * 0x9E3779B97F4A7C15 (mod 2^64)
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)
"""
from __future__ import annotations

import numpy as np

ALGORITHM = "splitmix64-box-muller-v1"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(seed: int, counters: np.ndarray) -> np.ndarray:
    """The splitmix64 output for each counter n (uint64 arithmetic wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed % 2**64) + (counters.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def gaussian(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of `shape`, identical on every platform for a seed."""
    count = int(np.prod(shape))
    pairs = (count + 1) // 2
    bits = splitmix64(seed, np.arange(2 * pairs, dtype=np.uint64))
    a, b = bits[0::2], bits[1::2]
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    u2 = (b >> np.uint64(11)).astype(np.float64) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * np.pi * u2
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = r * np.cos(theta)
    out[1::2] = r * np.sin(theta)
    return out[:count].astype(np.float32).reshape(shape)
