"""report.html: one self-contained file (images inlined) a person can open from disk."""
from __future__ import annotations

import base64
import html
import io

import numpy as np


def _png(image: np.ndarray, scale: int) -> str:
    from PIL import Image

    from .png import to_8bit

    img = Image.fromarray(to_8bit(image))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heatmap(a: np.ndarray, b: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """|a - b| averaged over channels, amplified, shown as black -> red -> yellow."""
    d = np.clip(np.abs(a - b).mean(axis=-1) * gain, 0, 1)
    return np.stack([np.clip(2 * d, 0, 1), np.clip(2 * d - 1, 0, 1), np.zeros_like(d)], axis=-1)


def _hwc(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)[0].transpose(1, 2, 0)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def render(title: str, summary: dict, parities: list, sections: list[tuple[str, str]] = ()) -> str:
    """`parities`: verify.Parity results; each adds a metric table and one image row per prompt."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             ".pass{color:#070}.fail{color:#b00;font-weight:bold}figure{display:inline-block;margin:4px}"
             "figcaption{font-size:12px;text-align:center}.prompt{font-size:13px;margin-top:12px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><table>"]
    parts += [f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{_fmt(v)}</td></tr>" for k, v in summary.items()]
    parts.append("</table>")
    for parity in parities:
        status = "<span class='pass'>PASS</span>" if parity.passed else "<span class='fail'>FAIL</span>"
        parts.append(f"<h2>{html.escape(parity.label)} {status}</h2><table><tr><th>check</th><th>precision</th>"
                     "<th>worst PSNR dB</th><th>min PSNR dB</th><th>worst cosine</th><th>min cosine</th>"
                     "<th>SSIM (min)</th><th>max abs (not gated)</th><th>result</th></tr>")
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
        for s in parity.samples:
            ref, cand = _hwc(s.reference), _hwc(s.candidate)
            scale = max(1, 256 // ref.shape[0])
            note = " (truncated to the tokenizer's max length)" if s.truncated else ""
            parts.append(f"<div class='row'><div class='prompt'>seed {s.seed}: {html.escape(s.prompt)}{note}</div>")
            for label, img in (("torch fp32", ref), (parity.label, cand), ("|difference| x8", _heatmap(ref, cand))):
                parts.append(f"<figure><img src='{_png(img, scale)}' alt='{html.escape(label)}'>"
                             f"<figcaption>{html.escape(label)}</figcaption></figure>")
            parts.append("</div>")
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>\n")
    return "".join(parts)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


SENSITIVITY_ROWS = 25


def quantization_sections(manifest: dict, components: dict, latency: dict, checker: str) -> list[tuple[str, str]]:
    """Coverage, per-layer sensitivity, sizes and measured latencies of a quantized bundle."""
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
        note = (f"<p>Local quantization error of each layer, measured in the quantized graph on a calibration "
                f"prompt: its input activation after quantization, and its output against the same op run in float "
                f"(float weight and input); lowest output SQNR first ({min(len(ranked), SENSITIVITY_ROWS)} of "
                f"{len(ranked)}). Check on calibration prompts: {html.escape(str(check))}</p>")
        sections.append((f"Per-layer sensitivity: {name}", note + _table(
            ["layer", "op", "params", "input SQNR dB", "output SQNR dB", "precision", "why float"],
            rows)))
    rows = []
    for name, q in components.items():
        params = sum(l.params for l in q.layers)
        fp32, shipped = q.sizes.get("float_bytes", 0), q.sizes.get("shipped_bytes", 0)
        rows.append([name, f"{fp32 / 1e6:.2f} MB", f"{shipped / 1e6:.2f} MB",
                     f"{shipped / fp32:.2f}x" if fp32 else "", f"{shipped / params:.3f}" if params else ""])
    sections.append(("Sizes", _table(["component", "float", "quantized", "ratio", "bytes per layer parameter"],
                                     rows)))
    if latency:
        rows = [[name, f"{t['fp32'] * 1e3:.2f}", f"{t['shipped'] * 1e3:.2f}", f"{t['fp32'] / t['shipped']:.2f}x"]
                for name, t in latency.items()]
        sections.append((f"Latency ({checker}, this machine, median of 3; not part of the manifest)",
                         _table(["component", "fp32 ms", "shipped ms", "speed-up"], rows)))
    return sections


def delegation_line(d: dict) -> str:
    """One component's delegation report in a line (compile summary, demo)."""
    return (f"{d['delegated_flop_share']:.2%} of FLOPs delegated in {d['delegated_segments']} segment(s), "
            f"{d['portable_ops']} op(s) on portable kernels")


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
