"""Tracking over time on Spark: the same metrics rows as DuckDB from ONE grouped Spark SQL scan of the log,
the idempotent metrics table, late feedback, and the ``jobs/monitor.py`` / ``monitor --engine spark`` path."""

from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import sparkscore as ss
from sparkscore.engines import monitoring
from sparkscore.monitor import tracking
from tests.monitor.test_predlog_read import write_feedback
from tests.monitor.test_windows import DAY0, DAYS, log  # noqa: F401 -- the module-scoped three-day log fixture

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

REPO = Path(__file__).resolve().parents[2]
KEY = ("window_start", "feature", "metric", "role", "slice_key", "slice_value")
T1 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def _rows(path) -> dict:
    records = deltalake.DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    out = {tuple(r[k] for k in KEY): r for r in records}
    assert len(out) == len(records)  # one row per (window, feature, metric): nothing duplicated
    return out


def _assert_same(mine: dict, theirs: dict) -> None:
    """Equal rows; a sketch-method value (KLL compaction is random, and Spark merges per-partition
    sketches in its own order) only within both rows' stated error bounds."""
    assert mine.keys() == theirs.keys() and mine
    for key, row in theirs.items():
        other = mine[key]
        assert (other["n_ref"], other["n_cur"], other["method"], other["threshold"]) == \
            (row["n_ref"], row["n_cur"], row["method"], row["threshold"]), key
        if row["method"] == "sketch":
            assert abs(other["value"] - row["value"]) <= (other["error_bound"] or 0) + (row["error_bound"] or 0), key
            continue
        assert other["is_anomaly"] == row["is_anomaly"], key
        assert other["value"] == pytest.approx(row["value"], rel=1e-9, abs=1e-12), key
        assert other["p_value"] == pytest.approx(row["p_value"], rel=1e-9, abs=1e-300), key


def _job():
    spec = importlib.util.spec_from_file_location("monitor_job", REPO / "jobs" / "monitor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def on_duckdb(log, monitored, tmp_path_factory):  # noqa: F811 -- log is the imported fixture
    path = tmp_path_factory.mktemp("metrics_duckdb") / "m"
    ss.monitor.track("churn@prod", str(log / "log"), "1d", feedback=str(log / "feedback"), registry=monitored,
                     metrics_table=str(path), computed_at=T1)
    return path


def test_spark_writes_the_duckdb_metrics_rows_from_one_grouped_scan(spark, log, monitored, on_duckdb, tmp_path,  # noqa: F811
                                                                     monkeypatch):
    aggregates = []
    original = monitoring.SparkRunner.aggregate
    monkeypatch.setattr(monitoring.SparkRunner, "aggregate", lambda self, q: aggregates.append(q) or original(self, q))
    metrics = tmp_path / "m"
    result = ss.monitor.track("churn@prod", str(log / "log"), "1d", feedback=str(log / "feedback"),
                              registry=monitored, metrics_table=str(metrics), computed_at=T1, engine=spark)
    assert len(aggregates) == 1 and "GROUPING SETS" in aggregates[0].sql("spark")
    assert [w.start for w in result.windows] == [DAY0 + timedelta(days=d) for d in range(DAYS)]
    assert [w.n for w in result.windows] == [600] * DAYS  # version 2's rows are not read
    assert ["age" in w.drifted for w in result.windows] == [False, True, False]
    _assert_same(_rows(metrics), _rows(on_duckdb))
    quality = [r for r in _rows(metrics).values() if r["metric"] == "auc"]
    assert [r["n_cur"] for r in quality] == [400] * DAYS  # the labelled rows only


def test_previous_window_reference_on_spark_equals_duckdb(spark, log, monitored):  # noqa: F811
    args = dict(reference="previous", registry=monitored, window="1d")
    on_spark = ss.monitor.track("churn@prod", str(log / "log"), engine=spark, **args)
    on_duckdb = ss.monitor.track("churn@prod", str(log / "log"), **args)
    assert on_spark.windows[0].rows == () and "age" in on_spark.windows[1].drifted
    rows = [{tuple(r[k] for k in KEY): r for r in res.to_arrow(T1).to_pylist()} for res in (on_spark, on_duckdb)]
    _assert_same(*rows)


def test_spark_job_reruns_replace_and_late_feedback_updates_quality(spark, log, monitored, tmp_path, capsys):  # noqa: F811
    feedback, metrics = tmp_path / "feedback", tmp_path / "m"
    shutil.copytree(log / "feedback", feedback)
    job = _job()
    args = job.parse_args(["--model", "churn@prod", "--log", str(log / "log"), "--feedback", str(feedback),
                           "--metrics-table", str(metrics), "--registry", str(monitored.root), "--json",
                           "--fail-on-drift"])
    assert job.run(spark, args) == job.EXIT_DRIFT
    out, err = capsys.readouterr()
    assert [w["rows"] for w in json.loads(out)["windows"]] == [600] * DAYS
    assert "age (2026-11-29T00:00:00+00:00)" in err.splitlines()[-1]
    first = _rows(metrics)
    # late feedback: every unlabelled row of the first day gets its label; the re-run replaces every window
    # (nothing added) and the first day's quality now counts those rows
    logged = deltalake.DeltaTable(str(log / "log")).to_pandas()
    labelled = set(deltalake.DeltaTable(str(feedback)).to_pandas().request_id)
    day0 = logged[(logged.version == 1) & (logged.ts < DAY0 + timedelta(days=1)) & ~logged.request_id.isin(labelled)]
    assert len(day0) == 200
    write_feedback(feedback, day0.request_id.tolist(), [0] * len(day0))
    ss.monitor.track("churn@prod", str(log / "log"), "1d", feedback=str(feedback), registry=monitored,
                     metrics_table=str(metrics), computed_at=T1, engine=spark)
    rerun = _rows(metrics)
    assert rerun.keys() == first.keys() and {r["computed_at"] for r in rerun.values()} == {T1}  # replaced, not added
    for key, row in rerun.items():
        if key[0] == DAY0 and row["role"] == "quality":
            assert (first[key]["n_cur"], row["n_cur"]) == (400, 600), key
        elif key[0] != DAY0:
            assert row["n_cur"] == first[key]["n_cur"], key  # the other windows: the same rows again
            if row["method"] == "sketch":   # random KLL compaction: within the two runs' bounds
                assert abs(row["value"] - first[key]["value"]) <= row["error_bound"] + first[key]["error_bound"], key
            else:
                assert row["value"] == pytest.approx(first[key]["value"], rel=1e-12, abs=1e-15), key
    accuracy = (DAY0, "prediction", "accuracy", "quality", None, None)
    assert rerun[accuracy]["value"] != first[accuracy]["value"]
    # ... and equal to DuckDB reading the same late feedback
    alone = ss.monitor.track("churn@prod", str(log / "log"), "1d", feedback=str(feedback), registry=monitored)
    _assert_same(rerun, {tuple(r[k] for k in KEY): r for r in alone.to_arrow(T1).to_pylist()})
    history = deltalake.DeltaTable(str(metrics)).history()
    assert len(history) == 2 and all(tracking.COMMIT_KEY in h for h in history)


def test_delta_spark_replace_where_selects_exactly_the_runs_rows(spark, on_duckdb):
    """delta-spark's replaceWhere gets the same predicate, in Spark SQL (no delta-spark JARs here: the
    predicate is checked as a Spark filter over the metrics rows of this run and of other series)."""
    rows = list(_rows(on_duckdb).values())  # the training series, three windows; then another series
    rows += [{**r, "reference": "previous"} for r in rows]
    later = tuple(tracking.WindowDrift(DAY0 + timedelta(days=d), DAY0 + timedelta(days=d + 1), (), 0) for d in (1, 2))
    result = tracking.TrackedDrift(later, "1d", "training", {"name": "churn", "version": 1})
    frame = spark.createDataFrame(rows, schema=monitoring._SPARK_METRICS_SCHEMA)
    kept = frame.filter(tracking.replace_predicate(result, "spark")).selectExpr(
        "reference", "unix_micros(window_start) AS start").collect()  # micros: collect would localise a TIMESTAMP
    assert len(kept) == sum(1 for r in rows[:len(rows) // 2] if r["window_start"] > DAY0) > 0
    assert {r.reference for r in kept} == {"training"}
    assert {tracking.window_start(str(r.start)) for r in kept} == {DAY0 + timedelta(days=d) for d in (1, 2)}


def test_cli_engine_spark_runs_the_monitor_job(log, monitored, runner, monkeypatch, tmp_path):  # noqa: F811
    from sparkscore import cli

    assert _job().EXIT_DRIFT == cli.EXIT_DRIFT
    calls = []
    monkeypatch.setattr(cli.subprocess, "run", lambda command, **kw: calls.append(command) or
                        type("Done", (), {"returncode": cli.EXIT_DRIFT})())
    base = ["--registry", str(monitored.root), "monitor", "churn@prod", "--log", str(log / "log"), "--engine", "spark"]
    out = runner.invoke(cli.app, [*base, "--window", "6h", "--reference", "previous", "--metrics-table",
                                  str(tmp_path / "m"), "--fail-on-drift", "--json"])
    assert out.exit_code == cli.EXIT_DRIFT, out.output
    command = calls[0]
    assert command[0].endswith("spark-submit") and command[command.index(str(REPO / "jobs" / "monitor.py")) + 1:] == [
        "--model", "churn@prod", "--log", str(log / "log"), "--window", "6h", "--reference", "previous",
        "--metrics-table", str(tmp_path / "m"), "--registry", str(monitored.root), "--fail-on-drift", "--json"]
    bad = runner.invoke(cli.app, [*base, "--window", "1y"])
    assert bad.exit_code == 1 and "is not a duration" in bad.output and len(calls) == 1  # refused before spark-submit
    bad = runner.invoke(cli.app, ["--registry", str(monitored.root), "monitor", "churn@prod", "--input", "x.parquet",
                                  "--engine", "spark"])
    assert bad.exit_code == 2 and "--engine spark tracks a prediction log" in bad.output
