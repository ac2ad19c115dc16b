"""report.html: one self-contained file (images inlined) a person can open from disk."""
from __future__ import annotations

import base64
import html
import io

import numpy as np


def _png(image: np.ndarray, scale: int) -> str:
    from PIL import Image

    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
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
                     "<th>max abs</th><th>result</th></tr>")
        for c in parity.checks:
            w = c.worst
            cos = min(m.cosine for m in c.per_prompt)
            mx = max(m.max_abs for m in c.per_prompt)
            res = "<span class='pass'>pass</span>" if c.passed else "<span class='fail'>FAIL</span>"
            parts.append(f"<tr><td style='text-align:left'>{c.name}</td><td>{c.precision}</td><td>{w.psnr_db:.2f}</td>"
                         f"<td>{c.tolerance.min_psnr_db}</td><td>{cos:.6f}</td><td>{c.tolerance.min_cosine}</td>"
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
