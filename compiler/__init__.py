"""OneStep Edge Compiler: one-step text-to-image students -> verified on-device bundles."""

__version__ = "0.1.0"
