"""Drift on DuckDB: no false alarms on resamples, injected drift flagged, edge cases defined, one aggregate query."""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import sparkscore as ss
from sparkscore.cli import EXIT_DRIFT, app
from sparkscore.engines import monitoring
from sparkscore.errors import SparkscoreError
from tests.monitor.conftest import frame


def _anomalies(result) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in result.rows:
        if r.is_anomaly:
            out.setdefault(r.feature, set()).add(r.metric)
    return out


def test_resamples_of_the_training_data_stay_below_every_threshold(monitored, train):
    flagged = checked = 0
    for seed in range(8):
        sample = train.sample(n=len(train), replace=True, random_state=seed)
        result = ss.monitor.drift("churn@prod", sample, registry=monitored, labels="y")
        features = {r.feature for r in result.rows}
        assert features == {"age", "income", "score", "region", "prediction", "y"}
        checked += len(features)
        flagged += len(result.drifted)
    assert flagged <= 0.01 * checked, f"{flagged} of {checked} features flagged on resamples"


@pytest.mark.parametrize("change, feature, metrics", [
    ("shift", "age", {"psi", "jensen_shannon", "wasserstein", "ks"}),
    ("swap", "region", {"chi_square", "l_infinity", "psi", "jensen_shannon"}),
    ("nulls", "income", {"psi", "jensen_shannon"}),
])
def test_injected_drift_is_flagged(monitored, change, feature, metrics):
    batch = frame(3000, 5)
    if change == "shift":
        batch["age"] += 10.0  # one training std
    elif change == "swap":
        batch["region"] = batch["region"].map({"EU": "APAC", "APAC": "EU", "US": "US"})
    else:
        batch.loc[batch.sample(frac=0.3, random_state=1).index, "income"] = None
    result = ss.monitor.drift("churn@prod", batch, registry=monitored)
    found = _anomalies(result)
    assert metrics <= found.get(feature, set())
    untouched = {"score"} if change != "shift" else {"score", "income"}
    assert not untouched & set(found)
    if change == "shift":
        assert "prediction" in found  # the model's own output drifts with its strongest input


def test_nan_null_inf_unseen_categories_and_constant_columns_give_defined_results(monitored):
    batch = frame(400, 7)
    batch["score"] = 0.5                           # constant column
    batch.loc[0:9, "age"] = np.nan                 # NaN (DuckDB keeps NaN from Arrow)
    batch.loc[10:19, "age"] = np.inf
    batch.loc[20:29, "age"] = -np.inf
    batch.loc[30:49, "region"] = "MARS"            # unseen category
    batch.loc[50:59, "region"] = None
    table = pa.Table.from_pandas(batch, preserve_index=False)
    null = np.zeros(len(batch), dtype=bool)
    null[60:65] = True  # and NULL beside NaN (from_pandas would have turned NaN into NULL)
    table = table.set_column(0, "age", pa.array(batch.age.to_numpy(), mask=null, from_pandas=False))
    result = ss.monitor.drift("churn@prod", table, registry=monitored)
    cur = result.current_profile
    age = cur.column("age")
    assert (age.nulls, age.nans, age.pos_inf, age.neg_inf, age.finite) == (5, 10, 10, 10, 365)
    assert sum(age.hist) == 385 and age.hist[0] >= 10 and age.hist[-1] >= 10  # ±inf in the end bins
    region = cur.column("region")
    assert region.nulls == 10 and region.other == 20 and "MARS" not in dict(region.categories)
    score = cur.column("score")
    assert score.std == 0.0 and max(score.hist) == 400
    for row in result.rows:
        assert row.value is None or not math.isnan(row.value)
    rows = {(r.feature, r.metric): r for r in result.rows}
    assert rows["score", "ks"].is_anomaly and rows["score", "wasserstein"].is_anomaly


def test_empty_batch_gives_rows_with_no_values_and_no_alarm(monitored, train):
    result = ss.monitor.drift("churn@prod", train.iloc[:0], registry=monitored)
    assert result.rows and not result.drifted
    assert all(r.value is None and r.method == "empty" and r.n_cur == 0 for r in result.rows)


def test_the_drift_is_one_aggregate_query_plus_one_sketch_stream(monitored, train, monkeypatch):
    seen: dict[str, list] = {"scored": [], "aggregate": [], "sketch": []}
    for method in seen:
        original = getattr(monitoring.DuckDBRunner, method)

        def counting(self, query, *args, _original=original, _name=method):
            seen[_name].append(query)
            return _original(self, query, *args)

        monkeypatch.setattr(monitoring.DuckDBRunner, method, counting)
    ss.monitor.drift("churn@prod", train.iloc[:500], registry=monitored, labels="y")
    assert {k: len(v) for k, v in seen.items()} == {"scored": 1, "aggregate": 1, "sketch": 1}
    scored, aggregate = seen["scored"][0].sql("duckdb"), seen["aggregate"][0]
    assert scored.count("PREDICT(") == 1  # the prediction comes from the engine's PREDICT, planned once
    sql = aggregate.sql("duckdb")
    # one scan of the planned view (with labels, the AUC's mid-rank window is a subquery over that same scan)
    assert "GROUP BY" not in sql and "PREDICT" not in sql and sql.count("FROM __ss_monitor_") == 1
    assert sql.count("FROM") == 2 and "RANK() OVER" in sql
    assert len(aggregate.expressions) > 6 * 5  # every column's counts, moments and bins in the one SELECT


def test_bad_input_fails_in_one_line_naming_the_column(monitored, train):
    with pytest.raises(SparkscoreError, match="no column 'age'") as missing:
        ss.monitor.drift("churn@prod", train.drop(columns="age"), registry=monitored)
    with pytest.raises(SparkscoreError, match="'income'.*text") as text:
        ss.monitor.drift("churn@prod", train.assign(income=train.income.astype(str)), registry=monitored)
    with pytest.raises(SparkscoreError, match="no label column 'Y'.*did you mean 'y'"):
        ss.monitor.drift("churn@prod", train, registry=monitored, labels="Y")
    for err in (missing.value, text.value):
        assert "\n" not in str(err)


def test_drift_table_function_in_sql(monitored, train):
    con = duckdb.connect()
    batch = train.assign(age=train.age + 10)  # noqa: F841 - read by name from this frame
    rows = ss.duckdb.sql(con, "SELECT feature, metric, value FROM DRIFT('churn@prod', 'SELECT * FROM batch') AS d "
                              "WHERE d.is_anomaly AND d.metric = 'psi' ORDER BY feature", registry=monitored).fetchall()
    assert [r[0] for r in rows] == ["age", "prediction"]
    same = ss.monitor.drift("churn@prod", batch, registry=monitored)
    assert rows[0][2] == next(r.value for r in same.rows if (r.feature, r.metric) == ("age", "psi"))
    ref = train.iloc[:1000]  # noqa: F841
    n = ss.duckdb.sql(con, "SELECT count(*) FROM DRIFT('churn@prod', 'SELECT * FROM batch', 'SELECT * FROM ref')",
                      registry=monitored).fetchall()[0][0]
    assert n == 4 * 5  # 5 columns x 4 metrics (no label)
    with pytest.raises(SparkscoreError, match="DRIFT takes 2 or 3 string literals"):
        ss.duckdb.sql(con, "SELECT * FROM DRIFT('churn@prod')", registry=monitored)


def test_cli_profile_monitor_json_and_fail_on_drift(monitored, train, runner, tmp_path):
    data = tmp_path / "batch.parquet"
    train.assign(age=train.age + 10).to_parquet(data)
    base = ["--registry", str(monitored.root)]
    ok = runner.invoke(app, [*base, "monitor", "churn@prod", "--input", str(tmp_path / "same.parquet")])
    assert ok.exit_code == 1 and "does not exist" in ok.output
    train.iloc[:2000].to_parquet(tmp_path / "same.parquet")
    ok = runner.invoke(app, [*base, "monitor", "churn@prod", "--input", str(tmp_path / "same.parquet"),
                             "--fail-on-drift"])
    assert ok.exit_code == 0, ok.output
    drifted = runner.invoke(app, [*base, "monitor", "churn@prod", "--input", str(data), "--fail-on-drift", "--json"])
    assert drifted.exit_code == EXIT_DRIFT == 3
    summary = json.loads(drifted.stdout)
    assert summary["drifted"] == ["age", "prediction"] and summary["model"]["version"] == 1
    assert drifted.stderr.count("\n") == 1 and "age (psi" in drifted.stderr and "prediction" in drifted.stderr
    conf = tmp_path / "monitor.toml"
    conf.write_text("[monitor.features.age]\npsi = 100\njensen_shannon = 1\nwasserstein = 100\nks = 0\n"
                    "[monitor.features.prediction]\npsi = 100\njensen_shannon = 1\nwasserstein = 100\nks = 0\n")
    relaxed = runner.invoke(app, [*base, "monitor", "churn@prod", "--input", str(data), "--fail-on-drift",
                                  "--config", str(conf)])
    assert relaxed.exit_code == 0, relaxed.output
    prof = runner.invoke(app, [*base, "profile", "churn/1", "--data", str(data), "--bins", "4", "--output",
                               str(tmp_path / "p.json")])
    assert prof.exit_code == 0, prof.output
    saved = ss.monitor.Profile.load(tmp_path / "p.json")
    assert saved.bins == 4 and len(saved.column("age").edges) == 3
    vs_profile = runner.invoke(app, [*base, "monitor", "churn@prod", "--input", str(data), "--reference",
                                     str(tmp_path / "p.json"), "--fail-on-drift"])
    assert vs_profile.exit_code == 0, vs_profile.output
