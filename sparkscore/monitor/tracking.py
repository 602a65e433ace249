"""Drift tracked over time: per-window drift rows of a prediction log, and the metrics Delta table.

The windows come from ONE aggregate scan of the log (``window_start`` is a GROUP BY key of the same
query, as a slice is; :func:`sparkscore.monitor.api.track` builds it); this module turns the per-window
profiles into drift rows and appends them to the metrics table.

**Per window** the bucketed metrics are computed (PSI, Jensen-Shannon, chi-square, L-infinity on the
reference's edges and categories) plus, with labels, the quality metrics (accuracy, log-loss, Brier,
exact AUC, ECE; RMSE / MAE for regressors).  KS and Wasserstein need a quantile sketch per window,
which the one scan does not build: they are not reported per window (as for slices).

**Reference**: the training profile stored with the version (``"training"``, the default), or the
previous window *present in the log* (``"previous"``; the whole scanned range's own quantile edges
are shared by every window so consecutive windows compare bin by bin; the first window has no
reference and gets only quality rows).

**The metrics table** (a Delta table; :data:`METRICS_COLUMNS`): the drift row columns plus
``window_start``, ``window_end``, ``window`` (the duration text, e.g. ``1d``), ``reference``,
``model``, ``version`` and ``computed_at``.  A run writes ONE Delta commit that *replaces* the rows
of the same (model, version, window, reference) whose ``window_start`` lies in the run's range
(a predicate overwrite), stamped with the windows in its commit metadata.  Re-running the same
windows therefore never duplicates rows; a window still filling up (today's) is recomputed and
replaced; windows outside the range are kept.  Replacing rather than skipping is deliberate: a
late-arriving feedback label changes a window's quality metrics, and a re-run picks it up.

**On Spark** (``track(..., engine=spark)``, ``jobs/monitor.py``) the same scan runs in Spark SQL with
``window_start`` as epoch microseconds (:func:`window_start` reads both forms), and the metrics go
through the Spark jobs' Delta writer (``engines.monitoring.write_metrics_spark``: delta-rs as here, or
delta-spark's ``replaceWhere`` with :func:`replace_predicate` in Spark SQL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from sqlglot import exp

from sparkscore.monitor import metrics as M
from sparkscore.monitor.compute import DRIFT_COLUMNS, Batch, DriftRow, _quality_rows, compare
from sparkscore.monitor.profile import MonitorError, Profile

REFERENCES = ("training", "previous")
WINDOW_KEY = "window_start"
#: columns the metrics table adds to the drift rows'
TRACKING_COLUMNS = ("window_start", "window_end", "window", "reference", "model", "version", "computed_at")
METRICS_COLUMNS = (*DRIFT_COLUMNS, *TRACKING_COLUMNS)
COMMIT_KEY = "sparkscore.monitor.windows"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class WindowDrift:
    """The drift rows of one window ``[start, end)`` (UTC) of the log, and the rows it held."""

    start: datetime
    end: datetime
    rows: tuple[DriftRow, ...]
    n: int
    quality: Mapping[str, Any] | None = None

    @property
    def drifted(self) -> tuple[str, ...]:
        seen: list[str] = []
        for r in self.rows:
            if r.is_anomaly and r.role != "quality" and r.feature not in seen:
                seen.append(r.feature)
        return tuple(seen)


@dataclass(frozen=True)
class TrackedDrift:
    """Per-window drift of a prediction log (what ``sparkscore monitor --log`` prints and stores)."""

    windows: tuple[WindowDrift, ...]
    window: str
    reference: str
    model: Mapping[str, Any] | None = None

    @property
    def drifted(self) -> tuple[str, ...]:
        seen: list[str] = []
        for w in self.windows:
            seen.extend(f for f in w.drifted if f not in seen)
        return tuple(seen)

    def alert_line(self) -> str:
        """The one ``--fail-on-drift`` line: each drifted feature with the windows it drifted in."""
        worst = [f"{f} ({', '.join(w.start.isoformat() for w in self.windows if f in w.drifted)})"
                 for f in self.drifted]
        return f"drift: {len(worst)} feature(s) past their thresholds: {', '.join(worst)}"

    def to_arrow(self, computed_at: datetime | None = None):
        """The metrics-table rows: every window's drift rows plus :data:`TRACKING_COLUMNS`."""
        import pyarrow as pa

        from sparkscore.monitor.predlog import TS_TYPE

        stamp = computed_at or datetime.now(timezone.utc)
        model = dict(self.model or {})
        records = []
        for w in self.windows:
            for r in w.rows:
                record = {c: M.jsonable(getattr(r, c)) for c in DRIFT_COLUMNS}
                record.update(window_start=w.start, window_end=w.end, window=self.window, reference=self.reference,
                              model=model.get("name"), version=model.get("version"), computed_at=stamp)
                records.append(record)
        schema = pa.schema([("feature", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
                            ("threshold", pa.float64()), ("is_anomaly", pa.bool_()), ("p_value", pa.float64()),
                            ("n_ref", pa.int64()), ("n_cur", pa.int64()), ("slice_key", pa.string()),
                            ("slice_value", pa.string()), ("role", pa.string()), ("method", pa.string()),
                            ("error_bound", pa.float64()), ("window_start", TS_TYPE), ("window_end", TS_TYPE),
                            ("window", pa.string()), ("reference", pa.string()), ("model", pa.string()),
                            ("version", pa.int64()), ("computed_at", TS_TYPE)])
        return pa.Table.from_pylist(records, schema=schema)

    def to_pandas(self):
        return self.to_arrow().to_pandas()

    def summary(self) -> dict[str, Any]:
        """The JSON summary for schedulers: per window its drifted features and anomaly count."""
        return {"model": None if self.model is None else dict(self.model), "reference": self.reference,
                "window": self.window, "drifted": list(self.drifted),
                "windows": [{"window_start": w.start.isoformat(), "window_end": w.end.isoformat(), "rows": w.n,
                             "drifted": list(w.drifted), "anomalies": sum(r.is_anomaly for r in w.rows)}
                            for w in self.windows]}


def window_start(text: str) -> datetime:
    """A ``window_start`` slice value as an aware UTC datetime: the engine's timestamp as text (DuckDB), or
    microseconds since the epoch (Spark, whose ``collect`` would shift a TIMESTAMP into the local zone)."""
    if text.lstrip("-").isdigit():
        return EPOCH + timedelta(microseconds=int(text))
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def window_drift(batch: Batch, reference: Profile | None, previous: bool, width, thresholds: M.Thresholds
                 ) -> tuple[WindowDrift, ...]:
    """Drift rows per window of ``batch`` (profiled with ``window_start`` as its one slice key).

    ``reference``: the training profile every window is compared with; with ``previous`` each window
    is compared with the window before it instead (``reference`` is then unused).
    """
    keyed = sorted((window_start(value), value, profile) for (key, value), profile in batch.slices.items()
                   if key == WINDOW_KEY)
    out, before = [], None
    for start, text, profile in keyed:
        quality = batch.quality.get((WINDOW_KEY, text))
        unsketched = {k: v for k, v in batch.unsketched.items() if k == WINDOW_KEY}  # > MAX_SLICE_SKETCHES windows
        cur = Batch(profile, quality={None: quality} if quality else {}, unsketched=unsketched)
        base = before if previous else reference
        rows = _quality_rows(cur.quality, thresholds) if base is None else compare(Batch(base), cur, thresholds)
        out.append(WindowDrift(start, start + width, tuple(rows), profile.rows, quality))
        before = profile
    return tuple(out)


def replace_predicate(result: TrackedDrift, dialect: str | None = None) -> str:
    """The Delta predicate of the rows a run replaces: same model, version, window and reference,
    ``window_start`` within the run's windows.  Built as a sqlglot AST (the model name is data);
    ``dialect``: None for delta-rs, ``"spark"`` for delta-spark's ``replaceWhere`` (identifiers quoted)."""
    model = dict(result.model or {})
    lo, hi = min(w.start for w in result.windows), max(w.start for w in result.windows)
    version = model.get("version")
    terms = [exp.EQ(this=exp.column("model"), expression=exp.Literal.string(str(model.get("name")))),
             exp.Is(this=exp.column("version"), expression=exp.Null()) if version is None else
             exp.EQ(this=exp.column("version"), expression=exp.Literal.number(int(version))),
             exp.EQ(this=exp.column("window"), expression=exp.Literal.string(result.window)),
             exp.EQ(this=exp.column("reference"), expression=exp.Literal.string(result.reference)),
             # a string literal: delta-rs coerces it to the column's TIMESTAMP(us, UTC) (a typed literal it refuses)
             exp.GTE(this=exp.column(WINDOW_KEY), expression=exp.Literal.string(lo.isoformat())),
             exp.LTE(this=exp.column(WINDOW_KEY), expression=exp.Literal.string(hi.isoformat()))]
    predicate = exp.and_(*terms)
    return predicate.sql() if dialect is None else predicate.sql(dialect, identify=True)


def commit_stamp(result: TrackedDrift) -> str:
    """The commit metadata of a metrics write: the model, window, reference and the windows it replaced."""
    return json.dumps({"model": dict(result.model or {}), "window": result.window, "reference": result.reference,
                       "windows": [w.start.isoformat() for w in result.windows]}, sort_keys=True, default=str)


def write_metrics(table: str, result: TrackedDrift, computed_at: datetime | None = None) -> int:
    """Store ``result`` in the metrics Delta table ``table`` in ONE commit (see the module docstring);
    returns the rows written.  A run with no windows writes nothing."""
    from deltalake import write_deltalake
    from deltalake.transaction import CommitProperties

    if not result.windows:
        return 0
    data = result.to_arrow(computed_at)
    props = CommitProperties(custom_metadata={COMMIT_KEY: commit_stamp(result)})
    try:  # also the first run (it creates the table): two first runs racing conflict on version 0, never duplicate
        write_deltalake(table, data, mode="overwrite", predicate=replace_predicate(result), commit_properties=props)
    except Exception as exc:  # e.g. a table of another schema at that path
        raise MonitorError(f"metrics table {table}: cannot replace the windows of this run "
                           f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0]}); "
                           "pass a --metrics-table written by `sparkscore monitor --log`") from None
    return data.num_rows


def check_reference(reference: Any) -> str:
    if reference is None:
        return "training"
    if not isinstance(reference, str) or reference not in REFERENCES:
        raise MonitorError(f"reference {reference!r} for a prediction log: use 'training' (the profile stored with "
                           "the version) or 'previous' (the previous window of the log)")
    return reference


def no_slices(slices: Sequence[str]) -> None:
    if slices:
        raise MonitorError("--slice with --log/--window is not supported yet: the window is the scan's group key; "
                           "monitor one window with --sql to slice it")
