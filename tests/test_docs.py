"""The README's promises that code can check: the two setup commands come first, and the
exit-code table matches the codes the tool produces."""
import re

from compiler.cli import EXIT_CODES
from compiler.errors import Exit
from support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_setup_commands():
    lines = README.splitlines()
    assert lines[0] == "# OneStep Edge Compiler"
    first_block = README.split("```")[1]
    assert first_block.strip().splitlines() == ["make demo", "make test"]
    before = README.split("```")[0].strip().splitlines()
    assert len(before) <= 2  # title and one short sentence


def test_readme_exit_code_table_lists_every_code():
    section = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == {int(code) for code in Exit}


def test_cli_help_lists_every_exit_code():
    listed = {int(m) for m in re.findall(r"(?:^|\s)(\d+)\s+\S", EXIT_CODES)}
    assert {int(code) for code in Exit} <= listed


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_link_of_the_readme_and_docs_resolves():
    """The README is a front door (issue 26): details live in docs/, and every link from either,
    file and anchor, leads somewhere."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in _anchors(file.read_text(encoding="utf-8"))):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
    assert len(README.splitlines()) <= 260
    for doc in ("targets", "families", "bundle", "quantization", "benchmarks", "student"):
        assert f"](docs/{doc}.md)" in README, doc


def test_runtime_and_demo_readmes_say_what_was_built_and_run_here():
    """Nothing Android or Swift can be built on this machine: each README must say so."""
    for folder in ("runtimes", "ios_demo", "android_demo"):
        text = (REPO / folder / "README.md").read_text(encoding="utf-8")
        assert "manifest" in text and re.search(r"(Nothing|not)[^.]{0,60}(built|compiled)", text), folder


def test_readme_recipe_table_matches_the_shipped_recipes():
    """Every recipe in recipes/ has its row, with its family, and the row claims 8-bit exactly for
    the components the recipe quantizes (a stale row said sd-turbo-int8 shipped a w8 text encoder)."""
    import yaml

    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            for name in re.findall(r"`([\w.-]+\.yaml)`", cells[0]):
                rows[name] = cells
    shipped = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
    assert sorted(rows) == shipped
    labels = {"text_encoder": "text encoder", "denoiser": "denoiser", "vae_decoder": "decoder"}
    for name in shipped:
        recipe = yaml.safe_load((REPO / "recipes" / name).read_text())
        assert rows[name][1] == f"`{recipe['family']}`", name
        claims = " ".join(rows[name][2:]).lower()
        for component, label in labels.items():
            spec = (recipe.get("components") or {}).get(component) or {}
            int8 = spec.get("precision") == "int8"
            scheme = ((spec.get("quantization") or {}).get("scheme") or "w8a8") if int8 else None
            said = re.search(rf"\b(w8a16|w8a8|w8) {label}s?\b", claims)
            assert (said.group(1) if said else None) == scheme, f"{name}: {label} is {scheme or 'fp32'}, the row says {claims}"
