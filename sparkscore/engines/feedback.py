"""Bandit batch updates on Spark: ``sparkscore route update NAME@ROUTE --engine spark``.

The prediction log and the feedback table (Delta paths) become two temporary views; the join, the
latest label per request and the per-arm aggregate are ONE Spark SQL query built by the monitor
(:func:`sparkscore.monitor.bandit.spark_stats_query`, a sqlglot AST); only its few grouped rows
reach the driver.  The policy update, the new route version and its record are the monitor's
(:func:`sparkscore.monitor.bandit.update_from_log`), the same code the DuckDB path runs, so the same
log + feedback give the same route version on either engine.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any, Optional

from sparkscore.engines import delta
from sparkscore.monitor import bandit, predlog


def _view(spark, table: str, name: str, what: str, needed: tuple[str, ...]) -> None:
    if not delta.is_delta_path(table) and (delta.is_local(table) or not delta.has_delta_spark(spark)):
        raise predlog.PredictionLogError(f"{what} {table} is not a Delta table; pass the path given to --log"
                                         if what == "prediction log" else
                                         f"{what} {table} is not a Delta table; write it as Delta "
                                         "(request_id, ts, label)")
    df = delta.read_input(spark, table)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise predlog.PredictionLogError(f"{what} {table} has no column {missing[0]!r}; it needs "
                                         f"{', '.join(needed)}")
    df.createOrReplaceTempView(name)


def window_stats_spark(spark, log_table: str, feedback_table: str, base, params: bandit.PolicyParams,
                       classifier: bool, *, after=None, registry=None):
    """:func:`sparkscore.monitor.bandit.window_stats` on Spark: (stats, window, params)."""
    from sparkscore.optimizer.dialect import generate

    suffix = uuid.uuid4().hex[:12]
    log_view, fb_view = f"sparkscore_log_{suffix}", f"sparkscore_feedback_{suffix}"
    _view(spark, str(log_table), log_view, "prediction log",
          ("request_id", "model", "version", "route", "arm", "shadow", "prediction", "proba"))
    try:
        _view(spark, str(feedback_table), fb_view, "feedback table", ("request_id", "ts", "label"))
        query = bandit.spark_stats_query(base, params, classifier, after=after, log_view=log_view,
                                         feedback_view=fb_view)
        rows = [tuple(row) for row in spark.sql(generate(query, "spark")).collect()]
    finally:
        for view in (log_view, fb_view):
            spark.catalog.dropTempView(view)
    return bandit.stats_of_groups(rows, base, params, classifier, log_table=str(log_table),
                                  feedback_table=str(feedback_table), after=after, registry=registry)


def update_from_log(spark, reg, ref: str, log_table: str, feedback_table: str, *, policy: Optional[str] = None,
                    full: bool = False, **params: Any) -> bandit.Update:
    """:func:`sparkscore.monitor.bandit.update_from_log` with the window computed by Spark."""
    return bandit.update_from_log(reg, ref, log_table, feedback_table, policy=policy, full=full,
                                  stats_fn=partial(window_stats_spark, spark), **params)
