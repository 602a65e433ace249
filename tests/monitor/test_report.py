"""The HTML drift report: self-contained, escaped, histograms on the stored edges, rendered by a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

import sparkscore as ss
from sparkscore.cli import app
from sparkscore.monitor import report
from sparkscore.monitor.compute import DriftResult, DriftRow
from sparkscore.monitor.profile import ColumnProfile, MonitorError, Profile
from tests.monitor.conftest import frame

pytest.importorskip("matplotlib")


def _drifted_batch():
    batch = frame(3000, 5)
    batch["age"] += 10.0                                                            # mean shift
    batch["region"] = batch["region"].map({"EU": "APAC", "APAC": "EU", "US": "US"})  # category swap
    batch.loc[batch.sample(frac=0.3, random_state=1).index, "income"] = None         # null burst
    return batch


@pytest.fixture(scope="module")
def drifted(monitored):
    return ss.monitor.drift("churn@prod", _drifted_batch(), registry=monitored)


@pytest.fixture(scope="module")
def page(drifted) -> str:
    return ss.monitor.render_html(drifted)


class _Tags(HTMLParser):
    """Every start tag with its attributes (the page's structure, as a browser would tokenize it)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def test_histograms_are_the_profiles_buckets_the_metrics_compared(drifted):
    assert set(drifted.drifted) >= {"age", "income", "region", "prediction"}
    hists = {h.feature: h for h in ss.monitor.histograms(drifted)}
    assert tuple(hists) == drifted.drifted
    for name, h in hists.items():
        ref, cur = drifted.reference_profile.column(name), drifted.current_profile.column(name)
        assert h.reference == tuple(ref.distribution().astype(int)) and h.current == tuple(cur.distribution().astype(int))
        assert sum(h.current) == cur.count == 3000 and len(h.labels) == len(h.reference)
    assert hists["age"].edges == drifted.reference_profile.column("age").edges and len(hists["age"].labels) == 11
    assert hists["income"].labels[-1] == "missing" and hists["income"].current[-1] == 900   # the null burst
    assert hists["region"].labels == ("EU", "US", "APAC", "other", "missing")


def test_page_is_self_contained_with_one_row_per_drift_row_and_one_chart_per_drifted_feature(drifted, page):
    tags = _tags(page)
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed", "base")]
    sources = [a["src"] for t, a in tags if "src" in a]
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"url\(|@import|https?://", page)
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'")
    rows = [a["class"] for t, a in tags if t == "tr" and a.get("class") in ("drift", "same")]
    assert len(rows) == len(drifted.rows) and rows.count("drift") == sum(r.is_anomaly for r in drifted.rows)
    figures = [a["data-feature"] for t, a in tags if t == "figure"]
    assert tuple(figures) == drifted.drifted
    from PIL import Image

    png = base64.b64decode(sources[0].partition(",")[2])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[0] > 100 and len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # a drawn chart, not blank


def test_every_name_is_html_escaped():
    evil = '<img src=x onerror="alert(1)">&'
    col = ColumnProfile(evil, "input", "categorical", count=10, categories=((evil, 6), ("b", 4)))
    cur = ColumnProfile(evil, "input", "categorical", count=10, categories=((evil, 1), ("b", 9)))
    prof = Profile((col,), 10, model={"name": "<b>m</b>", "version": 1})
    rows = (DriftRow(evil, "l_infinity", 0.5, 0.3, True, None, 10, 10, slice_key=evil, slice_value=evil,
                     method="histogram"),)
    page = report.render_html(DriftResult(rows, prof.model, "reference <batch>", prof, Profile((cur,), 10)))
    assert evil not in page and "<b>m</b>" not in page and "<batch>" not in page
    assert html_escaped(evil) in page
    assert [t for t, _ in _tags(page) if t == "img"] == ["img"]  # only the chart; the name's <img> is text


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_a_result_without_profiles_is_refused_in_one_line():
    row = DriftRow("age", "psi", 0.5, 0.25, True, None, 10, 10)
    with pytest.raises(MonitorError, match="carries no profiles"):
        report.render_html(DriftResult((row,)))


def test_cli_monitor_writes_the_html_report(monitored, runner, tmp_path):
    data = tmp_path / "batch.parquet"
    _drifted_batch().to_parquet(data)
    out = tmp_path / "sub" / "report.html"
    res = runner.invoke(app, ["--registry", str(monitored.root), "monitor", "churn@prod", "--input", str(data),
                              "--html", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.stderr
    text = out.read_text(encoding="utf-8")
    assert 'id="summary"' in text and text.count('<figure class="histogram"') == len(__import__("json").loads(
        res.stdout)["drifted"])


# ---------------------------------------------------------------------- a real headless browser
CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def chromium(html_path, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium with the network off: every host name resolves to nothing and every request
    goes to a dead proxy, so the page renders only from what it carries."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-extensions", "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, html_path.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def screenshot(html_path, png_path, tmp_path, size: str = "1280,2400") -> None:
    """One PNG of the rendered page (how docs/monitor_report.png was taken)."""
    done = chromium(html_path, tmp_path, f"--window-size={size}", f"--screenshot={png_path}")
    assert png_path.exists(), done.stderr[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install -y chromium)")
def test_chromium_renders_the_report_offline(drifted, page, tmp_path):
    from PIL import Image

    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    dom = chromium(path, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<tr class="(?:drift|same)"', dom.stdout)) == len(drifted.rows)
    assert dom.stdout.count('<figure class="histogram"') == len(drifted.drifted)
    png = tmp_path / "shot.png"
    screenshot(path, png, tmp_path)
    image = np.asarray(Image.open(png).convert("RGB"))
    colors = image.reshape(-1, 3)
    assert (colors < 250).any(axis=1).mean() > 0.02                # not a blank page
    orange = ((colors[:, 0] > 200) & (colors[:, 1] > 110) & (colors[:, 1] < 150) & (colors[:, 2] < 110)).sum()
    assert orange > 500                                            # the charts' current-batch bars were painted
