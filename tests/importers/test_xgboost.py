"""XGBoost importer: file formats, pandas categories, unsupported options, random-row property."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hypothesis import given, settings

import sparkscore as ss
from sparkscore.errors import IntegrityError, UnsupportedModelError
from sparkscore.importers import xgboost as xgb_importer
from tests.importers.test_lightgbm import _assert_same_ir, _rows_strategy
from tests.zoo import gbm_cases
from tests.zoo.adversarial import adversarial_matrix


def _case(case_id: str):
    return next(c for c in gbm_cases.CASES if c.id == case_id).fitted()


@pytest.mark.parametrize("case_id", ["xgboost-booster-regression", "xgboost-multiclass", "xgboost-categorical"])
@pytest.mark.parametrize("suffix", ["json", "ubj"])
def test_load_file_round_trips_exactly(case_id, suffix, tmp_path):
    fitted = _case(case_id)
    path = tmp_path / f"model.{suffix}"
    fitted.native.save_model(path)
    loaded = xgb_importer.load_file(path)
    _assert_same_ir(loaded, fitted.model)
    np.testing.assert_array_equal(loaded.scores(fitted.X, backend="numpy"),
                                  fitted.model.scores(fitted.X, backend="numpy"))


def test_pandas_categories_travel_in_the_signature():
    rng = np.random.default_rng(21)
    cats = ["basic", "plus", "pro", "team"]
    codes = rng.integers(0, len(cats), 300)
    frame = pd.DataFrame({"plan": pd.Categorical.from_codes(codes, cats), "usage": rng.normal(size=300)})
    y = (np.isin(codes, [1, 3]) + frame["usage"] > 0.8).astype(int)
    native = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, enable_categorical=True,
                               max_cat_to_onehot=1).fit(frame, y)
    model = ss.convert(native)
    assert model.signature.inputs[0].categories == tuple(cats)
    assert model.estimator.is_categorical.any()
    rows = pd.DataFrame({"plan": pd.Categorical(["pro", None, "basic", "team", "plus"], categories=cats),
                         "usage": [0.1, 0.5, np.nan, -1.0, 2.0]})
    np.testing.assert_allclose(model.predict_proba(rows, backend="numpy"), native.predict_proba(rows),
                               rtol=1e-6, atol=1e-6)
    strings = rows.assign(plan=rows["plan"].astype(object))
    np.testing.assert_array_equal(model.predict(strings, backend="numpy"), native.predict(rows))


@pytest.mark.parametrize("params, match", [
    (dict(objective="rank:pairwise"), "objective 'rank:pairwise'"),
    (dict(objective="binary:logitraw"), "objective 'binary:logitraw'"),
    (dict(objective="reg:squarederror", booster="dart"), "booster 'dart'"),
    (dict(objective="multi:softprob", num_class=3, multi_strategy="multi_output_tree"), "vector-leaf"),
])
def test_unsupported_models_raise(params, match):
    X, signal, _ = gbm_cases._data(seed=22)
    y = np.digitize(signal, [-0.5, 0.5]) if "num_class" in params else (signal > 0).astype(int)
    dtrain = xgb.DMatrix(X, y, group=[100] * 4 if params["objective"].startswith("rank") else None)
    booster = xgb.train(dict(params, max_depth=2, nthread=1, tree_method="hist"), dtrain, num_boost_round=2)
    with pytest.raises(UnsupportedModelError, match=match):
        ss.convert(booster)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.json"
    path.write_text("{not json")
    with pytest.raises(IntegrityError, match="not an XGBoost model file"):
        xgb_importer.load_file(path)


@pytest.mark.parametrize("case_id", ["xgboost-multiclass", "xgboost-categorical", "xgboost-booster-regression"])
def test_random_rows_match_native(case_id):
    fitted = _case(case_id)
    booster = getattr(fitted.native, "get_booster", lambda: fitted.native)()
    types = ["c", "q"] if case_id == "xgboost-categorical" else None
    n_trees = fitted.model.estimator.n_trees // max(1, fitted.model.n_classes)

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(_rows_strategy(fitted.model))
    def check(rows):
        X = np.asarray(rows, dtype=np.float64)
        dmatrix = xgb.DMatrix(X, feature_names=list(fitted.model.signature.names), feature_types=types,
                              enable_categorical=types is not None)
        expected = booster.predict(dmatrix, iteration_range=(0, n_trees))
        actual = fitted.model.scores(X, backend="numpy").reshape(expected.shape)
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)

    check()


@pytest.mark.parametrize("params", [
    dict(objective="reg:logistic"), dict(objective="reg:gamma"), dict(objective="reg:tweedie"),
    dict(objective="reg:pseudohubererror"), dict(objective="multi:softmax", num_class=3),
    dict(objective="binary:logistic", num_parallel_tree=3, subsample=0.7),
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_objectives_match_native_booster(params):
    X, signal, _ = gbm_cases._data(seed=23)
    y = {"reg:logistic": (signal > 0) * 1.0, "reg:gamma": np.exp(0.3 * signal), "reg:tweedie": np.exp(0.3 * signal),
         "multi:softmax": np.digitize(signal, [-0.5, 0.5]), "binary:logistic": (signal > 0) * 1}.get(
        params["objective"], signal)
    booster = xgb.train(dict(params, max_depth=3, nthread=1, tree_method="hist"), xgb.DMatrix(X, y),
                        num_boost_round=6)
    model = ss.convert(booster)
    rows = adversarial_matrix(model, X, allow_inf=False)
    expected = booster.predict(xgb.DMatrix(rows))
    if params["objective"] == "multi:softmax":
        np.testing.assert_array_equal(model.predict(rows, backend="numpy"), expected)
    else:
        np.testing.assert_allclose(model.scores(rows, backend="numpy")[:, 0], expected, rtol=1e-6, atol=1e-6)
