"""GPT-2/CLIP's byte -> printable character table, which CLIP BPE vocabularies are built on
(the runtimes carry the same table: runtimes/README.md)."""
from __future__ import annotations


def bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2 byte -> printable unicode character table, in CLIP's vocab order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]
