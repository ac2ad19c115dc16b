"""`generate`: one PNG from a bundle with the reference runtime, hashes (and a signature) first."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli import _parser, _run, add_public_key, seed_argument, size_argument


def parser() -> argparse.ArgumentParser:
    p = _parser("generate", "Generate an image from a compiled bundle with the reference runtime (the bundle's "
                            "target runtime on this machine: ONNX Runtime, the ML Program evaluator or Core ML, "
                            "ExecuTorch, QNN's HTP simulator, OpenVINO's CPU plugin). "
                            "The bundle's hashes are checked first; the noise comes from the documented portable "
                            "generator, so the Swift and Kotlin runtimes produce the same image for the same seed.")
    p.add_argument("--bundle", required=True, help="bundle directory written by `compile`")
    p.add_argument("--prompt", required=True)
    p.add_argument("--seed", type=seed_argument, default=0, help="an integer in [0, 2^64 - 1] (default 0)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--size", type=size_argument, metavar="WxH",
                   help="image width x height, one of the sizes the bundle ships (manifest.json sizes; compiled "
                        "from the recipe's image.sizes); default its first")
    p.add_argument("--init-image", metavar="PICTURE",
                   help="image-to-image (bundles compiled with `img2img`): a PNG or JPEG to start from, cropped to "
                        "the bundle's aspect ratio and resized as the Swift and Kotlin runtimes do")
    p.add_argument("--strength", type=float,
                   help="with --init-image: how far the image may move from it, one of the strengths the bundle "
                        "ships (manifest.json img2img.strengths); default its first")
    add_public_key(p)
    return p


def _generate(args) -> None:
    from ..errors import RecipeError
    from ..contract.sizes import SizeNotShipped, spell
    from ..runtime import load_bundle, to_png

    out = Path(args.out)
    if not out.parent.is_dir():
        raise RecipeError(f"--out {out}", "its directory does not exist")

    if args.public_key:
        from ..signing import check

        check(args.bundle, args.public_key)
    if args.strength is not None and not args.init_image:
        raise RecipeError("--strength", "needs --init-image")
    try:
        chain, manifest = load_bundle(args.bundle, args.size)
    except SizeNotShipped as exc:
        raise RecipeError(f"--size {spell(*args.size)}", str(exc)) from None
    picture, strength = _init_image(chain, args)
    from ..prompts import tokenize

    if tokenize(chain.tokenizers, args.prompt).truncated:
        print(f"generate: warning: prompt truncated to {manifest['tokenizers'][0]['max_length']} tokens",
              file=sys.stderr)
    image = chain(args.prompt, args.seed, picture, strength)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        to_png(image, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    block = manifest.get("targets", {}).get(manifest["target"], {})
    size = spell(manifest["image"]["height"], manifest["image"]["width"])
    print(f"wrote {out} ({size}, computed by {block.get('runs_here') or block.get('checker') or manifest['target']})")


def _init_image(chain, args):
    """(fitted picture tensor, strength) for --init-image; (None, None) for text-to-image."""
    from ..contract import init_image
    from ..errors import RecipeError

    if not args.init_image:
        return None, None
    spec = chain.img2img
    if spec is None:
        raise RecipeError("--init-image", f"{args.bundle} has no image-to-image (compile it with `img2img` in the "
                                          f"recipe)")
    strength = spec.strengths[0].strength if args.strength is None else args.strength
    try:
        spec.row(strength)
    except KeyError as exc:
        raise RecipeError("--strength", exc.args[0]) from None
    try:
        rgb = init_image.read_picture(args.init_image)
    except FileNotFoundError:
        raise RecipeError(f"--init-image {args.init_image}", "file not found") from None
    except ValueError as exc:
        raise RecipeError(f"--init-image {args.init_image}", str(exc)) from None
    return init_image.to_tensor(init_image.fit(rgb, spec.height, spec.width)), strength


def main(argv: list[str] | None = None) -> int:
    return _run("generate", argv, parser(), _generate)


if __name__ == "__main__":
    raise SystemExit(main())
