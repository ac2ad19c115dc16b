"""Several image sizes of one component as one `.pte` with a method per size.

Each size's `.pte` was lowered, its delegation enforced and its outputs checked on their own; this
joins their execution plans into one program without lowering anything again. XNNPACK keeps every
weight in the program's named data under its content's sha256, so the union of the sizes' named
data holds a tensor the sizes share once; the few constants outside delegates and the delegate
blobs are renumbered into the joint tables (constants deduplicated by content, as ExecuTorch's
emitter does for a program of several methods). The methods are named `size_<W>x<H>`, the first
size's first.

Joining is a file operation holding one copy of the weights (+3.80 GB for three SD-Turbo UNets,
bench-sizes). The joint lowering it replaced (every size's ATen program lowered together by
`to_edge_transform_and_lower`) held each size's program and its edge and XNNPACK copies, 3.1x a
component's weights per size, which put three SD-Turbo UNets past 24 GB.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import Artifact, size_program
from .export import SUFFIX, _failure
from .run import io_path, load_program, write_methods_io


def share_weights(name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path, options) -> tuple[Artifact, dict]:
    methods = {size_program(key): root / f"{name}{SUFFIX}" for key, root, _ in parts}
    path = out_dir / f"{name}{SUFFIX}"
    try:
        joint = join_programs(methods)
    except Exception as exc:
        raise _failure(name, "joining the sizes' ExecuTorch programs", exc) from exc
    with path.open("wb") as f:
        joint.write_to_file(f)
    del joint
    ios = {m: json.loads(io_path(pte).read_text(encoding="utf-8")) for m, pte in methods.items()}
    write_methods_io(path, {m: {"inputs": io["inputs"], "outputs": io["outputs"]} for m, io in ios.items()})
    for m in methods:
        load_program(path, name, method_name=m)
    files = sorted([path.name, io_path(path).name])
    first = parts[0][2]
    return (Artifact(name, path.name, files, facts=dict(first.facts)),
            {key: {"file": path.name, "function": size_program(key)} for key, _, _ in parts})


def join_programs(methods: dict[str, Path]):
    """One program (a Cord of its bytes) whose method `m` is the only method of the `.pte` at
    methods[m], in that order, written with ExecuTorch's own PTE writer (pinned with it)."""
    from executorch.exir._serialize._named_data_store import NamedDataStoreOutput
    from executorch.exir._serialize._program import PTEFile, serialize_pte_binary
    from executorch.exir._serialize.data_serializer import DataEntry
    from executorch.exir.capture._config import ExecutorchBackendConfig
    from executorch.exir.schema import BackendDelegateInlineData, Buffer, DataLocation, SubsegmentOffsets, Tensor

    joint = None
    constants: dict[bytes, int] = {}
    named = NamedDataStoreOutput(buffers=[], pte_data={}, external_data={})
    for method, pte in methods.items():
        program, buffers, blobs, new = _read(pte, named.pte_data)
        plan, = program.execution_plan
        plan.name = method
        if joint is None:
            joint = program
            joint.execution_plan, joint.constant_buffer, joint.backend_delegate_data = [], [Buffer(storage=b"")], []
            joint.segments, joint.named_data, joint.constant_segment = [], [], SubsegmentOffsets(0, [])
        # index 0 of the constant table means "no data"; the emitter reserves it
        remap = {0: 0}
        for i, data in enumerate(buffers[1:], start=1):
            remap[i] = constants.setdefault(data, len(joint.constant_buffer))
            if remap[i] == len(joint.constant_buffer):
                joint.constant_buffer.append(Buffer(storage=data))
        for value in plan.values:
            if isinstance(value.val, Tensor):
                value.val.data_buffer_idx = remap[value.val.data_buffer_idx]
        for delegate, data in zip(plan.delegates, blobs):
            delegate.processed.location, delegate.processed.index = DataLocation.INLINE, len(joint.backend_delegate_data)
            joint.backend_delegate_data.append(BackendDelegateInlineData(data=data))
        joint.execution_plan.append(plan)
        for key, data in new.items():
            named.pte_data[key] = DataEntry(buffer_index=len(named.buffers), alignment=1, tensor_layout=None)
            named.buffers.append(data)
    config = ExecutorchBackendConfig()   # what to_executorch() wrote each size's file with
    return serialize_pte_binary(PTEFile(program=joint, named_data=named),
                                extract_delegate_segments=config.extract_delegate_segments,
                                segment_alignment=config.segment_alignment,
                                constant_tensor_alignment=config.constant_tensor_alignment,
                                delegate_alignment=config.delegate_alignment)


def _read(pte: Path, have) -> tuple:
    """A one-method `.pte`'s program, its constant table and delegate blobs (bytes, in its plan's
    delegate order), and the named data whose keys are not in `have`, read from the file one segment
    at a time: the weights a previous size already brought are never read, so joining holds one
    copy of the weights (deserialize_pte_binary would hold the file three times over)."""
    from executorch.exir._serialize._flatbuffer_program import _flatbuffer_to_program
    from executorch.exir._serialize._program import _get_extended_header, _restore_constant_segment
    from executorch.exir.schema import DataLocation

    with pte.open("rb") as f:
        header = _get_extended_header(f.read(64))
        f.seek(0)
        program = _flatbuffer_to_program(f.read(header.program_size if header else -1))
        if len(program.execution_plan) != 1 or program.mutable_data_segments:
            raise ValueError(f"{pte.name}: expected one method and no mutable buffers to join")

        def segment(i: int) -> bytes:
            f.seek(header.segment_base_offset + program.segments[i].offset)
            return f.read(program.segments[i].size)

        buffers = [bytes(b.storage) for b in program.constant_buffer]
        if program.constant_segment.offsets:
            buffers = [bytes(b.storage) for b in _restore_constant_segment(
                program.constant_segment, segment(program.constant_segment.segment_index))]
        blobs = [segment(d.processed.index) if d.processed.location == DataLocation.SEGMENT
                 else bytes(program.backend_delegate_data[d.processed.index].data)
                 for d in program.execution_plan[0].delegates]
        # XNNPACK names each weight by its content's sha256: a key already held is the same tensor
        new = {d.key: segment(d.segment_index) for d in program.named_data or [] if d.key not in have}
    return program, buffers, blobs, new
