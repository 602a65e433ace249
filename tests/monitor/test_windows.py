"""Tracking over time: per-window drift of a prediction log from ONE grouped scan, equal to each
window computed alone, and an idempotent metrics Delta table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import sparkscore as ss
from sparkscore.engines import monitoring
from sparkscore.monitor import predlog, tracking
from tests.monitor.conftest import frame
from tests.monitor.test_predlog_read import write_feedback, write_log

deltalake = pytest.importorskip("deltalake")
DAY0 = datetime(2026, 11, 28, tzinfo=timezone.utc)
DAYS = 3
COMPARED = ("psi", "jensen_shannon", "chi_square", "l_infinity", "accuracy", "log_loss", "brier", "auc", "ece")


@pytest.fixture(scope="module")
def log(tmp_path_factory, monitored):
    """Three days of churn/1 log rows (day 1 with age shifted by +15), labels for 2/3 of them, and
    200 rows of another version that the monitor must not read."""
    path = tmp_path_factory.mktemp("windows")
    model = monitored.load("churn@prod")
    rng = np.random.default_rng(5)
    for day in range(DAYS):
        df = frame(600, 20 + day)
        if day == 1:
            df["age"] += 15.0
        ts = [DAY0 + timedelta(days=day, seconds=int(s)) for s in rng.integers(0, 86400, len(df))]
        table = write_log(path / "log", model, len(df), ts=ts, seed=day, name="churn", version=1,
                          inputs=pa.Table.from_pandas(df.drop(columns="y"), preserve_index=False))
        ids = table.column("request_id").to_pylist()
        keep = np.arange(len(df)) % 3 != 0
        write_feedback(path / "feedback", [i for i, k in zip(ids, keep) if k], df.y[keep].tolist())
    write_log(path / "log", model, 200, ts=[DAY0] * 200, seed=9, name="churn", version=2,
              inputs=pa.Table.from_pandas(frame(200, 30).drop(columns="y"), preserve_index=False))
    return path


@pytest.fixture(scope="module")
def tracked(log, monitored):
    aggregates = []
    original = monitoring.DuckDBRunner.aggregate

    def counting(self, query):
        aggregates.append(query)
        return original(self, query)

    monitoring.DuckDBRunner.aggregate = counting
    try:
        result = ss.monitor.track("churn@prod", str(log / "log"), "1d", feedback=str(log / "feedback"),
                                  registry=monitored)
    finally:
        monitoring.DuckDBRunner.aggregate = original
    return result, aggregates


def _values(rows):
    return {(r.feature, r.metric): r for r in rows if r.metric in COMPARED}


def test_windows_come_from_one_grouped_scan_and_flag_the_shifted_day(tracked):
    result, aggregates = tracked
    assert len(aggregates) == 1 and "GROUPING SETS" in aggregates[0].sql("duckdb")
    assert [w.start for w in result.windows] == [DAY0 + timedelta(days=d) for d in range(DAYS)]
    assert all(w.end - w.start == timedelta(days=1) for w in result.windows)
    assert [w.n for w in result.windows] == [600] * DAYS  # version 2's rows are not read
    assert ["age" in w.drifted for w in result.windows] == [False, True, False]


def test_each_window_equals_that_window_computed_alone(tracked, log, monitored):
    result, _ = tracked
    for w in result.windows:
        con = duckdb.connect()
        rel = predlog.read(str(log / "log"), w.start, w.end, con=con).filter("version = 1")
        alone = ss.monitor.drift("churn@prod", predlog.with_feedback(rel, str(log / "feedback"), con=con, how="left"),
                                 engine=con, registry=monitored, labels="label")
        mine, theirs = _values(w.rows), _values(alone.rows)
        assert set(mine) == set(theirs) and len(mine) == 17  # 3 x 2 numeric + 4 region + 2 prediction + 5 quality
        for key, row in mine.items():
            other = theirs[key]
            assert (row.n_ref, row.n_cur, row.is_anomaly) == (other.n_ref, other.n_cur, other.is_anomaly), key
            assert row.value == pytest.approx(other.value, rel=1e-12, abs=1e-15), key
            assert row.p_value == pytest.approx(other.p_value, rel=1e-9, abs=1e-300), key
        assert mine["prediction", "auc"].n_cur == 400  # the labelled rows only


def test_previous_window_reference(log, monitored):
    result = ss.monitor.track("churn@prod", str(log / "log"), "1d", reference="previous", registry=monitored)
    first, second, third = result.windows
    assert first.rows == ()  # no previous window (and no labels: no quality rows)
    assert "age" in second.drifted and "age" in third.drifted  # shifted in, then back
    assert result.reference == "previous"
    with pytest.raises(ss.errors.SparkscoreError, match="reference 'last'"):
        ss.monitor.track("churn@prod", str(log / "log"), "1d", reference="last", registry=monitored)


def _table(path):
    return deltalake.DeltaTable(str(path)).to_pyarrow_table()


def test_metrics_table_is_idempotent_per_window(tmp_path, log, monitored):
    metrics = str(tmp_path / "metrics")
    first = datetime(2026, 12, 1, tzinfo=timezone.utc)
    args = dict(feedback=str(log / "feedback"), registry=monitored, metrics_table=metrics)
    result = ss.monitor.track("churn@prod", str(log / "log"), "1d", computed_at=first, **args)
    written = _table(metrics)
    assert written.num_rows == sum(len(w.rows) for w in result.windows)
    assert set(written.column_names) == set(tracking.METRICS_COLUMNS)
    assert set(written.column("model").to_pylist()) == {"churn"} and set(written.column("version").to_pylist()) == {1}
    again = first + timedelta(hours=1)
    ss.monitor.track("churn@prod", str(log / "log"), "1d", computed_at=again, **args)
    rerun = _table(metrics)
    assert rerun.num_rows == written.num_rows  # replaced, not duplicated
    assert set(rerun.column("computed_at").to_pylist()) == {again}
    # only the last window again: its rows are replaced, the others kept
    last = first + timedelta(hours=2)
    ss.monitor.track("churn@prod", str(log / "log"), "1d", start=DAY0 + timedelta(days=2), computed_at=last, **args)
    table = _table(metrics).to_pandas()
    assert len(table) == written.num_rows
    stamps = table.groupby("window_start").computed_at.unique()
    assert [list(s) for s in stamps] == [[again], [again], [last]]
    # another reference is another series in the same table
    ss.monitor.track("churn@prod", str(log / "log"), "1d", reference="previous", computed_at=last, **args)
    assert len(_table(metrics)) > written.num_rows
    history = deltalake.DeltaTable(metrics).history()
    assert all(tracking.COMMIT_KEY in h for h in history)


def test_cli_monitor_log_window_metrics_table_and_fail_on_drift(log, monitored, runner, tmp_path):
    import json

    from sparkscore.cli import EXIT_DRIFT, app

    metrics = str(tmp_path / "metrics")
    base = ["--registry", str(monitored.root), "monitor", "churn@prod", "--log", str(log / "log"), "--window", "1d"]
    out = runner.invoke(app, [*base, "--feedback", str(log / "feedback"), "--metrics-table", metrics,
                              "--json", "--fail-on-drift"])
    assert out.exit_code == EXIT_DRIFT, out.output
    summary = json.loads(out.stdout)
    assert [w["rows"] for w in summary["windows"]] == [600] * DAYS and "age" in summary["drifted"]
    assert "age (2026-11-29T00:00:00+00:00)" in out.stderr
    rows = _table(metrics).num_rows
    assert runner.invoke(app, [*base, "--feedback", str(log / "feedback"), "--metrics-table", metrics]).exit_code == 0
    assert _table(metrics).num_rows == rows
    bad = runner.invoke(app, [*base, "--slice", "region"])
    assert bad.exit_code == 1 and "--slice with --log" in bad.output
    bad = runner.invoke(app, [*base, "--window", "1y"])
    assert bad.exit_code == 1 and "is not a duration" in bad.output


def test_a_range_without_rows_gives_no_windows_and_writes_nothing(log, monitored, tmp_path):
    result = ss.monitor.track("churn@prod", str(log / "log"), "6h", start="2027-01-01", registry=monitored,
                              feedback=str(log / "feedback"), metrics_table=str(tmp_path / "m"))
    assert result.windows == () and result.drifted == ()
    assert not (tmp_path / "m").exists()


def test_a_metrics_table_of_another_schema_fails_in_one_line(log, monitored, tmp_path):
    other = str(tmp_path / "other")
    deltalake.write_deltalake(other, pa.table({"x": [1]}))
    with pytest.raises(ss.errors.SparkscoreError, match="metrics table .*other: cannot replace") as info:
        ss.monitor.track("churn@prod", str(log / "log"), "1d", registry=monitored, metrics_table=other)
    assert "\n" not in str(info.value).strip()
    assert deltalake.DeltaTable(other).to_pyarrow_table().num_rows == 1
