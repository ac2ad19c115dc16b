"""Imports run one way (issue 26): no circle anywhere in compiler/, counting every import, those
inside functions and under TYPE_CHECKING included (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

from support import REPO


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join((package, *path.relative_to(root).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_circle_in_the_compiler():
    graph = import_graph(REPO / "compiler", "compiler")
    assert len(graph) > 50 and graph["compiler.pipeline"] >= {"compiler.load", "compiler.bundle"}
    assert cycles(graph) == []


def test_the_circle_check_finds_circles(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .b import x\n")          # lazy, still a dependency
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import c\n")
    (package / "sub" / "__init__.py").write_text("from .c import y\n")
    (package / "sub" / "c.py").write_text("from .. import a\n")
    assert cycles(import_graph(package, "pkg")) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_installed_compiler_is_the_product():
    """Test fixtures, the runtimes' reference engine and the demo are tooling: the product imports
    neither compiler.testing nor the demo student's code in students/."""
    graph = import_graph(REPO / "compiler", "compiler")
    product = {m: deps for m, deps in graph.items() if not m.startswith("compiler.testing")}
    assert {m for m, deps in product.items() if any(d.startswith("compiler.testing") for d in deps)} == set()
    outside = []
    for path in sorted((REPO / "compiler").rglob("*.py")):
        if "testing" in path.relative_to(REPO / "compiler").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            outside += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "students"]
    assert outside == []
    assert {"compiler.testing.seeded_students", "compiler.testing.reference_engine"} <= set(graph)


def test_the_bundle_contract_stands_alone():
    """compiler/contract/ (the mirror of runtimes/kotlin and runtimes/swift) builds on nothing of the
    compiler but its errors: a reader can take the contract without the compiler's stages."""
    graph = import_graph(REPO / "compiler", "compiler")
    contract = {m: deps for m, deps in graph.items() if m.startswith("compiler.contract")}
    assert {"compiler.contract.manifest", "compiler.contract.verifier", "compiler.contract.wiring",
            "compiler.contract.tiling", "compiler.contract.noise", "compiler.contract.png"} <= set(contract)
    outside = {d for deps in contract.values() for d in deps if not d.startswith("compiler.contract")}
    assert outside <= {"compiler.errors"}, outside
