"""The Swift runtime mirrors the Kotlin one file for file: each Kotlin source of the pure runtime
has a Swift file of the same name declaring the same types and members (compared on tree-sitter
parses of both). The Swift package itself is compiled and tested by `make test-swift` (swift build,
swift test against runtimes/fixtures) and tests/test_runtime_swift_pipeline.py (onestep-generate
on real bundles)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_kotlin
import tree_sitter_swift

from support import REPO

SWIFT = REPO / "runtimes" / "swift"
SWIFT_SOURCES = SWIFT / "Sources" / "OneStepRuntime"
KOTLIN_SOURCES = REPO / "runtimes" / "kotlin" / "src" / "main" / "kotlin" / "dev" / "onestep" / "runtime"

SWIFT_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))
KOTLIN_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_kotlin.language()))

# Swift files with no Kotlin counterpart.
SWIFT_ONLY_FILES = {
    "Sha256.swift": "SHA-256, CRC-32 and Adler-32: Kotlin takes them from the JDK (MessageDigest, java.util.zip) "
                    "and CryptoKit is Apple-only",
    "CoreMLEngine.swift": "the Core ML engine, as Kotlin's engines live in android/",
    "CompiledModelCache.swift": "Core ML compiles an .mlpackage on the device; ONNX Runtime and ExecuTorch load "
                                "the shipped file as it is",
}

# Swift declarations standing for what the JVM gives Kotlin, per file; a type's entry covers its members.
SWIFT_ONLY = {
    "Json.swift": {
        "Json.Object": "Kotlin's LinkedHashMap keeps a JSON object's key order, Swift's Dictionary does not "
                       "(the order decides which manifest problem is reported first)",
        "Json.Error.message": "inherited from Exception in Kotlin",
        "Json.Error.description": "CustomStringConvertible: Exception.toString in Kotlin",
    },
    "BundleError.swift": {
        "RuntimeError": "Kotlin throws the JDK's IllegalArgumentException and IllegalStateException",
        "BundleError.description": "CustomStringConvertible: Exception.message in Kotlin",
        "BundleError.errorDescription": "LocalizedError: Exception.message in Kotlin",
    },
}


def _text(node) -> str:
    return node.text.decode()


def _problems(tree) -> list[str]:
    found = []

    def walk(node):
        if node.is_error or node.is_missing:
            row, col = node.start_point
            found.append(f"{row + 1}:{col + 1} {'ERROR' if node.is_error else 'MISSING'} {_text(node)[:60]!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return found


def _member(owner: str, name: str, static: bool) -> str:
    return f"{owner}.{name}" + (" (static)" if static else "")


# --- Kotlin: classes, interfaces, enum classes and objects; members not private; companion
# and object members are static, as enum entries are (FLOAT32 is `case float32` in Swift).

def _kotlin_private(node) -> bool:
    mods = next((c for c in node.children if c.type == "modifiers"), None)
    return mods is not None and any(m.type == "visibility_modifier" and _text(m) == "private" for m in mods.children)


def _enum_case_name(name: str) -> str:
    head, *rest = name.lower().split("_")
    return head + "".join(p.capitalize() for p in rest)


def kotlin_api(source: bytes) -> tuple[set[str], set[str]]:
    tree = KOTLIN_PARSER.parse(source)
    assert not _problems(tree), _problems(tree)
    types: set[str] = set()
    members: set[str] = set()

    def visit_type(node, prefix: str) -> None:
        name = _text(next(c for c in node.children if c.type == "identifier"))
        owner = f"{prefix}.{name}" if prefix else name
        types.add(owner)
        for child in node.children:
            if child.type == "primary_constructor":
                for params in (c for c in child.children if c.type == "class_parameters"):
                    for p in (c for c in params.children if c.type == "class_parameter"):
                        if any(c.type in ("val", "var") for c in p.children) and not _kotlin_private(p):
                            members.add(_member(owner, _text(next(c for c in p.children if c.type == "identifier")), False))
            elif child.type in ("class_body", "enum_class_body"):
                visit_body(child, owner, static=node.type == "object_declaration")

    def visit_body(body, owner: str, static: bool) -> None:
        for d in body.children:
            if _kotlin_private(d):
                continue
            if d.type in ("class_declaration", "object_declaration"):
                visit_type(d, owner)
            elif d.type == "companion_object":
                for b in (c for c in d.children if c.type == "class_body"):
                    visit_body(b, owner, static=True)
            elif d.type == "function_declaration":
                members.add(_member(owner, _text(d.child_by_field_name("name")), static))
            elif d.type == "property_declaration":
                for v in (c for c in d.children if c.type == "variable_declaration"):
                    members.add(_member(owner, _text(next(c for c in v.children if c.type == "identifier")), static))
            elif d.type == "enum_entry":
                members.add(_member(owner, _enum_case_name(_text(next(c for c in d.children if c.type == "identifier"))),
                                    True))

    for node in tree.root_node.children:
        if node.type in ("class_declaration", "object_declaration") and not _kotlin_private(node):
            visit_type(node, "")
    return types, members


# --- Swift: struct, class, enum, protocol (extensions add members to the type they extend);
# members not private or fileprivate; `static` or `class` members and enum cases are static.

def _swift_modifiers(node) -> list[str]:
    mods = next((c for c in node.children if c.type == "modifiers"), None)
    return [_text(m) for m in mods.children] if mods is not None else []


def _swift_private(node) -> bool:
    return any(m in ("private", "fileprivate") for m in _swift_modifiers(node))


def _swift_static(node) -> bool:
    return any(m in ("static", "class") for m in _swift_modifiers(node))


def _identifier(node) -> str:
    return _text(node).strip("`")


def swift_api(source: bytes) -> tuple[set[str], set[str]]:
    tree = SWIFT_PARSER.parse(source)
    assert not _problems(tree), _problems(tree)
    types: set[str] = set()
    members: set[str] = set()

    def visit_type(node, prefix: str) -> None:
        name = _text(node.child_by_field_name("name"))
        owner = f"{prefix}.{name}" if prefix else name
        if _text(node.child_by_field_name("declaration_kind")) != "extension":
            types.add(owner)
        body = node.child_by_field_name("body")
        for d in body.children if body is not None else ():
            if _swift_private(d):
                continue
            if d.type in ("class_declaration", "protocol_declaration"):
                visit_type(d, owner)
            elif d.type in ("function_declaration", "protocol_function_declaration"):
                members.add(_member(owner, _identifier(d.child_by_field_name("name")), _swift_static(d)))
            elif d.type in ("property_declaration", "protocol_property_declaration"):
                for pattern in d.children_by_field_name("name"):
                    bound = pattern.child_by_field_name("bound_identifier")
                    if bound is not None:
                        members.add(_member(owner, _identifier(bound), _swift_static(d)))
            elif d.type == "enum_entry":
                for case in d.children_by_field_name("name"):
                    members.add(_member(owner, _identifier(case), True))

    for node in tree.root_node.children:
        if node.type in ("class_declaration", "protocol_declaration") and not _swift_private(node):
            visit_type(node, "")
    return types, members


def _without_swift_only(file: str, names: set[str]) -> set[str]:
    only = SWIFT_ONLY.get(file, {})
    return {n for n in names if not any(n.split(" ")[0] == k or n.startswith(k + ".") for k in only)}


def api_differences(kotlin: bytes, swift: bytes, swift_file: str) -> list[str]:
    """What one side declares and the other does not, after the Swift-only table."""
    k_types, k_members = kotlin_api(kotlin)
    s_types, s_members = swift_api(swift)
    s_types, s_members = _without_swift_only(swift_file, s_types), _without_swift_only(swift_file, s_members)
    out = [f"type {t} only in Kotlin" for t in sorted(k_types - s_types)]
    out += [f"type {t} only in Swift" for t in sorted(s_types - k_types)]
    out += [f"member {m} only in Kotlin" for m in sorted(k_members - s_members)]
    out += [f"member {m} only in Swift" for m in sorted(s_members - k_members)]
    return out


def _kotlin_files() -> list[Path]:
    return sorted(KOTLIN_SOURCES.glob("*.kt"))     # android/ (the Android engines) is a subfolder


def test_every_kotlin_file_has_a_swift_mirror_and_nothing_else_is_unexplained():
    kotlin = {f.stem for f in _kotlin_files()}
    swift = {f.stem for f in SWIFT_SOURCES.glob("*.swift")}
    assert len(kotlin) >= 11
    assert kotlin - swift == set(), "Kotlin files without a Swift mirror"
    assert swift - kotlin == {Path(f).stem for f in SWIFT_ONLY_FILES}, "Swift files neither mirrored nor listed"


@pytest.mark.parametrize("kotlin_file", [f.name for f in _kotlin_files()])
def test_swift_declares_the_same_types_and_members_as_kotlin(kotlin_file):
    kotlin = (KOTLIN_SOURCES / kotlin_file).read_bytes()
    swift_file = kotlin_file.removesuffix(".kt") + ".swift"
    assert api_differences(kotlin, (SWIFT_SOURCES / swift_file).read_bytes(), swift_file) == []


def test_api_comparison_sees_real_declarations():
    types, members = kotlin_api((KOTLIN_SOURCES / "Pipeline.kt").read_bytes())
    assert types == {"Pipeline", "Pipeline.Stage", "Pipeline.Result"}
    assert {"Pipeline.generate", "Pipeline.open (static)", "Pipeline.conform (static)", "Pipeline.Stage.millis"} <= members
    assert not {m for m in members if "timed" in m or "sessions" in m}       # private
    types, members = swift_api((SWIFT_SOURCES / "Tensor.swift").read_bytes())
    assert {"DType.float32 (static)", "DType.manifestName", "Tensor.integer (static)", "Tensor.count"} <= members


def test_api_comparison_fails_on_a_renamed_or_moved_declaration():
    kotlin = (KOTLIN_SOURCES / "Pipeline.kt").read_bytes()
    swift = (SWIFT_SOURCES / "Pipeline.swift").read_bytes()
    renamed = kotlin.replace(b"fun generate(", b"fun generateImage(")
    assert renamed != kotlin
    assert api_differences(renamed, swift, "Pipeline.swift") == [
        "member Pipeline.generateImage only in Kotlin", "member Pipeline.generate only in Swift"]
    # A companion member that became an instance member in Swift.
    instance = re.sub(rb"public static func open\(", b"public func open(", swift)
    assert instance != swift
    assert api_differences(kotlin, instance, "Pipeline.swift") == [
        "member Pipeline.open (static) only in Kotlin", "member Pipeline.open only in Swift"]
