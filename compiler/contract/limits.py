"""Limits of the bundle format: the same numbers in the Python, Kotlin and Swift readers
(runtimes/README.md, "Limits"). Imports nothing, so every reader can take them."""

MAX_ELEMENTS = 2**31 - 1             # a latent or image larger than this is no phone's (8 GB of float32)
MAX_JSON_DEPTH = 64                  # a manifest or tokenizer.json nests about 6 levels
MAX_MANIFEST_BYTES = 16 << 20        # a few kB per component
MAX_TOKENIZER_BYTES = 64 << 20       # Gemma-2's tokenizer.json is 17 MB
