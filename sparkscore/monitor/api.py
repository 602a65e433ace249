"""``ss.monitor.profile`` and ``ss.monitor.drift``: the public facade.

The work runs on an engine (DuckDB by default for in-memory data and files; the given connection
or SparkSession otherwise) through the adapters in ``sparkscore.engines.monitoring``.  That one
import points up a layer, lazily inside the functions (like ``Model.predict`` -> compiler): the
monitor builds the SQL, the engines run it, and the facade joins the two for callers that hold
data rather than an engine adapter.  It is listed in ``.importlinter``'s ``ignore_imports``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlglot import exp

from sparkscore.ir import Model
from sparkscore.monitor.compute import Batch, DriftResult, compare, parse_slices, profile_batch
from sparkscore.monitor.metrics import Thresholds
from sparkscore.monitor.profile import DEFAULT_BINS, DEFAULT_KLL_K, DEFAULT_TOPK, MonitorError, Profile
from sparkscore.monitor.sketch import DEFAULT_EXACT_ROWS


def _registry(registry):
    from sparkscore.registry import Registry

    return Registry() if registry is None else registry


def _resolved(ref_or_model: Any, registry) -> tuple[str, Model, dict[str, Any] | None, Any]:
    """(ref pinned to its version, model, model info, registry or None for an in-memory model)."""
    if isinstance(ref_or_model, Model):
        name = str(ref_or_model.metadata.get("name") or "model")
        return name, ref_or_model, {"name": name, "sha256": ref_or_model.sha256}, None
    if not isinstance(ref_or_model, str):
        raise MonitorError(f"pass a model ref such as 'churn@prod' or an ss.Model, got {type(ref_or_model).__name__}")
    reg = _registry(registry)
    mv = reg.get(ref_or_model)
    model = reg.load(mv.ref)
    return mv.ref, model, {"name": mv.name, "version": mv.version, "sha256": mv.sha256}, reg


def _batch(ref_or_model, data, engine, registry, namespace, **options) -> tuple[Batch, Model, dict | None, Any]:
    from sparkscore.engines.monitoring import prepare  # the facade's one upward import (see the module docstring)

    ref, model, info, reg = _resolved(ref_or_model, registry)
    runner, source = prepare(data, engine, reg, namespace, model=model if reg is None else None, name=ref)
    return profile_batch(runner, ref, model, source, model_info=info, **options), model, info, reg


def profile(ref_or_model: Any, data: Any, engine: Any = None, registry: Any = None, bins: int = DEFAULT_BINS,
            labels: str | None = None, topk: int = DEFAULT_TOPK, k: int = DEFAULT_KLL_K,
            namespace: Mapping[str, Any] | None = None) -> Profile:
    """Profile ``data`` against a model: every input, the model's own prediction, and the label column.

    ``ref_or_model``: a registry ref (``'churn@prod'``, pinned to its version) or an ``ss.Model``.
    ``data``: a pandas DataFrame, Arrow table, DuckDB relation, parquet/csv path, Spark DataFrame,
    or SQL text run on ``engine``.  ``bins``: histogram bins (edges at the data's quantiles),
    ``topk``: categories kept per categorical column, ``k``: the KLL sketch parameter.
    """
    batch, _, _, _ = _batch(ref_or_model, data, engine, registry, namespace, labels=labels, bins=bins, topk=topk,
                            k=k, source_kind="batch")
    return batch.profile


def drift(ref: Any, data: Any, reference: Any = None, engine: Any = None, registry: Any = None,
          labels: str | None = None, thresholds: Thresholds | None = None,
          exact_rows: int = DEFAULT_EXACT_ROWS, namespace: Mapping[str, Any] | None = None,
          slices: Sequence[str] = ()) -> DriftResult:
    """Drift of ``data`` (the current batch) from ``reference`` for every input, the prediction and the label.

    ``reference``: None for the training profile stored with the version, a :class:`Profile`, or
    another batch (any ``data`` form; profiled on the fly, and compared exactly when both are small).
    The current batch is profiled on the reference's edges and categories by the sketch stream and
    ONE aggregate query on the engine; rows are ``DriftRow`` s (see ``DRIFT_COLUMNS``).

    ``slices``: ``'region'``, ``'region,plan'`` (crossed) or a predicate ``'age >= 60'``; each is a
    GROUPING SET of the same aggregate query.  Per slice: every drift metric against the same slice
    of a reference *batch* (KS / Wasserstein from per-slice KLL sketches built in the same sketch
    stream, at most ``sketch.MAX_SLICE_SKETCHES`` values per spec); against a stored training
    profile (no slices) KS / Wasserstein against its whole distribution, except in the columns the
    slice reads and then the prediction (a slice against the whole differs there by construction).  With ``labels``
    the quality metrics (accuracy, log-loss, Brier, AUC, ECE for binary classifiers; accuracy,
    one-vs-rest macro AUC and top-label ECE for multiclass; RMSE, MAE for regressors).  Slice
    p-values are Benjamini-Hochberg adjusted.
    """
    thresholds = thresholds or Thresholds()
    from sparkscore.engines.monitoring import prepare

    pinned, model, info, reg = _resolved(ref, registry)
    label_what = "training profile"
    if reference is None:
        if reg is None:
            raise MonitorError(f"model {pinned}: an in-memory model has no stored training profile; pass reference=")
        ref_batch = Batch(reg.profile(pinned))
    elif isinstance(reference, Profile):
        ref_batch, label_what = Batch(reference), "profile"
    else:
        runner, source = prepare(reference, engine, reg, namespace, model=model if reg is None else None, name=pinned)
        ref_batch = profile_batch(runner, pinned, model, source, labels=labels, bins=DEFAULT_BINS,
                                  exact_rows=exact_rows, model_info=info, slices=parse_slices(slices, runner.dialect))
        label_what = "reference batch"
    runner, source = prepare(data, engine, reg, namespace, model=model if reg is None else None, name=pinned)
    cur = profile_batch(runner, pinned, model, source, labels=labels,
                        exact_rows=exact_rows, reference=ref_batch.profile, model_info=info,
                        k=ref_batch.profile.kll_k, slices=parse_slices(slices, runner.dialect), quality=True)
    return DriftResult(tuple(compare(ref_batch, cur, thresholds)), info, label_what, ref_batch.profile, cur.profile,
                       cur.quality)


def track(ref: Any, log: str, window: str = "1d", reference: str | None = None, feedback: str | None = None,
          metrics_table: str | None = None, start: Any = None, end: Any = None, registry: Any = None,
          thresholds: Thresholds | None = None, computed_at: Any = None, engine: Any = None):
    """Drift per window of the prediction log ``log`` (a Delta path), tracked over time.

    ONE aggregate scan of the log's rows of this model version (``model`` / ``version`` columns),
    with ``window_start`` (``window`` buckets aligned to the epoch, UTC) as the GROUP BY key of the
    same query; each window is compared with ``reference`` (``'training'``: the stored training
    profile, the default; ``'previous'``: the window before it).  ``feedback``: the feedback Delta
    table (left-joined on ``request_id``: unlabelled rows count for drift, labelled ones also give
    the quality metrics).  ``metrics_table``: append the rows to that Delta table, replacing this
    run's windows (idempotent; :mod:`sparkscore.monitor.tracking`).  ``engine``: None (an embedded
    DuckDB connection) or a SparkSession: the log is then read, windowed, joined and scanned by Spark
    SQL (same single grouped scan, same rows to 1e-9), and the metrics are written with the Spark
    jobs' Delta writer (``engines.monitoring.write_metrics_spark``).  Returns a
    :class:`~sparkscore.monitor.tracking.TrackedDrift`.
    """
    from datetime import timedelta

    import sparkscore.engines.monitoring as monitoring  # the facade's one upward import (module docstring)
    from sparkscore.monitor import predlog, tracking
    from sparkscore.monitor.compute import Slice

    thresholds = thresholds or Thresholds()
    mode = tracking.check_reference(reference)
    amount, unit = predlog.window_interval(window).split()
    width = timedelta(**{unit: int(amount)})
    pinned, model, info, reg = _resolved(ref, registry)
    spark = engine is not None and monitoring._engine_kind(engine) == "spark"
    labels = "label" if feedback is not None else None
    if spark:
        rel, con = monitoring.log_windows_spark(engine, log, window, start, end, info, feedback), None
    else:
        import duckdb

        con = engine if engine is not None else duckdb.connect()
        rel = predlog.windows(log, window, start, end, con=con)
        if info is not None and info.get("version") is not None:
            rel = rel.filter((duckdb.ColumnExpression("model") == duckdb.ConstantExpression(str(info["name"])))
                             & (duckdb.ColumnExpression("version") == duckdb.ConstantExpression(int(info["version"]))))
        if feedback is not None:
            rel = predlog.with_feedback(rel, feedback, con=con, how="left")
    training = None
    if mode == "training":
        if reg is None:
            raise MonitorError(f"model {pinned}: an in-memory model has no stored training profile; use "
                               "reference='previous'")
        training = reg.profile(pinned)
    runner, source = monitoring.prepare(rel, con, reg, {}, model=model if reg is None else None, name=pinned)
    key = Slice(tracking.WINDOW_KEY, (exp.column(tracking.WINDOW_KEY, quoted=True),), False)
    batch = profile_batch(runner, pinned, model, source, labels=labels, reference=training, model_info=info,
                          k=training.kll_k if training is not None else DEFAULT_KLL_K, slices=[key], quality=True,
                          source_kind="log")
    result = tracking.TrackedDrift(tracking.window_drift(batch, training, mode == "previous", width, thresholds),
                                   window, mode, info)
    if metrics_table is not None:
        if spark:
            monitoring.write_metrics_spark(engine, metrics_table, result, computed_at)
        else:
            tracking.write_metrics(metrics_table, result, computed_at)
    return result

