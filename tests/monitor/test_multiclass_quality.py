"""Multiclass quality in the one grouped scan: one-vs-rest macro AUC (= sklearn's, ties included) and
the top-label calibration error (= a numpy reference), per slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import sparkscore as ss
from sparkscore.engines import monitoring

CLASSES = ["bronze", "gold", "silver"]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x1": rng.normal(0, 1, n), "x2": rng.normal(0, 1, n), "region": rng.choice(["EU", "US"], n)})
    score = df.x1 + 0.5 * df.x2 + rng.normal(0, 0.8, n)
    df["tier"] = np.where(score < -0.5, "bronze", np.where(score < 0.6, "silver", "gold"))
    return df


def top_label_ece(proba: np.ndarray, predicted: np.ndarray, y: np.ndarray) -> float:
    """Reference: confidence = max class probability, bins (0, .1], ..., (.9, 1] ([0, .1] first), |conf - acc| weighted."""
    conf = proba.max(axis=1)
    ids = np.searchsorted(np.linspace(0, 1, 11)[1:-1], conf)  # index = number of edges strictly below
    correct = (predicted == y).astype(float)
    return float(sum(abs(conf[ids == b].mean() - correct[ids == b].mean()) * (ids == b).sum()
                     for b in range(10) if (ids == b).any()) / len(conf))


@pytest.fixture(scope="module")
def multiclass():
    from sklearn.linear_model import LogisticRegression

    train = frame(2000, 0)
    native = LogisticRegression(max_iter=500).fit(train[["x1", "x2"]], train.tier)
    assert list(native.classes_) == CLASSES
    model = ss.convert(native)
    batch = frame(1500, 1)
    # ties across labels: the same rows again with another label (equal probabilities, different classes)
    dup = batch.iloc[:200].copy()
    dup["tier"] = np.roll(dup.tier.to_numpy(), 1)
    batch = pd.concat([batch, dup], ignore_index=True)
    batch.loc[batch.index % 97 == 0, "tier"] = None  # unlabelled rows: not scored for quality
    queries = []
    original = monitoring.DuckDBRunner.aggregate

    def counting(self, query):
        queries.append(query)
        return original(self, query)

    monitoring.DuckDBRunner.aggregate = counting
    try:
        result = ss.monitor.drift(model, batch, reference=train, labels="tier", slices=["region", "x1 >= 1"])
    finally:
        monitoring.DuckDBRunner.aggregate = original
    return model, batch, result, queries


def _masks(batch):
    labelled = batch.tier.notna().to_numpy()
    yield (None, None), labelled
    for v in ("EU", "US"):
        yield ("region", v), labelled & (batch.region == v).to_numpy()
    for v, m in (("true", batch.x1 >= 1), ("false", batch.x1 < 1)):
        yield ("x1 >= 1", v), labelled & m.to_numpy()


def test_ovr_macro_auc_equals_sklearn_per_slice(multiclass):
    model, batch, result, queries = multiclass
    assert len(queries) == 2 and all("GROUPING SETS" in q.sql("duckdb") for q in queries)  # one scan per side
    proba = model.predict_proba(batch[["x1", "x2"]])
    auc = {(r.slice_key, r.slice_value): r.value for r in result.rows if r.metric == "auc"}
    checked = 0
    for key, mask in _masks(batch):
        expected = roc_auc_score(batch.tier[mask], proba[mask], multi_class="ovr", average="macro", labels=CLASSES)
        assert auc[key] == pytest.approx(expected, rel=1e-12, abs=1e-12), key
        checked += 1
    assert checked == 5


def test_top_label_ece_equals_the_numpy_reference_per_slice(multiclass):
    model, batch, result, _ = multiclass
    X = batch[["x1", "x2"]]
    proba, predicted = model.predict_proba(X), model.predict(X)
    ece = {(r.slice_key, r.slice_value): r.value for r in result.rows if r.metric == "ece"}
    for key, mask in _masks(batch):
        expected = top_label_ece(proba[mask], predicted[mask], batch.tier.to_numpy()[mask])
        assert ece[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key


def test_a_slice_missing_a_class_has_no_auc_but_keeps_its_ece(multiclass):
    model, _, _, _ = multiclass
    batch = frame(600, 2)
    batch["group"] = np.where(batch.tier == "gold", "g", np.where(batch.index % 2 == 0, "a", "b"))
    result = ss.monitor.drift(model, batch, reference=batch, labels="tier", slices=["group"])
    auc = {r.slice_value: r.value for r in result.rows if r.metric == "auc"}
    ece = {r.slice_value: r.value for r in result.rows if r.metric == "ece"}
    assert auc["g"] is None and auc["a"] is None and auc[None] is not None  # sklearn refuses one-class problems
    assert ece["g"] is not None and 0 <= ece["g"] <= 1
