"""Print, as JSON, the sampler constants every family bakes for each seeded student under a
folder (`python tests/baked_constants.py STUDENTS`), with the torch CPU capability that computed
them. tests/test_cpu_independence.py runs it under ATEN_CPU_CAPABILITY=default and under the
machine's own capability: a baked constant must not depend on the CPU's vector unit."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(students: Path) -> None:
    import torch

    from compiler.families import get_family
    from compiler.load import load_recipe_student
    from compiler.recipe import recipe_from_data
    from compiler.testing.seeded_students import KINDS

    layouts = {"eps-turbo-xl": "eps-turbo"}     # SDXL layout, eps-turbo sampler
    out = {}
    for kind in KINDS:
        family = layouts.get(kind, kind)
        recipe = recipe_from_data({"version": 1, "name": f"tiny-{kind}", "family": family,
                                   "image": {"height": 32, "width": 32}}, "baked_constants")
        student = load_recipe_student(str(students / kind), recipe, lazy=True)
        out[kind] = get_family(family).constants(student, recipe)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "constants": out}, sort_keys=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
