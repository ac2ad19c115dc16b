"""One weights file shared by several programs (a component's image sizes): each distinct run of
bytes written once, found by its content (sha256), aligned as onnx aligns external data. The
ONNX and OpenVINO targets point their graphs' tensors into it by offset."""
from __future__ import annotations

import hashlib
from typing import BinaryIO

PAGE_ALIGNED_BYTES = 1 << 20  # tensors this large start on a 64 KiB boundary (mappable), as onnx aligns them
PAGE, WORD = 1 << 16, 64


class ContentStore:
    def __init__(self, out: BinaryIO):
        self._out, self._written = out, {}

    def put(self, raw: bytes) -> tuple[int, int]:
        """(offset, length) of `raw` in the file, written there the first time it is seen."""
        digest = hashlib.sha256(raw).digest()
        if digest not in self._written:
            align = PAGE if len(raw) >= PAGE_ALIGNED_BYTES else WORD
            end = self._out.tell()
            offset = end + (-end % align)
            self._out.write(b"\0" * (offset - end))
            self._out.write(raw)
            self._written[digest] = (offset, len(raw))
        return self._written[digest]
