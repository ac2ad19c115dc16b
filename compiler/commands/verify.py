"""`verify`: re-run a bundle's accuracy checks against its source model, for CI gates.

    verify --bundle build/sd-turbo-int8 --model /path/to/sd-turbo [--prompts more-heldout.txt]

The bundle's hashes and the report beside it (report.json holds the held-out prompts compile
checked) are checked first (exit 7); the model must be the one the bundle was
compiled from (its safetensors hashes are in the manifest; exit 3 otherwise); the prompts
(by default the held-out prompts the bundle records, so it runs from any directory) must not
be prompts the bundle was calibrated on (their digests are in the manifest; exit 4); a
tolerance miss is exit 6.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import _parser, _run, add_public_key
from ..cli import seed_argument as seed
from ..errors import BundleError, ModelError


def parser() -> argparse.ArgumentParser:
    p = _parser("verify", "Re-run the accuracy checks of a compiled bundle against its source model, both "
                          "passes compile runs: for a quantized bundle the float export (re-exported into a "
                          "temporary folder) vs the torch fp32 reference, then the shipped bundle vs the "
                          "reference; every component and the end-to-end image, on held-out prompts, with the "
                          "tolerance table the compiler used. Exit 0 only when every check passes.")
    p.add_argument("--bundle", required=True, help="bundle directory written by `compile`")
    p.add_argument("--model", required=True, help="the diffusers folder the bundle was compiled from")
    p.add_argument("--prompts", help="held-out prompt file, relative to the working directory (default: the "
                                     "held-out prompts compile checked, recorded in the bundle)")
    p.add_argument("--num-prompts", type=int, help="how many prompts to check (default: the recipe's)")
    p.add_argument("--seed", type=seed, help="first noise seed, in [0, 2^64 - 1] (default: the recipe's parity seed)")
    p.add_argument("--shipped-only", action="store_true",
                   help="check only the shipped bundle, not the float export pass (which re-exports every "
                        "component: minutes at real size)")
    p.add_argument("--json", help="also write the parity results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_public_key(p)
    return p


def _verify(args) -> None:
    from ..contract.sizes import sizes_of, spell
    from ..contract.verifier import read_verified_manifest
    from ..report import read_verified_record
    from .. import lora
    from ..load import load_recipe_student
    from ..pipeline import source_fingerprint
    from ..progress import Progress
    from ..prompts import check_not_calibrated, read_prompts
    from ..recipe import recipe_from_data
    from ..targets.registry import get_target
    from ..parity import require

    if args.public_key:
        from ..signing import check

        check(args.bundle, args.public_key)
    manifest = read_verified_manifest(Path(args.bundle))
    record = read_verified_record(Path(args.bundle))
    recipe = recipe_from_data(manifest["recipe"], f"{args.bundle}/manifest.json recipe")
    if args.prompts:
        prompts_path = args.prompts
        prompts = read_prompts(args.prompts, "--prompts")
    else:
        prompts_path = "the bundle's held-out prompts"
        prompts = recorded_heldout(record, args.bundle)
    prompts = prompts[: args.num_prompts or recipe.parity.num_prompts]
    calibration = manifest.get("calibration")
    if calibration:
        check_not_calibrated(prompts, f"{prompts_path} (--prompts)", calibration_digests(calibration, args.bundle),
                             f"{args.bundle}/manifest.json calibration.prompt_digests")
    target = get_target(manifest["target"])
    options = recipe.target_options(target.name)
    precisions = {name: c["precision"] for name, c in manifest["components"].items()}
    quantized = "int8" in precisions.values() and not args.shipped_only
    first_seed = recipe.parity.seed if args.seed is None else args.seed
    progress = Progress(1 + (4 if quantized else 2) * len(sizes_of(manifest)), quiet=args.quiet)
    with progress.stage("load", args.model):
        student = load_recipe_student(args.model, recipe, lazy=True)
        if source_fingerprint(student)["weights_sha256"] != manifest["source"]["weights_sha256"]:
            raise ModelError(f"{args.model}", "its safetensors differ from the ones this bundle was compiled from "
                                              "(manifest.json source.weights_sha256)")
        fused = lora.describe(recipe)
        if fused != manifest.get("lora"):
            changed = next((e["file"] for name, entries in (fused or {}).items() for e, was in
                            zip(entries, manifest.get("lora", {}).get(name, [])) if e != was), "a LoRA")
            raise ModelError(changed, "differs from the LoRA this bundle was compiled with (manifest.json lora)")
    runs = []
    sizes = sizes_of(manifest)
    for h, w in sizes:   # a multi-size bundle: every size checked, its labels prefixed with it
        prefix = f"{spell(h, w)} " if len(sizes) > 1 else ""
        runs += _verify_size(args, recipe.at_size(h, w), student, target, options, precisions,
                             prompts, prompts_path, first_seed, quantized, progress, (h, w), prefix)
    for parity in runs:
        for name, c in parity.as_dict()["checks"].items():
            w = c["worst"]
            extra = f"  SSIM {c['min_ssim']:.4f} (min {c['tolerance']['min_ssim']})" if "min_ssim" in c else ""
            print(f"  {parity.label:<10} {name:<13} {c['precision']:<5} PSNR {w['psnr_db']:7.2f} dB (min "
                  f"{c['tolerance']['min_psnr_db']})  cos {w['cosine']:.6f}{extra}  {'pass' if c['passed'] else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"passed": all(p.passed for p in runs),
                                               "runs": [p.as_dict() for p in runs]}, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    for parity in runs:
        require(parity)
    print(f"verify: {args.bundle} passes on {len(prompts)} prompts ({', '.join(p.label for p in runs)})")


def _verify_size(args, recipe, student, target, options, precisions: dict, prompts: list[str], prompts_path: str,
                 first_seed: int, quantized: bool, progress, size: tuple[int, int], prefix: str) -> list:
    """Both passes (float export, shipped bundle) at one of the bundle's sizes."""
    import tempfile

    from ..cases import read_pictures
    from ..parity import chain_precision, check_parity
    from ..pipeline import export, torch_chain
    from ..runtime import load_bundle
    from ..streaming import heldout_questions, record_reference
    from ..wrap import wrap

    with progress.stage(f"{prefix}wrap", f"{size[1]}x{size[0]}"):
        wrapped = wrap(student, recipe)
        reference = torch_chain(wrapped, student)
        pictures = read_pictures(recipe)
        questions = heldout_questions(reference, prompts, first_seed, pictures)
        chain, _ = load_bundle(args.bundle, size)
    runs = []
    with tempfile.TemporaryDirectory(prefix="verify-") as work:
        if quantized:
            # The pass compile ran before quantizing: the float export vs torch, so a quantized
            # bundle cannot pass on a broken export that quantization happened to mask.
            fp = target.float_precision(options)
            with progress.stage("export", f"{target.name} {fp}, into a temporary folder"):
                exported = export(wrapped, student, recipe, reference, questions, target, options, Path(work),
                                  progress)
            with progress.stage("verify", f"{target.name} {fp} export vs torch fp32"):
                runs.append(check_parity(reference, exported.chain, {n: fp for n in precisions}, prompts, first_seed,
                                         f"{prefix}{target.name} {fp}", progress, pictures))
        else:
            record_reference(student, recipe, wrapped, reference, questions, progress)
        label = f"{prefix}{target.name} {chain_precision(precisions)}"
        with progress.stage("verify", f"the shipped bundle, {len(prompts)} prompts from {prompts_path}"):
            runs.append(check_parity(reference, chain, precisions, prompts, first_seed, label, progress, pictures))
    return runs


def recorded_heldout(record: dict, bundle) -> list[str]:
    where = f"{bundle}/report.json: parity[0].prompts"
    try:
        prompts = [p["prompt"] for p in record["parity"][0]["prompts"] if "picture" not in p]
    except (KeyError, IndexError, TypeError):
        raise BundleError(where, "missing or malformed; pass --prompts") from None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise BundleError(where, "must be a non-empty list of prompts; pass --prompts")
    return prompts


def calibration_digests(calibration, bundle) -> list[str]:
    digests = calibration.get("prompt_digests") if isinstance(calibration, dict) else None
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        raise BundleError(f"{bundle}/manifest.json: calibration.prompt_digests",
                          "missing or malformed (bundle written by an older compiler); compile it again")
    return digests


def main(argv: list[str] | None = None) -> int:
    return _run("verify", argv, parser(), _verify)


if __name__ == "__main__":
    raise SystemExit(main())
