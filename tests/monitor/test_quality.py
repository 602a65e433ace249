"""Quality per slice for classifiers: exact AUC (mid-rank sums in the one aggregate) and calibration
(reliability bins, expected calibration error), against sklearn and a hand example."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

import sparkscore as ss
from sparkscore.monitor.compute import ReliabilityBin, _quality_values, expected_calibration_error, reliability
from sparkscore.monitor.query import Quality, aggregate_query
from tests.monitor.conftest import frame

# p, y, slice: ties across labels (0.3 twice with y 0/1; 0.8 three times), a NULL label, a NULL score,
# a prediction exactly on a reliability edge (0.1 belongs to the first bin, as in sklearn)
HAND = [(0.1, 0, "a"), (0.3, 0, "a"), (0.3, 1, "a"), (0.8, 1, "a"), (0.8, 0, "b"), (0.8, 1, "b"),
        (0.95, 1, "b"), (0.2, None, "b"), (None, 1, "b")]


def _hand_quality(con) -> dict:
    con.execute("CREATE OR REPLACE TABLE hand (c0 DOUBLE, c1 INTEGER, s0 VARCHAR)")
    con.executemany("INSERT INTO hand VALUES (?, ?, ?)", HAND)
    query, names = aggregate_query(ss_table("hand"), [], [[0]], Quality("c0", "c1", "binary", 1))
    rows = [dict(zip(names, r)) for r in con.execute(query.sql("duckdb")).fetchall()]
    q = Quality("c0", "c1", "binary", 1)
    return {r["slice:0"] if not r["grouping:0"] else None: _quality_values(r, q, 0 if r["grouping:0"] else 1)
            for r in rows}


def ss_table(name: str):
    from sqlglot import exp

    return exp.Table(this=exp.to_identifier(name))


def test_auc_and_ece_of_a_hand_example_per_slice():
    quality = _hand_quality(duckdb.connect())
    valid = [(p, y, s) for p, y, s in HAND if p is not None and y is not None]
    for key in (None, "a", "b"):
        rows = [(p, y) for p, y, s in valid if key is None or s == key]
        p, y = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        assert quality[key]["n_scored"] == len(rows)
        if len(set(y)) == 2:
            assert quality[key]["auc"] == roc_auc_score(y, p)
    # whole batch, by hand: positives 0.3, 0.8, 0.8, 0.95 vs negatives 0.1, 0.3, 0.8:
    # pairs won (ties count 1/2): 0.3 -> 1.5, each 0.8 -> 2.5, 0.95 -> 3, of 4 x 3 pairs
    assert quality[None]["auc"] == pytest.approx((1.5 + 2.5 + 2.5 + 3) / 12, abs=0)
    # bins (0.1]: {0.1 y0} (0.2,0.3]: {0.3 y0, 0.3 y1} (0.7,0.8]: three 0.8 (y 1,0,1) (0.9,1]: {0.95 y1}
    # ECE = (1*|0.1-0| + 2*|0.3-0.5| + 3*|0.8-2/3| + 1*|0.95-1|) / 7
    assert quality[None]["ece"] == pytest.approx((0.1 + 0.4 + 3 * abs(0.8 - 2 / 3) + 0.05) / 7, rel=1e-12)
    assert quality["a"]["ece"] == pytest.approx((0.1 + 0.4 + 0.2) / 4, rel=1e-12)
    bins = reliability(quality[None])
    assert [b.count for b in bins] == [1, 0, 2, 0, 0, 0, 0, 3, 0, 1]
    assert bins[7].fraction_positive == pytest.approx(2 / 3) and bins[1].mean_predicted is None


def test_one_class_slice_has_no_auc_and_empty_bins_give_no_ece():
    assert expected_calibration_error([ReliabilityBin(0.0, 1.0, 0, None, None)]) is None
    con = duckdb.connect()
    con.execute("CREATE TABLE one (c0 DOUBLE, c1 INTEGER)")
    con.executemany("INSERT INTO one VALUES (?, ?)", [(0.2, 1), (0.7, 1)])
    query, names = aggregate_query(ss_table("one"), [], (), Quality("c0", "c1", "binary", 1))
    values = _quality_values(dict(zip(names, con.execute(query.sql("duckdb")).fetchone())), Quality("c0", "c1", "binary", 1), 0)
    assert values["auc"] is None and values["ece"] == pytest.approx((0.8 + 0.3) / 2)


@pytest.fixture(scope="module")
def scored_batch(monitored):
    batch = frame(2000, 7)
    batch["plan"] = np.where(batch.index % 3 == 0, "pro", "basic")
    # ties across labels: the same rows again with the label flipped (equal predictions, both classes)
    dup = batch.iloc[:300].copy()
    dup["y"] = 1 - dup["y"]
    batch = pd.concat([batch, dup], ignore_index=True)
    result = ss.monitor.drift("churn@prod", batch, registry=monitored, labels="y", slices=["region", "age >= 50"])
    p = monitored.load("churn@prod").predict_proba(batch.drop(columns=["y", "plan"]))[:, 1]
    return batch, p, result


def test_auc_per_slice_equals_sklearn_exactly(scored_batch):
    batch, p, result = scored_batch
    auc = {(r.slice_key, r.slice_value): r.value for r in result.rows if r.metric == "auc"}
    masks = {(None, None): np.ones(len(batch), bool),
             **{("region", v): (batch.region == v).to_numpy() for v in batch.region.unique()},
             ("age >= 50", "true"): (batch.age >= 50).to_numpy(), ("age >= 50", "false"): (batch.age < 50).to_numpy()}
    assert set(auc) == set(masks)
    for key, mask in masks.items():
        assert auc[key] == pytest.approx(roc_auc_score(batch.y[mask], p[mask]), rel=1e-12, abs=1e-15), key


def test_reliability_bins_equal_sklearn_calibration_curve(scored_batch, monitored):
    batch, p, result = scored_batch
    ece = {(r.slice_key, r.slice_value): r.value for r in result.rows if r.metric == "ece"}
    prob_true, prob_pred = calibration_curve(batch.y, p, n_bins=10, strategy="uniform")
    bins = [b for b in reliability(result.quality[None]) if b.count]
    assert [b.fraction_positive for b in bins] == pytest.approx(list(prob_true), rel=1e-12)
    assert [b.mean_predicted for b in bins] == pytest.approx(list(prob_pred), rel=1e-12)
    ids = np.searchsorted(np.linspace(0, 1, 11)[1:-1], p)
    by_hand = sum(abs(p[ids == b].mean() - batch.y[ids == b].mean()) * (ids == b).sum()
                  for b in range(10) if (ids == b).any()) / len(p)
    assert ece[None, None] == pytest.approx(by_hand, rel=1e-12)
