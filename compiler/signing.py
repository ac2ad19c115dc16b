"""Signed bundles, for tampering rather than corruption: manifest.sha256 is a checksum that anyone
who edits the manifest can rewrite. `compile --sign-key KEY.pem` signs manifest.json with OpenSSF
model signing (PyPI `model-signing`: key-based and offline, a Sigstore bundle holding a DSSE
envelope whose in-toto statement names manifest.json's sha256) into manifest.sig. The manifest
lists every other file's sha256, so the one signature covers the bundle. `verify` and `generate`
with `--public-key PUB.pem` check it before reading anything else: a missing or bad signature is
exit 7. manifest.sig sits outside the manifest's file table (it cannot hash itself); runtimes
accept it beside the manifest, and an app that pins a public key checks it (runtimes/README.md).

ECDSA signatures are randomized: a signed bundle's manifest.sig differs between two signings of
the same bytes; every other file stays byte-identical.
"""
from __future__ import annotations

from pathlib import Path

from .contract.manifest import MANIFEST, SIGNATURE
from .errors import BundleError, EnvironmentError_, RecipeError, first_line


def _model_signing():
    try:
        from model_signing import signing, verifying
    except ImportError as exc:
        raise EnvironmentError_("model-signing", f"signing needs the pinned model-signing package "
                                                 f"({first_line(exc)}); run `make install`") from None
    return signing, verifying


def check_private_key(path: str | Path, flag: str = "--sign-key") -> Path:
    """Before any work: the key is a readable PEM private key of an elliptic curve (exit 2 otherwise)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = Path(path)
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{flag} {path}", f"not a readable, unencrypted PEM private key ({first_line(exc)})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise RecipeError(f"{flag} {path}", "must be an elliptic-curve key (e.g. `openssl ecparam -name prime256v1 "
                                            "-genkey -noout | openssl pkcs8 -topk8 -nocrypt`)")
    return path


def sign(bundle: Path, private_key: Path) -> None:
    """Write bundle/manifest.sig over bundle/manifest.json."""
    signing, _ = _model_signing()
    signing.Config().use_elliptic_key_signer(private_key=str(private_key)).sign(
        str(bundle / MANIFEST), str(bundle / SIGNATURE))


def check(bundle: str | Path, public_key: str | Path) -> None:
    """manifest.sig verifies manifest.json with `public_key`; BundleError (exit 7) naming what failed."""
    _, verifying = _model_signing()
    bundle, public_key = Path(bundle), Path(public_key)
    signature = bundle / SIGNATURE
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"--public-key {public_key}", f"not a readable PEM public key ({first_line(exc)})") from None
    if not signature.is_file():
        raise BundleError(str(signature), f"missing: the bundle is not signed, and --public-key {public_key} "
                                          "requires a signature")
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=str(public_key)).verify(
            str(bundle / MANIFEST), str(signature))
    except Exception as exc:   # model-signing raises ValueError and others for every way a check fails
        raise BundleError(str(signature), f"does not verify manifest.json with {public_key} "
                                          f"({first_line(exc, 160)})") from None
