"""The report beside a bundle (issue 24): figures measured on the compiling CPU (parity, layer
SQNR, the decoder's cost) live in report.json and report.html, outside the manifest whose bytes
identify the bundle; report.sha256 and the manifest's sha256 inside report.json bind them to it,
and `verify` refuses a report that was edited or belongs to another compile."""
from __future__ import annotations

import json
import shutil

from compiler.contract.manifest import FOR_PEOPLE
from compiler.errors import Exit
from support import flip_byte


def test_measured_figures_stay_out_of_the_manifest(bundles):
    bundle = bundles("eps-turbo")
    manifest = (bundle / "manifest.json").read_text(encoding="utf-8")
    record = json.loads((bundle / "report.json").read_text(encoding="utf-8"))
    assert "psnr" not in manifest and "parity" not in json.loads(manifest)
    assert all(run["passed"] for run in record["parity"]) and "psnr_db" in json.dumps(record["parity"])
    assert not set(FOR_PEOPLE) & set(json.loads(manifest)["files"])


def test_verify_refuses_an_edited_report_or_one_from_another_compile(bundles, students, run_cli, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(bundles("eps-turbo"), edited)
    flip_byte(edited / "report.json")
    code, _, err = run_cli("verify", "--bundle", edited, "--model", students["eps-turbo"], "--quiet")
    assert code == Exit.BUNDLE and "report.sha256" in err and len(err.strip().splitlines()) == 1, err

    moved = tmp_path / "moved"
    shutil.copytree(bundles("eps-turbo"), moved)
    for name in ("report.json", "report.html", "report.sha256"):
        shutil.copyfile(bundles("lcm") / name, moved / name)
    code, _, err = run_cli("verify", "--bundle", moved, "--model", students["eps-turbo"], "--quiet")
    assert code == Exit.BUNDLE and "manifest_sha256" in err and "another compile" in err, err

    missing = tmp_path / "missing"
    shutil.copytree(bundles("eps-turbo"), missing)
    (missing / "report.sha256").unlink()
    code, _, err = run_cli("verify", "--bundle", missing, "--model", students["eps-turbo"], "--quiet")
    assert code == Exit.BUNDLE and "report.sha256: missing" in err, err
