"""LightGBM importer: file formats, best iteration, unsupported options, random-row property."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparkscore as ss
from sparkscore.errors import IntegrityError, SignatureError, UnsupportedModelError
from sparkscore.importers import lightgbm as lgb_importer
from tests.zoo import gbm_cases
from tests.zoo.adversarial import adversarial_matrix

_PARAMS = dict(num_leaves=8, min_data_in_leaf=10, num_threads=1, verbose=-1)
_IR_ARRAYS = ("feature", "threshold", "left", "right", "default_left", "missing", "is_categorical", "cat_words",
              "value", "tree_output", "base_score")


def _assert_same_ir(a, b) -> None:
    for name in _IR_ARRAYS:
        np.testing.assert_array_equal(getattr(a.estimator, name), getattr(b.estimator, name), err_msg=name)
    assert a.estimator.post_transform == b.estimator.post_transform
    assert a.signature.names == b.signature.names
    assert [c.categories for c in a.signature.inputs] == [c.categories for c in b.signature.inputs]


@pytest.mark.parametrize("case_id", ["lightgbm-binary", "lightgbm-categorical", "lightgbm-pandas-categorical",
                                     "lightgbm-multiclassova", "lightgbm-zero-as-missing"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_load_file_round_trips_exactly(case_id, fmt, tmp_path):
    case = next(c for c in gbm_cases.CASES if c.id == case_id)
    fitted = case.fitted()
    booster = getattr(fitted.native, "booster_", fitted.native)
    path = tmp_path / f"model.{fmt}"
    if fmt == "text":
        booster.save_model(path)
    else:
        path.write_text(json.dumps(booster.dump_model()))
    loaded = lgb_importer.load_file(path)
    _assert_same_ir(loaded, fitted.model)
    np.testing.assert_array_equal(loaded.scores(fitted.X, backend="numpy"),
                                  fitted.model.scores(fitted.X, backend="numpy"))


def test_converts_the_best_iteration_like_predict():
    X, signal, rng = gbm_cases._data(seed=11)
    y = signal + rng.normal(size=len(signal))
    native = lgb.LGBMRegressor(n_estimators=60, learning_rate=0.5, **_PARAMS)
    native.fit(X[:300], y[:300], eval_X=X[300:], eval_y=y[300:], callbacks=[lgb.early_stopping(3, verbose=False)])
    assert native.best_iteration_ < 60
    model = ss.convert(native)
    assert model.estimator.n_trees == native.best_iteration_
    np.testing.assert_allclose(model.predict(X, backend="numpy"), native.predict(X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("params, match", [
    (dict(objective="lambdarank"), "objective 'lambdarank'"),
    (dict(objective="regression", linear_tree=True), "linear_tree"),
    (dict(objective="regression", reg_sqrt=True), "reg_sqrt"),
])
def test_unsupported_models_raise(params, match):
    X, signal, _ = gbm_cases._data(seed=12)
    y = np.clip(np.round(signal), 0, 3).astype(int) if params["objective"] == "lambdarank" else signal
    dataset = lgb.Dataset(np.nan_to_num(X), y, group=[100] * 4 if params["objective"] == "lambdarank" else None)
    booster = lgb.train(dict(_PARAMS, **params), dataset, num_boost_round=2)
    with pytest.raises(UnsupportedModelError, match=match):
        ss.convert(booster)


def test_feature_names_must_agree_with_the_fitted_ones():
    fitted = gbm_cases.CASES[0].fitted()
    with pytest.raises(SignatureError):
        ss.convert(fitted.native, feature_names=["a", "b", "c", "d"])


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("not a model")
    with pytest.raises(IntegrityError, match="not a LightGBM model"):
        lgb_importer.load_file(path)


def _rows_strategy(model):
    """Rows whose values are drawn from the model's thresholds (and their neighbours), NaN, 0, noise."""
    est = model.estimator
    thresholds = est.threshold[(est.feature >= 0) & ~est.is_categorical]
    specials = sorted({float(t) for t in thresholds} | {float(np.nextafter(t, np.inf)) for t in thresholds})
    value = st.one_of(st.sampled_from(specials), st.just(np.nan), st.just(0.0), st.just(-0.0),
                      st.floats(-4, 4, allow_nan=False), st.integers(-2, 14).map(float))
    return st.lists(st.lists(value, min_size=len(model.signature), max_size=len(model.signature)),
                    min_size=1, max_size=30)


@pytest.mark.parametrize("case_id", ["lightgbm-multiclass", "lightgbm-categorical", "lightgbm-zero-as-missing"])
def test_random_rows_match_native(case_id):
    fitted = next(c for c in gbm_cases.CASES if c.id == case_id).fitted()
    booster = getattr(fitted.native, "booster_", fitted.native)

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(_rows_strategy(fitted.model))
    def check(rows):
        X = np.asarray(rows, dtype=np.float64)
        expected = booster.predict(X)
        actual = fitted.model.scores(X, backend="numpy").reshape(expected.shape)
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)

    check()


@pytest.mark.parametrize("params", [
    dict(objective="tweedie"), dict(objective="gamma"), dict(objective="cross_entropy"), dict(objective="huber"),
    dict(objective="binary", sigmoid=1.7), dict(objective="regression", boosting="rf", bagging_freq=1,
                                                bagging_fraction=0.7),
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_objectives_match_native_booster(params):
    X, signal, rng = gbm_cases._data(seed=13)
    y = {"tweedie": np.exp(0.3 * signal), "gamma": np.exp(0.3 * signal), "cross_entropy": (signal > 0) * 1.0,
         "binary": (signal > 0) * 1}.get(params["objective"], signal)
    booster = lgb.train(dict(_PARAMS, **params), lgb.Dataset(X, y), num_boost_round=8)
    model = ss.convert(booster)
    rows = adversarial_matrix(model, X)
    np.testing.assert_allclose(model.scores(rows, backend="numpy")[:, 0], booster.predict(rows), rtol=1e-6, atol=1e-6)
