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
    (dict(objective="binary:hinge", booster="gblinear"), "objective 'binary:hinge' with booster 'gblinear'"),
    (dict(objective="reg:quantileerror", quantile_alpha=[0.2, 0.8]), "2 quantile_alpha values.*one model per quantile"),
    (dict(objective="multi:softprob", num_class=3, multi_strategy="multi_output_tree"), "vector-leaf"),
], ids=["gblinear-hinge", "multi-quantile", "vector-leaf"])
def test_unsupported_models_raise(params, match):
    X, signal, _ = gbm_cases._data(seed=22)
    y = np.digitize(signal, [-0.5, 0.5]) if "num_class" in params else (signal > 0).astype(int)
    booster = xgb.train(dict(params, max_depth=2, nthread=1, tree_method="hist"), xgb.DMatrix(X, y), num_boost_round=2)
    with pytest.raises(UnsupportedModelError, match=match):
        ss.convert(booster)


def test_non_numeric_missing_is_refused():
    native = xgb.XGBRegressor(n_estimators=2, max_depth=2, n_jobs=1).fit(np.eye(4), np.arange(4.0))
    native.set_params(missing="n/a")
    with pytest.raises(UnsupportedModelError, match="missing='n/a'"):
        ss.convert(native)


# ------------------------------------------------------------------------------------ missing=
MISSING = [-999.0, 0.0, -0.0, np.inf, -np.inf, 0.1]


@pytest.mark.parametrize("missing", MISSING, ids=str)
@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_wrapper_missing_routes_as_missing_on_every_backend(missing, backend):
    """Rows holding the missing value (or a double whose float32 equals it) take the default side."""
    from sparkscore import compiler
    from tests.zoo.xgb_extra_cases import _with_sentinel, missing_rows

    X, signal, rng = gbm_cases._data(seed=24)
    X = _with_sentinel(X, missing, rng, share=0.3)
    native = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, missing=missing).fit(X, (signal > 0) * 1)
    model = ss.convert(native)
    assert model.estimator.missing_value.tolist() == [missing]
    rows = missing_rows(X, missing, rng)
    try:
        scorer = compiler.compile(model, backend)
    except compiler.StrategyUnavailable as exc:
        pytest.skip(str(exc))
    proba = model.outputs_to_proba(scorer.scores(model.to_matrix(rows)))
    np.testing.assert_array_equal(proba, native.predict_proba(rows))
    np.testing.assert_array_equal(model.outputs_to_predictions(scorer.scores(rows)), native.predict(rows))


def test_booster_knows_no_missing_value(tmp_path):
    """missing= lives in the DMatrix, not the model: a Booster (or its file) scores as DMatrix(X) does."""
    X, signal, rng = gbm_cases._data(seed=25)
    X = np.where(np.isnan(X), -999.0, X)
    native = xgb.XGBRegressor(n_estimators=6, max_depth=3, n_jobs=1, missing=-999.0).fit(X, signal)
    native.save_model(tmp_path / "m.json")
    rows = np.array([[-999.0, 0.5, -999.0, 1.0], [np.nan, 0.5, np.nan, 1.0]])
    for model in (ss.convert(native.get_booster()), xgb_importer.load_file(tmp_path / "m.json")):
        assert not model.estimator.has_missing_value
        np.testing.assert_array_equal(model.predict(rows, backend="numpy"),
                                      native.get_booster().predict(xgb.DMatrix(rows)))
    np.testing.assert_array_equal(ss.convert(native).predict(rows, backend="numpy"), native.predict(rows))


def test_missing_value_survives_save_and_load(tmp_path):
    native = xgb.XGBRegressor(n_estimators=3, max_depth=2, n_jobs=1, missing=np.inf).fit(np.eye(4), np.arange(4.0))
    model = ss.convert(native)
    model.save(tmp_path / "m")
    loaded = ss.Model.load(tmp_path / "m")
    assert loaded.estimator.missing_value.tolist() == [np.inf]
    rows = np.array([[np.inf, 1.0, 2.0 ** 128, 0.0]])
    np.testing.assert_array_equal(loaded.predict(rows, backend="numpy"), native.predict(rows))


# ------------------------------------------------------------------------------------ float32 outputs
def test_tiny_margins_label_by_the_float32_probability():
    """Margins below 2**-25 give p == 0.5f exactly in XGBoost, hence class 0 (its rule is p > 0.5)."""
    X, signal, _ = gbm_cases._data(seed=26)
    native = xgb.XGBClassifier(n_estimators=3, max_depth=2, learning_rate=1e-8, base_score=0.5, n_jobs=1)
    native.fit(X, (signal > 0) * 1)
    model = ss.convert(native)
    margins = native.predict(X, output_margin=True)
    assert (margins > 0).any() and (native.predict_proba(X)[:, 1] == 0.5).any()
    for backend in ("numpy", "numba"):
        np.testing.assert_array_equal(model.predict(X, backend=backend), native.predict(X))
        np.testing.assert_array_equal(model.predict_proba(X, backend=backend), native.predict_proba(X))


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


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_multi_softmax_labels_follow_the_margin_argmax(backend):
    """Margins under ~0.25 an ulp apart give tied float32 probabilities: labels follow the margins."""
    X, signal, _ = gbm_cases._data(seed=28)
    booster = xgb.train(dict(objective="multi:softmax", num_class=3, eta=1e-9, max_depth=2, nthread=1,
                             base_score=0.01), xgb.DMatrix(X, np.digitize(signal, [-0.5, 0.5])), num_boost_round=3)
    np.testing.assert_array_equal(ss.convert(booster).predict(X, backend=backend), booster.predict(xgb.DMatrix(X)))


# ------------------------------------------------------------------------------------ gblinear
_GBLINEAR = [
    dict(objective="reg:squarederror"),
    dict(objective="binary:logistic"),
    dict(objective="multi:softprob", num_class=3),  # a per-class base_score vector: gblinear uses [0]
    dict(objective="multi:softmax", num_class=3),
    dict(objective="count:poisson"),
    dict(objective="binary:logitraw"),
]


def _gblinear_booster(params: dict, seed: int = 60):
    X, signal, rng = gbm_cases._data(seed=seed)
    if "num_class" in params:
        y = np.digitize(signal, [-0.5, 0.5])
    elif params["objective"] == "count:poisson":
        y = rng.poisson(np.exp(np.clip(signal, -3, 3) / 2))
    elif params["objective"].startswith("binary"):
        y = (signal > 0).astype(int)
    else:
        y = signal
    booster = xgb.train(dict(params, booster="gblinear", nthread=1), xgb.DMatrix(X, y), num_boost_round=6)
    return booster, X, rng


@pytest.mark.parametrize("params", _GBLINEAR, ids=lambda p: p["objective"])
@pytest.mark.parametrize("backend", ["numpy", "numba", "auto"])
def test_gblinear_booster_is_bit_equal(params, backend):
    """Margins and outputs equal Booster.predict bit for bit on huge / tiny / overflowing / NaN rows."""
    from tests.zoo.xgb_extra_cases import linear_rows

    booster, X, rng = _gblinear_booster(params)
    model = ss.convert(booster)
    assert model.estimator.accumulate == "float32_sequential"
    rows = linear_rows(np.nan_to_num(X), rng)
    native = booster.predict(xgb.DMatrix(rows))
    margins = booster.predict(xgb.DMatrix(rows), output_margin=True)
    np.testing.assert_array_equal(model.margin_model.scores(rows, backend=backend).reshape(margins.shape), margins)
    ours = model.predict(rows, backend=backend)
    if params["objective"] == "multi:softmax":  # Booster.predict gives the class index
        np.testing.assert_array_equal(ours, native)
    else:
        np.testing.assert_array_equal(model.scores(rows, backend=backend).reshape(native.shape), native)


def test_gblinear_rows_tell_fma_and_float64_sums_apart():
    """The rows above can fail: a fused multiply-add or a float64 sum differs from native on them."""
    from sparkscore.compiler import reference
    from tests.zoo.xgb_extra_cases import linear_rows

    booster, X, rng = _gblinear_booster(dict(objective="reg:squarederror"))
    est = ss.convert(booster).estimator
    rows = linear_rows(np.nan_to_num(X), rng)
    native = booster.predict(xgb.DMatrix(rows), output_margin=True)
    X32 = rows.astype(np.float32).astype(np.float64)
    present = ~np.isnan(X32)
    w = est.coef[:, 0]
    with np.errstate(all="ignore"):
        fma = np.full(len(rows), est.intercept[0], dtype=np.float32)
        for f in range(est.n_features):  # one rounding per feature: float64 product and add, then float32
            fma = np.where(present[:, f], (fma.astype(np.float64) + X32[:, f] * w[f]).astype(np.float32), fma)
        f64 = (np.where(present, X32, 0.0) @ w + est.intercept[0]).astype(np.float32)
    assert (fma != native).sum() > 0 and (f64 != native).sum() > 0
    np.testing.assert_array_equal(reference.raw(ss.convert(booster), rows)[:, 0], native)


@pytest.mark.parametrize("missing", [-999.0, 0.0, -0.0, 0.1, np.inf], ids=str)
@pytest.mark.parametrize("backend", ["numpy", "numba", "auto"])
def test_gblinear_wrapper_missing_is_absent(missing, backend):
    """The wrapper predicts through DMatrix(X, missing=...): cells equal to it (in float32) add nothing."""
    from tests.zoo.xgb_extra_cases import _with_sentinel, linear_rows

    X, signal, rng = gbm_cases._data(seed=61)
    X = _with_sentinel(X, missing, rng, share=0.3)
    native = xgb.XGBClassifier(booster="gblinear", n_estimators=6, n_jobs=1, missing=missing)
    native.fit(X, np.digitize(signal, [-0.5, 0.5]))
    model = ss.convert(native)
    assert model.estimator.missing_value.tolist() == [missing]
    rows = linear_rows(np.where(np.isfinite(X), X, 1.0), rng, missing)
    rows[::7, 0] = float(np.nextafter(np.float32(0.1), np.float32(1.0))) if missing == 0.1 else rows[::7, 0]
    rows[1::7, 1] = 0.1 + 1e-12  # a double that float32-rounds onto 0.1f
    np.testing.assert_array_equal(model.predict_proba(rows, backend=backend), native.predict_proba(rows))
    np.testing.assert_array_equal(model.predict(rows, backend=backend), native.predict(rows))


def test_gblinear_runs_on_numba_and_torch_declines():
    from sparkscore import compiler

    model = ss.convert(_gblinear_booster(dict(objective="binary:logistic"))[0])
    strategies = compiler.compile(model, "auto").strategies
    assert "numba" in strategies and "gemm" not in strategies
    with pytest.raises(compiler.StrategyUnavailable):
        compiler.compile(model, "torch")


def test_gblinear_saves_its_mode_and_glms_keep_their_payload(tmp_path):
    """accumulate / missing_value are written only when not default (float64 GLMs keep their sha256)."""
    native = xgb.XGBRegressor(booster="gblinear", n_estimators=4, n_jobs=1, missing=-1.0)
    X, signal, _ = gbm_cases._data(seed=62)
    native.fit(np.nan_to_num(X, nan=-1.0), signal)
    model = ss.convert(native)
    model.save(tmp_path / "m")
    loaded = ss.Model.load(tmp_path / "m")
    assert (loaded.estimator.accumulate, loaded.estimator.missing_value.tolist()) == ("float32_sequential", [-1.0])
    rows = np.array([[-1.0, 0.5, 1e38, 2.0 ** -149], [np.nan, -1.0, -1e38, 0.0]])
    np.testing.assert_array_equal(loaded.predict(rows, backend="numpy"), native.predict(rows))
    native.save_model(tmp_path / "m.json")
    from_file = xgb_importer.load_file(tmp_path / "m.json")  # a file knows no missing value
    np.testing.assert_array_equal(from_file.predict(rows, backend="numpy"),
                                  native.get_booster().predict(xgb.DMatrix(rows)))
    from sklearn.linear_model import LinearRegression

    glm_doc, glm_arrays = ss.convert(LinearRegression().fit(np.eye(3), np.arange(3.0))).to_payload()
    assert not {"accumulate", "dtype"} & set(glm_doc["estimator"]) and set(glm_arrays) == {"estimator.coef",
                                                                                          "estimator.intercept"}


def test_gblinear_stays_out_of_sql_inlining():
    """SQL DOUBLE arithmetic cannot round per feature: inlining declines it (as every float32 GLM;
    stack_linear / factorize_linear decline on the same ``dtype != 'float64'`` predicate)."""
    import sqlglot.expressions as exp

    from sparkscore.optimizer.context import OptimizerOptions
    from sparkscore.optimizer.inline_models import Decline, inline_call

    model = ss.convert(_gblinear_booster(dict(objective="reg:squarederror"))[0])
    assert model.estimator.dtype == "float32"
    with pytest.raises(Decline, match="float32 GLM"):
        inline_call(model, "predict", [exp.column(n) for n in model.signature.names], OptimizerOptions())
