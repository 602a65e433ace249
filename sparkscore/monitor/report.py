"""The drift report: one self-contained static HTML page for a :class:`DriftResult`.

Why self-contained: the page is mailed, attached to tickets and opened on air-gapped machines,
so it must render with the network off.  It carries no external asset at all: CSS is inline,
every chart is a base64 PNG data URI drawn by matplotlib's Agg canvas (no display, no pyplot
global state), there is no script, and a Content-Security-Policy (``default-src 'none'``) makes a
browser refuse any fetch a future edit might add.  Every name that came from data or a model
(features, categories, slice values, the model name) is HTML-escaped.

The histograms are the ones the metrics were computed on: the reference and current counts on
the stored edges (or the stored categories + ``other``), each followed by the ``missing``
bucket (NULL + NaN), read from the two profiles the result carries (:func:`histograms`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparkscore.monitor.compute import DriftResult, DriftRow
from sparkscore.monitor.profile import ColumnProfile, MonitorError


@dataclass(frozen=True)
class FeatureHistogram:
    """Reference vs current counts of one column on the buckets its drift metrics compared."""

    feature: str
    role: str                    # input | output | label
    kind: str                    # numeric | categorical
    labels: tuple[str, ...]      # one per bucket: "[e_i, e_i+1)", a category, "other", "missing"
    reference: tuple[int, ...]
    current: tuple[int, ...]
    edges: tuple[float, ...] = ()

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        """Bucket shares of each side (all zeros for an empty side)."""
        def share(counts):
            a = np.asarray(counts, dtype=np.float64)
            return a / a.sum() if a.sum() > 0 else a
        return share(self.reference), share(self.current)


def _bucket_labels(col: ColumnProfile) -> tuple[str, ...]:
    if col.kind == "categorical":
        return (*(str(v) for v, _ in col.categories), "other", "missing")
    e = [f"{x:.4g}" for x in col.edges]
    if not e:
        return ("all", "missing")
    return (f"< {e[0]}", *(f"[{a}, {b})" for a, b in zip(e, e[1:])), f">= {e[-1]}", "missing")


def histogram(result: DriftResult, feature: str, role: str | None = None) -> FeatureHistogram:
    """The reference and current histogram of ``feature`` on the reference's stored edges/categories."""
    if result.reference_profile is None or result.current_profile is None:
        raise MonitorError("this drift result carries no profiles (built by hand?); compute it with ss.monitor.drift")
    ref = result.reference_profile.column(feature, role)
    cur = result.current_profile.column(feature, ref.role)
    r, c = ref.distribution(), cur.distribution()
    if r.shape != c.shape:
        raise MonitorError(f"column {feature!r}: the current profile was not built on the reference's buckets "
                           f"({c.size} vs {r.size}); profile it with reference=")
    return FeatureHistogram(feature, ref.role, ref.kind, _bucket_labels(ref), tuple(int(x) for x in r),
                            tuple(int(x) for x in c), tuple(ref.edges))


def histograms(result: DriftResult, features: Sequence[str] | None = None) -> list[FeatureHistogram]:
    """Histograms of ``features`` (default: the drifted ones, in profile order)."""
    names = result.drifted if features is None else tuple(features)
    roles = {r.feature: r.role for r in result.rows if r.slice_key is None and r.role != "quality"}
    return [histogram(result, name, roles.get(name)) for name in names]


# ---------------------------------------------------------------------- drawing
def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise MonitorError("the HTML report draws its histograms with matplotlib; "
                           "pip install 'sparkscore[monitor]' (or matplotlib)") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    del matplotlib
    return Figure, FigureCanvasAgg


def chart_png(h: FeatureHistogram, dpi: int = 96) -> bytes:
    """Side-by-side bars of the reference and current bucket shares (a PNG)."""
    Figure, FigureCanvasAgg = _matplotlib()
    r, c = h.shares()
    x = np.arange(len(h.labels))
    width = max(6.0, min(14.0, 0.55 * len(x) + 2.5))
    fig = Figure(figsize=(width, 3.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x - 0.2, r, 0.4, label=f"reference (n={sum(h.reference):,})", color="#4c72b0")
    ax.bar(x + 0.2, c, 0.4, label=f"current (n={sum(h.current):,})", color="#dd8452")
    ax.set_xticks(x)
    ax.set_xticklabels([_short(s) for s in h.labels], rotation=30 if len(x) > 4 else 0, ha="right" if len(x) > 4 else "center",
                       fontsize=8)
    ax.set_ylabel("share of rows")
    ax.set_title(f"{_short(h.feature, 60)} ({h.role}, {h.kind})", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- page
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#555;font-size:13px;margin-bottom:12px}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.drift td{background:#fde2e1}tr.drift td.flag{color:#b00020;font-weight:bold}
.ok{color:#1b7f3b}.bad{color:#b00020}
figure{margin:12px 0 24px}figcaption{font-size:12px;color:#555}
img{max-width:100%;border:1px solid #eee}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _row(r: DriftRow) -> str:
    where = "all" if r.slice_key is None else f"{r.slice_key} = {r.slice_value}"
    cells = [(r.feature, ""), (r.role, ""), (r.metric, ""), (_num(r.value), "num"), (_num(r.threshold), "num"),
             (_num(r.p_value), "num"), ("DRIFT" if r.is_anomaly else "", "flag"), (_num(r.n_ref), "num"),
             (_num(r.n_cur), "num"), (r.method, ""), (_num(r.error_bound), "num"), (where, "")]
    tds = "".join(f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>" for text, cls in cells)
    return f'<tr class="{"drift" if r.is_anomaly else "same"}">{tds}</tr>'


def render_html(result: DriftResult, title: str | None = None, features: Sequence[str] | None = None) -> str:
    """The report page as text: header, summary table (every drift row), one chart per drifted feature."""
    model = dict(result.model or {})
    name = model.get("name", "model")
    version = f" v{model['version']}" if model.get("version") is not None else ""
    heading = title or f"Drift report: {name}{version}"
    drifted = result.drifted
    charts = histograms(result, features)
    n_ref = result.reference_profile.rows if result.reference_profile is not None else None
    n_cur = result.current_profile.rows if result.current_profile is not None else None
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = (f'<span class="bad">{len(drifted)} drifted: {_e(", ".join(drifted))}</span>' if drifted
               else '<span class="ok">no drift</span>')
    head = ["feature", "role", "metric", "value", "threshold", "p-value", "drift", "n_ref", "n_cur", "method",
            "error bound", "slice"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
        f'<div class="meta">reference: {_e(result.reference)} ({_e(_num(n_ref))} rows) &middot; current: '
        f'{_e(_num(n_cur))} rows &middot; sha256 {_e(str(model.get("sha256", "-"))[:12])} &middot; '
        f"generated {stamp} by sparkscore</div>",
        f'<p id="verdict">{verdict}</p>',
        '<h2>Summary</h2><table id="summary"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>",
        *(_row(r) for r in result.rows),
        "</tbody></table>",
    ]
    if charts:
        parts.append("<h2>Histograms of the drifted features (reference vs current, on the stored edges)</h2>")
    for h in charts:
        data = base64.b64encode(chart_png(h)).decode("ascii")
        counts = ", ".join(f"{lab}: {a}/{b}" for lab, a, b in zip(h.labels, h.reference, h.current))
        parts.append(f'<figure class="histogram" data-feature="{_e(h.feature)}">'
                     f'<img alt="{_e(h.feature)}: reference vs current histogram" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(h.feature)} &mdash; counts reference/current per bucket: {_e(counts)}"
                     "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: DriftResult, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8); the path written."""
    target = Path(path)
    text = render_html(result, title)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MonitorError(f"cannot write the drift report to {target}: {exc.strerror or exc}; pick a writable --html path") from None
    return target


__all__ = ["FeatureHistogram", "chart_png", "histogram", "histograms", "render_html", "write_report"]
