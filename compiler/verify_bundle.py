"""`verify`: re-run a bundle's accuracy checks against its source model, for CI gates.

    verify --bundle build/sd-turbo-int8 --model /path/to/sd-turbo --prompts calibration/heldout.txt

The bundle's hashes are checked first (exit 7); the model must be the one the bundle was
compiled from (its safetensors hashes are in the manifest; exit 3 otherwise); the prompts
must not overlap the bundle's calibration prompts (exit 4); a tolerance miss is exit 6.
"""
from __future__ import annotations

import json
from pathlib import Path

from .cli import seed
from .errors import ModelError


def verify_parser(make_parser):
    p = make_parser("verify", "Re-run the accuracy checks of a compiled bundle against its source model: every "
                              "component and the end-to-end image, shipped precision vs the torch fp32 reference, "
                              "on held-out prompts, with the tolerance table the compiler used. Exit 0 only when "
                              "every check passes.")
    p.add_argument("--bundle", required=True, help="bundle directory written by `compile`")
    p.add_argument("--model", required=True, help="the diffusers folder the bundle was compiled from")
    p.add_argument("--prompts", help="held-out prompt file (default: the recipe's parity prompts)")
    p.add_argument("--num-prompts", type=int, help="how many prompts to check (default: the recipe's)")
    p.add_argument("--seed", type=seed, help="first noise seed, in [0, 2^64 - 1] (default: the recipe's parity seed)")
    p.add_argument("--json", help="also write the parity results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def verify_command(args) -> None:
    from .bundle import read_verified_manifest
    from .load import load_student
    from .pipeline import source_fingerprint, torch_chain
    from .progress import Progress
    from .prompts import check_disjoint, read_prompts
    from .recipe import recipe_from_data
    from .runtime import load_bundle
    from .verify import chain_precision, check_parity, require
    from .wrap import wrap

    manifest = read_verified_manifest(Path(args.bundle))
    recipe = recipe_from_data(manifest["recipe"], f"{args.bundle}/manifest.json recipe")
    prompts_path = args.prompts or recipe.parity.prompts
    prompts = read_prompts(prompts_path, "--prompts")[: args.num_prompts or recipe.parity.num_prompts]
    calibration = (manifest.get("quantization") or {}).get("calibration")
    if calibration:
        check_disjoint(read_prompts(calibration["prompts"], "calibration.prompts"), calibration["prompts"],
                       prompts, prompts_path)
    progress = Progress(2, quiet=args.quiet)
    with progress.stage("load", args.model):
        student = load_student(args.model, recipe.family, recipe.components.vae_decoder.subfolder)
        if source_fingerprint(student)["weights_sha256"] != manifest["source"]["weights_sha256"]:
            raise ModelError(f"{args.model}", "its safetensors differ from the ones this bundle was compiled from "
                                              "(manifest.json source.weights_sha256)")
        reference = torch_chain(wrap(student, recipe), student)
        chain, _ = load_bundle(args.bundle)
    precisions = {name: c["precision"] for name, c in manifest["components"].items()}
    label = f"{manifest['target']} {chain_precision(precisions)}"
    with progress.stage("verify", f"{len(prompts)} prompts from {prompts_path}"):
        parity = check_parity(reference, chain, precisions, prompts,
                              recipe.parity.seed if args.seed is None else args.seed, label, progress)
    for name, c in parity.as_dict()["checks"].items():
        w = c["worst"]
        extra = f"  SSIM {c['min_ssim']:.4f} (min {c['tolerance']['min_ssim']})" if "min_ssim" in c else ""
        print(f"  {label:<10} {name:<13} {c['precision']:<5} PSNR {w['psnr_db']:7.2f} dB (min "
              f"{c['tolerance']['min_psnr_db']})  cos {w['cosine']:.6f}{extra}  {'pass' if c['passed'] else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps(parity.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    require(parity)
    print(f"verify: {args.bundle} passes on {len(prompts)} prompts")

