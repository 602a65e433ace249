"""Profiles and drift from an engine: the sketch stream plus ONE aggregate query, then the comparison.

Engine-neutral: everything runs through a :class:`Runner` (``sparkscore.engines.monitoring``
implements it for DuckDB and Spark), which plans the monitoring SQL through the engine's own
PREDICT front end and returns only aggregated results: a few rows of counts, and merged sketches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
from sqlglot import exp

from sparkscore.monitor import metrics as M
from sparkscore.monitor.profile import (DEFAULT_BINS, DEFAULT_KLL_K, DEFAULT_TOPK, ColumnProfile, MonitorError, Profile,
                                        column_specs, kll_sketch, rank_error, top_categories)
from sparkscore.monitor.query import AggColumn, aggregate_query, scored_query, stream_query
from sparkscore.monitor.sketch import DEFAULT_EXACT_ROWS, SketchState

#: SQL types (lower-cased prefixes) that are text: never profiled as numbers
TEXT_TYPES = ("varchar", "string", "char", "text")


class Runner(Protocol):
    """What the monitor needs from an engine (DuckDB / Spark adapters live in ``sparkscore.engines``)."""

    dialect: str

    def columns(self, source: exp.Expression) -> list[tuple[str, str]]: ...

    def scored(self, query: exp.Expression) -> exp.Table:
        """Plan ``query`` (PREDICT and all) once on the engine; a table naming the lazy view of it."""

    def aggregate(self, query: exp.Expression) -> list[tuple]: ...

    def release(self) -> None:
        """Drop what the runner created on the engine (temporary views)."""

    def sketch(self, query: exp.Expression, kinds: Sequence[str], k: int, exact_rows: int) -> SketchState: ...


@dataclass(frozen=True)
class Batch:
    """A profiled dataset: its profile, and the raw finite values per column when it was small."""

    profile: Profile
    raw: Mapping[str, np.ndarray] = field(default_factory=dict)


def profile_batch(runner: Runner, ref: str, model, source: exp.Expression, *, labels: str | None = None,
                  bins: int = DEFAULT_BINS, topk: int = DEFAULT_TOPK, k: int = DEFAULT_KLL_K,
                  exact_rows: int = DEFAULT_EXACT_ROWS, reference: Profile | None = None,
                  model_info: Mapping[str, Any] | None = None, source_kind: str = "batch") -> Batch:
    """Profile ``source`` (a SELECT AST) against ``model``: the sketch stream, then ONE aggregate query.

    With ``reference``, histograms use its edges and categories (the current side of a drift);
    otherwise edges are this data's own quantiles at i/bins and categories its top-k.
    """
    if bins < 1 or topk < 1 or k < 8:
        raise MonitorError(f"bins ({bins}) and topk ({topk}) must be positive and k ({k}) at least 8")
    try:
        return _profile_batch(runner, ref, model, source, labels, bins, topk, k, exact_rows, reference, model_info,
                              source_kind)
    finally:
        runner.release()


def _profile_batch(runner: Runner, ref: str, model, source: exp.Expression, labels, bins, topk, k, exact_rows,
                   reference, model_info, source_kind) -> Batch:
    specs = column_specs(model, labels)
    _check_columns(runner, source, model, specs, labels)
    inputs = [(name, kind) for name, role, kind in specs if role == "input"]
    scored = runner.scored(scored_query(source, ref, inputs, labels))
    kinds = [kind for _, _, kind in specs]
    state = runner.sketch(stream_query(scored, len(specs)), kinds, k, exact_rows)
    agg_columns = []
    for i, (name, role, kind) in enumerate(specs):
        if reference is not None:
            ref_col = reference.column(name, role)
            edges, cats = ref_col.edges, tuple(v for v, _ in ref_col.categories)
        elif kind == "numeric":
            edges, cats = quantile_edges(state.sketches[i], bins, state.raw_values(i)), ()
        else:
            edges, cats = (), tuple(v for v, _ in top_categories(state.counts[i], topk))
        agg_columns.append(AggColumn(f"c{i}", kind, edges, cats))
    query, names = aggregate_query(scored, agg_columns)
    rows = runner.aggregate(query)
    if len(rows) != 1:
        raise MonitorError(f"the aggregate query returned {len(rows)} rows, expected 1; report this query")
    values = dict(zip(names, rows[0]))
    n = int(values["rows"])
    columns, raw = [], {}
    for i, ((name, role, kind), agg) in enumerate(zip(specs, agg_columns)):
        columns.append(_column(name, role, kind, agg, values, n, state, i))
        values_i = state.raw_values(i) if kind == "numeric" else None
        if values_i is not None:
            raw[f"{role}:{name}"] = values_i
    profile = Profile(tuple(columns), n, bins if reference is None else reference.bins,
                      topk if reference is None else reference.topk, k, model_info, source_kind)
    return Batch(profile, raw)


def _check_columns(runner: Runner, source: exp.Expression, model, specs, labels: str | None) -> None:
    """Unknown columns and text where numbers are expected fail here, in one line naming the column."""
    schema = runner.columns(source)
    types = {name: str(t).lower() for name, t in schema}
    lowered = {name.lower(): name for name in types}
    if labels is not None and labels not in types:
        hint = f" (did you mean {lowered[labels.lower()]!r}?)" if labels.lower() in lowered else ""
        raise MonitorError(f"model {model.name}: the data has no label column {labels!r}{hint}; "
                           f"columns: {', '.join(types)}")
    for name, role, kind in specs:
        if role == "output":
            continue
        actual = name if name in types else lowered.get(name.lower())
        if actual is None:
            raise MonitorError(f"model {model.name}: the data has no column {name!r} (input of the model); "
                               f"columns: {', '.join(types)}")
        if kind == "numeric" and types[actual].startswith(TEXT_TYPES):
            raise MonitorError(f"model {model.name}: column {actual!r} is text ({types[actual]}) but "
                               f"{'the label' if role == 'label' else 'a numeric input'}; cast it to DOUBLE in the query")


def quantile_edges(sketch, bins: int, raw: np.ndarray | None = None) -> tuple[float, ...]:
    """Interior edges at the quantiles i/bins of the finite values (duplicates dropped; none when empty).

    Exact (``numpy.quantile``, so reproducible) while the raw values were kept; from the KLL sketch
    otherwise (within its rank error; KLL compaction is randomised, so edges of large data can
    differ between two profiling runs by up to that error).
    """
    if sketch is None or sketch.is_empty() or bins < 2:
        return ()
    ranks = [i / bins for i in range(1, bins)]
    qs = np.quantile(raw, ranks) if raw is not None and raw.size else sketch.get_quantiles(ranks)
    return tuple(float(e) for e in np.unique(np.asarray(qs, dtype=np.float64)) if math.isfinite(e))


def _column(name: str, role: str, kind: str, agg: AggColumn, values: Mapping[str, Any], n: int,
            state: SketchState, i: int) -> ColumnProfile:
    a = agg.alias
    nonnull = int(values[f"{a}:nonnull"])
    if kind == "numeric":
        finite = int(values[f"{a}:finite"])
        below = [int(values[f"{a}:below:{j}"] or 0) for j in range(len(agg.edges))]
        nans = int(values[f"{a}:nans"] or 0)
        inside = nonnull - nans  # finite and ±inf: everything that has a bin
        cum = [0, *below, inside]
        hist = tuple(cum[j + 1] - cum[j] for j in range(len(cum) - 1))
        mean, var = values[f"{a}:mean"], values[f"{a}:var"]
        sketch = state.sketches[i]
        return ColumnProfile(
            name, role, kind, count=n, nulls=n - nonnull, nans=nans, pos_inf=int(values[f"{a}:pos_inf"] or 0),
            neg_inf=int(values[f"{a}:neg_inf"] or 0), finite=finite,
            min=_float(values[f"{a}:min"]), max=_float(values[f"{a}:max"]), mean=_float(mean),
            m2=float(var) * finite if var is not None and finite else 0.0, edges=agg.edges, hist=hist,
            kll=None if sketch is None else sketch.serialize())
    counts = tuple((v, int(values[f"{a}:cat:{j}"] or 0)) for j, v in enumerate(agg.categories))
    return ColumnProfile(name, role, kind, count=n, nulls=n - nonnull, categories=counts,
                         other=nonnull - sum(c for _, c in counts))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# ---------------------------------------------------------------------- drift
@dataclass(frozen=True)
class DriftRow:
    """One (feature, metric[, slice]) of a drift result; a superset of BigQuery ML's VALIDATE_DATA_DRIFT row."""

    feature: str
    metric: str
    value: float | None
    threshold: float
    is_anomaly: bool
    p_value: float | None
    n_ref: int
    n_cur: int
    slice_key: str | None = None
    slice_value: str | None = None
    role: str = "input"               # input | output (prediction drift) | label
    method: str = "exact"             # exact | sketch | histogram | empty
    error_bound: float | None = 0.0   # bound on |value - true value| (sketch methods)


DRIFT_COLUMNS = tuple(DriftRow.__dataclass_fields__)


@dataclass(frozen=True)
class DriftResult:
    rows: tuple[DriftRow, ...]
    model: Mapping[str, Any] | None = None
    reference: str = "training profile"
    reference_profile: Profile | None = field(default=None, repr=False, compare=False)
    current_profile: Profile | None = field(default=None, repr=False, compare=False)

    @property
    def drifted(self) -> tuple[str, ...]:
        """Features with at least one anomalous metric, in profile order."""
        seen: list[str] = []
        for row in self.rows:
            if row.is_anomaly and row.feature not in seen:
                seen.append(row.feature)
        return tuple(seen)

    def to_records(self) -> list[dict[str, Any]]:
        return [{c: M.jsonable(getattr(r, c)) for c in DRIFT_COLUMNS} for r in self.rows]

    def to_arrow(self):
        import pyarrow as pa

        schema = pa.schema([("feature", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
                            ("threshold", pa.float64()), ("is_anomaly", pa.bool_()), ("p_value", pa.float64()),
                            ("n_ref", pa.int64()), ("n_cur", pa.int64()), ("slice_key", pa.string()),
                            ("slice_value", pa.string()), ("role", pa.string()), ("method", pa.string()),
                            ("error_bound", pa.float64())])
        return pa.Table.from_pylist(self.to_records(), schema=schema)

    def to_pandas(self):
        return self.to_arrow().to_pandas()

    def summary(self) -> dict[str, Any]:
        """The JSON summary schedulers read (``sparkscore monitor --json``)."""
        return {"model": None if self.model is None else dict(self.model), "reference": self.reference,
                "drifted": list(self.drifted), "anomalies": sum(r.is_anomaly for r in self.rows),
                "metrics": self.to_records()}


def compare(ref: Batch, cur: Batch, thresholds: M.Thresholds | None = None) -> list[DriftRow]:
    """Every metric of every column shared by both profiles."""
    thresholds = thresholds or M.Thresholds()
    rows: list[DriftRow] = []
    for rc in ref.profile.columns:
        try:
            cc = cur.profile.column(rc.name, rc.role)
        except MonitorError:
            continue  # e.g. a label only one side has
        rows.extend(_column_drift(rc, cc, ref.raw.get(f"{rc.role}:{rc.name}"), cur.raw.get(f"{rc.role}:{rc.name}"),
                                  thresholds))
    return rows


def _column_drift(rc: ColumnProfile, cc: ColumnProfile, ref_raw, cur_raw, thresholds: M.Thresholds) -> list[DriftRow]:
    metric_names = M.NUMERIC_METRICS if rc.kind == "numeric" else M.CATEGORICAL_METRICS
    out = []

    def row(metric: str, value: float | None, p_value: float | None, n_ref: int, n_cur: int, method: str,
            bound: float | None = 0.0) -> None:
        threshold = thresholds.of(rc.name, metric)
        tested = p_value if M.DEFAULTS[metric][1] else value
        out.append(DriftRow(rc.name, metric, value, threshold, M.is_anomaly(metric, tested, threshold), p_value,
                            n_ref, n_cur, role=rc.role, method=method, error_bound=bound))

    r, c = rc.distribution(), cc.distribution()
    empty = r.sum() == 0 or c.sum() == 0
    for metric in metric_names:
        if metric in ("ks", "wasserstein"):
            continue
        if empty:
            row(metric, None, None, rc.count, cc.count, "empty", None)
        elif metric == "psi":
            row(metric, M.psi(r, c), None, rc.count, cc.count, "histogram")
        elif metric == "jensen_shannon":
            row(metric, M.jensen_shannon(r, c), None, rc.count, cc.count, "histogram")
        elif metric == "l_infinity":
            row(metric, M.l_infinity(r, c), None, rc.count, cc.count, "histogram")
        elif metric == "chi_square":
            stat, p = M.chi_square(r, c)
            row(metric, stat, p, rc.count, cc.count, "exact")
    if rc.kind == "numeric":
        n_ref, n_cur = rc.finite, cc.finite
        if not n_ref or not n_cur:
            row("ks", None, None, n_ref, n_cur, "empty", None)
            row("wasserstein", None, None, n_ref, n_cur, "empty", None)
        elif ref_raw is not None and cur_raw is not None:
            ks = M.ks_exact(ref_raw, cur_raw)
            ws = M.wasserstein_exact(ref_raw, cur_raw, rc.std)
            row("ks", ks.value, ks.p_value, n_ref, n_cur, ks.method, 0.0)
            row("wasserstein", ws.value, None, n_ref, n_cur, ws.method, 0.0)
        else:
            rs, cs = rc.sketch, cc.sketch
            eps = rank_error(rs) + rank_error(cs)
            ks = M.ks_sketch(rs, cs, eps)
            ws = M.wasserstein_sketch(rs, cs, rc.std, eps)
            row("ks", ks.value, ks.p_value, n_ref, n_cur, ks.method, ks.error_bound)
            row("wasserstein", ws.value, None, n_ref, n_cur, ws.method, ws.error_bound)
    order = {m: i for i, m in enumerate(metric_names)}
    return sorted(out, key=lambda d: order[d.metric])


def as_batch(profile: Profile) -> Batch:
    return Batch(profile, {})


def merge_states(states: Iterable[SketchState], kinds: Sequence[str], k: int, exact_rows: int) -> SketchState:
    merged = SketchState(tuple(kinds), k, exact_rows)
    for state in states:
        merged.merge(state)
    return merged


__all__ = ["Batch", "DriftResult", "DriftRow", "Runner", "compare", "kll_sketch", "profile_batch"]
