"""Several image sizes of one component as one multifunction .mlpackage (iOS 18 / macOS 15).

coremltools' save_multifunction puts each size's `main` into one package as a function of its
own (`size_640x384`, ...), the first the default, and stores each weight whose values are the
same in several functions once. A runtime picks the function with MLModelConfiguration's
functionName; the ML Program evaluator here evaluates the function by name. The package is then
made deterministic as every converted one is (convert.save).
"""
from __future__ import annotations

from pathlib import Path

from .. import Artifact, size_program
from .convert import SUFFIX, write_package


def share_weights(name: str, parts: list[tuple[str, Path, Artifact]], out_dir: Path) -> tuple[Artifact, dict]:
    import coremltools as ct

    desc = ct.utils.MultiFunctionDescriptor()
    for key, root, artifact in parts:
        desc.add_function(str(root / artifact.main), src_function_name="main", target_function_name=size_program(key))
    desc.default_function_name = size_program(parts[0][0])
    main = f"{name}{SUFFIX}"
    files = write_package(out_dir / main, lambda path: ct.utils.save_multifunction(desc, str(path)))
    return Artifact(name, main, files), {key: {"file": main, "function": size_program(key)} for key, _, _ in parts}
