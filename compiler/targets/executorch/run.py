"""ExecuTorch's Python runtime: how this machine computes a `.pte` program's outputs.

A `.pte` method takes its inputs by position. The names and order the manifest documents live
in `<name>.pte.io.json` beside the program, written at export and checked against the
program's own method metadata (count, dtypes, shapes) whenever it is read.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ...errors import BundleError, ExportError, first_line

METHOD = "forward"
IO_SUFFIX = ".io.json"
# c10::ScalarType codes in ExecuTorch's method metadata
SCALAR_TYPES = {4: "int64", 6: "float32", 5: "float16", 1: "int8", 0: "uint8", 3: "int32", 11: "bool"}


def io_path(program: Path) -> Path:
    return program.with_name(program.name + IO_SUFFIX)


def write_io(program: Path, inputs: list[dict], outputs: list[dict], method: str = METHOD) -> Path:
    """The I/O file of a one-method program; write_methods_io for a program of several."""
    return write_methods_io(program, {method: {"inputs": inputs, "outputs": outputs}})


def write_methods_io(program: Path, methods: dict[str, dict]) -> Path:
    """{"method", "inputs", "outputs"} for one method (as bundles always had); several (a multi-size
    program): {"methods": {name: {"inputs", "outputs"}}}, the first the default."""
    path = io_path(program)
    if len(methods) == 1:
        (method, spec), = methods.items()
        data = {"method": method, "inputs": spec["inputs"], "outputs": spec["outputs"]}
    else:
        data = {"methods": methods}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def _method_spec(spec: dict, function: str | None) -> dict:
    """{"method", "inputs", "outputs"} of `function` (None: the only or first method)."""
    methods = spec["methods"] if "methods" in spec else {spec["method"]: spec}
    method = function or next(iter(methods))
    return {"method": method, "inputs": methods[method]["inputs"], "outputs": methods[method]["outputs"]}


@contextlib.contextmanager
def _native_stderr_silenced():
    """XNNPACK's cpuinfo prints probe failures (`Failed to open midr file`) to fd 2 when the first
    delegate initializes; they are not errors of ours. Python-level errors still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_program(path: Path, component: str, program=None, method_name: str = METHOD):
    """(program, its method), the delegates initialized; `program` if already opened."""
    from executorch.runtime import Runtime

    try:
        with _native_stderr_silenced():
            program = program or Runtime.get().load_program(Path(path))
            method = program.load_method(method_name)
    except Exception as exc:
        raise ExportError(f"component {component}", f"ExecuTorch could not load {Path(path).name}: "
                                                    f"{first_line(exc)}") from exc
    return program, method


def describe_io(path: Path, function: str | None = None) -> dict:
    """The program's inputs and outputs by name, as its I/O file says and its metadata confirms
    (`function`: one method of a multi-size program)."""
    return _described(Path(path), function)[0]


def _described(path: Path, function: str | None = None):
    """(describe_io's answer, the opened program)."""
    from executorch.runtime import Runtime

    try:
        spec = _method_spec(json.loads(io_path(path).read_text(encoding="utf-8")), function)
        program = Runtime.get().load_program(path)
        meta = program.metadata(spec["method"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BundleError(str(io_path(path)), f"cannot read the program's I/O description: {str(exc)[:160]}") from exc
    found = {"inputs": [meta.input_tensor_meta(i) for i in range(meta.num_inputs())],
             "outputs": [meta.output_tensor_meta(i) for i in range(meta.num_outputs())]}
    for side, metas in found.items():
        declared = spec[side]
        actual = [(list(m.sizes()), SCALAR_TYPES.get(m.dtype(), str(m.dtype()))) for m in metas]
        if [(d["shape"], d["dtype"]) for d in declared] != actual:
            raise BundleError(str(io_path(path)), f"{side} {[(d['name'], d['shape'], d['dtype']) for d in declared]} "
                                                  f"do not match the program's {actual}")
    return {"inputs": spec["inputs"], "outputs": spec["outputs"], "method": spec["method"]}, program


def program_runner(path: Path, function: str | None = None):
    import torch

    io, program = _described(Path(path), function)   # opened once: at SD-Turbo size a program is gigabytes
    names = [i["name"] for i in io["inputs"]]
    _, method = load_program(path, Path(path).stem, program, io["method"])

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            outs = method.execute([torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names])
        except RuntimeError as exc:   # a kernel's check failed: the program is not runnable as built
            raise ExportError(f"component {Path(path).stem}", f"ExecuTorch failed to run {Path(path).name}: "
                                                              f"{first_line(exc)} (its log names the kernel)") from exc
        return [o.numpy().copy() for o in outs]

    return run
