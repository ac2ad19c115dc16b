"""The report beside a bundle: report.html, one self-contained file (images inlined) a person can
open from disk, and report.json, the figures compile measured (parity, quantization, the decoder's
cost), which `verify` reads. Measurements differ in their last bits between CPUs, so they stay out
of the manifest (whose bytes identify the bundle); report.sha256 hashes both, and report.json names
the manifest's sha256, so a report cannot be moved to another bundle or edited unnoticed."""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path

import numpy as np

from .contract.manifest import MANIFEST, REPORT, REPORT_DATA, REPORT_DIGEST, TIMINGS, digest_line
from .errors import BundleError

RECORD_VERSION = 1


def write_record(root: Path, figures: dict, page: str) -> None:
    """report.json (the figures, bound to manifest.json by its sha256), report.html, report.sha256.
    Written after the manifest."""
    manifest_sha256 = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
    record = {"record_version": RECORD_VERSION, "manifest_sha256": manifest_sha256, **figures}
    data = (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    html_bytes = page.encode("utf-8")
    (root / REPORT_DATA).write_bytes(data)
    (root / REPORT).write_bytes(html_bytes)
    (root / REPORT_DIGEST).write_text(digest_line(html_bytes, REPORT) + digest_line(data, REPORT_DATA),
                                      encoding="ascii")


def read_verified_record(bundle: Path) -> dict:
    """report.json of a bundle whose manifest was verified: report.sha256 present and matching
    both report files, report.json naming this manifest's sha256; BundleError (exit 7) otherwise."""
    from .contract import bounded_json
    from .contract.limits import MAX_MANIFEST_BYTES

    bundle = Path(bundle)
    digest = bundle / REPORT_DIGEST
    files = [bundle / REPORT, bundle / REPORT_DATA]
    for path in [digest, *files]:
        if not path.is_file() or path.is_symlink():
            raise BundleError(str(path), "missing: `verify` needs the report compile wrote beside the bundle (an "
                                         "app's copy leaves it out; verify the bundle compile wrote)")
    if digest.read_bytes() != "".join(digest_line(f.read_bytes(), f.name) for f in files).encode("ascii"):
        raise BundleError(str(digest), "does not match report.html and report.json (report modified or corrupt)")
    _, record = bounded_json.read(bundle / REPORT_DATA, MAX_MANIFEST_BYTES)
    manifest_sha256 = hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()
    if not isinstance(record, dict) or record.get("manifest_sha256") != manifest_sha256:
        raise BundleError(f"{bundle / REPORT_DATA}: manifest_sha256", "is not this bundle's manifest (report "
                                                                      "from another compile)")
    if record.get("record_version") != RECORD_VERSION:
        raise BundleError(f"{bundle / REPORT_DATA}: record_version",
                          f"is {record.get('record_version')!r}, this compiler reads {RECORD_VERSION}")
    return record


def _png(image: np.ndarray) -> str:
    from PIL import Image

    from .contract.png import to_8bit

    buf = io.BytesIO()
    Image.fromarray(to_8bit(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heatmap(a: np.ndarray, b: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """|a - b| averaged over channels, amplified, shown as black -> red -> yellow."""
    d = np.clip(np.abs(a - b).mean(axis=-1) * gain, 0, 1)
    return np.stack([np.clip(2 * d, 0, 1), np.clip(2 * d - 1, 0, 1), np.zeros_like(d)], axis=-1)


def _hwc(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)[0].transpose(1, 2, 0)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


# Thumbnails open full size (at least 384 px, pixels kept sharp) when clicked: CSS focus, no script.
STYLE = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
         ".pass{color:#070}.fail{color:#b00;font-weight:bold}"
         ".verdict{font-size:20px;padding:10px 14px;border-radius:6px;margin:8px 0 16px}"
         ".verdict.pass{background:#e8f5e9}.verdict.fail{background:#fdecea}"
         "td.prompt{text-align:left;max-width:28em;font-size:13px}"
         "img.thumb{width:96px;image-rendering:pixelated;cursor:zoom-in;vertical-align:middle}"
         "img.thumb:focus{width:auto;min-width:384px;cursor:zoom-out;outline:2px solid #36c}"
         "details{margin:8px 0}summary{cursor:pointer;font-weight:600}"
         "iframe{width:100%;height:12em;border:1px solid #ccc}")


def render(title: str, summary: dict, parities: list, sections: list[tuple[str, str]] = ()) -> str:
    """`parities`: verify.Parity results. The verdict comes first, then the summary, each run's
    metric table and a grid of reference | compiled | difference thumbnails, then `sections`."""
    passed = all(p.passed for p in parities)
    failure = next((p.failure() for p in parities if not p.passed), None)
    n = len(parities[0].samples) if parities else 0
    verdict = (f"<div class='verdict pass'>PASS: every check within tolerance on {n} held-out prompt(s)</div>"
               if passed else f"<div class='verdict fail'>FAIL: {html.escape(failure or 'a check failed')}</div>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{verdict}<table>"]
    parts += [f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{_fmt(v)}</td></tr>" for k, v in summary.items()]
    parts.append("</table>")
    for parity in parities:
        parts.append(_parity_section(parity))
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>\n")
    return "".join(parts)


def _thumb_cells(a_label: str, a: np.ndarray, b_label: str, b: np.ndarray) -> str:
    """Three table cells: a | b | their difference heatmap, each a thumbnail that opens full size."""
    return "".join(f"<td><img class='thumb' tabindex='0' src='{_png(img)}' alt='{html.escape(alt)}' "
                   f"title='click for full size'></td>"
                   for alt, img in ((a_label, a), (b_label, b), ("difference", _heatmap(a, b))))


def _parity_section(parity) -> str:
    status = "<span class='pass'>PASS</span>" if parity.passed else "<span class='fail'>FAIL</span>"
    parts = [f"<h2>{html.escape(parity.label)} {status}</h2><table><tr><th>check</th><th>precision</th>"
             "<th>worst PSNR dB</th><th>min PSNR dB</th><th>worst cosine</th><th>min cosine</th>"
             "<th>SSIM (min)</th><th>max abs (not gated)</th><th>result</th></tr>"]
    for c in parity.checks:
        w = c.worst
        cos = min(m.cosine for m in c.per_prompt)
        mx = max(m.max_abs for m in c.per_prompt)
        res = "<span class='pass'>pass</span>" if c.passed else "<span class='fail'>FAIL</span>"
        parts.append(f"<tr><td style='text-align:left'>{c.name}</td><td>{c.precision}</td><td>{w.psnr_db:.2f}</td>"
                     f"<td>{c.tolerance.min_psnr_db}</td><td>{cos:.6f}</td><td>{c.tolerance.min_cosine}</td>"
                     f"<td>{f'{min(c.ssim):.4f} ({c.tolerance.min_ssim})' if c.ssim else ''}</td>"
                     f"<td>{mx:.3g}</td><td>{res}</td></tr>")
    parts.append("</table>")
    label = html.escape(parity.label)
    pictured = any(s.picture is not None for s in parity.samples)
    parts.append(f"<table><tr><th>seed</th><th>held-out prompt</th>{'<th>init image, strength</th>' * pictured}"
                 f"<th>torch fp32</th><th>{label}</th><th>|difference| x8</th></tr>")
    for s in parity.samples:
        ref, cand = _hwc(s.reference), _hwc(s.candidate)
        note = " (truncated to the tokenizer's max length)" if s.truncated else ""
        init = ""
        if pictured:
            init = "<td>text-to-image</td>" if s.picture is None else (
                f"<td><img class='thumb' tabindex='0' src='{_png(_hwc(s.picture.tensor))}' "
                f"alt='{html.escape(s.picture.name)}'><br>{html.escape(s.picture.name)}, {s.strength}</td>")
        parts.append(f"<tr><td>{s.seed}</td><td class='prompt'>{html.escape(s.prompt)}{note}</td>{init}"
                     f"{_thumb_cells('torch fp32', ref, parity.label, cand)}</tr>")
    parts.append("</table>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


SENSITIVITY_ROWS = 25


def quantization_sections(components: dict) -> list[tuple[str, str]]:
    """Coverage, per-layer sensitivity (collapsed: it is long) and sizes of a quantized bundle."""
    if not components:
        return []
    sections = []
    rows = []
    for name, q in components.items():
        cov = q.coverage()
        rows.append([name, q.scheme, cov["quantized_layers"], cov["float_layers"],
                     f"{cov['quantized_weight_share']:.1%}", f"{cov['quantized_flop_share']:.1%}",
                     ", ".join(q.fallback) or "none"])
    sections.append(("Quantization coverage", _table(
        ["component", "scheme", "quantized layers", "float layers", "quantized weight share",
         "quantized FLOP share", "kept float by fallback"], rows)))
    for name, q in components.items():
        ranked = sorted((l for l in q.layers if l.sensitivity_db is not None), key=lambda l: l.sensitivity_db)
        if not ranked:
            continue
        rows = [[l.name, l.op_type, l.params, round(l.act_sqnr_db, 2) if l.act_sqnr_db is not None else "",
                 round(l.output_sqnr_db, 2), l.precision, l.reason] for l in ranked[:SENSITIVITY_ROWS]]
        check = q.check
        shown = min(len(ranked), SENSITIVITY_ROWS)
        note = (f"<p>Local quantization error of each layer, measured in the quantized graph on a calibration "
                f"prompt: its input activation after quantization, and its output against the same op run in float "
                f"(float weight and input); lowest output SQNR first. Check on calibration prompts: "
                f"{html.escape(str(check))}</p>")
        table = _table(["layer", "op", "params", "input SQNR dB", "output SQNR dB", "precision", "why float"], rows)
        sections.append((f"Per-layer sensitivity: {name}",
                         f"<details><summary>{shown} of {len(ranked)} layers, least accurate first</summary>"
                         f"{note}{table}</details>"))
    rows = []
    for name, q in components.items():
        params = sum(l.params for l in q.layers)
        fp32, shipped = q.sizes.get("float_bytes", 0), q.sizes.get("shipped_bytes", 0)
        rows.append([name, f"{fp32 / 1e6:.2f} MB", f"{shipped / 1e6:.2f} MB",
                     f"{shipped / fp32:.2f}x" if fp32 else "", f"{shipped / params:.3f}" if params else ""])
    sections.append(("Sizes", _table(["component", "float", "quantized", "ratio", "bytes per layer parameter"],
                                     rows)))
    return sections


def decoder_cost_section(cost, summary: dict) -> list[tuple[str, str]]:
    """The shipped decoding's image next to the full decoder's, from the same latents (not gated)."""
    rows = "".join(
        f"<tr><td class='prompt'>{html.escape(r['prompt'])}</td><td>{r['psnr_db']:.2f}</td><td>{r['ssim']:.4f}</td>"
        f"{_thumb_cells('full decoder', _hwc(f), cost.short, _hwc(t))}</tr>"
        for r, f, t in zip(summary["per_prompt"], cost.full, cost.tiny))
    note = (f"<p>The recipe ships {html.escape(cost.shipped)} for {cost.purpose}. Its images against "
            f"{html.escape(cost.compared_with)}'s from the same latents on the held-out prompts: worst PSNR "
            f"{summary['worst_psnr_db']:.2f} dB, min SSIM {summary['min_ssim']:.4f}. Shown, not gated.</p>")
    return [(f"Quality cost of the {cost.short}", note + "<table><tr><th>held-out prompt</th><th>PSNR dB</th>"
             f"<th>SSIM</th><th>full decoder</th><th>{cost.short}</th><th>|difference| x8</th></tr>" + rows + "</table>")]


def latency_section() -> list[tuple[str, str]]:
    """Latencies are measurements of the compiling machine, not reproducible: they live in the
    bundle's unhashed timings.txt, which the (hashed, byte-identical) report shows in a frame.
    Plain text, so a tampered timings.txt cannot run anything in the report."""
    return [("Latency on the compiling machine", f"<iframe src='{TIMINGS}' title='{TIMINGS}'></iframe>")]


def timings_text(latency: dict, checker: str) -> str:
    """timings.txt: per-component and whole-chain latency, float export vs shipped (equal for a
    component left float), flagging any component the shipped recipe makes slower than fp32."""
    lines = [f"Latency measured on the compiling machine with {checker}, median of 3 runs on one held-out input.",
             "Measured, so not hashed and not part of the byte-identical bundle.", "",
             f"{'component':<14}{'fp32 ms':>12}{'shipped ms':>12}{'speed-up':>10}"]
    for name, t, slower in latency_rows(latency):
        lines.append(f"{name:<14}{t['fp32'] * 1e3:>12.2f}{t['shipped'] * 1e3:>12.2f}"
                     f"{t['fp32'] / t['shipped']:>9.2f}x{'  SLOWER than fp32' if slower else ''}")
    return "\n".join(lines) + "\n"


def latency_rows(latency: dict) -> list[tuple[str, dict, bool]]:
    """(name, {"fp32", "shipped"} seconds, shipped slower than fp32) per component, then the
    whole chain: what timings.txt and the compile summary print."""
    total = {k: sum(t[k] for t in latency.values()) for k in ("fp32", "shipped")}
    return [(name, t, t["shipped"] > t["fp32"]) for name, t in [*latency.items(), ("whole chain", total)]]


def delegation_line(d: dict) -> str:
    """One component's delegation report in a line (compile summary, demo)."""
    return (f"{d['delegated_flop_share']:.2%} of FLOPs delegated in {d['delegated_segments']} segment(s), "
            f"{d['portable_ops']} op(s) on portable kernels")


def lora_section(fused: dict | None) -> list[tuple[str, str]]:
    """The LoRAs fused into the weights (manifest `lora`), when any were."""
    if not fused:
        return []
    rows = [[name, e["file"], e["sha256"][:16], e["scale"]] for name, entries in fused.items() for e in entries]
    note = ("<p>Fused into the weights before export: the reference, calibration and every check in this report are of the "
            "fused model; nothing of them is left to apply at run time.</p>")
    return [("LoRAs", note + _table(["component", "file", "sha256 (first 16)", "scale"], rows))]


def delegation_section(block: dict) -> list[tuple[str, str]]:
    """A target block's delegation report (ExecuTorch), when it has one."""
    delegation = block.get("delegation")
    if not delegation:
        return []
    rows = [[name, f"{d['delegated_flop_share']:.2%}", d["delegated_segments"], d["delegated_ops"], d["portable_ops"],
             ", ".join(f"{op} x{n}" for op, n in d["portable_by_type"].items()) or "none"]
            for name, d in delegation.items()]
    note = (f"<p>Operators outside a delegate run on portable kernels (no SIMD, one thread) and split the program. "
            f"Minimum delegated FLOP share: {block.get('min_delegated_flop_share')}.</p>")
    return [("Delegation", note + _table(["component", "delegated FLOP share", "delegated segments", "delegated ops",
                                          "portable ops", "left on portable kernels"], rows))]


def device_section(block: dict, checks: dict | None, root: Path | None = None) -> list[tuple[str, str]]:
    """A target block's partition onto the device (QNN: nodes the HTP took, per SoC) and what the
    device's simulator measured against the checked graphs, when it has them."""
    partition = block.get("partition")
    if not partition:
        return []
    rows = []
    for name, socs in partition.items():
        for soc, p in socs.items():
            check = (checks or {}).get(name, {}).get(soc) or {"skipped": "not simulated (simulate option)"}
            agreement = (f"{min(o['psnr_db'] for o in check['outputs']):.2f}" if "outputs" in check
                         else html.escape(check["skipped"]))
            program = ((block.get("soc_models") or {}).get(soc, {}).get("programs") or {}).get(name, "")
            binary = root / program.replace(".onnx", "_qnn.bin") if root and program else None
            binary = binary.stat().st_size if binary and binary.is_file() else None
            rows.append([name, soc, f"{p['htp_nodes']} / {p['nodes']}",
                         f"{binary / 1e6:.2f}" if binary is not None else "-", agreement])
    note = (f"<p>Every node on the {html.escape(block.get('backend', 'device'))}, CPU fallback off. The simulator "
            f"runs the compiled program on the first held-out input; its worst output PSNR against the graph "
            f"it was compiled from (ONNX Runtime CPU) is shown. Simulated arithmetic, not a phone's latency.</p>")
    return [("On the device", note + _table(["component", "SoC", "nodes on the device", "program MB (shipped)",
                                             "simulator vs graph dB"], rows))]
