"""What the console commands share (compiler/commands/: compile, generate, verify, package): every
failure is one line on stderr and a documented exit code (README, shared/ERRORS.md); `--debug`
adds the traceback."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from typing import Callable

from .errors import CompileError, Exit, first_line

EXIT_CODES = """exit codes:
  0  success            2  recipe / usage       3  model input        4  calibration / prompts
  5  export / lowering  6  parity / accuracy    7  bundle verify      8  environment
  1  internal error (a bug in this tool; rerun with --debug and report it)
  130 interrupted (nothing half-written is left behind)"""


def _quiet_libraries(debug: bool = False) -> None:
    """Libraries' warnings and progress bars are noise in a one-line-error tool; --debug keeps warnings."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import logging
    import warnings

    if not debug:
        warnings.filterwarnings("ignore")
    for name in ("diffusers", "transformers", "torch", "onnxscript", "nncf", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import torch

        torch._logging.set_logs(all=logging.ERROR)
        logging.getLogger("torch").setLevel(logging.ERROR)
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The out-of-disk OSError behind `exc` (itself, or what it was raised from), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _run(prog: str, argv: list[str] | None, parser: argparse.ArgumentParser, body: Callable) -> int:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0)
    try:
        _quiet_libraries(args.debug)
        body(args)
        return Exit.OK
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        full = _disk_full(exc)
        if full is not None:  # an environment failure whichever stage hit it (ERRORS.md: exit 8)
            where = exc.where if isinstance(exc, CompileError) else (full.filename or "output")
            print(f"{prog}: error: {where}: out of disk space ({full.strerror}); free space and rerun "
                  f"(nothing was written)", file=sys.stderr)
            return Exit.ENVIRONMENT
        if isinstance(exc, CompileError):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return exc.code
        print(f"{prog}: internal error: {type(exc).__name__}: {first_line(exc)} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return Exit.INTERNAL
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was written", file=sys.stderr)
        return Exit.INTERRUPTED


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="print the traceback on errors")
    return p


def seed_argument(text: str) -> int:
    """A command line's seed, as the runtimes take it: unsigned 64-bit, never wrapped."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 2^64 - 1]")
    return value


def size_argument(text: str) -> tuple[int, int]:
    """`--size WxH` (width x height, as image sizes are spoken) -> (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) < 1 << 16 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 640x384)")
    return int(parts[1]), int(parts[0])


def add_public_key(p: argparse.ArgumentParser) -> None:
    """`--public-key` of the commands that read a bundle (compiler/signing.py checks it)."""
    p.add_argument("--public-key", metavar="PUB.pem", help="refuse the bundle (exit 7) unless manifest.sig verifies "
                                                          "manifest.json with this public key")
