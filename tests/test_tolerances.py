"""Every metric the parity tables print is gated or labelled as not gated."""
from __future__ import annotations

from compiler.metrics import Metrics
from compiler.parity import END_TO_END, TOLERANCES, Check, Parity, Sample


def _parity(ssim: float) -> Parity:
    check = Check(END_TO_END, "int8", TOLERANCES[(END_TO_END, "int8")],
                  [Metrics(psnr_db=40.0, cosine=0.999, max_abs=0.5, finite=True)], [ssim])
    return Parity("onnx int8", [check], [Sample("a red fox", 3, False, None, None)])


def test_ssim_below_its_minimum_fails_end_to_end_even_with_good_psnr():
    assert _parity(0.95).failure() is None
    failure = _parity(0.5).failure()
    assert failure and "SSIM 0.5000 (min 0.9)" in failure and "held-out prompt 1" in failure


def test_the_manifest_says_which_metrics_are_not_gated():
    d = _parity(0.95).checks[0].as_dict()
    assert d["tolerance"]["min_ssim"] == 0.9 and d["not_gated"] == ["max_abs"]
    assert all(t.min_ssim == 0.0 for (name, _), t in TOLERANCES.items() if name != END_TO_END)
    assert all(t.min_ssim > 0 for (name, _), t in TOLERANCES.items() if name == END_TO_END)
