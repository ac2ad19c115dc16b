"""`compile`: a diffusers-format student and a recipe -> a verified bundle (compiler/pipeline.py)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
from pathlib import Path

from ..cli import _parser, _run
from .package import write_package


def parser() -> argparse.ArgumentParser:
    p = _parser("compile", "Compile a one-step text-to-image student (diffusers folder, safetensors only) into a "
                           "verified bundle: export every component, bake the family's one-step sampler into the "
                           "denoiser, check parity against torch on held-out prompts, and write manifest.json, "
                           "tokenizer and report.html. The output directory is written atomically.")
    p.add_argument("--target", required=True, help="export target: onnx (ONNX Runtime; checked by running it), "
                                                    "coreml (ML Program .mlpackage; on Linux checked by evaluating "
                                                    "the converted MIL program, fp16 emulated), executorch (.pte "
                                                    "programs delegated to XNNPACK; checked by running them with "
                                                    "ExecuTorch's runtime), qnn (HTP context binaries per Snapdragon "
                                                    "SoC; checked on QNN's HTP simulator) or openvino (IR .xml + .bin "
                                                    "for Intel CPUs, GPUs and NPUs in PCs; checked with OpenVINO's CPU "
                                                    "plugin in fp32)")
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
    from ..errors import RecipeError
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe)
    from ..targets.registry import target_class

    if args.sign_key:
        from ..signing import check_private_key

        check_private_key(args.sign_key)

    target = target_class(args.target)()
    options = recipe.target_options(args.target)
    target.validate(recipe, options)
    if args.emit_app_package is not None:
        from ..app_package import phone_app

        phone_app(args.target, "--emit-app-package")
    model = args.model or recipe.model
    if not model:
        raise RecipeError(f"{args.recipe}: model", "no model given: pass --model or set `model` in the recipe")
    out = Path(args.out or f"build/{recipe.name}-{args.target}")
    memory = _memory_estimate(model, recipe, target)
    from ..prompts import calibration_prompts, read_prompts

    heldout = read_prompts(recipe.parity.prompts, "parity.prompts")   # before any work, dry run or not
    from ..lora import check_files

    check_files(recipe)
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
        from ..memory import refuse_if_too_big

        refuse_if_too_big(memory, model)
    from ..pipeline import compile_bundle
    from ..progress import Progress

    result = compile_bundle(recipe, args.target, model, out, args.force, Progress(quiet=args.quiet),
                            Path(args.sign_key) if args.sign_key else None)
    _print_summary(result)
    if args.emit_app_package is not None:
        write_package(out, Path(args.emit_app_package or f"{out}-app"), args.force)


def _memory_estimate(model: str, recipe, target) -> dict[str, int] | None:
    """Per-stage peak memory from the model folder's safetensors headers; None for a hub id."""
    from ..memory import estimate

    folder = Path(model)
    if not folder.is_dir():
        return None
    try:
        return estimate(folder, recipe, target.memory_factors)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None   # an unreadable folder is load's to report, with its own message


def _print_summary(result) -> None:
    from ..report import delegation_line, latency_rows

    m = result.manifest
    image = f"{m['image']['height']}x{m['image']['width']}"
    if "sizes" in m:
        from ..contract.sizes import sizes_of, spell

        image = "sizes " + ", ".join(spell(h, w) for h, w in sizes_of(m)) + " (width x height)"
    print(f"bundle: {result.out}  ({m['family']}, {m['target']}, {image})")
    for name, c in m["components"].items():
        size = sum(m["files"][f]["size"] for f in c["files"])
        print(f"  {name:<13} {c['precision']:<5} {size / 1e6:9.2f} MB  {c['file']}")
    for name, entries in (m.get("lora") or {}).items():
        print(f"  {name:<13} fused: " + ", ".join(f"{e['file']} x {e['scale']:g}" for e in entries))
    for name, d in (m["targets"][m["target"]].get("delegation") or {}).items():
        print(f"  {name:<13} {delegation_line(d)}")
    for name, socs in (m["targets"][m["target"]].get("partition") or {}).items():
        nodes = next(iter(socs.values()))
        print(f"  {name:<13} {nodes['htp_nodes']}/{nodes['nodes']} nodes on the HTP for {', '.join(socs)}")
    for name, socs in (m.get("device_checks") or {}).items():
        for soc, check in socs.items():
            said = (f"simulator vs graph {min(o['psnr_db'] for o in check['outputs']):.2f} dB" if "outputs" in check
                    else check["skipped"])
            print(f"  {name:<13} {soc}: {said}")
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


def main(argv: list[str] | None = None) -> int:
    return _run("compile", argv, parser(), _compile)


if __name__ == "__main__":
    sys.exit(main())
