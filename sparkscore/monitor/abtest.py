"""A/B readout over a prediction log and its feedback table (``sparkscore ab``).

Per arm (the log's ``arm`` column; shadow rows and rows without an arm are left out): logged rows,
labelled rows, the metric with a confidence interval, and the lift vs the control arm with its
interval; then a sample-ratio-mismatch (SRM) check of the logged counts against the expected
weights.  DuckDB aggregates the joined log (count, mean, sample variance of a per-row loss per arm);
Python only sees one row per arm.

Methods (normal approximations; state them when quoting the numbers):

* ``accuracy`` (classifiers: the argmax of ``proba``, first maximum, equals the label): Wilson
  score interval for the proportion; the lift is the difference of proportions with the unpooled
  Wald standard error.
* ``logloss`` (classifiers: ``-ln p(label)``, p clipped to [1e-15, 1] as scikit-learn does) and
  ``mae`` (regressors: ``|prediction - label|``): mean of the per-row loss +- z * s / sqrt(n); the
  lift is the difference of means with Welch's standard error.
* ``rmse`` (regressors): the interval of the MSE as above, square-rooted (clipped at 0); its
  standard error for the lift by the delta method, ``se(rmse) = se(mse) / (2 rmse)``.
* Relative lift ``(m_arm - m_control) / m_control``: delta-method interval.  Lower is better for
  logloss, rmse and mae; ``better`` in the output says which way each arm moved.
* SRM: Pearson's chi-square goodness of fit of the per-arm logged counts to the expected shares,
  ``arms - 1`` degrees of freedom, alert at p < 0.001 (the usual SRM threshold: Fabijan et al.,
  "Diagnosing Sample Ratio Mismatch", KDD 2019).  The log's sample is drawn by a hash of the
  request id, independent of the arm, so it keeps the arms' ratio.  Rows of an arm the weights do
  not name count as a mismatch.

A label the model's classes do not hold counts as a wrong answer for accuracy and as p = 1e-15
for logloss.  Class order comes from the registry (``proba`` follows ``Model.classes``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Mapping, Optional

import pyarrow as pa

from sparkscore.monitor import predlog
from sparkscore.monitor.predlog import PredictionLogError

METRICS = ("accuracy", "logloss", "rmse", "mae")
LOWER_IS_BETTER = {"logloss", "rmse", "mae"}
SRM_ALPHA = 1e-3
EXIT_SRM = 3
_EPS = 1e-15


@dataclass(frozen=True)
class ArmStats:
    """One arm: counts, metric and interval, and (not for the control) the lift with its interval."""

    arm: str
    rows: int
    labelled: int
    expected_share: Optional[float]
    observed_share: float
    value: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    lift: Optional[float] = None
    lift_ci_low: Optional[float] = None
    lift_ci_high: Optional[float] = None
    lift_p_value: Optional[float] = None
    relative_lift: Optional[float] = None
    relative_ci_low: Optional[float] = None
    relative_ci_high: Optional[float] = None
    better: Optional[bool] = None
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class SrmCheck:
    chi2: float
    dof: int
    p_value: float
    alert: bool
    unexpected_arms: tuple[str, ...] = ()


@dataclass(frozen=True)
class AbReport:
    metric: str
    method: str
    confidence: float
    control: str
    arms: tuple[ArmStats, ...]
    srm: Optional[SrmCheck]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------- statistics
def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof), exact closed forms for integer dof (no scipy needed).

    Even dof: ``exp(-x/2) sum_{i<k/2} (x/2)^i / i!``; odd: ``erfc(sqrt(x/2)) + exp(-x/2)
    sum_{i=1}^{(k-1)/2} (x/2)^(i-1/2) / Gamma(i+1/2)``.
    """
    if dof < 1:
        raise ValueError("chi-square needs at least one degree of freedom")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    h = x / 2.0
    if dof % 2 == 0:
        terms = (math.exp(i * math.log(h) - h - math.lgamma(i + 1)) for i in range(dof // 2))
        return min(1.0, math.fsum(terms))
    terms = (math.exp((i - 0.5) * math.log(h) - h - math.lgamma(i + 0.5)) for i in range(1, (dof - 1) // 2 + 1))
    return min(1.0, math.erfc(math.sqrt(h)) + math.fsum(terms))


def srm(counts: Mapping[str, int], expected: Mapping[str, float]) -> SrmCheck:
    """Pearson's chi-square of ``counts`` against the shares of ``expected`` (alert at p < 0.001)."""
    unexpected = tuple(sorted(a for a, n in counts.items() if a not in expected and n > 0))
    total = sum(counts.get(a, 0) for a in expected)
    weight = sum(expected.values())
    if total == 0 or len(expected) < 2:
        return SrmCheck(0.0, max(len(expected) - 1, 0), 1.0, bool(unexpected), unexpected)
    chi2 = math.fsum((counts.get(a, 0) - total * w / weight) ** 2 / (total * w / weight) for a, w in expected.items())
    p = chi2_sf(chi2, len(expected) - 1)
    return SrmCheck(chi2, len(expected) - 1, p, p < SRM_ALPHA or bool(unexpected), unexpected)


def wilson(successes: float, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class _Agg:
    n: int
    mean: float
    var: float  # sample variance of the per-row loss (0 for n < 2)


def _estimate(metric: str, a: _Agg, z: float) -> tuple[float, float, float, float]:
    """(value, ci_low, ci_high, standard error) of one arm."""
    if a.n == 0:
        return (math.nan,) * 4
    if metric == "accuracy":
        lo, hi = wilson(a.mean * a.n, a.n, z)
        return a.mean, lo, hi, math.sqrt(a.mean * (1 - a.mean) / a.n)
    se = math.sqrt(a.var / a.n)
    if metric == "rmse":
        value = math.sqrt(a.mean)
        lo, hi = math.sqrt(max(a.mean - z * se, 0.0)), math.sqrt(a.mean + z * se)
        return value, lo, hi, (se / (2 * value) if value > 0 else 0.0)
    return a.mean, a.mean - z * se, a.mean + z * se, se


def _finite(v: float) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else float(v)


# ---------------------------------------------------------------------- the readout
def _loss_sql(metric: str, classifier: bool) -> str:
    if metric in ("accuracy", "logloss") and not classifier:
        raise PredictionLogError(f"--metric {metric} needs a classifier's log; this log's models are regressors: "
                                 "use rmse or mae")
    if metric in ("rmse", "mae") and classifier:
        raise PredictionLogError(f"--metric {metric} needs a regressor's log; this log's models are classifiers: "
                                 "use accuracy or logloss")
    if metric == "accuracy":
        return "CASE WHEN label_idx IS NOT NULL AND list_position(proba, list_max(proba)) = label_idx THEN 1.0 ELSE 0.0 END"
    if metric == "logloss":
        return (f"-ln(greatest(least(coalesce(CASE WHEN label_idx IS NULL THEN NULL ELSE proba[label_idx] END, "
                f"{_EPS}), 1.0), {_EPS}))")
    err = "(prediction - TRY_CAST(label AS DOUBLE))"
    return f"{err} * {err}" if metric == "rmse" else f"abs({err})"


def _classes_table(registry, versions: list[tuple[str, int]]) -> pa.Table:
    """(model, version, label_idx 1-based, cls_text, cls_num) of every logged classifier version."""
    rows = {"model": [], "version": [], "label_idx": [], "cls_text": [], "cls_num": []}
    from sparkscore.errors import ModelNotFoundError

    for name, version in versions:
        try:
            model = registry.load(f"{name}/{version}")
        except ModelNotFoundError:
            raise PredictionLogError(f"the log's model {name}/{version} is not in the registry at {registry.root}; "
                                     "its class order is needed to read proba: pass the registry that served it "
                                     "(--registry)") from None
        if not model.is_classifier:
            continue
        for i, c in enumerate(model.classes):
            rows["model"].append(name)
            rows["version"].append(int(version))
            rows["label_idx"].append(i + 1)
            rows["cls_text"].append(str(c))
            rows["cls_num"].append(None if isinstance(c, str) else float(c))
    return pa.table({"model": pa.array(rows["model"], pa.string()), "version": pa.array(rows["version"], pa.int64()),
                     "label_idx": pa.array(rows["label_idx"], pa.int64()),
                     "cls_text": pa.array(rows["cls_text"], pa.string()),
                     "cls_num": pa.array(rows["cls_num"], pa.float64())})


def readout(log_table: str, feedback_table: str, *, metric: str = "accuracy",
            expected: Optional[Mapping[str, float]] = None, control: Optional[str] = None,
            confidence: float = 0.95, start=None, end=None, registry=None, con=None) -> AbReport:
    """The A/B readout of the routed (non-shadow) rows of ``log_table`` between ``start`` and ``end``.

    ``expected`` (arm -> weight) sets the SRM check and the default control (its first arm);
    without it the control is the arm with the most rows and no SRM check is made.
    """
    import duckdb

    if metric not in METRICS:
        raise PredictionLogError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if not 0.5 <= confidence < 1:
        raise PredictionLogError(f"--confidence {confidence} must be in [0.5, 1), e.g. 0.95")
    if expected is not None and (not expected or any(not w > 0 for w in expected.values())):
        raise PredictionLogError("--expected needs positive weights per arm, e.g. prod=90,challenger=10")
    con = con if con is not None else duckdb.connect()
    rel = predlog.read(log_table, start, end, con=con)
    if "arm" not in rel.columns:
        raise PredictionLogError(f"{log_table} has no 'arm' column; it is not a prediction log")
    routed = rel.filter("arm IS NOT NULL AND NOT coalesce(shadow, false)")
    counts_rows = routed.aggregate("arm, count(*) AS n, string_agg(DISTINCT model || '/' || version::VARCHAR, ',' "
                                   "ORDER BY model || '/' || version::VARCHAR) AS versions", "arm").fetchall()
    if not counts_rows:
        raise PredictionLogError(f"{log_table} has no routed rows (arm set, not shadow)"
                                 f"{' in the time range' if start or end else ''}; nothing to compare")
    counts = {arm: int(n) for arm, n, _ in counts_rows}
    versions_of = {arm: tuple(v.split(",")) for arm, _, v in counts_rows}
    notes: list[str] = []
    if expected is not None:
        missing = [a for a in expected if a not in counts]
        if missing:
            notes.append(f"arm {missing[0]!r} of --expected has no logged rows")
    control = control or (next(iter(expected)) if expected else max(counts, key=lambda a: (counts[a], a)))
    if control not in counts:
        raise PredictionLogError(f"control arm {control!r} has no logged rows; arms in the log: {', '.join(sorted(counts))}")

    has_proba = routed.filter("proba IS NOT NULL").limit(1).fetchall()
    classifier = bool(has_proba)
    joined = predlog.with_feedback(routed, feedback_table, con=con)
    if classifier:
        if registry is None:
            from sparkscore.registry import Registry

            registry = Registry()
        versions = [(m, int(v)) for m, v in joined.aggregate("model, version", "model, version").fetchall()]
        classes = con.from_arrow(_classes_table(registry, versions))
        joined = joined.set_alias("j").join(
            classes.set_alias("c"),
            "j.model = c.model AND j.version = c.version AND ((c.cls_num IS NOT NULL AND TRY_CAST(j.label AS DOUBLE) "
            "= c.cls_num) OR (c.cls_num IS NULL AND j.label::VARCHAR = c.cls_text))", how="left")
        joined = joined.project("j.*, c.label_idx")
    loss = _loss_sql(metric, classifier)
    aggs = joined.filter("label IS NOT NULL").project(f"arm, {loss} AS loss").aggregate(
        "arm, count(loss) AS n, avg(loss) AS mean, coalesce(var_samp(loss), 0) AS var", "arm").fetchall()
    by_arm = {arm: _Agg(int(n), float(mean), float(var)) for arm, n, mean, var in aggs}
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    total = sum(counts.values())
    weight = sum(expected.values()) if expected else None
    ctl = by_arm.get(control, _Agg(0, math.nan, math.nan))
    c_val, _, _, c_se = _estimate(metric, ctl, z)
    arms = []
    order = list(expected) + sorted(a for a in counts if a not in expected) if expected else sorted(counts)
    for arm in [control] + [a for a in order if a != control]:
        agg = by_arm.get(arm, _Agg(0, math.nan, math.nan))
        val, lo, hi, se = _estimate(metric, agg, z)
        base = dict(arm=arm, rows=counts.get(arm, 0), labelled=agg.n,
                    expected_share=(expected[arm] / weight if expected and arm in expected else None),
                    observed_share=counts.get(arm, 0) / total, value=_finite(val), ci_low=_finite(lo),
                    ci_high=_finite(hi), versions=versions_of.get(arm, ()))
        if arm != control and agg.n and ctl.n:
            diff = val - c_val
            d_se = math.sqrt(se ** 2 + c_se ** 2)
            p = 2 * (1 - NormalDist().cdf(abs(diff) / d_se)) if d_se > 0 else (1.0 if diff == 0 else 0.0)
            rel_lift = diff / c_val if c_val else math.nan
            r_se = math.sqrt(se ** 2 / c_val ** 2 + val ** 2 * c_se ** 2 / c_val ** 4) if c_val else math.nan
            base.update(lift=_finite(diff), lift_ci_low=_finite(diff - z * d_se), lift_ci_high=_finite(diff + z * d_se),
                        lift_p_value=_finite(p), relative_lift=_finite(rel_lift),
                        relative_ci_low=_finite(rel_lift - z * r_se), relative_ci_high=_finite(rel_lift + z * r_se),
                        better=(diff < 0) if metric in LOWER_IS_BETTER else (diff > 0))
        arms.append(ArmStats(**base))
    method = {"accuracy": "Wilson score interval; lift: difference of proportions, unpooled Wald SE",
              "logloss": "normal interval of the mean per-row log loss; lift: Welch SE",
              "mae": "normal interval of the mean absolute error; lift: Welch SE",
              "rmse": "normal interval of the MSE, square-rooted; lift: delta-method SE"}[metric]
    check = srm(counts, expected) if expected else None
    return AbReport(metric, method + "; relative lift: delta method", confidence, control, tuple(arms), check,
                    tuple(notes))


def parse_expected(text: str) -> dict[str, float]:
    """``prod=90,challenger=10`` -> ``{"prod": 90.0, "challenger": 10.0}`` (order kept: the first is the control)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name.strip() or not weight > 0 or name.strip() in out:
            raise PredictionLogError(f"--expected {text!r}: give arm=weight pairs with positive weights, each arm "
                                     "once, e.g. prod=90,challenger=10")
        out[name.strip()] = weight
    if len(out) < 2:
        raise PredictionLogError(f"--expected {text!r} names {len(out)} arm; an A/B readout needs two or more")
    return out
