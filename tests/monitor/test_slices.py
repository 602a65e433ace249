"""Slices: GROUPING SETS of the same aggregate query; per-slice drift; quality metrics with BH-adjusted p-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, mean_absolute_error, mean_squared_error

import sparkscore as ss
from sparkscore.engines import monitoring
from sparkscore.errors import SparkscoreError
from tests.monitor.conftest import frame


@pytest.fixture(scope="module")
def sliced(monitored):
    batch, reference = frame(3000, 3), frame(3000, 4)
    for data in (batch, reference):
        data["plan"] = np.where(data.index % 2 == 0, "pro", "basic")
    batch.loc[batch.region == "EU", "age"] += 10.0  # drift only inside the EU slice
    aggregates = []
    original = monitoring.DuckDBRunner.aggregate

    def counting(self, query):
        aggregates.append(query)
        return original(self, query)

    monitoring.DuckDBRunner.aggregate = counting
    try:
        result = ss.monitor.drift("churn@prod", batch, reference=reference, registry=monitored, labels="y",
                                  slices=["region", "region,plan", "age >= 60"])
    finally:
        monitoring.DuckDBRunner.aggregate = original
    return batch, result, aggregates


def test_slices_are_grouping_sets_of_the_one_aggregate_and_drift_only_where_injected(sliced):
    batch, result, aggregates = sliced
    assert len(aggregates) == 2  # one per side (the reference batch is sliced the same way)
    assert all("GROUPING SETS" in q.sql("duckdb") for q in aggregates)
    psi = {(r.slice_key, r.slice_value): r for r in result.rows if (r.feature, r.metric) == ("age", "psi")}
    assert psi["region", "EU"].is_anomaly and not psi["region", "US"].is_anomaly and not psi["region", "APAC"].is_anomaly
    assert psi["region,plan", "EU,pro"].is_anomaly and not psi["region,plan", "US,basic"].is_anomaly
    assert {v for k, v in psi if k == "age >= 60"} == {"true", "false"}
    counts = {v: r.n_cur for (k, v), r in psi.items() if k == "region"}
    assert counts == batch.region.value_counts().to_dict()
    assert sum(r.n_cur for (k, _), r in psi.items() if k == "region,plan") == len(batch)
    ks = {(r.slice_key, r.slice_value) for r in result.rows if r.metric == "ks" and r.feature == "age" and r.slice_key}
    assert ks == {key for key in psi if key[0]}  # per-slice sketches: KS / Wasserstein per slice too (tests/monitor/test_slice_sketches.py)


def test_quality_metrics_equal_sklearn_and_slice_p_values_are_bh_adjusted(sliced, monitored):
    batch, result, _ = sliced
    model = monitored.load("churn@prod")
    p = model.predict_proba(batch.drop(columns=["y", "plan"]))[:, 1]
    quality = {(r.metric, r.slice_key, r.slice_value): r for r in result.rows if r.role == "quality"}
    assert quality["accuracy", None, None].value == pytest.approx(accuracy_score(batch.y, p >= 0.5), rel=1e-12)
    assert quality["log_loss", None, None].value == pytest.approx(log_loss(batch.y, p), rel=1e-9)
    assert quality["brier", None, None].value == pytest.approx(brier_score_loss(batch.y, p), rel=1e-9)
    eu = (batch.region == "EU").to_numpy()
    assert quality["log_loss", "region", "EU"].value == pytest.approx(log_loss(batch.y[eu], p[eu]), rel=1e-9)
    # BH over every slice's accuracy test, as scipy computes it from the raw p-values
    from sparkscore.monitor.compute import _proportion_p

    keys = [k for k in quality if k[0] == "accuracy" and k[1] is not None]
    a, n = quality["accuracy", None, None].value, len(batch)
    raw = []
    for _, key, value in keys:
        if key == "age >= 60":
            mask = (batch.age >= 60).to_numpy() == (value == "true")
        elif key == "region":
            mask = (batch.region == value).to_numpy()
        else:
            region, plan = value.split(",")
            mask = ((batch.region == region) & (batch.plan == plan)).to_numpy()
        raw.append(_proportion_p(accuracy_score(batch.y[mask], p[mask] >= 0.5), int(mask.sum()), a, n))
    adjusted = false_discovery_control(raw, method="bh")
    assert [quality[k].p_value for k in keys] == pytest.approx(list(adjusted), rel=1e-9)
    assert any(r.is_anomaly for r in quality.values())
    drift_flagged = {r.feature for r in result.rows if r.is_anomaly and r.role != "quality"}
    assert set(result.drifted) == drift_flagged  # quality rows are reported, not counted as drift


def test_slices_against_the_stored_profile_give_quality_and_sketch_metrics_only(monitored, train):
    result = ss.monitor.drift("churn@prod", train.iloc[:1000], registry=monitored, labels="y", slices=["region"])
    sliced = [r for r in result.rows if r.slice_key]
    # no bucketed metric against the whole profile (the slicing column would flag); KS / W from the sketches
    assert sliced and all(r.role == "quality" or r.metric in ("ks", "wasserstein") for r in sliced)
    assert {r.slice_value for r in sliced} == {"EU", "US", "APAC"}
    assert not any(r.feature == "prediction" for r in sliced if r.role != "quality")  # depends on region: skipped
    assert not any(r.is_anomaly for r in sliced if r.metric == "ks")  # a sample of the training data itself


def test_regressor_quality_is_rmse_and_mae(registry, train):
    from sklearn.linear_model import LinearRegression

    X = train[["age", "score"]]
    registry.register("inc", LinearRegression().fit(X, train.income), training_data=train[["age", "score", "income"]],
                      training_labels="income")
    batch = frame(800, 9)
    result = ss.monitor.drift("inc", batch, registry=registry, labels="income", slices=["region"])
    pred = LinearRegression().fit(X, train.income).predict(batch[["age", "score"]])
    quality = {(r.metric, r.slice_value): r.value for r in result.rows if r.role == "quality"}
    assert quality["rmse", None] == pytest.approx(mean_squared_error(batch.income, pred) ** 0.5, rel=1e-9)
    assert quality["mae", None] == pytest.approx(mean_absolute_error(batch.income, pred), rel=1e-9)
    us = (batch.region == "US").to_numpy()
    assert quality["mae", "US"] == pytest.approx(mean_absolute_error(batch.income[us], pred[us]), rel=1e-9)


@pytest.mark.parametrize("spec", ["age >= 60, region", "(SELECT 1)", "age FROM secrets", " "])
def test_bad_slice_specs_fail_in_one_line(monitored, train, spec):
    with pytest.raises(SparkscoreError) as err:
        ss.monitor.drift("churn@prod", train.iloc[:100], registry=monitored, slices=[spec])
    assert "\n" not in str(err.value)
