"""JSON from a bundle, bounded: a size limit checked before reading and a nesting limit, the same
numbers as the Kotlin and Swift runtimes' Json (runtimes/README.md). A hostile file (a manifest
nested 200,000 deep with a matching digest line) is a BundleError naming it, exit 7, never a
RecursionError or an exhausted memory. Duplicate keys are refused: two readers could disagree on
which value wins."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BundleError
from .limits import MAX_JSON_DEPTH as MAX_DEPTH


def read(path: Path, max_bytes: int) -> tuple[bytes, Any]:
    """The file's bytes and its JSON value; BundleError naming the file when too large or not valid."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleError(str(path), f"{size} bytes, more than the {max_bytes} this runtime reads")
    data = path.read_bytes()
    return data, loads(data, str(path))


def loads(data: bytes, where: str) -> Any:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise BundleError(where, f"not valid JSON (nested deeper than {MAX_DEPTH} levels)") from None
    except UnicodeDecodeError:
        raise BundleError(where, "not valid JSON (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise BundleError(where, f"not valid JSON ({exc})") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise BundleError(where, f"not valid JSON (nested deeper than {MAX_DEPTH} levels)")
    return value


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise json.JSONDecodeError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}", "", 0)
    return dict(pairs)


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False
