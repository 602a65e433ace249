"""A/B readout (``sparkscore ab``): metrics and intervals checked against scikit-learn and scipy,
the SRM chi-square against ``scipy.stats.chisquare``, and the CLI's exit statuses."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from sparkscore import Model
from sparkscore.cli import app
from sparkscore.ir import LinearModel, Signature
from sparkscore.monitor import abtest
from tests.engines.test_batch import churn_model
from tests.monitor.test_predlog_read import T0, write_feedback, write_log

scipy_stats = pytest.importorskip("scipy.stats")
metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture
def clf_ab(registry, tmp_path):
    """prod (churn v1, 900 rows) and challenger (churn v2, 100 rows), labels for all but 50 rows."""
    registry.register("churn", churn_model(0.8))
    registry.register("churn", churn_model(-0.3))
    log, fb = tmp_path / "log", tmp_path / "fb"
    rng = np.random.default_rng(5)
    truth = {}
    for arm, version, n, seed in (("prod", 1, 900, 1), ("challenger", 2, 100, 2)):
        model = registry.load(f"churn/{version}")
        table = write_log(log, model, n, ts=[T0] * n, arms=[arm] * n, seed=seed, version=version)
        labels = (rng.random(n) < 0.6).astype(np.int64)
        ids = table.column("request_id").to_pylist()
        keep = slice(0, n - 25)
        write_feedback(fb, ids[keep], labels[keep].tolist())
        truth[arm] = (labels[keep], np.stack(table.column("proba").to_numpy(zero_copy_only=False)[keep]))
    write_log(log, registry.load("churn/1"), 30, ts=[T0] * 30, arms=["candidate"] * 30, seed=9,
              shadow=[True] * 30)  # shadow rows never count
    return registry, str(log), str(fb), truth


def test_accuracy_and_logloss_match_sklearn_and_scipy(clf_ab):
    registry, log, fb, truth = clf_ab
    expected = {"prod": 90.0, "challenger": 10.0}
    acc = abtest.readout(log, fb, metric="accuracy", expected=expected, registry=registry)
    assert acc.control == "prod" and [a.arm for a in acc.arms] == ["prod", "challenger"]
    for arm in acc.arms:
        y, proba = truth[arm.arm]
        assert arm.rows == len(y) + 25 and arm.labelled == len(y)
        value = metrics.accuracy_score(y, proba.argmax(axis=1))
        assert arm.value == pytest.approx(value, abs=1e-12)
        ci = scipy_stats.binomtest(int(round(value * len(y))), len(y)).proportion_ci(0.95, method="wilson")
        assert (arm.ci_low, arm.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    p0, p1 = acc.arms[0].value, acc.arms[1].value
    n0, n1 = acc.arms[0].labelled, acc.arms[1].labelled
    se = np.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
    ch = acc.arms[1]
    assert ch.lift == pytest.approx(p1 - p0, abs=1e-12)
    assert (ch.lift_ci_low, ch.lift_ci_high) == pytest.approx(scipy_stats.norm.interval(0.95, p1 - p0, se), abs=1e-12)
    assert ch.lift_p_value == pytest.approx(2 * scipy_stats.norm.sf(abs(p1 - p0) / se), abs=1e-9)
    assert ch.relative_lift == pytest.approx((p1 - p0) / p0, abs=1e-12)
    chi = scipy_stats.chisquare([900, 100], [900, 100])
    assert acc.srm.p_value == pytest.approx(chi.pvalue) and not acc.srm.alert

    ll = abtest.readout(log, fb, metric="logloss", expected=expected, registry=registry)
    for arm in ll.arms:
        y, proba = truth[arm.arm]
        per_row = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1))
        assert arm.value == pytest.approx(metrics.log_loss(y, proba, labels=[0, 1]), abs=1e-12)
        lo, hi = scipy_stats.norm.interval(0.95, per_row.mean(), scipy_stats.sem(per_row))
        assert (arm.ci_low, arm.ci_high) == pytest.approx((lo, hi), abs=1e-12)
    assert ll.arms[1].better == (ll.arms[1].lift < 0)


def test_srm_alerts_on_a_skewed_split(clf_ab):
    registry, log, fb, _ = clf_ab
    report = abtest.readout(log, fb, expected={"prod": 50, "challenger": 50}, registry=registry)
    chi = scipy_stats.chisquare([900, 100], [500, 500])
    assert report.srm.chi2 == pytest.approx(chi.statistic) and report.srm.p_value == pytest.approx(chi.pvalue, rel=1e-9)
    assert report.srm.alert and report.srm.dof == 1


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("x", [0.0, 0.3, 2.0, 11.5, 40.0, 400.0])
def test_chi2_survival_matches_scipy(dof, x):
    assert abtest.chi2_sf(x, dof) == pytest.approx(scipy_stats.chi2.sf(x, dof), rel=1e-10, abs=1e-300)


def test_regression_rmse_and_mae(registry, tmp_path):
    model = Model(LinearModel(np.array([1.0, 2.0]), [0.5], "identity"), Signature.from_names(["age", "spend"]))
    registry.register("price", model)
    rng = np.random.default_rng(3)
    truth = {}
    for arm, n, seed in (("a", 300, 1), ("b", 200, 2)):
        table = write_log(tmp_path / "log", model, n, ts=[T0 + timedelta(minutes=i) for i in range(n)],
                          arms=[arm] * n, seed=seed, prediction=rng.normal(size=n), proba=None)
        y = table.column("prediction").to_numpy() + rng.normal(scale=1 + seed, size=n)
        write_feedback(tmp_path / "fb", table.column("request_id").to_pylist(), y.tolist())
        truth[arm] = (y, table.column("prediction").to_numpy())
    for metric in ("rmse", "mae"):
        report = abtest.readout(str(tmp_path / "log"), str(tmp_path / "fb"), metric=metric, control="a",
                                registry=registry)
        assert report.srm is None and report.control == "a"
        for arm in report.arms:
            y, pred = truth[arm.arm]
            if metric == "rmse":
                ref = np.sqrt(metrics.mean_squared_error(y, pred))
                sq = (pred - y) ** 2
                lo, hi = scipy_stats.norm.interval(0.95, sq.mean(), scipy_stats.sem(sq))
                assert (arm.ci_low, arm.ci_high) == pytest.approx((np.sqrt(max(lo, 0)), np.sqrt(hi)), abs=1e-9)
            else:
                ref = metrics.mean_absolute_error(y, pred)
            assert arm.value == pytest.approx(ref, abs=1e-9)
    with pytest.raises(abtest.PredictionLogError, match="needs a classifier"):
        abtest.readout(str(tmp_path / "log"), str(tmp_path / "fb"), metric="accuracy", registry=registry)


def test_string_labels_match_classes_and_unknown_labels_count_as_wrong(registry, tmp_path):
    model = Model(LinearModel(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [0.0, 0.0, 0.0], "softmax"),
                  Signature.from_names(["age", "spend"]), task="classification", classes=("a", "b", "c"))
    registry.register("tri", model)
    inputs = pa.table({"age": [5.0, 0.0, -5.0, 5.0], "spend": [0.0, 5.0, -5.0, 0.0]})
    proba = model.predict_proba(inputs.to_pandas())
    table = write_log(tmp_path / "log", model, 4, ts=[T0] * 4, arms=["x", "x", "y", "y"], inputs=inputs, name="tri",
                      prediction=model.predict(inputs.to_pandas()), proba=proba)
    write_feedback(tmp_path / "fb", table.column("request_id").to_pylist(), ["a", "c", "c", "zzz"])
    report = abtest.readout(str(tmp_path / "log"), str(tmp_path / "fb"), metric="accuracy",
                            expected={"x": 1, "y": 1}, registry=registry)
    assert [(a.arm, a.value) for a in report.arms] == [("x", 0.5), ("y", 0.5)]


def test_cli_ab_json_and_fail_on_srm(clf_ab, runner):
    registry, log, fb, _ = clf_ab
    base = ["--registry", str(registry.root), "ab", log, "--feedback", fb]
    ok = runner.invoke(app, [*base, "--expected", "prod=90,challenger=10", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["control"] == "prod" and [a["arm"] for a in doc["arms"]] == ["prod", "challenger"]
    assert doc["srm"]["alert"] is False and "Wilson" in doc["method"]
    table = runner.invoke(app, [*base, "--expected", "prod=90,challenger=10", "--metric", "logloss"])
    assert table.exit_code == 0 and "challenger" in table.stdout and "SRM" in table.stdout
    skew = [*base, "--expected", "prod=50,challenger=50"]
    warned = runner.invoke(app, skew)
    assert warned.exit_code == 0 and "sample-ratio mismatch" in warned.stderr
    failed = runner.invoke(app, [*skew, "--fail-on-srm"])
    assert failed.exit_code == abtest.EXIT_SRM == 3
    bad = runner.invoke(app, [*base, "--expected", "prod=90"])
    assert bad.exit_code == 1 and "needs two or more" in bad.stderr
    route = runner.invoke(app, [*base, "--route", "churn@ab"])
    assert route.exit_code == 1 and "--expected" in route.stderr
