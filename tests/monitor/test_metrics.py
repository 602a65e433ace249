"""Metric values equal scipy's on the exact path; sketches, profiles and thresholds behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, chisquare, ks_2samp, wasserstein_distance

import sparkscore as ss
from sparkscore.errors import IntegrityError, SparkscoreError
from sparkscore.monitor import metrics as M
from sparkscore.monitor.profile import kll_sketch
from tests.monitor.conftest import frame


def _rows(result):
    return {(r.feature, r.metric): r for r in result.rows}


def _hist(values: np.ndarray, edges) -> np.ndarray:
    """Independent bucketing: bins [e_i, e_i+1) with open ends, then the missing bucket."""
    finite = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(np.asarray(edges), finite, side="right"), minlength=len(edges) + 1)
    return np.append(counts, np.isnan(values).sum()).astype(float)


def test_exact_path_values_equal_scipy(monitored):
    ref, cur = frame(600, 11), frame(500, 12)
    cur["age"] += 3.0
    cur.loc[:40, "region"] = "US"
    result = ss.monitor.drift("churn@prod", cur, reference=ref, registry=monitored)
    rows = _rows(result)
    ref_profile = result.reference_profile
    assert ref_profile.column("age").edges == ss.monitor.profile("churn@prod", ref, registry=monitored).column("age").edges
    for feature in ("age", "income", "score"):
        a, b = ref[feature].to_numpy(), cur[feature].to_numpy()
        ks = ks_2samp(a, b)
        assert rows[feature, "ks"].method == "exact"
        assert rows[feature, "ks"].value == pytest.approx(ks.statistic, rel=1e-12)
        assert rows[feature, "ks"].p_value == pytest.approx(ks.pvalue, rel=1e-9)
        assert rows[feature, "wasserstein"].value == pytest.approx(wasserstein_distance(a, b) / a.std(), rel=1e-9)
        edges = ref_profile.column(feature).edges
        r, c = _hist(a, edges), _hist(b, edges)
        assert rows[feature, "jensen_shannon"].value == pytest.approx(jensenshannon(r / r.sum(), c / c.sum()), rel=1e-9)
        rs, cs = np.maximum(r / r.sum(), 1e-4), np.maximum(c / c.sum(), 1e-4)
        assert rows[feature, "psi"].value == pytest.approx(float(np.sum((cs - rs) * np.log(cs / rs))), rel=1e-9)
    cats = [v for v, _ in ref_profile.column("region").categories]
    table = np.array([[(ref.region == v).sum() for v in cats], [(cur.region == v).sum() for v in cats]])
    stat, p, dof, expected = chi2_contingency(table, correction=False)
    assert rows["region", "chi_square"].value == pytest.approx(stat, rel=1e-9)
    assert rows["region", "chi_square"].p_value == pytest.approx(p, rel=1e-9)
    # the same statistic as scipy's chisquare on the flattened table with the homogeneity expectation
    assert chisquare(table.ravel(), expected.ravel(), ddof=table.size - 1 - dof).statistic == pytest.approx(stat)
    shares = table / table.sum(axis=1, keepdims=True)
    assert rows["region", "l_infinity"].value == pytest.approx(np.abs(shares[0] - shares[1]).max(), rel=1e-12)
    assert rows["age", "ks"].is_anomaly and not rows["score", "ks"].is_anomaly


def test_sketch_ks_and_wasserstein_are_exact_while_the_sketches_hold_every_value():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=150), rng.normal(0.3, 1.2, size=120)
    sa, sb = kll_sketch(200), kll_sketch(200)
    sa.update(a)
    sb.update(b)
    assert M.ks_sketch(sa, sb, 0.0).value == pytest.approx(ks_2samp(a, b).statistic, rel=1e-12)
    assert M.wasserstein_sketch(sa, sb, 1.0, 0.0).value == pytest.approx(wasserstein_distance(a, b), rel=1e-9)
    big_a, big_b = rng.normal(size=50_000), rng.normal(0.05, 1, size=50_000)
    ba, bb = kll_sketch(200), kll_sketch(200)
    ba.update(big_a)
    bb.update(big_b)
    eps = ba.normalized_rank_error(False) + bb.normalized_rank_error(False)
    estimate = M.ks_sketch(ba, bb, eps)
    assert abs(estimate.value - ks_2samp(big_a, big_b).statistic) <= estimate.error_bound
    assert estimate.method == "sketch" and 0 < estimate.error_bound < 0.03


def test_profile_of_two_halves_merges_into_the_profile_of_the_whole(monitored, train):
    reference = monitored.profile("churn")
    whole = ss.monitor.profile("churn", train, registry=monitored, labels="y")
    from sparkscore.monitor.api import _batch

    halves = [_batch("churn", part, None, monitored, None, reference=reference, labels="y")[0].profile
              for part in (train.iloc[:1500], train.iloc[1500:])]
    merged = halves[0].merge(halves[1])
    for col, ref_col in zip(merged.columns, reference.columns):
        assert (col.count, col.nulls, col.hist, col.categories, col.other) == \
               (ref_col.count, ref_col.nulls, ref_col.hist, ref_col.categories, ref_col.other)
        if col.kind == "numeric":
            assert col.mean == pytest.approx(ref_col.mean, rel=1e-12) and col.std == pytest.approx(ref_col.std, rel=1e-9)
            assert (col.min, col.max) == (ref_col.min, ref_col.max) and col.sketch.n == ref_col.sketch.n
    assert whole.rows == reference.rows == 4000
    assert [c.edges for c in whole.columns] == [c.edges for c in reference.columns]


def test_stored_profile_round_trips_and_is_covered_by_the_version_record(monitored, tmp_path):
    stored = monitored.profile("churn@prod")
    assert stored.source == "training" and stored.model["sha256"] == monitored.get("churn").sha256
    assert [(c.name, c.role) for c in stored.columns] == [("age", "input"), ("income", "input"), ("score", "input"),
                                                          ("region", "input"), ("prediction", "output"), ("y", "label")]
    age = stored.column("age")
    assert len(age.edges) == 9 and sum(age.hist) == 4000 and 0 < age.rank_error < 0.02
    assert stored.column("region").categories[0][0] == "EU"
    copy = tmp_path / "p.json"
    stored.save(copy)
    assert ss.monitor.Profile.load(copy) == stored
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(copy.read_bytes().replace(b'"rows": 4000', b'"rows": 4001'))
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        ss.monitor.Profile.load(damaged, sha256=monitored.describe("churn")["profile"]["sha256"])


def test_thresholds_per_feature_from_conf(tmp_path):
    conf = tmp_path / "monitor.toml"
    conf.write_text("[monitor.thresholds]\npsi = 0.2\n\n[monitor.features.age]\nks = 0.01\n")
    t = ss.monitor.Thresholds.from_file(conf)
    assert t.of("age", "psi") == 0.2 and t.of("age", "ks") == 0.01 and t.of("income", "ks") == 0.05
    assert t.of("x", "jensen_shannon") == 0.1 and t.of("x", "l_infinity") == 0.3
    conf.write_text("[monitor.thresholds]\npsy = 0.2\n")
    with pytest.raises(SparkscoreError, match="unknown drift metric 'psy'"):
        ss.monitor.Thresholds.from_file(conf)


def test_registration_records_why_a_profile_was_skipped_and_a_tampered_profile_fails(registry, train):
    from tests.registry.models import tiny_model

    skipped = registry.register("t", tiny_model(), training_data=train)  # inputs age, income: profiled
    assert registry.describe(skipped.ref)["profile"]["rows"] == len(train)
    other = registry.register("u", tiny_model(names=("a", "b")), training_data=train)
    assert "no column 'a'" in registry.describe(other.ref)["profile"]["skipped"]
    with pytest.raises(SparkscoreError, match="has no training profile.*no column 'a'"):
        registry.profile(other.ref)
    with pytest.raises(SparkscoreError, match="no column 'a'"):
        registry.register("v", tiny_model(names=("a", "b")), training_data=train, profile=True)
    path = registry.model_path("t", 1) / "profile.json"
    path.write_bytes(path.read_bytes().replace(b'"rows": 4000', b'"rows": 4001'))
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        registry.profile("t")
