"""Tooling for the tests, the benchmarks and the runtimes' end-to-end checks, shipped beside the
compiler but not part of it: nothing in the product imports this package (tests/test_architecture.py).

    seeded_students    tiny seeded students of the real diffusers/transformers classes
    reference_engine   a bundle's components served over a pipe to the Kotlin and Swift test engines
"""
