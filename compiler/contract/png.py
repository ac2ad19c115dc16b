"""Image -> 8-bit pixels -> PNG bytes, specified so every runtime writes the same bytes.

Pixels: v = x * 255 + 0.5 in float32, NaN -> 0, clamped to [0, 255], truncated (round half
up). PNG: 8-bit RGB, one IDAT chunk, filter 0 on every row, zlib stream of stored (level 0)
deflate blocks of at most 65535 bytes. Stored blocks need no deflate implementation and give
identical bytes in Python, Kotlin and Swift whatever zlib a platform ships; compress the file
later if its size matters."""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
STORED_BLOCK = 65535


def to_pixels(image: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] float in [0, 1] -> [H, W, 3] uint8."""
    return to_8bit(np.asarray(image, dtype=np.float32)[0].transpose(1, 2, 0))


def to_8bit(x: np.ndarray) -> np.ndarray:
    """Floats in [0, 1], any layout -> uint8 by the runtimes' rule (round half up, NaN -> 0)."""
    x = np.asarray(x, dtype=np.float32)
    v = x * np.float32(255.0) + np.float32(0.5)
    v = np.where(np.isnan(v), np.float32(0.0), v)
    return np.clip(v, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray) -> bytes:
    h, w, c = pixels.shape
    if c != 3:
        raise ValueError(f"expected RGB pixels, got {c} channels")
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))
    return SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        _chunk(b"IDAT", _stored_zlib(raw)) + _chunk(b"IEND", b"")


def _stored_zlib(data: bytes) -> bytes:
    out = [b"\x78\x01"]
    blocks = [data[i:i + STORED_BLOCK] for i in range(0, len(data), STORED_BLOCK)] or [b""]
    for i, block in enumerate(blocks):
        final = 1 if i == len(blocks) - 1 else 0
        out.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF) + block)
    out.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
