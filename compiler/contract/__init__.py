"""The bundle contract: what a bundle holds and how every reader handles it, module for module the
mirror of the on-device runtimes (runtimes/README.md):

    contract/            runtimes/kotlin (.kt)                  runtimes/swift (.swift)
    manifest.py          Manifest                               Manifest
    verifier.py          BundleVerifier                         BundleVerifier
    bounded_json.py      Json                                   Json
    limits.py            Json.MAX_*                             Json.MAX_*
    wiring.py            Wiring                                 Wiring
    tiling.py            Tiling                                 Tiling
    noise.py             NoiseSource                            NoiseSource
    png.py               Png                                    Png
    tokenizers.py        Tokenizer, ClipTokenizer,              the same
                         SentencePieceTokenizer
    clip_bytes.py        (inside ClipTokenizer)                 (inside ClipTokenizer)

It imports nothing of the compiler but its errors; the compiler's stages and the reference runtime
build on it.
"""
