"""Multi-size bundles (recipe `image.sizes`): the manifest's `sizes` list, and the manifest a
runtime follows at one of them.

    "sizes": [{"height": 512, "width": 512, "noise_shape": [1, 4, 64, 64],
               "components": {"denoiser": {"file": "denoiser.512x512.onnx", "inputs": [...], "outputs": [...]},
                              ...}}, ...]

The first entry is the default size, the one `image`, `noise` and `components` describe. Each
entry names the components whose program (or tile plan) depends on the size; the others (the
text encoder, a tiled decoder's program) are the same at every size. `at_size` is the whole
contract: the manifest with that size's image, noise shape, programs and tile plans, which every
runtime (Kotlin, Swift) then runs as a one-size bundle. A bundle without `sizes` has one size.
"""
from __future__ import annotations

import copy


class SizeNotShipped(ValueError):
    """A size the bundle was not compiled for (generate --size; the runtimes' at())."""


def sizes_of(manifest: dict) -> list[tuple[int, int]]:
    """(height, width) of every size the bundle ships, the default first."""
    if "sizes" not in manifest:
        return [(manifest["image"]["height"], manifest["image"]["width"])]
    return [(s["height"], s["width"]) for s in manifest["sizes"]]


def spell(height: int, width: int) -> str:
    """A size as `generate --size` and the runtimes spell it: width x height."""
    return f"{width}x{height}"


def at_size(manifest: dict, height: int, width: int) -> dict:
    """The manifest a runtime follows at this size (a one-size manifest: no `sizes`)."""
    if "sizes" not in manifest and (height, width) == sizes_of(manifest)[0]:
        return manifest
    entry = next((s for s in manifest.get("sizes", []) if (s["height"], s["width"]) == (height, width)), None)
    if entry is None:
        shipped = ", ".join(spell(h, w) for h, w in sizes_of(manifest))
        raise SizeNotShipped(f"{spell(height, width)} is not a size of this bundle (it ships {shipped})")
    out = {k: v for k, v in manifest.items() if k != "sizes"}
    out["image"] = {**manifest["image"], "height": height, "width": width}
    out["noise"] = {**manifest["noise"], "shape": entry["noise_shape"]}
    out["components"] = {name: {**c, **entry["components"].get(name, {})} for name, c in manifest["components"].items()}
    if "img2img" in manifest:
        out["img2img"] = copy.deepcopy(manifest["img2img"])
        out["img2img"]["image"].update(height=height, width=width)
    return out


def structure_problem(manifest: dict) -> tuple[str, str] | None:
    """(key, problem) of a malformed `sizes` list; each size's manifest is then checked as a whole
    (compiler/contract/manifest.py) by at_size."""
    sizes = manifest["sizes"]
    if not isinstance(sizes, list) or len(sizes) < 2:
        return "sizes", "must list at least two sizes (a one-size bundle has no sizes)"
    seen = set()
    for i, s in enumerate(sizes):
        key = f"sizes[{i}]"
        if not isinstance(s, dict) or not all(_side(s.get(k)) for k in ("height", "width")):
            return key, "needs height and width as positive integers"
        if (s["height"], s["width"]) in seen:
            return key, f"{spell(s['height'], s['width'])} is listed twice"
        seen.add((s["height"], s["width"]))
        if not isinstance(s.get("noise_shape"), list) or not isinstance(s.get("components"), dict):
            return key, "needs noise_shape (a list) and components (an object)"
        for name, c in s["components"].items():
            top = manifest["components"].get(name)
            if not isinstance(top, dict) or not isinstance(c, dict):
                return f"{key}.components.{name}", "is not a component of the bundle"
            listed = top.get("files") or []
            if c.get("file") not in listed and not any(isinstance(c.get("file"), str) and isinstance(f, str)
                                                       and f.startswith(f"{c['file']}/") for f in listed):
                return f"{key}.components.{name}.file", f"{c.get('file')!r} is not a file (or folder) of the component"
    image, first = manifest["image"], sizes[0]
    if ((first["height"], first["width"]) != (image.get("height"), image.get("width"))
            or first["noise_shape"] != manifest["noise"].get("shape")):
        return "sizes[0]", "is not the default size (image and noise.shape)"
    return None


def _side(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 16
