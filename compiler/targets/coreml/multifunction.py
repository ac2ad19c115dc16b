"""Several image sizes of one component as one multifunction .mlpackage (iOS 18 / macOS 15).

coremltools' save_multifunction puts each size's `main` into one package as a function of its
own (`size_640x384`, ...), the first the default, and stores each weight whose values are the
same in several functions once. A runtime picks the function with MLModelConfiguration's
functionName; the ML Program evaluator here evaluates the function by name. The package is then
made deterministic as every converted one is (convert.save).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .. import Artifact
from .convert import MODEL_SPEC, SUFFIX, quiet, stabilize_manifest, stabilize_spec

PREFIX = "size_"   # a MIL function name is an identifier: "640x384" alone starts with a digit


def function_name(key: str) -> str:
    return f"{PREFIX}{key}"


def share_weights(name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path) -> tuple[Artifact, dict]:
    import coremltools as ct

    desc = ct.utils.MultiFunctionDescriptor()
    for key, root, artifact in parts:
        desc.add_function(str(root / artifact.main), src_function_name="main", target_function_name=function_name(key))
    desc.default_function_name = function_name(parts[0][0])
    package = out_dir / f"{name}{SUFFIX}"
    if package.exists():
        shutil.rmtree(package)
    with quiet():
        ct.utils.save_multifunction(desc, str(package))
    (package / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
    stabilize_spec(package / MODEL_SPEC)
    stabilize_manifest(package)
    files = sorted(p.relative_to(out_dir).as_posix() for p in package.rglob("*") if p.is_file())
    main = package.name
    return Artifact(name, main, files), {key: {"file": main, "function": function_name(key)} for key, _, _ in parts}
