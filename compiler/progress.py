"""Progress on stderr: numbered stages with elapsed time, and steps inside long stages."""
from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    def __init__(self, total: int = 0, quiet: bool = False, stream=None):
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.index = 0
        self.timings: dict[str, float] = {}

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = ""):
        self.index += 1
        self._print(f"[{self.index}/{self.total}] {name}{': ' + detail if detail else ''}")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        self._print(f"      {name} done in {self.timings[name]:.1f}s")

    def step(self, text: str) -> None:
        self._print(f"      {text}")
