"""Several OpenVINO IRs of one component (one per image size) over one weights file.

The twin of the ONNX target's shared_weights.py: each size keeps its own fixed-shape IR,
`<name>.<key>.xml`, which OpenVINO's CPU plugin plans and runs exactly as a one-size bundle's; the
bytes of every Const of every size go once into `<name>.bin` (content_store.py), and each IR's
Consts point into it by offset and size. What depends on the size (a shape constant, a calibrated
activation range) is stored per size; the weights and their per-channel int8 scales (from the
weights alone) are the same tensors at every size, so they are stored once.

OpenVINO reads an IR's weights from the .bin it is given (`Core.read_model(xml, bin)`);
export.weights_file names it for one-size and multi-size bundles alike.
"""
from __future__ import annotations

import mmap
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import Artifact
from ..content_store import ContentStore
from .export import weights_file


def share_weights(name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path) -> tuple[Artifact, dict[str, str]]:
    """parts: (size key, root, artifact) per size -> the shared artifact in out_dir, and per size key
    the IR (.xml) a runtime loads."""
    data_name = f"{name}.bin"
    programs = {}
    with open(out_dir / data_name, "wb") as data:
        store = ContentStore(data)
        for key, root, artifact in parts:
            src = root / artifact.main
            tree = ET.parse(src)
            with open(weights_file(src), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as weights:
                for const in _constants(tree.getroot()):
                    offset, size = int(const.get("offset")), int(const.get("size"))
                    const.set("offset", str(store.put(weights[offset:offset + size])[0]))
            programs[key] = f"{name}.{key}.xml"
            (out_dir / programs[key]).write_text('<?xml version="1.0"?>\n' + ET.tostring(tree.getroot(), encoding="unicode"),
                                                 encoding="utf-8")
    files = sorted([data_name, *programs.values()])
    return Artifact(name, programs[parts[0][0]], files, layer_names=parts[0][2].layer_names), programs


def _constants(net):
    """The <data> of every Const layer, those of subgraph bodies (Loop, TensorIterator) included."""
    for layer in net.iter("layer"):
        if layer.get("type") == "Const":
            data = layer.find("data")
            if data is not None and data.get("offset") is not None:
                yield data
