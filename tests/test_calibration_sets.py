"""The shipped prompt sets (calibration/README.md): big enough, unique, and disjoint, so parity
is never measured on prompts the quantizer calibrated on."""
from __future__ import annotations

import pytest

from compiler.errors import CalibrationError, Exit
from compiler.prompts import check_disjoint, normalize, read_prompts
from support import REPO

CALIBRATION = REPO / "calibration" / "calibration.txt"
HELDOUT = REPO / "calibration" / "heldout.txt"
MIN_CALIBRATION = 256
MIN_HELDOUT = 64


def test_calibration_set_is_large_enough():
    assert len(read_prompts(CALIBRATION, "calibration.prompts")) >= MIN_CALIBRATION


def test_heldout_set_is_large_enough():
    assert len(read_prompts(HELDOUT, "parity.prompts")) >= MIN_HELDOUT


@pytest.mark.parametrize("path", [CALIBRATION, HELDOUT], ids=lambda p: p.name)
def test_prompt_files_are_utf8_one_prompt_per_line_without_duplicates(path):
    raw = path.read_bytes()
    raw.decode("utf-8")  # raises if not UTF-8
    lines = raw.decode("utf-8").splitlines()
    assert all(line.strip() for line in lines), "blank line"
    prompts = read_prompts(path, "prompts")
    assert len(prompts) == len(lines), "a line was skipped (comment?)"
    normalized = [normalize(p) for p in prompts]
    duplicates = sorted({p for p in normalized if normalized.count(p) > 1})
    assert duplicates == []


def test_calibration_and_heldout_are_disjoint():
    calibration = read_prompts(CALIBRATION, "calibration.prompts")
    heldout = read_prompts(HELDOUT, "parity.prompts")
    check_disjoint(calibration, str(CALIBRATION), heldout, str(HELDOUT))
    assert not {normalize(p) for p in calibration} & {normalize(p) for p in heldout}


def test_normalize_ignores_case_and_whitespace():
    assert normalize("  A Red   FOX\tin the snow ") == normalize("a red fox in the snow") == "a red fox in the snow"
    assert normalize("a red fox") != normalize("a red box")


@pytest.mark.parametrize("variant", [
    "a red fox in the snow",
    "A Red Fox In The Snow",
    "  a red   fox in\tthe snow  ",
])
def test_an_overlapping_prompt_is_detected(tmp_path, variant):
    calibration = tmp_path / "cal.txt"
    heldout = tmp_path / "held.txt"
    calibration.write_text(f"two blue cars\n{variant}\n", encoding="utf-8")
    heldout.write_text("a red fox in the snow\na green tree\n", encoding="utf-8")
    with pytest.raises(CalibrationError) as err:
        check_disjoint(read_prompts(calibration, "calibration.prompts"), str(calibration),
                       read_prompts(heldout, "parity.prompts"), str(heldout))
    assert err.value.code == Exit.CALIBRATION
    assert str(calibration) in str(err.value) and str(heldout) in str(err.value) and "prompt 2" in str(err.value)


def test_shipped_sets_with_one_heldout_prompt_copied_in_are_detected(tmp_path):
    heldout = read_prompts(HELDOUT, "parity.prompts")
    calibration = read_prompts(CALIBRATION, "calibration.prompts") + [heldout[-1].upper()]
    with pytest.raises(CalibrationError):
        check_disjoint(calibration, "calibration.txt", heldout, "heldout.txt")
