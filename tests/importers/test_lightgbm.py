"""LightGBM importer: file formats, best iteration, unsupported options, random-row property."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
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


def _custom_l2(preds, data):
    grad = preds - data.get_label()
    return grad, np.ones_like(grad)


@pytest.mark.parametrize("params, match", [
    (dict(objective="regression", linear_tree=True), "linear_tree=True .*cannot represent exactly"),
    (dict(objective="regression", reg_sqrt=True), "reg_sqrt"),
    (dict(objective="cross_entropy_lambda"), "objective 'cross_entropy_lambda'"),
    (dict(objective=_custom_l2), "no objective \\(custom objective\\?\\)"),
    (dict(objective="multiclass", num_class=3, boosting="rf", bagging_freq=1, bagging_fraction=0.7),
     "boosting='rf'"),
], ids=["linear_tree", "reg_sqrt", "cross_entropy_lambda", "custom_objective", "multiclass_rf"])
def test_unsupported_models_raise(params, match):
    """Options that change predictions and that the IR cannot honour exactly are refused, by name."""
    X, signal, _ = gbm_cases._data(seed=12)
    y = {"cross_entropy_lambda": (signal > 0) * 1.0, "multiclass": np.digitize(signal, [-0.5, 0.5])}.get(
        params["objective"] if isinstance(params["objective"], str) else "", signal)
    booster = lgb.train(dict(_PARAMS, **params), lgb.Dataset(np.nan_to_num(X), y), num_boost_round=2)
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
    dict(objective="fair"), dict(objective="regression_l1"), dict(objective="binary", boost_from_average=False),
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


# ------------------------------------------------- column names LightGBM rewrites (issue 12 item 7)
@pytest.fixture(scope="module")
def cancer():
    """sklearn's breast_cancer frame ('mean radius', ...) plus a punctuated name; a small classifier on it."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.rename(columns={"worst symmetry": "worst symmetry (a/b) %"})
    native = lgb.LGBMClassifier(n_estimators=8, num_leaves=8, num_threads=1, verbose=-1).fit(X, y)
    assert native.booster_.feature_name()[0] == "mean_radius"  # what LightGBM stores
    rows = X.copy()
    rows.iloc[::7, 0] = np.nan
    return native, rows


def test_convert_scores_the_frame_it_was_fitted_on(cancer):
    native, X = cancer
    model = ss.convert(native)
    np.testing.assert_allclose(model.predict_proba(X), native.predict_proba(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), native.predict(X))
    # the stored names bind too (e.g. a frame LightGBM itself wrote out)
    stored = X.rename(columns=lambda c: c.replace(" ", "_"))
    np.testing.assert_allclose(model.predict_proba(stored), native.predict_proba(X), rtol=1e-6, atol=1e-6)


def test_feature_names_accepts_the_frame_names(cancer):
    native, X = cancer
    model = ss.convert(native, feature_names=list(X.columns))
    assert model.signature.names == tuple(X.columns)
    np.testing.assert_allclose(model.predict_proba(X), native.predict_proba(X), rtol=1e-6, atol=1e-6)
    with pytest.raises(SignatureError, match="differ from the names the model was fitted with"):
        ss.convert(native, feature_names=["radius mean"] + list(X.columns[1:]))


def test_wrapper_names_are_used_where_the_wrapper_kept_them(cancer):
    """LightGBM 4.x wrappers report the renamed names; a wrapper that keeps the frame's names wins."""
    native, X = cancer

    class KeepsNames:  # stands in for such a wrapper: same booster, the fitted frame's own names
        booster_, classes_, feature_names_in_ = native.booster_, native.classes_, np.asarray(X.columns)

    model = lgb_importer.convert(KeepsNames())
    assert model.signature.names == tuple(X.columns)
    np.testing.assert_allclose(model.predict_proba(X), native.predict_proba(X), rtol=1e-6, atol=1e-6)


def test_two_columns_renamed_alike_are_ambiguous():
    X, signal, _ = gbm_cases._data(seed=14)
    frame = pd.DataFrame(X, columns=["a b_", "c", "d", "e"])
    model = ss.convert(lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(frame, signal))
    assert model.signature.names[0] == "a_b_"
    frame["a_b "] = frame["a b_"]
    with pytest.raises(SignatureError, match="'a_b_' matches both 'a b_' and 'a_b '"):
        model.predict(frame)


@pytest.mark.parametrize("disable_rules", [(), ("inline_models",)], ids=["inlined", "udf"])
def test_registry_predict_star_binds_the_frame_names(cancer, registry, disable_rules):
    import duckdb

    native, X = cancer
    registry.register("cancer", native)
    con = duckdb.connect()
    con.register("cells_view", X)
    con.execute("CREATE TABLE cells AS SELECT * FROM cells_view")
    ss.duckdb.install(con, registry=registry)
    got = ss.duckdb.sql(con, "SELECT PREDICT('cancer', *) AS p FROM cells", registry=registry,
                        disable_rules=disable_rules).df()["p"].to_numpy()
    np.testing.assert_allclose(got, native.predict_proba(X)[:, 1], rtol=1e-6, atol=1e-6)


def test_cli_registers_a_model_file_and_scores_the_frame_names(cancer, runner, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkscore.cli import app

    native, X = cancer
    model_file = tmp_path / "cancer.txt"
    native.booster_.save_model(model_file)
    pq.write_table(pa.Table.from_pandas(X, preserve_index=False), tmp_path / "cells.parquet")
    reg = ["--registry", str(tmp_path / "reg")]
    result = runner.invoke(app, [*reg, "register", "cancer", str(model_file), "--format", "lightgbm"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "scored.parquet"
    result = runner.invoke(app, [*reg, "sql", "SELECT PREDICT('cancer', *) AS p FROM cells",
                                 "-t", f"cells={tmp_path / 'cells.parquet'}", "--output", str(out)])
    assert result.exit_code == 0, result.output
    got = pq.read_table(out).column("p").to_numpy()
    np.testing.assert_allclose(got, native.predict_proba(X)[:, 1], rtol=1e-6, atol=1e-6)
    # the batch job binds the same names
    import deltalake

    scores = tmp_path / "scores"
    result = runner.invoke(app, [*reg, "score", "--model", "cancer", "--input", str(tmp_path / "cells.parquet"),
                                 "--output", str(scores), "--keep-columns", "mean radius"])
    assert result.exit_code == 0, result.output
    table = deltalake.DeltaTable(str(scores)).to_pandas()
    assert list(table.columns) == ["mean radius", "prediction", "model", "model_version"]
    np.testing.assert_allclose(table["prediction"].to_numpy(), native.predict_proba(X)[:, 1], rtol=1e-6, atol=1e-6)


@pytest.mark.spark
def test_spark_predict_and_sql_bind_the_frame_names(cancer, spark, registry):
    ss_spark = pytest.importorskip("sparkscore.engines.spark")
    native, X = cancer
    registry.register("cancer", native)
    df = spark.createDataFrame(X.head(40).assign(row=np.arange(40)))
    want = native.predict_proba(X.head(40))[:, 1]
    got = ss_spark.predict(df, "cancer", registry=registry).orderBy("row").toPandas()["prediction"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    df.createOrReplaceTempView("cancer_cells")
    query = "SELECT row, PREDICT('cancer', *) AS p FROM cancer_cells ORDER BY row"
    for disable_rules in ((), ("inline_models",)):
        got = ss_spark.sql(spark, query, registry=registry, disable_rules=disable_rules).toPandas()["p"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(disable_rules))
