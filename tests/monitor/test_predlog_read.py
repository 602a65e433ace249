"""Reading prediction logs: time ranges, windows and the feedback join, as DuckDB relations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from sparkscore.monitor import predlog
from tests.engines.test_batch import churn_model

deltalake = pytest.importorskip("deltalake")
T0 = datetime(2026, 11, 30, tzinfo=timezone.utc)


def write_log(path, model, n: int, *, ts, arms=None, seed: int = 0, version: int = 1, shadow=None,
              prediction=None, proba=None, inputs=None, name=None):
    """Append ``n`` rows (request ids ``r0..``) of ``model``'s log schema to the Delta table ``path``."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    inputs = inputs if inputs is not None else pa.table({c.name: rng.normal(size=n) for c in model.signature.inputs})
    if prediction is None:
        p = model.predict_proba(inputs.to_pandas())
        prediction, proba = p[:, 1], p
    table = predlog.log_table(model, ts=T0, source="test", request_ids=[f"r{seed}-{i}" for i in range(n)],
                              name=name or model.name, version=version, sha256="0" * 64, inputs=inputs,
                              prediction=pa.array(prediction), proba=None if proba is None else
                              pa.array(list(map(list, proba)), pa.list_(pa.float64())))
    table = table.set_column(0, "ts", pa.array(ts, predlog.TS_TYPE))
    if arms is not None:
        table = table.set_column(table.schema.get_field_index("arm"), "arm", pa.array(arms, pa.string()))
    if shadow is not None:
        table = table.set_column(table.schema.get_field_index("shadow"), "shadow", pa.array(shadow, pa.bool_()))
    write_deltalake(str(path), table, mode="append")
    return table


def write_feedback(path, request_ids, labels, ts=None):
    from deltalake import write_deltalake

    ts = ts or [T0 + timedelta(days=1)] * len(request_ids)
    write_deltalake(str(path), pa.table({"request_id": pa.array(request_ids, pa.string()),
                                         "ts": pa.array(ts, predlog.TS_TYPE), "label": pa.array(labels)}), mode="append")


@pytest.fixture
def hourly(tmp_path):
    """48 rows, one per hour from T0."""
    ts = [T0 + timedelta(hours=i) for i in range(48)]
    write_log(tmp_path / "log", churn_model(), 48, ts=ts)
    return tmp_path / "log"


def test_read_filters_on_a_half_open_utc_range(hourly):
    assert predlog.read(str(hourly)).aggregate("count(*)").fetchall() == [(48,)]
    rel = predlog.read(str(hourly), start="2026-11-30T06:00:00", end=T0 + timedelta(hours=10))
    hours = sorted(r[0].hour for r in rel.project("ts").fetchall())
    assert hours == [6, 7, 8, 9]  # start included, end excluded; a naive start is UTC
    rel2 = predlog.read(str(hourly), start="2026-12-01T00:00:00+01:00")  # = 23:00 UTC on the 30th
    assert rel2.aggregate("count(*)").fetchall() == [(25,)]
    assert rel.columns[:9] == list(predlog.FIXED_COLUMNS)


def test_windows_bucket_rows_by_utc_day_and_hour_multiples(hourly):
    days = predlog.windows(str(hourly), "1d").aggregate("window_start, window_end, count(*) AS n",
                                                         "window_start, window_end").order("window_start").fetchall()
    assert [(s.day, e.day, n) for s, e, n in days] == [(30, 1, 24), (1, 2, 24)]
    six = predlog.windows(str(hourly), "6h", start=T0 + timedelta(hours=3)).aggregate(
        "window_start, count(*)", "window_start").order("window_start").fetchall()
    assert [n for _, n in six] == [3, 6, 6, 6, 6, 6, 6, 6]
    assert six[0][0] == T0  # aligned to the epoch, not to the first row


@pytest.mark.parametrize("bad", ["", "1", "0d", "1y", "d1", "1d; DROP TABLE x"])
def test_bad_window_is_one_line(bad):
    with pytest.raises(predlog.PredictionLogError, match="is not a duration"):
        predlog.window_interval(bad)


def test_feedback_join_takes_the_latest_label_per_request(hourly, tmp_path):
    fb = tmp_path / "fb"
    write_feedback(fb, ["r0-0", "r0-1", "r0-1", "nope"], [1, 0, 1, 1],
                   [T0 + timedelta(days=1), T0 + timedelta(days=1), T0 + timedelta(days=2), T0])
    joined = predlog.with_feedback(predlog.read(str(hourly)), str(fb))
    got = sorted(joined.project("request_id, label, label_ts").fetchall())
    assert [(r, label) for r, label, _ in got] == [("r0-0", 1), ("r0-1", 1)]
    assert got[1][2] == T0 + timedelta(days=2)
    left = predlog.with_feedback(predlog.read(str(hourly)), str(fb), how="left")
    assert left.aggregate("count(*), count(label)").fetchall() == [(48, 2)]


def test_missing_tables_and_columns_are_one_line_errors(hourly, tmp_path):
    with pytest.raises(predlog.PredictionLogError, match="is not a Delta table"):
        predlog.read(str(tmp_path / "nothing"))
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "fb"), pa.table({"request_id": ["a"], "label": [1]}))
    with pytest.raises(predlog.PredictionLogError, match="no column 'ts'"):
        predlog.with_feedback(predlog.read(str(hourly)), str(tmp_path / "fb"))
    with pytest.raises(predlog.PredictionLogError, match="not an ISO date"):
        predlog.read(str(hourly), start="yesterday")
