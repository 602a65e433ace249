"""The monitor binds a model's inputs exactly as scoring does (``Model.bind_columns``), and runs the
model once per row: a LightGBM model whose feature names LightGBM rewrote (``Age (yrs)`` ->
``Age_(yrs)``) is profiled, registered with its training data and monitored on the frame it was
fitted on, on DuckDB and Spark; the scored projection is materialized once, so the rows scored
equal the rows monitored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sparkscore as ss
from sparkscore.engines.functions import SCORE_LOG_ENV
from sparkscore.errors import MonitorError

lgb = pytest.importorskip("lightgbm")

AGE = "Age (yrs)"  # LightGBM stores it as Age_(yrs)


def frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({AGE: rng.normal(40, 10, n) + shift, "monthly income": rng.lognormal(8, 0.5, n),
                       "score": rng.uniform(0, 1, n), "region": rng.choice(["EU", "US", "APAC"], n)})
    df["y"] = (((df[AGE] - 40) / 10 + df.score + rng.normal(0, 1, n)) > 0.5).astype(int)
    return df


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    """churn_lgb/1 registered WITH its training frame (original names); 40 trees of 15 leaves: a UDF, not inlined."""
    train = frame(3000, 0)
    X = train[[AGE, "monthly income", "score"]]
    native = lgb.LGBMClassifier(n_estimators=40, num_leaves=15, num_threads=1, verbose=-1).fit(X, train.y)
    assert native.booster_.feature_name()[0] == "Age_(yrs)", "LightGBM no longer rewrites names: revisit"
    reg = ss.Registry(tmp_path_factory.mktemp("binding") / "registry")
    reg.register("churn_lgb", native, training_data=train, training_labels="y", profile=True)
    return reg, native, train


def test_register_with_training_data_profiles_the_renamed_inputs(renamed):
    reg, native, train = renamed
    profile = reg.profile("churn_lgb/1")
    age = profile.column("Age_(yrs)", "input")  # named by the signature, read from `Age (yrs)`
    assert age.count == len(train) and age.mean == pytest.approx(train[AGE].mean(), rel=1e-12)
    assert profile.column("monthly_income", "input").max == pytest.approx(train["monthly income"].max(), rel=1e-15)
    p = native.predict_proba(train[[AGE, "monthly income", "score"]])[:, 1]
    assert profile.column("prediction", "output").mean == pytest.approx(p.mean(), rel=1e-9)


def test_profile_drift_and_slices_bind_the_frame_names(renamed):
    reg, native, _ = renamed
    batch = frame(2000, 1, shift=8.0)
    result = ss.monitor.drift("churn_lgb/1", batch, registry=reg, labels="y", slices=["region", f'"{AGE}" >= 50'])
    flagged = {(r.feature, r.slice_key) for r in result.rows if r.is_anomaly}
    assert ("Age_(yrs)", None) in flagged and not any(f == "score" for f, _ in flagged)
    quality = {(r.metric, r.slice_key, r.slice_value): r.value for r in result.rows if r.role == "quality"}
    from sklearn.metrics import roc_auc_score

    p = native.predict_proba(batch[[AGE, "monthly income", "score"]])[:, 1]
    eu = (batch.region == "EU").to_numpy()
    assert quality["auc", "region", "EU"] == pytest.approx(roc_auc_score(batch.y[eu], p[eu]), rel=1e-12)
    profile = ss.monitor.profile("churn_lgb/1", batch, registry=reg)
    assert profile.column("Age_(yrs)").mean == pytest.approx(batch[AGE].mean(), rel=1e-12)


@pytest.mark.parametrize("change, message", [
    (lambda df: df.rename(columns={AGE: "AGE (YRS)"}), r"no column 'Age_\(yrs\)'.*'AGE \(YRS\)' differs only in case"),
    (lambda df: df.drop(columns=AGE), r"no column 'Age_\(yrs\)' \(input of the model\); columns: monthly income"),
    (lambda df: df.assign(**{AGE: df[AGE].astype(str)}), r"column 'Age \(yrs\)' is text"),
])
def test_case_missing_and_text_columns_fail_in_one_line(renamed, change, message):
    reg, _, _ = renamed
    with pytest.raises(MonitorError, match=message) as err:
        ss.monitor.drift("churn_lgb/1", change(frame(300, 2)), registry=reg)
    assert "\n" not in str(err.value)


def _scored_rows(log) -> int:
    return sum(int(line.split()[1]) for line in log.read_text().splitlines()) if log.exists() else 0


def test_the_model_runs_once_per_monitored_row_on_duckdb(renamed, tmp_path, monkeypatch):
    reg, _, _ = renamed
    log = tmp_path / "scored.log"
    monkeypatch.setenv(SCORE_LOG_ENV, str(log))
    batch, reference = frame(2500, 3), frame(1500, 4)
    ss.monitor.drift("churn_lgb/1", batch, reference=reference, registry=reg, labels="y", slices=["region"])
    assert _scored_rows(log) == len(batch) + len(reference)  # twice that before: stream + aggregate each scored


@pytest.mark.spark
def test_spark_binds_the_frame_names_scores_once_and_equals_duckdb(spark, renamed, tmp_path, monkeypatch):
    reg, _, _ = renamed
    batch, reference = frame(600, 5, shift=3.0), frame(400, 6)  # small: Spark time is what this test costs
    on_duckdb = ss.monitor.drift("churn_lgb/1", batch, reference=reference, registry=reg, slices=["region"])
    log = tmp_path / "spark_scored.log"
    persisted = len(spark.sparkContext._jsc.getPersistentRDDs())
    env = spark.sparkContext.environment
    env[SCORE_LOG_ENV] = str(log)
    try:
        on_spark = ss.monitor.drift("churn_lgb/1", spark.createDataFrame(batch).repartition(3),
                                    reference=spark.createDataFrame(reference), registry=reg, slices=["region"])
    finally:
        del env[SCORE_LOG_ENV]
    assert _scored_rows(log) == len(batch) + len(reference)
    assert len(spark.sparkContext._jsc.getPersistentRDDs()) == persisted  # released: the projections unpersisted

    def values(result):
        return {(r.feature, r.metric, r.slice_key, r.slice_value): r for r in result.rows}

    mine, theirs = values(on_spark), values(on_duckdb)
    assert mine.keys() == theirs.keys()
    assert ("Age_(yrs)", "ks", "region", "EU") in mine  # per-slice KS from the merged partition sketches
    for key, row in mine.items():
        assert row.value == pytest.approx(theirs[key].value, rel=1e-9, abs=1e-12), key
