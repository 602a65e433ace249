"""Profiles and drift from an engine: the sketch stream plus ONE aggregate query, then the comparison.

Engine-neutral: everything runs through a :class:`Runner` (``sparkscore.engines.monitoring``
implements it for DuckDB and Spark), which plans the monitoring SQL through the engine's own
PREDICT front end and returns only aggregated results: a few rows of counts, and merged sketches.

Binding: the data's columns bind to the model's inputs by ``Model.bind_columns``, the rule every
scoring path uses (the exact name, or the one the native library renamed to it: LightGBM fits
``Age (yrs)`` as ``Age_(yrs)``), and the scored projection passes exactly those columns to
PREDICT by position.  A name that differs only in case is refused with a hint, like the label.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
from sqlglot import exp

from sparkscore.monitor import metrics as M
from sparkscore.monitor.profile import (DEFAULT_BINS, DEFAULT_KLL_K, DEFAULT_TOPK, ColumnProfile, MonitorError, Profile,
                                        column_specs, kll_sketch, rank_error, top_categories)
from sparkscore.monitor.query import AggColumn, aggregate_query, scored_query, stream_query
from sparkscore.monitor.sketch import DEFAULT_EXACT_ROWS, SketchState, slice_text

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

    def sketch(self, query: exp.Expression, kinds: Sequence[str], k: int, exact_rows: int,
               groups: Sequence[Sequence[int]] = ()) -> SketchState:
        """The sketch stream over ``query`` (profiled columns, then slice keys; ``groups``: key indices per slice spec)."""


@dataclass(frozen=True)
class Batch:
    """A profiled dataset: its profile, the raw finite values per column when it was small, and per
    slice ``(slice_key, slice_value)`` a histogram-only profile and the quality metrics."""

    profile: Profile
    raw: Mapping[str, np.ndarray] = field(default_factory=dict)
    slices: Mapping[tuple[str, str], Profile] = field(default_factory=dict)
    quality: Mapping[tuple[str, str] | None, Mapping[str, float]] = field(default_factory=dict)
    #: per slice, the raw finite values of its numeric columns while the batch was small (exact KS / W)
    slice_raw: Mapping[tuple[str, str], Mapping[str, np.ndarray]] = field(default_factory=dict)
    #: the slice specs this batch was grouped by -> the ``role:name`` of the profiled columns each one reads
    sliced_by: Mapping[str, frozenset] = field(default_factory=dict)
    #: slice spec -> why it has no per-slice sketches (more values than the sketch stream keeps)
    unsketched: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Slice:
    """One ``--slice`` spec: ``region`` / ``region,plan`` (column keys) or ``age >= 60`` (a predicate)."""

    text: str
    keys: tuple[exp.Expression, ...]
    predicate: bool


def parse_slices(specs: Sequence[str], dialect: str) -> list[Slice]:
    """Slice specs as ASTs.  The text is parsed as a SELECT list and refused unless it is only that
    (no FROM, no subquery): it becomes GROUP BY keys, never pasted into SQL text."""
    from sparkscore.optimizer.dialect import parse

    out = []
    for text in specs:
        if not isinstance(text, str) or not text.strip():
            raise MonitorError(f"slice {text!r}: give column names ('region', 'region,plan') or a predicate ('age >= 60')")
        tree = parse(f"SELECT {text}", dialect)
        extra = [k for k, v in tree.args.items() if v and k != "expressions"]
        nested = [n for n in tree.find_all(exp.Select) if n is not tree]
        if not isinstance(tree, exp.Select) or extra or nested:
            raise MonitorError(f"slice {text!r} must be column names or one predicate over the batch's columns")
        keys = tuple(tree.expressions)
        columns = all(isinstance(k, exp.Column) for k in keys)
        if not columns and len(keys) != 1:
            raise MonitorError(f"slice {text!r}: use column names ('region,plan') or ONE predicate ('age >= 60')")
        out.append(Slice(text.strip(), keys, not columns))
    return out


def profile_batch(runner: Runner, ref: str, model, source: exp.Expression, *, labels: str | None = None,
                  bins: int = DEFAULT_BINS, topk: int = DEFAULT_TOPK, k: int = DEFAULT_KLL_K,
                  exact_rows: int = DEFAULT_EXACT_ROWS, reference: Profile | None = None,
                  model_info: Mapping[str, Any] | None = None, source_kind: str = "batch",
                  slices: Sequence[Slice] = (), quality: bool = False) -> Batch:
    """Profile ``source`` (a SELECT AST) against ``model``: the sketch stream, then ONE aggregate query.

    With ``reference``, histograms use its edges and categories (the current side of a drift);
    otherwise edges are this data's own quantiles at i/bins and categories its top-k.
    """
    if bins < 1 or topk < 1 or k < 8:
        raise MonitorError(f"bins ({bins}) and topk ({topk}) must be positive and k ({k}) at least 8")
    try:
        return _profile_batch(runner, ref, model, source, labels, bins, topk, k, exact_rows, reference, model_info,
                              source_kind, slices, quality and labels is not None)
    finally:
        runner.release()


def _profile_batch(runner: Runner, ref: str, model, source: exp.Expression, labels, bins, topk, k, exact_rows,
                   reference, model_info, source_kind, slices, quality) -> Batch:
    specs = column_specs(model, labels)
    bound = bind_inputs(runner, source, model, specs, labels)
    inputs = [(column, kind) for column, (_, role, kind) in zip(bound, specs) if role == "input"]
    keys, sets = [], []
    for spec in slices:
        sets.append(list(range(len(keys), len(keys) + len(spec.keys))))
        keys.extend(k.copy() for k in spec.keys)
    proba = quality and model.is_classifier and model.n_classes > 2
    scored = runner.scored(scored_query(source, ref, inputs, labels, keys, proba=proba))
    kinds = [kind for _, _, kind in specs]
    state = runner.sketch(stream_query(scored, len(specs), len(keys)), kinds, k, exact_rows, sets)
    agg_columns = []
    for i, (name, role, kind) in enumerate(specs):
        ref_col = None
        if reference is not None:
            try:
                ref_col = reference.column(name, role)
            except MonitorError:  # e.g. a label the reference was profiled without: this side's own edges
                pass
        if ref_col is not None:
            edges, cats = ref_col.edges, tuple(v for v, _ in ref_col.categories)
        elif kind == "numeric":
            edges, cats = quantile_edges(state.sketches[i], bins, state.raw_values(i)), ()
        else:
            edges, cats = (), tuple(v for v, _ in top_categories(state.counts[i], topk))
        agg_columns.append(AggColumn(f"c{i}", kind, edges, cats))
    q = _quality_spec(model, len(inputs), labels, proba) if quality else None
    query, names = aggregate_query(scored, agg_columns, sets, q)
    rows = [dict(zip(names, row)) for row in runner.aggregate(query)]
    overall = [r for r in rows if all(r[f"grouping:{i}"] for i in range(len(keys)))]
    if len(overall) != 1:
        raise MonitorError(f"the aggregate query returned {len(overall)} overall rows, expected 1; report this query")
    bins_, topk_ = (bins, topk) if reference is None else (reference.bins, reference.topk)

    def profile_of(values: Mapping[str, Any], sketch_of) -> Profile:
        n = int(values["rows"])
        cols = tuple(_column(name, role, kind, agg, values, n, sketch_of(i))
                     for i, ((name, role, kind), agg) in enumerate(zip(specs, agg_columns)))
        return Profile(cols, n, bins_, topk_, k, model_info, source_kind)

    raw = {}
    for i, (name, role, kind) in enumerate(specs):
        values_i = state.raw_values(i) if kind == "numeric" else None
        if values_i is not None:
            raw[f"{role}:{name}"] = values_i
    by_slice, qualities, slice_raw = {}, {}, {}
    if q is not None:
        qualities[None] = _quality_values(overall[0], q, 0)
    for row in rows:
        if row is overall[0]:
            continue
        for j, (spec, group) in enumerate(zip(slices, sets), start=1):
            if all(not row[f"grouping:{i}"] for i in group):
                value = ",".join(slice_text(row[f"slice:{i}"]) for i in group)
                g = j - 1
                by_slice[spec.text, value] = profile_of(row, lambda i, g=g, value=value: state.slice_sketch(g, value, i))
                kept = {f"{role}:{name}": state.slice_raw(g, value, i) for i, (name, role, kind) in enumerate(specs)
                        if kind == "numeric"}
                slice_raw[spec.text, value] = {key: v for key, v in kept.items() if v is not None}
                if q is not None:
                    qualities[spec.text, value] = _quality_values(row, q, j)
    read = _slice_reads(slices, specs, bound)
    unsketched = {spec.text: f"{state.overflow[g]} slice values > {state.max_slices} (sketches per slice are bounded)"
                  for g, spec in enumerate(slices) if g in state.overflow}
    return Batch(profile_of(overall[0], lambda i: state.sketches[i]), raw, by_slice, qualities, slice_raw, read,
                 unsketched)


def _slice_reads(slices: Sequence[Slice], specs, bound) -> dict[str, frozenset]:
    """Per slice spec, the profiled columns (``role:name``) its keys read, plus the prediction when
    they read a model input: compared with a whole training profile, a slice differs in those by
    construction (``age >= 60`` in ``age``, and in a prediction that depends on ``age``)."""
    out = {}
    for spec in slices:
        used = {c.name for key in spec.keys for c in key.find_all(exp.Column)}
        read = {f"{role}:{name}" for (name, role, _), column in zip(specs, bound) if column in used or name in used}
        if any(role == "input" and f"{role}:{name}" in read for name, role, _ in specs):
            read |= {f"{role}:{name}" for name, role, _ in specs if role == "output"}
        out[spec.text] = frozenset(read)
    return out


def _quality_spec(model, n_inputs: int, labels: str, proba: bool = False):
    from sparkscore.monitor.query import Quality

    if not model.is_classifier:
        return Quality(f"c{n_inputs}", f"c{n_inputs + 1}", "regression")
    if model.n_classes == 2:
        positive = model.classes[1]
        return Quality(f"c{n_inputs}", f"c{n_inputs + 1}", "binary",
                       positive.item() if isinstance(positive, np.generic) else positive)
    return Quality(f"c{n_inputs}", f"c{n_inputs + 1}", "multiclass",
                   classes=tuple(c.item() if isinstance(c, np.generic) else c for c in model.classes) if proba else ())


def _quality_values(row: Mapping[str, Any], q, group: int) -> dict[str, float]:
    """The quality metrics of one aggregate row; ``group``: its grouping set (0 = the whole batch),
    which picks the mid-rank sums of that set's rankings for the AUC.

    Multiclass (with the probabilities): ``auc`` is the one-vs-rest macro average (each class's
    probability ranked against "this class or not", the unweighted mean over classes, as
    ``roc_auc_score(..., multi_class="ovr", average="macro")``), None when a class has no positive
    or no negative row in the group (sklearn refuses those); ``ece`` is the top-label calibration
    error: confidence = the greatest class probability, correct = the predicted label is the label,
    on the same ten equal-width bins as the binary ECE.
    """
    out = {name.partition(":")[2]: (None if v is None else float(v)) for name, v in row.items()
           if name.startswith("quality:") and not name.startswith("quality:rank_sum:")}
    if "mse" in out:
        mse = out.pop("mse")
        out["rmse"] = None if mse is None else math.sqrt(mse)
    if q.task == "binary":
        n, pos = int(out.get("n_scored") or 0), int(out.get("positives") or 0)
        ranks = row.get(f"quality:rank_sum:{group}")
        out["auc"] = auc_from_ranks(ranks, pos, n - pos)
        out["ece"] = expected_calibration_error(reliability(out))
    elif q.task == "multiclass" and q.classes:
        n = int(out.get("n_proba") or 0)
        aucs = []
        for c in range(len(q.classes)):
            pos = int(out.get(f"positives:{c}") or 0)
            aucs.append(auc_from_ranks(row.get(f"quality:rank_sum:{c}:{group}"), pos, n - pos))
        out["auc"] = None if any(a is None for a in aucs) else float(sum(aucs) / len(aucs))
        out["ece"] = expected_calibration_error(reliability(out))
    return out


def auc_from_ranks(rank_sum: float | None, positives: int, negatives: int) -> float | None:
    """ROC AUC from the sum of the positives' mid-ranks (Mann-Whitney U / (P N)); None without both classes.

    Exact: mid-ranks are multiples of 1/2, so their sum is exact in binary64 below 2**52 rows.
    """
    if rank_sum is None or positives == 0 or negatives == 0:
        return None
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: predicted P(positive) in ``(lo, hi]`` (the first bin ``[0, hi]``)."""

    lo: float
    hi: float
    count: int
    mean_predicted: float | None
    fraction_positive: float | None


def reliability(values: Mapping[str, Any]) -> tuple[ReliabilityBin, ...]:
    """The reliability bins of a binary classifier's quality values (those of ``Batch.quality[key]``)."""
    from sparkscore.monitor.query import RELIABILITY_EDGES

    edges = (0.0, *RELIABILITY_EDGES, 1.0)
    out = []
    for b in range(len(edges) - 1):
        n = int(values.get(f"bin_n:{b}") or 0)
        sp, sy = values.get(f"bin_p:{b}") or 0.0, values.get(f"bin_y:{b}") or 0.0
        out.append(ReliabilityBin(edges[b], edges[b + 1], n, sp / n if n else None, sy / n if n else None))
    return tuple(out)


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float | None:
    """ECE = sum over bins of (bin count / n) * |mean predicted - fraction positive| (equal-width bins)."""
    n = sum(b.count for b in bins)
    if n == 0:
        return None
    return float(sum(b.count * abs(b.mean_predicted - b.fraction_positive) for b in bins if b.count) / n)


def bind_inputs(runner: Runner, source: exp.Expression, model, specs, labels: str | None) -> list[str | None]:
    """Per profiled column (``specs`` order) the data column it reads (None for the prediction).

    Inputs bind by ``Model.bind_columns``: the one binding rule of every scoring path.  Unknown
    columns, names that differ only in case and text where numbers are expected fail here, in one
    line naming the column and the fix.
    """
    from sparkscore.errors import SignatureError

    schema = runner.columns(source)
    types = {name: str(t).lower() for name, t in schema}
    lowered = {name.lower(): name for name in types}
    if labels is not None and labels not in types:
        hint = f" (did you mean {lowered[labels.lower()]!r}?)" if labels.lower() in lowered else ""
        raise MonitorError(f"model {model.name}: the data has no label column {labels!r}{hint}; "
                           f"columns: {', '.join(types)}")
    try:
        inputs = iter(model.bind_columns(list(types)))
    except SignatureError as exc:  # two columns the library would both have renamed to one input
        raise MonitorError(str(exc)) from None
    out: list[str | None] = []
    for j, (name, role, kind) in enumerate(specs):
        actual = None if role == "output" else labels if role == "label" else next(inputs)
        if role == "input" and actual is None:
            near = _case_hint(model, j, list(types))
            hint = (f"; {near!r} differs only in case: rename it, or alias it in the query ({near} AS {name})"
                    if near is not None else f"; columns: {', '.join(types)}")
            raise MonitorError(f"model {model.name}: the data has no column {name!r} (input of the model){hint}")
        if actual is not None and kind == "numeric" and types[actual].startswith(TEXT_TYPES):
            raise MonitorError(f"model {model.name}: column {actual!r} is text ({types[actual]}) but "
                               f"{'the label' if role == 'label' else 'a numeric input'}; cast it to DOUBLE in the query")
        out.append(actual)
    return out


def _case_hint(model, j: int, available: list[str]) -> str | None:
    """The data column that would bind to input ``j`` but for letter case (the same rule, case-folded)."""
    from sparkscore.errors import SignatureError
    from sparkscore.ir.inputs import bind_names

    folded = {name.lower(): name for name in available}
    try:
        found = bind_names([model.signature.names[j].lower()], list(folded), model.metadata.get("feature_name_rule"))
    except SignatureError:
        return None
    return None if found[0] is None else folded[found[0]]


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
            sketch) -> ColumnProfile:
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
        return ColumnProfile(
            name, role, kind, count=n, nulls=n - nonnull, nans=nans, pos_inf=int(values[f"{a}:pos_inf"] or 0),
            neg_inf=int(values[f"{a}:neg_inf"] or 0), finite=finite,
            min=_float(values[f"{a}:min"]), max=_float(values[f"{a}:max"]), mean=_float(mean),
            m2=float(var) * finite if var is not None and finite else 0.0, edges=agg.edges, hist=hist,
            kll=None if sketch is None or kind != "numeric" else sketch.serialize())
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
    threshold: float | None
    is_anomaly: bool
    p_value: float | None
    n_ref: int
    n_cur: int
    slice_key: str | None = None
    slice_value: str | None = None
    role: str = "input"               # input | output (prediction drift) | label | quality
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
    #: the current side's quality values per slice key (None = the whole batch); :func:`reliability` reads them
    quality: Mapping[Any, Mapping[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def drifted(self) -> tuple[str, ...]:
        """Features with at least one anomalous drift metric, in profile order (quality rows -- a slice
        scoring differently from the rest of the batch -- are reported, not counted as drift)."""
        seen: list[str] = []
        for row in self.rows:
            if row.is_anomaly and row.role != "quality" and row.feature not in seen:
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
    """Every metric of every column shared by both profiles; then per slice of ``cur``:

    * when ``ref`` is a batch sliced the same way, every metric against that same slice of ``ref``
      (KS / Wasserstein from the per-slice sketches, exact while both sides kept their values);
    * when ``ref`` was not sliced by that spec (a stored training profile), KS and Wasserstein
      against ``ref``'s whole distribution (its global sketch), except in the columns the slice
      keys read (``age >= 60`` differs from the whole in ``age`` by construction) and, when they
      read a model input, the prediction; the bucketed metrics stay per slice of a reference batch
      only.  (Inputs correlated with the slicing column differ from the whole too: that is what
      the comparison shows, so read it per slice, or compare with a reference batch);
    * a spec whose values outgrew the per-slice sketches gets one ``ks`` row saying so (``method``).

    Then the quality metrics.  p-values of slice rows are Benjamini-Hochberg adjusted across the
    slices (per metric), and their anomalies are decided on the adjusted value."""
    thresholds = thresholds or M.Thresholds()
    rows = _profile_drift(ref.profile, cur.profile, ref.raw, cur.raw, thresholds)
    sliced: list[DriftRow] = []
    for (key, value), profile in cur.slices.items():
        base = ref.slices.get((key, value))
        if base is not None:
            found = _profile_drift(base, profile, ref.slice_raw.get((key, value), {}),
                                   cur.slice_raw.get((key, value), {}), thresholds)
        elif key not in ref.sliced_by:  # a whole (training) reference: the sketch metrics only, see above
            found = _profile_drift(ref.profile, profile, {}, {}, thresholds, SKETCH_METRICS,
                                   skip=cur.sliced_by.get(key, frozenset()))
        else:  # the reference batch has no rows in this slice
            continue
        sliced.extend(dataclasses.replace(r, slice_key=key, slice_value=value) for r in found)
    for key, reason in cur.unsketched.items():
        sliced.append(DriftRow("*", "ks", None, None, False, None, 0, 0, key, None, method=f"skipped: {reason}",
                               error_bound=None))
    quality = _quality_rows(cur.quality, thresholds)
    return rows + [r for r in quality if r.slice_key is None] + _bh_adjusted(
        sliced + [r for r in quality if r.slice_key is not None])


#: the metrics a slice gets against a whole (unsliced) reference: the distribution-shape tests of its sketches
SKETCH_METRICS = ("ks", "wasserstein")


def _profile_drift(ref: Profile, cur: Profile, ref_raw, cur_raw, thresholds: M.Thresholds,
                   only: Sequence[str] | None = None, skip: frozenset = frozenset()) -> list[DriftRow]:
    rows: list[DriftRow] = []
    for rc in ref.columns:
        if f"{rc.role}:{rc.name}" in skip or (only is not None and rc.kind != "numeric"):
            continue
        try:
            cc = cur.column(rc.name, rc.role)
        except MonitorError:
            continue  # e.g. a label only one side has
        found = _column_drift(rc, cc, ref_raw.get(f"{rc.role}:{rc.name}"), cur_raw.get(f"{rc.role}:{rc.name}"),
                              thresholds)
        rows.extend(r for r in found if only is None or r.metric in only)
    return rows


#: quality metric -> whether the slice row gets a two-proportion z-test p-value against the rest of the batch
QUALITY_METRICS = ("accuracy", "log_loss", "brier", "auc", "ece", "rmse", "mae")
QUALITY_P = 0.05


def _quality_rows(quality: Mapping, thresholds: M.Thresholds) -> list[DriftRow]:
    """Quality per slice (and overall); accuracy of a slice is tested against the rest of the batch."""
    overall = quality.get(None)
    out = []
    for key, values in quality.items():
        n = int(values.get("n_scored") or 0)
        for metric in QUALITY_METRICS:
            if metric not in values:
                continue
            p = None
            if metric == "accuracy" and key is not None and overall is not None and values[metric] is not None:
                p = _proportion_p(values[metric], n, overall["accuracy"], int(overall["n_scored"] or 0))
            out.append(DriftRow("prediction", metric, values[metric], QUALITY_P if p is not None else None,
                                p is not None and p < QUALITY_P, p, int(overall["n_scored"] or 0) if overall else 0, n,
                                None if key is None else key[0], None if key is None else key[1], role="quality",
                                method="exact", error_bound=0.0))
    return out


def _proportion_p(a1: float, n1: int, a: float, n: int) -> float | None:
    """Two-sided p-value of the slice's accuracy against the rest of the batch (pooled two-proportion z-test)."""
    from scipy.stats import norm

    n2 = n - n1
    if n1 == 0 or n2 <= 0 or a is None:
        return None
    a2 = (a * n - a1 * n1) / n2
    se = math.sqrt(a * (1 - a) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if a1 == a2 else 0.0
    return float(2 * norm.sf(abs(a1 - a2) / se))


def _bh_adjusted(rows: list[DriftRow]) -> list[DriftRow]:
    """Benjamini-Hochberg adjusted p-values across the slice rows of each metric (the anomaly follows them)."""
    by_metric: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.p_value is not None:
            by_metric.setdefault(r.metric, []).append(i)
    out = list(rows)
    for metric, idx in by_metric.items():
        p = np.array([rows[i].p_value for i in idx])
        order = np.argsort(p)
        ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
        adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
        for j, i in enumerate(np.asarray(idx)[order]):
            r = rows[i]
            out[i] = dataclasses.replace(r, p_value=float(adjusted[j]),
                                         is_anomaly=r.threshold is not None and float(adjusted[j]) < r.threshold)
    return out


def _column_drift(rc: ColumnProfile, cc: ColumnProfile, ref_raw, cur_raw, thresholds: M.Thresholds) -> list[DriftRow]:
    metric_names = M.NUMERIC_METRICS if rc.kind == "numeric" else M.CATEGORICAL_METRICS
    out = []

    def row(metric: str, value: float | None, p_value: float | None, n_ref: int, n_cur: int, method: str,
            bound: float | None = 0.0) -> None:
        threshold = thresholds.of(rc.name, metric)
        tested = p_value if M.DEFAULTS[metric][1] else value
        if method == "sketch" and metric == "wasserstein" and value is not None and bound:
            # conservative, like the KS p-value taken at D - bound: an alarm raised on sketches holds for the
            # exact value too (a 600-row window's sketch alone moves W by up to its bound, past the 0.1 default)
            tested = max(value - bound, 0.0)
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
        elif rc.kll is None or cc.kll is None:
            pass  # no sketch on one side (a slice spec beyond the per-slice sketch bound): bucketed metrics only
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


def merge_states(states: Iterable[SketchState], kinds: Sequence[str], k: int, exact_rows: int,
                 groups: Sequence[Sequence[int]] = ()) -> SketchState:
    merged = SketchState(tuple(kinds), k, exact_rows, groups=tuple(tuple(g) for g in groups))
    for state in states:
        merged.merge(state)
    return merged


__all__ = ["Batch", "DriftResult", "DriftRow", "Runner", "compare", "kll_sketch", "profile_batch"]
