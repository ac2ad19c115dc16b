"""QNN's HTP backend through ONNX Runtime's QNN execution provider (PyPI onnxruntime-qnn): the
offline context compile per SoC, the partition check, a weight-shared context with a graph per image
size (compiled, not yet loadable by the simulator: docs/targets.md), and the x86 build of the HTP backend as a
runner (it simulates the NPU's arithmetic: exact, and about 500x slower than ONNX Runtime CPU).

Each context is compiled in a fresh process (`python -m compiler.targets.qnn.htp`): QNN numbers
graphs and tensors per process, so the second compile in one process writes other bytes than the
first; in its own process, from the graph's own folder, a context binary depends only on its graph
and options (rebuilds are byte-identical). The child also tells which nodes the HTP did not take: it compiles with CPU
fallback allowed, so the nodes left outside the EPContext nodes are exactly the refused ones.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ...errors import CompileError, ExportError
from ..onnx.run import runner_of

# Snapdragon SoC -> (QNN soc_model, HTP architecture), from QNN's QnnTypes.h as ExecuTorch's QNN
# backend lists them (backends/qualcomm/serialization/qc_schema.py).
SOCS = {
    "SM8550": ("43", "73"),   # Snapdragon 8 Gen 2
    "SM8650": ("57", "75"),   # Snapdragon 8 Gen 3
    "SM8750": ("69", "79"),   # Snapdragon 8 Elite
    "SM8635": ("68", "73"),   # Snapdragon 8s Gen 3
    "SM8735": ("85", "79"),   # Snapdragon 8s Gen 4
}
EP = "QNNExecutionProvider"


def _devices():
    import onnxruntime as ort
    import onnxruntime_qnn

    if not any(d.ep_name == EP for d in ort.get_ep_devices()):
        ort.register_execution_provider_library(onnxruntime_qnn.get_ep_name(), onnxruntime_qnn.get_library_path())
    return [d for d in ort.get_ep_devices() if d.ep_name == EP]


def session_options(soc: str, context_file: Path | None = None, fallback: bool = False):
    """HTP of `soc`, float ops in fp16 (the HTP computes no fp32); CPU fallback off unless asked."""
    import onnxruntime as ort
    import onnxruntime_qnn

    soc_model, arch = SOCS[soc]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if context_file is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_file))
        so.add_session_config_entry("ep.context_embed_mode", "0")    # the binary beside: X_qnn.bin
    so.add_provider_for_devices(_devices(), {"backend_path": onnxruntime_qnn.get_qnn_htp_path(), "htp_arch": arch,
                                             "soc_model": soc_model, "enable_htp_fp16_precision": "1",
                                             # the graph input's Q and output's DQ on the HTP too (the EP's
                                             # default hands them to the CPU, which fallback off refuses)
                                             "offload_graph_io_quantization": "0"})
    return so


def context_files(context: Path) -> list[Path]:
    """The EPContext model and the HTP context binary QNN writes beside it."""
    return [context, context.with_name(context.stem + "_qnn.bin")]


def compile_context(src: Path, context: Path, soc: str) -> dict:
    """Compile the ONNX graph `src` for `soc` into `context` (+ its _qnn.bin) in a fresh process.
    Returns the partition: nodes of the graph and those the HTP took; a node it refused is
    ExportError (exit 5) naming it, and nothing is left at `context`."""
    # absolute: the child works from the graph's folder
    done = subprocess.run([sys.executable, "-m", "compiler.targets.qnn.htp", str(src.resolve()), str(context.resolve()),
                           soc],
                          capture_output=True, text=True)
    if done.returncode:
        raise ExportError(f"{src.stem} (qnn {soc})", f"QNN context compile failed: {_last_line(done.stderr)}")
    partition = json.loads(done.stdout.strip().splitlines()[-1])
    refused = partition["refused"]
    if refused:
        for f in context_files(context):
            f.unlink(missing_ok=True)
        counts: dict[str, int] = {}
        for node in refused:
            counts[node["op_type"]] = counts.get(node["op_type"], 0) + 1
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
        raise ExportError(f"{src.stem} (qnn {soc})", f"the HTP does not take {len(refused)} of {partition['nodes']} "
                                                     f"nodes ({ops}; first: {refused[0]['name'] or refused[0]['op_type']}); "
                                                     f"CPU fallback is off, so this component cannot ship to the NPU")
    return {"nodes": partition["nodes"], "htp_nodes": partition["nodes"]}


def compile_shared_context(graphs: list[Path], contexts: list[Path], soc: str) -> Path:
    """Compile several graphs (one per image size) for `soc` into one HTP context binary holding a
    graph each over one copy of their weights (QNN weight sharing: ONNX Runtime's
    `ep.share_ep_contexts`), in a fresh process; `contexts[i]` is graph i's EPContext model. Returns
    the binary, named after the first context. The graphs must share a folder's parent (their paths
    relative to it name the graphs in the binary)."""
    base = _common_parent(graphs)
    done = subprocess.run([sys.executable, "-m", "compiler.targets.qnn.htp", "--shared", soc, str(base)]
                          + [f"{g.resolve()}={c.resolve()}" for g, c in zip(graphs, contexts)],
                          capture_output=True, text=True)
    if done.returncode:
        raise ExportError(f"{graphs[0].stem} (qnn {soc})", f"QNN shared context compile failed: {_last_line(done.stderr)}")
    return context_files(contexts[0])[1]


def shared_context_problem(context: Path, soc: str) -> str | None:
    """Why the simulator cannot run an EPContext model whose binary holds shared weights, or None
    when it ran. A fresh process: QAIRT 2.51's x86 HTP backend dies loading such a binary (SIGSEGV
    in contextCreateFromBinary; shared/PITFALLS.md), which must not take the compile with it."""
    probe = ("import sys; from pathlib import Path; from compiler.targets.qnn.htp import simulator_runner; "
             "simulator_runner(Path(sys.argv[1]), sys.argv[2])")
    done = subprocess.run([sys.executable, "-c", probe, str(context.resolve()), soc], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    how = f"signal {-done.returncode}" if done.returncode < 0 else _last_line(done.stderr)
    return f"the QNN HTP simulator (QAIRT {_qairt()}) cannot load a weight-shared context binary ({how})"


def _qairt() -> str:
    from onnxruntime_qnn import build_and_package_info

    return str(build_and_package_info.qnn_version)


def _common_parent(graphs: list[Path]) -> Path:
    import os

    return Path(os.path.commonpath([g.resolve().parent.parent for g in graphs]))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no message"


def simulator_runner(context: Path, soc: str):
    """Runs an EPContext model on the HTP backend's x86 build (the simulator), nothing on the CPU."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(context), session_options(soc))
    except Exception as exc:
        raise CompileError(str(context), f"the QNN HTP simulator could not load it: {str(exc)[:200]}") from exc
    return runner_of(session)


def is_context(path: Path) -> bool:
    import onnx

    return any(n.op_type == "EPContext" for n in onnx.load(str(path), load_external_data=False).graph.node)


def _child(src: Path, context: Path, soc: str) -> None:
    import os

    import onnx
    import onnxruntime as ort

    nodes = len(onnx.load(str(src), load_external_data=False).graph.node)
    # ONNX Runtime names the compiled partition by a hash of the model's path as given: relative
    # to its folder, the name (and the binary holding it) is the same wherever the compile runs
    os.chdir(src.parent)
    ort.InferenceSession(src.name, session_options(soc, context.resolve(), fallback=True))
    left = [n for n in onnx.load(str(context), load_external_data=False).graph.node if n.op_type != "EPContext"]
    print(json.dumps({"nodes": nodes, "refused": [{"name": n.name, "op_type": n.op_type} for n in left]}))


def _shared_child(soc: str, base: Path, pairs: list[str]) -> None:
    import os

    import onnxruntime as ort

    # partitions are named by a hash of each graph's path as given: relative to `base`, the names
    # differ between sizes (same file name, another folder) and not between machines
    os.chdir(base)
    for i, pair in enumerate(pairs):
        src, context = (Path(p) for p in pair.split("=", 1))
        so = session_options(soc, context)
        so.add_session_config_entry("ep.share_ep_contexts", "1")
        if i == len(pairs) - 1:   # the last session writes the one binary, named after the first context
            so.add_session_config_entry("ep.stop_share_ep_contexts", "1")
        ort.InferenceSession(str(src.relative_to(base)), so)


if __name__ == "__main__":
    if sys.argv[1] == "--shared":
        _shared_child(sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
    else:
        _child(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
