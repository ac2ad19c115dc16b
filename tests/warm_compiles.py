"""Forks `compile` runs from one warm interpreter, for the kill harness (tests/test_kill_harness.py).

A fresh `python -m compiler.commands.compile` spends seconds importing torch, diffusers and ONNX
Runtime before it writes anything; forked from a process that has imported them (and run no torch
op, so no thread pool exists yet), a compile starts writing at once and a kill lands in its work.
Protocol, one line each: the harness writes the compile's argv as JSON; this prints the child's
pid, then `exit N` (or `signal N`) once it has reaped the child, so the killed process is gone
(not a zombie that still looks alive) before the harness recovers --out."""
from __future__ import annotations

import json
import os
import sys

import torch._dynamo  # noqa: F401  (the imports a compile spends its first seconds on)
import torch.onnx  # noqa: F401
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

import compiler.pipeline  # noqa: F401
import compiler.targets.onnx.export  # noqa: F401
import compiler.targets.onnx.quantize  # noqa: F401
import compiler.targets.onnx.run  # noqa: F401
from compiler.cli import _quiet_libraries
from compiler.commands import compile as command
from compiler.targets.registry import get_target

_quiet_libraries()
get_target("onnx")


def main() -> None:
    for line in sys.stdin:
        argv = json.loads(line)
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os._exit(command.main(argv))
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}",
              flush=True)


if __name__ == "__main__":
    main()
