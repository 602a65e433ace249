"""Bandit selection from feedback: a route's weights learned from labels (Clipper's Exp3/Exp4, Thompson).

A route (sparkscore/registry/routes.py) splits traffic by a hash of the key; a *policy* moves the
split towards the arm with the lowest loss.  One update reads a feedback window -- labelled rows of
the route's arms -- reduces it to per-arm ``(n, loss_sum)`` and writes the new weights as a NEW
route version whose record holds the policy (name, parameters, state before and after, the window
and its per-arm figures): :func:`replay` recomputes any version's weights from its predecessor and
that record, so every decision can be checked.  Updates are deterministic given the same inputs
(Thompson's Monte Carlo is seeded from the route, its version and ``seed``).

Where the feedback comes from
    *Batch* (:func:`update_from_log`, ``sparkscore route update NAME@ROUTE --log T --feedback F``):
    the prediction log (DESIGN section 12) joined to the feedback table on ``request_id`` (the
    latest label per request, :func:`sparkscore.monitor.predlog.feedback`); the route's non-shadow
    rows (``model`` = NAME, ``route`` = ``NAME@ROUTE`` or ``ROUTE``, ``arm`` set).  By default only
    labels newer than the previous update's window (``label_ts >`` its ``through``) count, so
    running the update twice does not count a label twice (online versions in between are skipped
    when finding that window; a new policy, or fixed weights set by hand, start over and count every
    label).  DuckDB aggregates (:func:`window_stats`); Python sees one row per arm.  On Spark
    (``sparkscore route update --engine spark``, ``sparkscore.engines.feedback``) the join and the
    per-arm aggregate are ONE Spark SQL query built here (:func:`spark_stats_query`, a sqlglot AST:
    route, times and scale enter as literals); for classifiers it groups by (arm, version, argmax
    of ``proba``, label) and :func:`stats_of_groups` applies the 0/1 loss to those few rows with the
    class order of each logged version (what the DuckDB path's class join does), so both engines
    count the same rows with the same losses and write the same route version.
    *Online* (:func:`update_from_items`; ``POST /v2/routes/{NAME@ROUTE}/feedback`` in serve): the
    client sends back, per request, the ``arm`` and ``prediction`` the route answered with and the
    ``label``; no server-side memory of requests is needed.

Loss (bounded in [0, 1], lower is better)
    * classifiers (binary and multiclass): 0/1 loss, ``1`` unless the predicted label (argmax of
      ``proba`` in the log, first maximum; the returned label online) equals the label;
    * regressors: ``min(|prediction - label| / scale, 1)`` (``loss="abs"``, the default) or
      ``min(((prediction - label) / scale)**2, 1)`` (``loss="squared"``).  ``scale`` defaults to
      the label range (max - min) of the first batch window (1 when that is 0 or online without a
      window) and is then kept in the policy, so later updates use the same loss.
    Unlabelled rows and labels that are not numbers (regressors) are left out.

Policies (K arms with traffic in the base version; arms at weight 0 stay off)
    * ``exp3`` (Auer et al. 2002, Clipper's Exp3): ``log w_i -= eta * S_i / p_i``, the importance
      weighted loss, ``S_i`` the arm's loss sum in the window and ``p_i`` its share in the base
      version (the probability its rows were routed with); shares = softmax(log w).
    * ``exp4`` (Clipper's Exp4 weighs experts by full-information losses; a route answers each row
      with one arm, so every arm's loss on all ``N`` rows of the window is estimated by its mean on
      its own hash slice, a uniform sample): ``log w_i -= eta * N * S_i / n_i`` (Hedge); arms
      without a labelled row are not updated.  Same expectation as exp3, lower variance.
    * ``thompson`` (Beta-Bernoulli, fractional losses as in Agrawal & Goyal 2012):
      ``alpha_i += n_i - S_i``, ``beta_i += S_i``, prior Beta(1, 1); share = P(arm i has the
      highest mean) by ``draws`` seeded Monte Carlo draws.
    ``decay`` (default 1: no forgetting) multiplies the state before each update (log weights;
    Thompson's counts above the prior), so a drifting stream can be followed.
    ``eta`` defaults to 0.01 per labelled row.

Concurrent updates
    Every update writes its version with ``set_route(..., expected_version=<the version it read>)``
    (a compare-and-set, on local and object-store registries alike).  An update that loses to a
    concurrent one re-reads the route and recomputes on top of the winner (a batch window is
    re-derived, so labels the winner counted are not counted again; online items are re-applied),
    so N concurrent updates write N versions, each window applied once.  ``retry=False`` fails the
    loser with a one-line ``RouteConflictError`` (a RegistryError) instead.

Integer splits and the floor
    Shares become basis points summing to 10000 (the route stores buckets):
    ``floor + (10000 - K * floor) * share_i`` rounded by largest remainder (ties: arm order), with
    ``floor`` (default 500 = 5% per arm) so no arm starves -- for exp3 this is exactly Auer's
    ``gamma``-mixing with ``gamma = K * floor / 10000``.  K * floor must not exceed 10000.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from sparkscore.errors import MonitorError
from sparkscore.registry.routes import BUCKETS, Route, RouteConflictError, arm_ref, read_route

POLICIES = ("exp3", "exp4", "thompson")
LOSSES = ("auto", "zero_one", "abs", "squared")
MAX_ITEMS = 10_000  # one online feedback request
POLICY_FORMAT = 1


class BanditError(MonitorError):
    """A bandit update that cannot run as asked (unknown policy, bad parameter, no feedback)."""


@dataclass(frozen=True)
class PolicyParams:
    """The policy and its parameters (stored in every route version it writes)."""

    policy: str = "exp3"
    eta: float = 0.01
    floor: int = 500                 # basis points per arm
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    decay: float = 1.0
    loss: str = "auto"
    scale: Optional[float] = None
    draws: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        who = f"bandit policy {self.policy!r}"
        if self.policy not in POLICIES:
            raise BanditError(f"unknown policy {self.policy!r}; use one of {', '.join(POLICIES)}")
        if self.loss not in LOSSES:
            raise BanditError(f"{who}: unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if not (self.eta > 0 and math.isfinite(self.eta)):
            raise BanditError(f"{who}: eta must be a positive number, got {self.eta!r}")
        if not (0 < self.decay <= 1):
            raise BanditError(f"{who}: decay must be in (0, 1], got {self.decay!r}")
        if isinstance(self.floor, bool) or not isinstance(self.floor, int) or not 0 <= self.floor < BUCKETS:
            raise BanditError(f"{who}: floor must be integer basis points in [0, {BUCKETS}), got {self.floor!r}")
        if not (self.prior_alpha > 0 and self.prior_beta > 0):
            raise BanditError(f"{who}: the Beta prior must be positive, got ({self.prior_alpha}, {self.prior_beta})")
        if self.scale is not None and not (self.scale > 0 and math.isfinite(self.scale)):
            raise BanditError(f"{who}: scale must be a positive number, got {self.scale!r}")
        if not 100 <= self.draws <= 1_000_000:
            raise BanditError(f"{who}: draws must be in [100, 1000000], got {self.draws!r}")


@dataclass(frozen=True)
class ArmStats:
    """One arm's feedback in a window: labelled rows and the sum of their losses."""

    n: int
    loss_sum: float


# ---------------------------------------------------------------------------- the math (pure)
def initial_state(params: PolicyParams, shares: Mapping[str, float]) -> dict:
    """The state a policy starts from: the current split (exp3/exp4) or the prior (thompson)."""
    arms = list(shares)
    if params.policy == "thompson":
        return {"arms": arms, "alpha": [params.prior_alpha] * len(arms), "beta": [params.prior_beta] * len(arms)}
    return {"arms": arms, "log_weights": [math.log(max(shares[a], 1e-12)) for a in arms]}


def update_state(params: PolicyParams, state: Mapping, shares: Mapping[str, float],
                 stats: Mapping[str, ArmStats]) -> dict:
    """The state after one window (module docstring, Policies); ``shares`` are the base version's."""
    arms = list(state["arms"])
    n = np.array([stats[a].n if a in stats else 0 for a in arms], dtype=np.float64)
    s = np.array([stats[a].loss_sum if a in stats else 0.0 for a in arms], dtype=np.float64)
    if params.policy == "thompson":
        pa, pb = params.prior_alpha, params.prior_beta
        alpha = pa + params.decay * (np.asarray(state["alpha"], dtype=np.float64) - pa) + (n - s)
        beta = pb + params.decay * (np.asarray(state["beta"], dtype=np.float64) - pb) + s
        return {"arms": arms, "alpha": alpha.tolist(), "beta": beta.tolist()}
    logw = params.decay * np.asarray(state["log_weights"], dtype=np.float64)
    if params.policy == "exp3":
        p = np.array([shares[a] for a in arms], dtype=np.float64)
        logw = logw - params.eta * s / p
    else:  # exp4: each arm's mean loss on its slice stands for its loss on all N rows
        seen = n > 0
        logw = logw - np.where(seen, params.eta * n.sum() * s / np.where(seen, n, 1.0), 0.0)
    logw = logw - logw.max()  # the softmax is shift-free; keep the numbers small
    return {"arms": arms, "log_weights": logw.tolist()}


def policy_shares(params: PolicyParams, state: Mapping, seed_text: str) -> dict[str, float]:
    """Each arm's share (sum 1) before the floor; ``seed_text`` seeds Thompson's draws."""
    arms = list(state["arms"])
    if params.policy == "thompson":
        seed = int.from_bytes(hashlib.sha256(f"{params.seed}:{seed_text}".encode()).digest()[:8], "big")
        rng = np.random.default_rng(seed)
        draws = rng.beta(np.asarray(state["alpha"])[:, None], np.asarray(state["beta"])[:, None],
                         size=(len(arms), params.draws))
        wins = np.bincount(np.argmax(draws, axis=0), minlength=len(arms)).astype(np.float64)
        p = wins / wins.sum()
    else:
        logw = np.asarray(state["log_weights"], dtype=np.float64)
        w = np.exp(logw - logw.max())
        p = w / w.sum()
    return {a: float(v) for a, v in zip(arms, p)}


def basis_points(shares: Mapping[str, float], floor: int) -> dict[str, int]:
    """Integer basis points summing to 10000, each >= ``floor`` (largest remainder; ties in arm order)."""
    arms = list(shares)
    k = len(arms)
    if k * floor > BUCKETS:
        raise BanditError(f"floor {floor} basis points x {k} arms exceeds {BUCKETS}; lower the floor "
                          f"(at most {BUCKETS // k})")
    p = np.array([max(shares[a], 0.0) for a in arms], dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else np.full(k, 1.0 / k)
    exact = floor + (BUCKETS - k * floor) * p
    out = np.floor(exact).astype(np.int64)
    rest = BUCKETS - int(out.sum())
    order = sorted(range(k), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[:rest]:
        out[i] += 1
    return {a: int(v) for a, v in zip(arms, out)}


# ---------------------------------------------------------------------------- losses
def zero_one(predicted: Any, label: Any) -> float:
    """0 when the predicted label equals the label (numbers compare as numbers: 1 == 1.0 == "1")."""
    if predicted is None or label is None:
        return 1.0
    try:
        return 0.0 if float(predicted) == float(label) else 1.0
    except (TypeError, ValueError):
        return 0.0 if str(predicted) == str(label) else 1.0


def regression_loss(prediction: float, label: float, loss: str, scale: float) -> float:
    err = abs(float(prediction) - float(label)) / scale
    return min(err if loss == "abs" else err * err, 1.0) if math.isfinite(err) else 1.0


def _loss_kind(params: PolicyParams, classifier: bool) -> str:
    if params.loss == "auto":
        return "zero_one" if classifier else "abs"
    if (params.loss == "zero_one") != classifier:
        raise BanditError(f"loss {params.loss!r} does not fit a {'classifier' if classifier else 'regressor'}; "
                          f"use {'zero_one' if classifier else 'abs or squared'} (or auto)")
    return params.loss


# ---------------------------------------------------------------------------- route versions
@dataclass(frozen=True)
class Update:
    """What one update wrote: the new route version and the figures behind it."""

    route: Route
    shares: dict[str, float]
    weights: dict[str, int]
    stats: dict[str, ArmStats]


def _params_of(base: Route, policy: Optional[str], overrides: Mapping[str, Any]) -> tuple[PolicyParams, bool]:
    """(params, restart): the stored params with ``overrides``; a new policy name restarts the state."""
    stored = base.policy.get("params") if base.policy else None
    bad = [k for k in overrides if k not in PolicyParams.__dataclass_fields__ or k == "policy"]
    if bad:
        raise BanditError(f"unknown bandit parameter {bad[0]!r}; use {', '.join(f for f in PolicyParams.__dataclass_fields__ if f != 'policy')}")
    if stored is not None and (policy is None or policy == stored["policy"]):
        return replace(PolicyParams(**stored), **dict(overrides)), False
    return PolicyParams(policy=policy or "exp3", **dict(overrides)), True


def _base_shares(base: Route) -> dict[str, float]:
    return {a.label: a.buckets / BUCKETS for a in base.arms if a.buckets}


def _classifier(reg, base: Route) -> bool:
    first = next(a.label for a in base.arms if a.buckets)
    return bool(reg.load(arm_ref(base.name, first)).is_classifier)


def apply(reg, base: Route, params: PolicyParams, restart: bool, stats: Mapping[str, ArmStats],
          window: Mapping[str, Any]) -> Update:
    """Compute the new weights from ``base`` + ``stats`` and write them as the next route version."""
    shares = _base_shares(base)
    unknown = [a for a in stats if a not in shares]
    if unknown:
        raise BanditError(f"route {base.ref} v{base.version}: feedback names arm {unknown[0]!r}, which has no "
                          f"traffic in this version (arms: {', '.join(shares)})")
    prior = (initial_state(params, shares) if restart or not base.policy
             else base.policy["state"])
    if list(prior["arms"]) != list(shares):  # arms were added/removed by hand since the last update
        prior, restart = initial_state(params, shares), True
    state = update_state(params, prior, shares, stats)
    new_shares = policy_shares(params, state, f"{base.ref}:{base.version + 1}")
    weights = basis_points(new_shares, params.floor)
    record = {"format": POLICY_FORMAT, "params": asdict(params), "restart": restart, "base_version": base.version,
              "prior_state": prior, "state": state, "window": dict(window),
              "stats": {a: [s.n, s.loss_sum] for a, s in stats.items()}}
    total = sum(s.n for s in stats.values())
    route = reg.set_route(base.name, base.route, weights, shadow=base.shadow,
                          reason=f"bandit {params.policy}: {total} labelled rows ({window.get('source')})",
                          policy=record, expected_version=base.version)
    return Update(route, new_shares, weights, dict(stats))


def replay(reg, name: str, route: str, version: int) -> dict[str, int]:
    """The weights version ``version`` must hold, recomputed from its policy record (raises if it has none)."""
    r = read_route(reg, name, route, version)
    if not r.policy:
        raise BanditError(f"route {name}@{route} v{version} has fixed weights (no policy record) to replay")
    rec = r.policy
    params = PolicyParams(**rec["params"])
    base = read_route(reg, name, route, rec["base_version"])
    stats = {a: ArmStats(int(n), float(s)) for a, (n, s) in rec["stats"].items()}
    prior = (initial_state(params, _base_shares(base)) if rec["restart"] or not base.policy
             else base.policy["state"])
    state = update_state(params, prior, _base_shares(base), stats)
    return basis_points(policy_shares(params, state, f"{base.ref}:{base.version + 1}"), params.floor)


# ---------------------------------------------------------------------------- batch: log + feedback
def window_stats(log_table: str, feedback_table: str, base: Route, params: PolicyParams, classifier: bool, *,
                 after=None, registry=None, con=None) -> tuple[dict[str, ArmStats], dict[str, Any], PolicyParams]:
    """Per-arm (n, loss_sum) of the route's labelled rows with ``label_ts > after`` (DuckDB aggregates)."""
    import duckdb
    from duckdb import ColumnExpression as col, ConstantExpression as const

    from sparkscore.monitor import predlog
    from sparkscore.monitor.abtest import _classes_table

    con = con if con is not None else duckdb.connect()
    rel = predlog.read(log_table, con=con)
    routed = rel.filter((col("model") == const(base.name))
                        & ((col("route") == const(base.ref)) | (col("route") == const(base.route)))
                        & col("arm").isnotnull() & ~duckdb.CoalesceOperator(col("shadow"), const(False)))
    joined = predlog.with_feedback(routed, feedback_table, con=con).filter(col("label").isnotnull())
    if after is not None:
        joined = joined.filter(col("label_ts") > const(predlog._ts_value(after, "after")))
    kind = _loss_kind(params, classifier)
    if classifier:
        versions = [(m, int(v)) for m, v in joined.aggregate("model, version", "model, version").fetchall()]
        classes = con.from_arrow(_classes_table(registry if registry is not None else _registry(), versions))
        joined = joined.set_alias("j").join(
            classes.set_alias("c"),
            "j.model = c.model AND j.version = c.version AND ((c.cls_num IS NOT NULL AND TRY_CAST(j.label AS DOUBLE) "
            "= c.cls_num) OR (c.cls_num IS NULL AND j.label::VARCHAR = c.cls_text))", how="left").project(
            "j.arm, j.label_ts, j.label, CASE WHEN c.label_idx IS NOT NULL AND "
            "list_position(j.proba, list_max(j.proba)) = c.label_idx THEN 0.0 ELSE 1.0 END AS loss")
    else:
        joined = joined.project("arm, label_ts, label, TRY_CAST(label AS DOUBLE) AS y, prediction").filter(
            "y IS NOT NULL AND isfinite(y)")
        if params.scale is None:
            lo, hi = joined.aggregate("min(y), max(y)").fetchall()[0]
            params = replace(params, scale=float(hi - lo) if lo is not None and hi > lo else 1.0)
        # the scale is a validated float: its repr is a number literal
        err = f"abs(prediction - y) / {params.scale!r}"
        joined = joined.project(f"arm, label_ts, label, least(coalesce({err if kind == 'abs' else f'({err}) * ({err})'}, 1.0), 1.0) AS loss")
    rows = joined.aggregate("arm, count(*) AS n, sum(loss) AS s, min(label_ts) AS t0, max(label_ts) AS t1",
                            "arm").fetchall()
    stats = {arm: ArmStats(int(n), float(s)) for arm, n, s, _, _ in sorted(rows)}
    through = max((t1 for *_, t1 in rows), default=None)
    first = min((t0 for *_, t0, _ in rows), default=None)
    window = {"source": "batch", "log": str(log_table), "feedback": str(feedback_table), "loss": kind,
              "after": _iso(predlog._ts_value(after, "after")) if after is not None else None,
              "first": _iso(first), "through": _iso(through)}
    return stats, window, params


def _iso(ts) -> Optional[str]:
    return None if ts is None else ts.isoformat()


def _registry():
    from sparkscore.registry import Registry

    return Registry()


# ---------------------------------------------------------------------------- batch on Spark: the query
_SPARK_JOINED = """
WITH fb AS (
  SELECT request_id, MAX_BY(label, STRUCT(ts, CAST(label AS STRING))) AS label, MAX(ts) AS label_ts
  FROM __feedback GROUP BY request_id
), j AS (
  SELECT l.arm, l.version, l.proba, l.prediction, fb.label, fb.label_ts
  FROM __log AS l JOIN fb ON l.request_id = fb.request_id
  WHERE l.model = :name AND (l.route = :ref OR l.route = :route) AND l.arm IS NOT NULL
    AND NOT COALESCE(l.shadow, FALSE) AND fb.label IS NOT NULL {after}
)"""
_SPARK_CLASSIFIER = """
SELECT arm, version, ARRAY_POSITION(proba, ARRAY_MAX(proba)) AS idx, CAST(label AS STRING) AS label_text,
       COUNT(*) AS n, UNIX_MICROS(MIN(label_ts)) AS t0, UNIX_MICROS(MAX(label_ts)) AS t1
FROM j GROUP BY arm, version, ARRAY_POSITION(proba, ARRAY_MAX(proba)), CAST(label AS STRING)"""
_SPARK_REGRESSOR = """, y AS (
  SELECT arm, label_ts, TRY_CAST(label AS DOUBLE) AS y, prediction FROM j
), v AS (
  SELECT * FROM y WHERE y IS NOT NULL AND ABS(y) < CAST('Infinity' AS DOUBLE)
), sc AS (
  {scale}
)
SELECT v.arm, COUNT(*) AS n, SUM(LEAST(COALESCE({loss}, 1.0), 1.0)) AS s,
       UNIX_MICROS(MIN(v.label_ts)) AS t0, UNIX_MICROS(MAX(v.label_ts)) AS t1, MAX(sc.scale) AS scale
FROM v CROSS JOIN sc GROUP BY v.arm"""


def spark_stats_query(base: Route, params: PolicyParams, classifier: bool, *, after=None,
                      log_view: str, feedback_view: str):
    """The ONE Spark SQL query (sqlglot AST) behind a batch update on Spark (module docstring).

    The text is fixed; the route's name/ref, ``after`` (as Unix microseconds) and the scale enter
    as literals through sqlglot placeholders, the two views (named by the caller) as identifiers.
    The regressors' default scale (the label range of the window, 1 when it is 0) is computed in
    the same query, as :func:`window_stats` does in its own.
    """
    from sqlglot import exp, parse_one

    from sparkscore.monitor import predlog

    lo = predlog._ts_value(after, "after")
    text = _SPARK_JOINED.format(after="AND fb.label_ts > TIMESTAMP_MICROS(:after)" if lo is not None else "")
    if classifier:
        text += _SPARK_CLASSIFIER
    else:
        kind = _loss_kind(params, classifier)
        err = "(ABS(v.prediction - v.y) / sc.scale)"
        text += _SPARK_REGRESSOR.format(
            scale="SELECT CASE WHEN MAX(y) > MIN(y) THEN MAX(y) - MIN(y) ELSE CAST(1.0 AS DOUBLE) END AS scale FROM v"
            if params.scale is None else "SELECT CAST(:scale AS DOUBLE) AS scale",
            loss=err if kind == "abs" else f"{err} * {err}")
    query = parse_one(text, read="spark")
    values = {"name": base.name, "ref": base.ref, "route": base.route}
    if lo is not None:
        values["after"] = _micros(lo)
    if params.scale is not None:
        values["scale"] = float(params.scale)
    query = exp.replace_placeholders(query, **values)
    views = {"__log": log_view, "__feedback": feedback_view}

    def rename(node):  # the table name only: its alias (``l``) stays
        if isinstance(node, exp.Table) and node.name in views:
            node = node.copy()
            node.set("this", exp.to_identifier(views[node.name]))
        return node
    return query.transform(rename)


def _micros(ts) -> int:
    from datetime import datetime, timezone

    delta = ts - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us):
    from datetime import datetime, timedelta, timezone

    return None if us is None else datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(us))


def stats_of_groups(rows: Sequence[Sequence[Any]], base: Route, params: PolicyParams, classifier: bool, *,
                    log_table: str, feedback_table: str, after=None,
                    registry=None) -> tuple[dict[str, ArmStats], dict[str, Any], PolicyParams]:
    """(stats, window, params) from the rows of :func:`spark_stats_query` (what :func:`window_stats` returns).

    Classifier rows are (arm, version, argmax position 1-based or NULL, label text, n, t0, t1): a
    group's loss is 0 when the label matches the class at that position, compared as the DuckDB
    path's class join compares (numeric classes as numbers, text classes as text), else 1.
    """
    from sparkscore.monitor import predlog

    kind = _loss_kind(params, classifier)
    acc: dict[str, list] = {}
    times: list = []
    if classifier:
        classes: dict[int, tuple] = {}
        reg = registry if registry is not None else _registry()
        from sparkscore.errors import ModelNotFoundError

        for arm, version, idx, label, n, t0, t1 in rows:
            if int(version) not in classes:
                try:
                    classes[int(version)] = tuple(reg.load(f"{base.name}/{int(version)}").classes or ())
                except ModelNotFoundError:
                    raise predlog.PredictionLogError(
                        f"the log's model {base.name}/{version} is not in the registry at {reg.root}; its class "
                        "order is needed to read proba: pass the registry that served it (--registry)") from None
            hit = idx is not None and 1 <= int(idx) <= len(classes[int(version)]) and \
                _class_matches(classes[int(version)][int(idx) - 1], label)
            n_s = acc.setdefault(arm, [0, 0.0])
            n_s[0] += int(n)
            n_s[1] += 0.0 if hit else float(n)
            times.append((t0, t1))
    else:
        for arm, n, s, t0, t1, scale in rows:
            acc[arm] = [int(n), float(s)]
            times.append((t0, t1))
            if params.scale is None:
                params = replace(params, scale=float(scale))
    stats = {arm: ArmStats(n, s) for arm, (n, s) in sorted(acc.items())}
    first = _from_micros(min((t0 for t0, _ in times), default=None))
    through = _from_micros(max((t1 for _, t1 in times), default=None))
    window = {"source": "batch", "log": str(log_table), "feedback": str(feedback_table), "loss": kind,
              "after": _iso(predlog._ts_value(after, "after")) if after is not None else None,
              "first": _iso(first), "through": _iso(through)}
    return stats, window, params


def _class_matches(cls: Any, label_text: Optional[str]) -> bool:
    """The DuckDB path's join condition: numeric classes equal TRY_CAST(label AS DOUBLE), text ones the text."""
    if label_text is None:
        return False
    if isinstance(cls, str):
        return label_text == cls
    try:
        return float(label_text) == float(cls)
    except ValueError:
        return False


def update_from_log(reg, ref: str, log_table: str, feedback_table: str, *, policy: Optional[str] = None,
                    full: bool = False, con=None, stats_fn=None, retry: bool = True, **params: Any) -> Update:
    """Batch update of route ``ref`` (``NAME@ROUTE``) from the log + feedback (module docstring).

    ``stats_fn`` computes the window's per-arm figures (:func:`window_stats`'s signature; default
    :func:`window_stats` on DuckDB, ``sparkscore.engines.feedback`` passes the Spark one).  Written with a compare-and-set on the version it read (see :func:`_with_retry`): when another
    update wins, the window is recomputed from the new version (whose ``through`` it may already
    cover, so no label counts twice) unless ``retry=False``.
    """
    compute = stats_fn or (lambda *a, **k: window_stats(*a, con=con, **k))

    def once() -> Update:
        base = _base(reg, ref)
        p, restart = _params_of(base, policy, params)
        after = None if full or restart else _last_through(reg, base)
        stats, window, p = compute(log_table, feedback_table, base, p, _classifier(reg, base), after=after,
                                   registry=reg)
        if not stats:
            raise BanditError(f"route {ref}: no labelled rows of its arms in {log_table} joined to {feedback_table}"
                              f"{' newer than the last update (' + after + ')' if after else ''}; nothing to learn from")
        return apply(reg, base, p, restart, stats, window)

    return _with_retry(ref, once, retry)


#: compare-and-set attempts of one update before it gives up (each failure: another update won)
MAX_UPDATE_ATTEMPTS = 100


def _with_retry(ref: str, once, retry: bool) -> Update:
    """Run one update (read the latest version, compute, write with ``expected_version``) until it wins.

    Why: two updaters (two servers, a server and ``sparkscore route update``) that read version v
    would otherwise both write on top of v and the later write would silently drop the earlier
    one's window.  The loser re-reads and applies its window on top of the winner's version, so N
    concurrent updates give N versions, each window applied once; ``retry=False`` makes the loser
    fail with a one-line RegistryError instead.
    """
    for _ in range(MAX_UPDATE_ATTEMPTS if retry else 1):
        try:
            return once()
        except RouteConflictError as exc:
            if not retry:
                raise RouteConflictError(f"{exc} (retry=False: the update of {ref} was not applied)") from None
            conflict = exc
    raise RouteConflictError(f"route {ref}: {MAX_UPDATE_ATTEMPTS} concurrent updates won in a row; the last said: "
                             f"{conflict}")


def _last_through(reg, base: Route) -> Optional[str]:
    """The newest label time a batch update of this route has counted (online versions are skipped)."""
    for version in range(base.version, 0, -1):
        r = base if version == base.version else read_route(reg, base.name, base.route, version)
        if not r.policy:
            return None  # fixed weights set by hand: the policy starts over from here
        window = r.policy.get("window", {})
        if window.get("source") == "batch":
            return window.get("through") or window.get("after")
    return None


def _base(reg, ref: str) -> Route:
    name, sep, route = str(ref).partition("@")
    if not sep or not name or not route:
        raise BanditError(f"{ref!r} is not a route ref; give NAME@ROUTE, e.g. churn@ab")
    return read_route(reg, name, route)


# ---------------------------------------------------------------------------- online: items
def stats_of_items(items: Sequence[Mapping[str, Any]], classifier: bool, kind: str, scale: float,
                   who: str) -> dict[str, ArmStats]:
    """Per-arm stats of online feedback items ``{"request_id", "arm", "prediction", "label"}``."""
    acc: dict[str, list] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BanditError(f"{who}: feedback item {i} must be an object with request_id, arm, prediction, label")
        missing = [k for k in ("request_id", "arm", "prediction", "label") if k not in item]
        if missing:
            raise BanditError(f"{who}: feedback item {i} has no {missing[0]!r}; send request_id, arm, prediction "
                              "(what the route answered) and label")
        arm = item["arm"]
        if not isinstance(arm, str):
            raise BanditError(f"{who}: feedback item {i}: arm must be the arm label the route answered with")
        if classifier:
            loss = zero_one(item["prediction"], item["label"])
        else:
            try:
                loss = regression_loss(float(item["prediction"]), float(item["label"]), kind, scale)
            except (TypeError, ValueError):
                raise BanditError(f"{who}: feedback item {i}: a regressor's prediction and label must be "
                                  "numbers") from None
        n_s = acc.setdefault(arm, [0, 0.0])
        n_s[0] += 1
        n_s[1] += loss
    return {a: ArmStats(n, s) for a, (n, s) in sorted(acc.items())}


def update_from_items(reg, ref: str, items: Sequence[Mapping[str, Any]], *, policy: Optional[str] = None,
                      source: str = "online", retry: bool = True, **params: Any) -> Update:
    """Online update of route ``ref`` from feedback items (at most :data:`MAX_ITEMS`); a concurrent
    update that wins makes this one re-apply the same items on top of it (``retry=False``: fail)."""
    who = f"route {ref}"
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
        raise BanditError(f"{who}: send a non-empty list of feedback items")
    if len(items) > MAX_ITEMS:
        raise BanditError(f"{who}: {len(items)} feedback items in one request; send at most {MAX_ITEMS}")

    def once() -> Update:
        base = _base(reg, ref)
        p, restart = _params_of(base, policy, params)
        classifier = _classifier(reg, base)
        kind = _loss_kind(p, classifier)
        if not classifier and p.scale is None:
            p = replace(p, scale=1.0)
        stats = stats_of_items(items, classifier, kind, p.scale or 1.0, who)
        ids = sorted(str(it["request_id"]) for it in items)
        window = {"source": source, "loss": kind, "requests": len(ids),
                  "request_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()}
        return apply(reg, base, p, restart, stats, window)

    return _with_retry(ref, once, retry)
