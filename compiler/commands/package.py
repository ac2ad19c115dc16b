"""`package`: a verified bundle -> what an app adds in one step (compiler/app_package.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import _parser, _run


def parser() -> argparse.ArgumentParser:
    p = _parser("package", "Turn a compiled bundle into what an app adds in one step, after checking every hash: "
                           "a Swift package (runtimes/swift sources + the bundle as a resource) for Core ML bundles, "
                           "an Android library module (runtimes/kotlin sources, the target's engine and framework "
                           "dependency, the bundle in assets/) for ONNX, ExecuTorch and QNN bundles. OpenVINO bundles "
                           "are for PCs (an app loads the IR with OpenVINO) and are refused. Written atomically.")
    p.add_argument("--bundle", required=True, help="bundle directory written by `compile`")
    p.add_argument("--out", help="output directory (default: <bundle>-app)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --out atomically")
    return p


def _package(args) -> None:
    write_package(Path(args.bundle), Path(args.out or f"{Path(args.bundle)}-app"), args.force)


def write_package(bundle: Path, out: Path, force: bool) -> None:
    from ..app_package import write_app_package

    info = write_app_package(bundle, out, force)
    print(f"app package: {info['out']}  ({info['kind']} {info['module']}, engine {info['engine']}); it carries "
          f"{info['shipped_bytes'] / 1e6:.2f} of the bundle's {info['bundle_bytes'] / 1e6:.2f} MB: the report "
          f"(report.html, report.json) and timings.txt stay beside the bundle")


def main(argv: list[str] | None = None) -> int:
    return _run("package", argv, parser(), _package)


if __name__ == "__main__":
    raise SystemExit(main())
