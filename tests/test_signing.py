"""Signed bundles (issue 24): manifest.sha256 only catches corruption, since whoever edits the
manifest can rewrite it; `compile --sign-key` adds manifest.sig (OpenSSF model signing, key-based,
offline) and `generate` / `verify --public-key` refuse a bundle it does not verify (exit 7)."""
from __future__ import annotations

import json
import shutil

import pytest

from compiler.contract.manifest import sign_manifest
from compiler.contract.verifier import read_verified_manifest
from compiler.errors import Exit
from support import onnx_recipe, tree_snapshot


def _keys(folder):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (folder / "pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return folder / "key.pem", folder / "pub.pem"


@pytest.fixture(scope="module")
def signed(students, bundles, tmp_path_factory):
    """The eps-turbo bundle of the session, compiled again with --sign-key; (bundle, public key)."""
    from compiler.commands.compile import main as compile_main

    root = tmp_path_factory.mktemp("signed")
    key, pub = _keys(root / "keys")
    bundles("eps-turbo")   # the unsigned twin
    code = compile_main(["--target", "onnx", "--recipe", str(onnx_recipe(root / "r.yaml", "eps-turbo")), "--model",
                         str(students["eps-turbo"]), "--out", str(root / "bundle"), "--sign-key", str(key), "--quiet"])
    assert code == Exit.OK
    return root / "bundle", pub


def test_a_signed_bundle_is_the_unsigned_one_plus_its_signature(signed, bundles, run_cli, tmp_path):
    bundle, pub = signed
    mine, twin = tree_snapshot(bundle), tree_snapshot(bundles("eps-turbo"))
    assert "manifest.sig" in mine and "manifest.sig" not in twin
    mine.pop("manifest.sig"), mine.pop("timings.txt"), twin.pop("timings.txt")
    assert mine == twin
    read_verified_manifest(bundle)   # the runtimes' check accepts the signature beside the manifest
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "a red fox", "--out", tmp_path / "a.png",
                           "--public-key", pub)
    assert code == Exit.OK, err
    code, _, err = run_cli("verify", "--bundle", bundle, "--model", signed[0].parent / "none", "--public-key", pub,
                           "--quiet")
    assert code == Exit.MODEL, err     # past the signature: the model folder is what is missing


def test_an_edited_manifest_with_its_checksum_rewritten_is_refused_only_by_the_signature(signed, run_cli, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(signed[0], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["name"] = "tampered"
    sign_manifest(bundle, manifest)   # rewrites manifest.sha256 too, as anyone can
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "x", "--out", tmp_path / "x.png")
    assert code == Exit.OK, err       # the checksum alone cannot tell
    code, _, err = run_cli("generate", "--bundle", bundle, "--prompt", "x", "--out", tmp_path / "y.png",
                           "--public-key", signed[1])
    assert code == Exit.BUNDLE and f"{bundle / 'manifest.sig'}: does not verify manifest.json" in err, err
    assert not (tmp_path / "y.png").exists()


def test_another_key_a_missing_signature_and_a_bad_key_are_refused(signed, bundles, run_cli, tmp_path):
    _, other = _keys(tmp_path / "other")
    code, _, err = run_cli("generate", "--bundle", signed[0], "--prompt", "x", "--out", tmp_path / "x.png",
                           "--public-key", other)
    assert code == Exit.BUNDLE and "does not verify" in err, err
    code, _, err = run_cli("verify", "--bundle", bundles("eps-turbo"), "--model", tmp_path, "--public-key", signed[1])
    assert code == Exit.BUNDLE and "manifest.sig: missing" in err, err
    (tmp_path / "junk.pem").write_text("not a key")
    code, _, err = run_cli("generate", "--bundle", signed[0], "--prompt", "x", "--out", tmp_path / "x.png",
                           "--public-key", tmp_path / "junk.pem")
    assert code == Exit.RECIPE and "--public-key" in err, err


def test_compile_refuses_an_unreadable_signing_key_before_any_work(students, run_cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = tree_snapshot(out)
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    code, _, err = run_cli("compile", "--target", "onnx", "--recipe", onnx_recipe(tmp_path / "r.yaml", "eps-turbo"),
                           "--model", students["eps-turbo"], "--out", out, "--force", "--sign-key", tmp_path / "key.pem")
    assert code == Exit.RECIPE and "--sign-key" in err and err.count("\n") == 1, err
    assert tree_snapshot(out) == before
