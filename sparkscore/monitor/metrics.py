"""Drift metrics between a reference and a current distribution, with their default thresholds.

Definitions (``r``, ``c`` = reference / current bucket shares; buckets = the histogram bins on the
stored edges, or the stored categories + ``other``, each followed by a ``missing`` bucket for
NULL / NaN, so a burst of missing values moves every bucketed metric):

* ``psi`` -- population stability index ``sum((c - r) * ln(c / r))``, zero shares replaced by
  1e-4 first (Evidently's convention).
* ``jensen_shannon`` -- Jensen-Shannon *distance* (square root of the divergence, natural log), as
  ``scipy.spatial.distance.jensenshannon(r, c)``.
* ``wasserstein`` -- normed Wasserstein-1: ``W1(ref, cur) / std(ref)`` over the finite values
  (Evidently's "normed" variant; std = population std; a constant reference divides by 1).
  Exact = ``scipy.stats.wasserstein_distance`` on raw values; sketch = ``integral |F_ref - F_cur| dx``
  of the two KLL step CDFs, within ``(eps_ref + eps_cur) * (max - min) / std(ref)``.
* ``ks`` -- two-sample Kolmogorov-Smirnov statistic ``sup |F_ref - F_cur|`` with its p-value.
  Exact = ``scipy.stats.ks_2samp`` on raw values; sketch = the sup over every retained sketch item,
  within ``eps_ref + eps_cur`` (0 while both sketches hold every value), p-value by
  ``kstwo.sf(D - bound, round(n m / (n + m)))`` (ks_2samp's asymptotic method at the smallest
  statistic the bound allows: conservative, so sketch noise alone never raises an alarm).
* ``chi_square`` -- chi-square test of homogeneity of the 2 x K table (reference, current) of
  category counts: equal to ``scipy.stats.chi2_contingency(table, correction=False)`` (the
  reference is a sample too, so this, not a goodness-of-fit against fixed shares, is the right test).
* ``l_infinity`` -- ``max |r - c|`` over the category buckets (BigQuery ML's categorical metric).

Default thresholds (a value at or above the threshold -- or a p-value below it -- is an anomaly):

* PSI 0.25 ("significant change"; 0.1 is "moderate"): the industry rule of thumb Evidently uses
  (``psi`` stattest, threshold 0.1) and documents (0.1 / 0.25).
* Jensen-Shannon distance 0.1: Evidently's default threshold for ``jensenshannon``.
  BigQuery ML ``ML.VALIDATE_DATA_DRIFT`` defaults to 0.3 for its numerical JS metric.
* Normed Wasserstein 0.1: Evidently's default for ``wasserstein`` (numerical, > 1000 rows).
* KS p-value 0.05 and chi-square p-value 0.05: Evidently's defaults for ``ks`` / ``chisquare``.
* L-infinity 0.3: BigQuery ML's ``categorical_default_threshold``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sparkscore.monitor.profile import MonitorError

PSI_EPS = 1e-4
#: metric -> (default threshold, True when anomalous means value < threshold, i.e. a p-value)
DEFAULTS: dict[str, tuple[float, bool]] = {
    "psi": (0.25, False),
    "jensen_shannon": (0.1, False),
    "wasserstein": (0.1, False),
    "ks": (0.05, True),
    "chi_square": (0.05, True),
    "l_infinity": (0.3, False),
}
NUMERIC_METRICS = ("psi", "jensen_shannon", "wasserstein", "ks")
CATEGORICAL_METRICS = ("psi", "jensen_shannon", "chi_square", "l_infinity")


@dataclass(frozen=True)
class Thresholds:
    """Default thresholds per metric, and per-feature overrides ``{feature: {metric: value}}``."""

    defaults: Mapping[str, float] = field(default_factory=lambda: {m: t for m, (t, _) in DEFAULTS.items()})
    features: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for where, table in [("thresholds", self.defaults), *((f"feature {f!r}", t) for f, t in self.features.items())]:
            for metric, value in table.items():
                if metric not in DEFAULTS:
                    raise MonitorError(f"{where}: unknown drift metric {metric!r}; use one of {', '.join(DEFAULTS)}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise MonitorError(f"{where}: threshold for {metric!r} must be a non-negative number, got {value!r}")

    def of(self, feature: str, metric: str) -> float:
        return float(self.features.get(feature, {}).get(metric, self.defaults.get(metric, DEFAULTS[metric][0])))

    @classmethod
    def build(cls, defaults: Mapping[str, float] | None = None,
              features: Mapping[str, Mapping[str, float]] | None = None) -> "Thresholds":
        base = {m: t for m, (t, _) in DEFAULTS.items()}
        return cls({**base, **dict(defaults or {})}, {k: dict(v) for k, v in (features or {}).items()})

    @classmethod
    def from_file(cls, path: str | Path) -> "Thresholds":
        """``[monitor.thresholds]`` (metric = value) and ``[monitor.features.NAME]`` tables of a TOML file."""
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise MonitorError(f"cannot read monitor config {path}: {exc}") from None
        section = doc.get("monitor", doc)
        unknown = set(section) - {"thresholds", "features"}
        if unknown:
            raise MonitorError(f"{path}: unknown [monitor] entries {sorted(unknown)}; use thresholds and features")
        return cls.build(section.get("thresholds"), section.get("features"))


def is_anomaly(metric: str, value: float | None, threshold: float) -> bool:
    """Whether ``value`` crosses ``threshold`` (p-value metrics: below it; the others: at or above it)."""
    if value is None or math.isnan(value):
        return False
    if DEFAULTS[metric][1]:
        return value < threshold
    return value >= threshold


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else counts


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    r, c = shares(ref), shares(cur)
    r, c = np.where(r == 0, PSI_EPS, r), np.where(c == 0, PSI_EPS, c)
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.spatial import distance

    return float(distance.jensenshannon(shares(ref), shares(cur)))


def l_infinity(ref: np.ndarray, cur: np.ndarray) -> float:
    return float(np.max(np.abs(shares(ref) - shares(cur))))


def chi_square(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Statistic and p-value of the homogeneity test of the 2 x K table (empty buckets dropped)."""
    from scipy.stats import chi2

    table = np.vstack([ref, cur]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(chi2.sf(stat, table.shape[1] - 1))


# ---------------------------------------------------------------------- KS / Wasserstein
@dataclass(frozen=True)
class Estimate:
    value: float
    p_value: float | None
    method: str            # exact | sketch
    error_bound: float     # 0 for exact


def ks_exact(ref: np.ndarray, cur: np.ndarray) -> Estimate:
    from scipy.stats import ks_2samp

    result = ks_2samp(ref, cur)
    return Estimate(float(result.statistic), float(result.pvalue), "exact", 0.0)


def wasserstein_exact(ref: np.ndarray, cur: np.ndarray, std_ref: float) -> Estimate:
    from scipy.stats import wasserstein_distance

    return Estimate(float(wasserstein_distance(ref, cur)) / _norm(std_ref), None, "exact", 0.0)


def _norm(std_ref: float | None) -> float:
    return std_ref if std_ref else 1.0


def _step_cdfs(ref_sketch, cur_sketch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid x (every retained item of both sketches, sorted) and each sketch's CDF F(x) = P(X <= x)."""
    def items(sketch) -> tuple[np.ndarray, np.ndarray]:
        pairs = list(sketch)
        values = np.array([v for v, _ in pairs], dtype=np.float64)
        weights = np.array([w for _, w in pairs], dtype=np.float64)
        order = np.argsort(values, kind="stable")
        return values[order], np.cumsum(weights[order]) / weights.sum()

    (rv, rf), (cv, cf) = items(ref_sketch), items(cur_sketch)
    grid = np.union1d(rv, cv)

    def at(values, cdf):
        idx = np.searchsorted(values, grid, side="right") - 1
        return np.where(idx >= 0, cdf[np.clip(idx, 0, None)], 0.0)

    return grid, at(rv, rf), at(cv, cf)


def ks_sketch(ref_sketch, cur_sketch, eps: float) -> Estimate:
    from scipy.stats import distributions

    grid, fr, fc = _step_cdfs(ref_sketch, cur_sketch)
    d = float(np.max(np.abs(fr - fc))) if grid.size else 0.0
    n, m = ref_sketch.n, cur_sketch.n
    # conservative: the p-value of the smallest statistic the bound allows, so an alarm raised on
    # sketches also holds for the exact statistic (sketch noise alone never trips the 0.05 test)
    p = float(np.clip(distributions.kstwo.sf(max(d - eps, 0.0), np.round(n * m / (n + m))), 0.0, 1.0))
    return Estimate(d, p, "sketch", eps)


def wasserstein_sketch(ref_sketch, cur_sketch, std_ref: float, eps: float) -> Estimate:
    grid, fr, fc = _step_cdfs(ref_sketch, cur_sketch)
    if grid.size < 2:
        return Estimate(0.0, None, "sketch", 0.0)
    w = float(np.sum(np.abs(fr - fc)[:-1] * np.diff(grid)))
    span = float(grid[-1] - grid[0])
    return Estimate(w / _norm(std_ref), None, "sketch", eps * span / _norm(std_ref))


def replace_thresholds(thresholds: Thresholds, **defaults: float) -> Thresholds:
    return dataclasses.replace(thresholds, defaults={**thresholds.defaults, **defaults})


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
