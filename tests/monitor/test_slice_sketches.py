"""KS and Wasserstein per slice and per window: per-slice KLL sketches in the same sketch stream,
compared with the reference batch's same slice (exact = scipy while small) or with the training
profile's whole distribution (within the sketch bound); bounded, with the reason in the output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

import sparkscore as ss
from sparkscore.monitor import sketch
from sparkscore.monitor.sketch import SketchState, group_codes
from tests.monitor.conftest import frame
from tests.monitor.test_windows import log  # noqa: F401 - the three-day prediction log fixture

SLICES = ["region", "region,plan", "age >= 60"]


@pytest.fixture(scope="module")
def batches():
    batch, reference = frame(3000, 13), frame(2500, 14)
    for data in (batch, reference):
        data["plan"] = np.where(data.index % 2 == 0, "pro", "basic")
    batch.loc[batch.region == "EU", "income"] *= 1.5  # drift only inside the EU slice
    return batch, reference


def _mask(df, key, value):
    if key == "region":
        return (df.region == value).to_numpy()
    if key == "region,plan":
        region, plan = value.split(",")
        return ((df.region == region) & (df.plan == plan)).to_numpy()
    return (df.age >= 60).to_numpy() == (value == "true")


def test_per_slice_ks_and_wasserstein_equal_scipy_against_the_reference_batch(monitored, batches):
    batch, reference = batches
    result = ss.monitor.drift("churn@prod", batch, reference=reference, registry=monitored, slices=SLICES)
    rows = {(r.feature, r.metric, r.slice_key, r.slice_value): r for r in result.rows if r.slice_key}
    checked = 0
    for (feature, metric, key, value), row in rows.items():
        if metric not in ("ks", "wasserstein") or feature not in ("age", "income", "score"):
            continue
        a, b = reference[feature][_mask(reference, key, value)], batch[feature][_mask(batch, key, value)]
        assert row.method == "exact" and row.error_bound == 0.0
        if metric == "ks":
            assert row.value == pytest.approx(ks_2samp(a, b).statistic, rel=1e-12, abs=1e-15), (feature, key, value)
        else:
            expected = wasserstein_distance(a, b) / np.std(a.to_numpy())  # normed by the reference's population std
            assert row.value == pytest.approx(expected, rel=1e-9), (feature, key, value)
        checked += 1
    assert checked == 2 * 3 * (3 + 6 + 2)  # 2 metrics x 3 numeric inputs x 11 slices
    assert rows["income", "ks", "region", "EU"].is_anomaly and not rows["income", "ks", "region", "US"].is_anomaly
    assert rows["prediction", "ks", "region", "EU"].n_cur == int((batch.region == "EU").sum())


def test_against_the_training_profile_slices_use_its_whole_sketch_within_the_bound(monitored, batches, train):
    batch, _ = batches
    result = ss.monitor.drift("churn@prod", batch, registry=monitored, slices=["region", "age >= 60"])
    rows = {(r.feature, r.metric, r.slice_key, r.slice_value): r for r in result.rows if r.slice_key}
    assert not any(m in ("psi", "jensen_shannon") for _, m, _, _ in rows)  # bucketed: only against a sliced batch
    # differ by construction, skipped: the slicing column, and the prediction (it reads that column)
    assert not any(f in ("age", "prediction") and k == "age >= 60" for f, _, k, _ in rows)
    assert not any(f == "prediction" for f, _, _, _ in rows)  # region is a model input too
    assert ("age", "ks", "region", "EU") in rows
    for (feature, metric, key, value), row in rows.items():
        if metric != "ks" or feature == "prediction":
            continue
        d = ks_2samp(train[feature], batch[feature][_mask(batch, key, value)]).statistic
        assert row.method == "sketch" and abs(row.value - d) <= row.error_bound, (feature, key, value)
    assert rows["income", "ks", "region", "EU"].is_anomaly


def test_slice_sketches_are_bounded_and_say_why_when_dropped(monitored, batches, monkeypatch):
    batch, reference = batches
    monkeypatch.setattr(sketch, "MAX_SLICE_SKETCHES", 2)
    result = ss.monitor.drift("churn@prod", batch, reference=reference, registry=monitored,
                              slices=["region", "age >= 60"])
    skipped = [r for r in result.rows if r.method.startswith("skipped")]
    assert [(r.slice_key, r.feature, r.value, r.is_anomaly) for r in skipped] == [("region", "*", None, False)]
    assert "3 slice values > 2" in skipped[0].method
    ks = {(r.slice_key, r.slice_value) for r in result.rows if r.metric == "ks" and r.slice_key and r.value is not None}
    assert ks == {("age >= 60", "true"), ("age >= 60", "false")}
    assert any(r.metric == "psi" and r.slice_key == "region" for r in result.rows)  # bucketed metrics still there


def test_state_merges_per_slice_and_round_trips_as_json():
    table = pa.table({"x": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0], "k": ["a", "b", "a", None, "b", "a"],
                      "f": [True, False, True, True, None, False]})
    codes, texts = group_codes([table.column("k"), table.column("f")])
    assert [texts[c] for c in codes] == ["a,true", "b,false", "a,true", "NULL,true", "b,NULL", "a,false"]
    parts = [SketchState(("numeric",), groups=((0,), (0, 1))) for _ in range(2)]
    parts[0].update(pa.record_batch([table.column("x").chunk(0).slice(0, 3), table.column("k").chunk(0).slice(0, 3),
                                     table.column("f").chunk(0).slice(0, 3)], names=["x", "k", "f"]))
    parts[1].update(pa.record_batch([table.column("x").chunk(0).slice(3), table.column("k").chunk(0).slice(3),
                                     table.column("f").chunk(0).slice(3)], names=["x", "k", "f"]))
    merged = SketchState.from_bytes(parts[0].to_bytes()).merge(SketchState.from_bytes(parts[1].to_bytes()))
    assert sorted(merged.slice_raw(0, "a", 0)) == [1.0, 6.0] and sorted(merged.slice_raw(0, "b", 0)) == [2.0, 5.0]
    assert merged.slice_sketch(0, "NULL", 0).n == 1 and merged.slice_raw(1, "a,true", 0).tolist() == [1.0]


def test_per_window_ks_flags_the_shifted_day(log, monitored):  # noqa: F811 - the imported fixture
    result = ss.monitor.track("churn@prod", str(log / "log"), "1d", registry=monitored)
    ks = [{r.feature: r for r in w.rows if r.metric == "ks"} for w in result.windows]
    assert all({"age", "income", "score", "prediction"} <= set(k) for k in ks)
    assert [k["age"].is_anomaly for k in ks] == [False, True, False]
    assert all(k["age"].n_cur == 600 and k["age"].error_bound is not None for k in ks)
    previous = ss.monitor.track("churn@prod", str(log / "log"), "1d", reference="previous", registry=monitored)
    assert [any(r.metric == "wasserstein" and r.feature == "age" and r.is_anomaly for r in w.rows)
            for w in previous.windows] == [False, True, True]


def test_windows_beyond_the_sketch_bound_say_so(log, monitored, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sketch, "MAX_SLICE_SKETCHES", 2)  # three daily windows
    result = ss.monitor.track("churn@prod", str(log / "log"), "1d", registry=monitored)
    for w in result.windows:
        assert not any(r.metric in ("ks", "wasserstein") and r.value is not None for r in w.rows)
        assert [r.method for r in w.rows if r.method.startswith("skipped")] == ["skipped: 3 slice values > 2 "
                                                                                "(sketches per slice are bounded)"]
        assert any(r.metric == "psi" for r in w.rows)  # the bucketed metrics per window stay
