"""Console entry points: compile, generate, verify. Every failure is one line on stderr and a
documented exit code (README, shared/ERRORS.md); `--debug` adds the traceback."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import struct
import sys
import traceback
from pathlib import Path
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


def compile_parser() -> argparse.ArgumentParser:
    p = _parser("compile", "Compile a one-step text-to-image student (diffusers folder, safetensors only) into a "
                           "verified bundle: export every component, bake the family's one-step sampler into the "
                           "denoiser, check parity against torch on held-out prompts, and write manifest.json, "
                           "tokenizer and report.html. The output directory is written atomically.")
    p.add_argument("--target", required=True, help="export target: onnx (ONNX Runtime; checked by running it), "
                                                    "coreml (ML Program .mlpackage; on Linux checked by evaluating "
                                                    "the converted MIL program, fp16 emulated) or executorch (.pte "
                                                    "programs delegated to XNNPACK; checked by running them with "
                                                    "ExecuTorch's runtime)")
    p.add_argument("--recipe", required=True, help="recipe YAML, e.g. recipes/sd-turbo.yaml")
    p.add_argument("--model", help="local diffusers folder or hub id (org/name; needs network). "
                                   "Default: the recipe's `model`")
    p.add_argument("--out", help="bundle directory (default build/<recipe name>-<target>)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --out atomically")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and plan; write nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--skip-memory-check", action="store_true",
                   help="compile even when the estimated peak memory (printed by --dry-run) exceeds this machine's")
    p.add_argument("--sign-key", metavar="KEY.pem",
                   help="sign manifest.json with this elliptic-curve private key (OpenSSF model signing, offline) "
                        "into manifest.sig; `verify` and `generate` check it with --public-key")
    p.add_argument("--emit-app-package", metavar="DIR", nargs="?", const="",
                   help="also write what an app adds in one step (see `package --help`); "
                        "default DIR: <out>-app")
    return p


def _compile(args) -> None:
    from .errors import RecipeError
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    from .targets.registry import target_class

    if args.sign_key:
        from .signing import check_private_key

        check_private_key(args.sign_key)

    target = target_class(args.target)()
    options = recipe.target_options(args.target)
    target.validate(recipe, options)
    model = args.model or recipe.model
    if not model:
        raise RecipeError(f"{args.recipe}: model", "no model given: pass --model or set `model` in the recipe")
    out = Path(args.out or f"build/{recipe.name}-{args.target}")
    memory = _memory_estimate(model, recipe, target)
    from .prompts import calibration_prompts, read_prompts

    heldout = read_prompts(recipe.parity.prompts, "parity.prompts")   # before any work, dry run or not
    calibration = calibration_prompts(recipe, heldout)
    if args.dry_run:
        plan = {"recipe": recipe.to_dict(), "plan": {
            "target": args.target, "target_options": dataclasses.asdict(options), "checker": target.checker(options),
            "model": model, "out": str(out),
            "stages": ["load", "wrap", "export", "quantize", "verify", "bundle"],
            "components": {n: c.precision for n, c in recipe.component_specs().items()},
            "decoder": {"subfolder": recipe.components.vae_decoder.subfolder,
                        "model": recipe.components.vae_decoder.model or model},
            "prompts": {"parity": f"{min(len(heldout), recipe.parity.num_prompts)} from "
                                  f"{Path(recipe.parity.prompts).resolve()}",
                        "calibration": f"{len(calibration)} from {Path(recipe.calibration.prompts).resolve()}"
                        if calibration else None},
            "peak_memory_estimate_gb": {k: round(v / 1e9, 2) for k, v in memory.items()} if memory else
            "unknown (the model is not a local folder)"}}
        print(json.dumps(plan, indent=2, sort_keys=True))
        return
    if memory and not args.skip_memory_check:
        from .memory import refuse_if_too_big

        refuse_if_too_big(memory, model)
    from .pipeline import compile_bundle
    from .progress import Progress

    result = compile_bundle(recipe, args.target, model, out, args.force, Progress(quiet=args.quiet),
                            Path(args.sign_key) if args.sign_key else None)
    _print_summary(result)
    if args.emit_app_package is not None:
        _write_package(out, Path(args.emit_app_package or f"{out}-app"), args.force)


def _memory_estimate(model: str, recipe, target) -> dict[str, int] | None:
    """Per-stage peak memory from the model folder's safetensors headers; None for a hub id."""
    from .memory import estimate

    folder = Path(model)
    if not folder.is_dir():
        return None
    try:
        return estimate(folder, recipe, target.memory_factors)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None   # an unreadable folder is load's to report, with its own message


def _print_summary(result) -> None:
    from .report import delegation_line, latency_rows

    m = result.manifest
    print(f"bundle: {result.out}  ({m['family']}, {m['target']}, {m['image']['height']}x{m['image']['width']})")
    for name, c in m["components"].items():
        size = sum(m["files"][f]["size"] for f in c["files"])
        print(f"  {name:<13} {c['precision']:<5} {size / 1e6:9.2f} MB  {c['file']}")
    for name, d in (m["targets"][m["target"]].get("delegation") or {}).items():
        print(f"  {name:<13} {delegation_line(d)}")
    for p in result.parity:
        for name, c in p.as_dict()["checks"].items():
            w = c["worst"]
            print(f"  parity {p.label:<12} {name:<13} PSNR {w['psnr_db']:7.2f} dB  cos {w['cosine']:.6f}  "
                  f"{'pass' if c['passed'] else 'FAIL'}")
    cost = m.get("decoder_cost")
    if cost:
        print(f"  decoder cost  {cost['shipped']} vs {cost['compared_with']}: worst PSNR {cost['worst_psnr_db']:.2f} dB, "
              f"min SSIM {cost['min_ssim']:.4f} (shown, not gated)")
    if result.latency:
        for name, t, slower in latency_rows(result.latency):
            vs = f"  (fp32 {t['fp32'] * 1e3:.1f} ms: {t['fp32'] / t['shipped']:.2f}x)" if t["fp32"] != t["shipped"] else ""
            print(f"  latency {name:<13} {t['shipped'] * 1e3:9.1f} ms{vs}")
            if slower:
                print(f"  warning: {name} is slower shipped than in fp32 on this machine (timings.txt)")
    for w in m["warnings"]:
        print(f"  warning: {w}")
    print(f"report: {result.out / 'report.html'}")


def compile_main(argv: list[str] | None = None) -> int:
    return _run("compile", argv, compile_parser(), _compile)


def generate_parser() -> argparse.ArgumentParser:
    p = _parser("generate", "Generate an image from a compiled bundle with the reference runtime (the bundle's "
                            "target runtime on this machine: ONNX Runtime, the ML Program evaluator or Core ML, "
                            "ExecuTorch). "
                            "The bundle's hashes are checked first; the noise comes from the documented portable "
                            "generator, so the Swift and Kotlin runtimes produce the same image for the same seed.")
    p.add_argument("--bundle", required=True, help="bundle directory written by `compile`")
    p.add_argument("--prompt", required=True)
    from .noise import seed_argument

    p.add_argument("--seed", type=seed_argument, default=0, help="an integer in [0, 2^64 - 1] (default 0)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--public-key", metavar="PUB.pem", help="refuse the bundle (exit 7) unless manifest.sig verifies "
                                                          "manifest.json with this public key")
    return p


def _generate(args) -> None:
    from .errors import RecipeError
    from .runtime import load_bundle, to_png

    out = Path(args.out)
    if not out.parent.is_dir():
        raise RecipeError(f"--out {out}", "its directory does not exist")

    if args.public_key:
        from .signing import check

        check(args.bundle, args.public_key)
    chain, manifest = load_bundle(args.bundle)
    from .prompts import tokenize

    if tokenize(chain.tokenizers, args.prompt).truncated:
        print(f"generate: warning: prompt truncated to {manifest['tokenizers'][0]['max_length']} tokens",
              file=sys.stderr)
    image = chain(args.prompt, args.seed)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        to_png(image, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    print(f"wrote {out}")


def generate_main(argv: list[str] | None = None) -> int:
    return _run("generate", argv, generate_parser(), _generate)


def package_parser() -> argparse.ArgumentParser:
    p = _parser("package", "Turn a compiled bundle into what an app adds in one step, after checking every hash: "
                           "a Swift package (runtimes/swift sources + the bundle as a resource) for Core ML bundles, "
                           "an Android library module (runtimes/kotlin sources, the target's engine and framework "
                           "dependency, the bundle in assets/) for ONNX and ExecuTorch bundles. Written atomically.")
    p.add_argument("--bundle", required=True, help="bundle directory written by `compile`")
    p.add_argument("--out", help="output directory (default: <bundle>-app)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --out atomically")
    return p


def _package(args) -> None:
    _write_package(Path(args.bundle), Path(args.out or f"{Path(args.bundle)}-app"), args.force)


def _write_package(bundle: Path, out: Path, force: bool) -> None:
    from .app_package import write_app_package

    info = write_app_package(bundle, out, force)
    print(f"app package: {info['out']}  ({info['kind']} {info['module']}, engine {info['engine']}); it carries "
          f"{info['shipped_bytes'] / 1e6:.2f} of the bundle's {info['bundle_bytes'] / 1e6:.2f} MB: report.html and "
          f"timings.txt stay beside the bundle")


def package_main(argv: list[str] | None = None) -> int:
    return _run("package", argv, package_parser(), _package)


def verify_main(argv: list[str] | None = None) -> int:
    from .verify_bundle import verify_command, verify_parser

    return _run("verify", argv, verify_parser(_parser), verify_command)


if __name__ == "__main__":
    sys.exit(compile_main())
