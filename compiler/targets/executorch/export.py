"""torch.export -> XNNPACK-friendly rewrites -> to_edge_transform_and_lower -> `.pte`.

Each component becomes one program with one method (`forward`), fixed shapes, inputs and outputs
in the manifest's order (named in `<name>.pte.io.json`). The program is loaded and its delegate
initialized right after writing: a program that serializes but fails at load (shared/PITFALLS.md:
XNNPACK int8 programs of DC-AE fail in a transpose) is exit 5 now, not on a phone.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from ...errors import ExportError, first_line
from .. import Artifact, package_files
from . import delegation
from .run import load_program, write_io

SUFFIX = ".pte"
DTYPES = {"torch.float32": "float32", "torch.int64": "int64", "torch.float16": "float16", "torch.int32": "int32"}


@contextlib.contextmanager
def quiet():
    """torch.export and exir warn per constant and per pass; our progress lines say what happens."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _failure(component: str, what: str, exc: Exception) -> ExportError:
    return ExportError(f"component {component}", f"{what} failed: {first_line(exc)}")


def exported_program(graph, options):
    """The wrapped graph as an ATen program, rewritten for XNNPACK when the recipe says so."""
    import torch

    from .rewrites import for_xnnpack

    try:
        with torch.no_grad(), quiet():
            program = torch.export.export(graph.module, graph.example_inputs)
            placeholders = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
            if len(placeholders) != len(graph.input_names):
                raise ExportError(f"component {graph.name}", f"torch.export kept inputs {placeholders}, expected "
                                                             f"{graph.input_names}")
            if options.rewrites:
                program = for_xnnpack(program)
    except ExportError:
        raise
    except Exception as exc:
        raise _failure(graph.name, "torch.export", exc) from exc
    return program


def _spec(names: list[str], values) -> list[dict]:
    return [{"name": n, "dtype": DTYPES.get(str(v.dtype), str(v.dtype)), "shape": list(v.shape)}
            for n, v in zip(names, values)]


# ExecuTorch 1.5 and torch hold pieces of every program lowered past the lowering: each XNNPACK
# partition config notes the last node it declined in a module-level WhyNoPartition, exir's
# `is_same_node` caches node pairs (lru_cache, unbounded), and FakeTensorMode's class-wide dispatch
# cache keys on the delegate calls' lowered modules. Each holds the lowered program and its
# weights: measured, +3.9 GB resident per SD-Turbo UNet lowered, so a three-size compile ran out
# of 24 GB.
_DECLINE_NOTES = ("xnnpack_config", "gemm_configs", "node_configs", "generic_node_configs")


def _forget_lowered_nodes() -> None:
    import importlib

    from executorch.exir.backend import utils
    from torch._subclasses.fake_tensor import FakeTensorMode

    for name in _DECLINE_NOTES:
        importlib.import_module(f"executorch.backends.xnnpack.partition.config.{name}").why.node = None
    utils.is_same_node.cache_clear()
    FakeTensorMode.cache_clear()


def lower_and_write(program, component: str, input_names: list[str], output_names: list[str], out_dir: Path,
                    options) -> Artifact:
    """Partition for XNNPACK, measure and enforce delegation, write `<component>.pte` and its I/O file,
    and load it with ExecuTorch's runtime."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with torch.no_grad(), quiet():
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            report = delegation.report(edge.exported_program())
            delegation.enforce(report, component, options.min_delegated_flop_share)
            executorch_program = edge.to_executorch()
    except ExportError:
        raise
    except Exception as exc:
        raise _failure(component, "ExecuTorch lowering (XNNPACK)", exc) from exc
    finally:
        _forget_lowered_nodes()
    path = out_dir / f"{component}{SUFFIX}"
    path.write_bytes(executorch_program.buffer)
    del edge, executorch_program
    outputs = [n.meta["val"] for n in program.graph.output_node().args[0]]
    write_io(path, _spec(input_names, program.example_inputs[0]), _spec(output_names, outputs))
    load_program(path, component)
    return Artifact(component, path.name, package_files(out_dir, path.name),
                    facts={"delegation": report})
