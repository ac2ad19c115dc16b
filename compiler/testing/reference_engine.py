"""Serve a bundle's components, run by the Python reference runtime, to another process.

The Kotlin (and Swift) runtimes' end-to-end tests plug this in as their Engine, so their
Pipeline (tokenizer, noise, wiring, pixels, PNG) is compared byte for byte with `generate` on
the same bundle. Frames on stdin/stdout: a 4-byte big-endian header length, a UTF-8 JSON
header, then each tensor's little-endian bytes in header order.

    request:  {"component": "denoiser", "tensors": [{"name", "dtype", "shape"}, ...]}
    response: {"tensors": [...]}  or  {"error": "one line"}

    python -m compiler.testing.reference_engine --bundle BUNDLE [--size WxH]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np

from ..cli import size_argument
from ..errors import first_line

DTYPES = {"float32": "<f4", "int64": "<i8", "int32": "<i4"}


def read_frame(stream) -> tuple[dict, list[np.ndarray]] | None:
    size = stream.read(4)
    if len(size) < 4:
        return None
    header = json.loads(_exactly(stream, struct.unpack(">I", size)[0]).decode("utf-8"))
    arrays = []
    for t in header.get("tensors", []):
        dtype = np.dtype(DTYPES[t["dtype"]])
        count = int(np.prod(t["shape"], dtype=np.int64))
        arrays.append(np.frombuffer(_exactly(stream, count * dtype.itemsize), dtype=dtype).reshape(t["shape"]))
    return header, arrays


def write_frame(stream, header: dict, arrays: list[np.ndarray] = ()) -> None:
    data = json.dumps(header).encode("utf-8")
    stream.write(struct.pack(">I", len(data)) + data)
    for a in arrays:
        stream.write(np.ascontiguousarray(a, dtype=DTYPES[str(a.dtype)]).tobytes())
    stream.flush()


def _exactly(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("stream ended inside a frame")
    return data


def serve(bundle: str, stdin, stdout, size: tuple[int, int] | None = None) -> None:
    from ..runtime import load_bundle

    chain, manifest = load_bundle(bundle, size)
    while (frame := read_frame(stdin)) is not None:
        header, arrays = frame
        name = header["component"]
        try:
            feeds = {t["name"]: a for t, a in zip(header["tensors"], arrays)}
            out = chain.runners[name](feeds)
            specs = manifest["components"][name]["outputs"]
            arrays = [np.asarray(o) for o in out]
            tensors = [{"name": s["name"], "dtype": str(a.dtype), "shape": list(a.shape)} for s, a in zip(specs, arrays)]
            write_frame(stdout, {"tensors": tensors}, arrays)
        except Exception as exc:  # reported to the client, which fails its test with this line
            write_frame(stdout, {"error": f"{name}: {type(exc).__name__}: {first_line(exc)}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a bundle's components over stdin/stdout (runtime tests).")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--size", type=size_argument, help="WxH: the programs of this size (multi-size bundles)")
    args = parser.parse_args(argv)
    from ..cli import _quiet_libraries

    _quiet_libraries()
    # Frames own the real stdout; anything a library prints (also from C code) goes to stderr.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(args.bundle, sys.stdin.buffer, frames, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
