"""scikit-learn importer specifics: errors, names, folding, metadata, and property-based parity."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

import sparkscore as ss
from sparkscore.errors import SignatureError, UnsupportedModelError
from sparkscore.ir import LinearModel, TreeEnsemble

sklearn = pytest.importorskip("sklearn")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402
from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """HistGB's OpenMP threads only spin on a shared CI box: fit and predict on one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _xy(n=200, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 10.0, 0.1, 3.0])[:d]
    y = (X[:, 0] + 0.1 * X[:, 1] - 5 * X[:, 2] > 0).astype(int)
    return X, y


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("native, named", [
    (KNeighborsClassifier(n_neighbors=3), "KNeighborsClassifier"),
    (make_pipeline(PolynomialFeatures(), LinearRegression()), "PolynomialFeatures"),
    (GradientBoostingRegressor(n_estimators=2, init=LinearRegression()), "init=LinearRegression"),
    (OneVsRestClassifier(SGDClassifier(loss="modified_huber")), "modified_huber"),
    (CalibratedClassifierCV(LogisticRegression(), cv=2), "CalibratedClassifierCV"),
])
def test_unsupported_models_name_the_class_and_what_is_supported(native, named):
    X, y = _xy()
    native.fit(X, y)
    with pytest.raises(UnsupportedModelError) as info:
        ss.convert(native)
    message = str(info.value)
    assert named in message and "HistGradientBoosting" in message and "\n" not in message


def test_numeric_categorical_histgb_converts_exactly():
    """Numeric categories (issue 11; refused before): unknown, fractional and NaN values go missing."""
    X, y = _xy()
    X[:, 0] = np.abs(np.round(X[:, 0]))
    native = HistGradientBoostingClassifier(max_iter=2, categorical_features=[0]).fit(X, y)
    rows = np.vstack([X, np.column_stack([[0.5, -1.0, np.nan, 1e6, -0.0], np.zeros((5, X.shape[1] - 1))])])
    np.testing.assert_allclose(ss.convert(native).predict_proba(rows), native.predict_proba(rows), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ names
def test_names_come_from_the_fitted_frame():
    X, y = _xy()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = ss.convert(LogisticRegression().fit(frame, y))
    assert model.signature.names == ("a", "b", "c", "d")


def test_unnamed_models_get_default_or_given_names():
    X, y = _xy()
    native = LogisticRegression().fit(X, y)
    assert ss.convert(native).signature.names == ("f0", "f1", "f2", "f3")
    assert ss.convert(native, feature_names=["w", "x", "y", "z"]).signature.names == ("w", "x", "y", "z")


@pytest.mark.parametrize("names", [["a", "b", "c"], ["a", "b", "x", "d"]])
def test_feature_names_that_contradict_the_model_are_refused(names):
    X, y = _xy()
    native = LogisticRegression().fit(pd.DataFrame(X, columns=["a", "b", "c", "d"]), y)
    with pytest.raises(SignatureError):
        ss.convert(native, feature_names=names)


def test_metadata_records_source_version_and_class():
    X, y = _xy()
    model = ss.convert(DecisionTreeClassifier(max_depth=2).fit(X, y))
    assert model.metadata == {"source": "sklearn", "library_version": sklearn.__version__,
                              "class": "sklearn.tree._classes.DecisionTreeClassifier",
                              "name": "DecisionTreeClassifier"}


# ------------------------------------------------------------------------------------ pipelines
def test_standard_scaler_is_folded_into_a_linear_regressor():
    X, y = _xy()
    native = make_pipeline(StandardScaler(), LinearRegression()).fit(X, X @ np.array([1.0, -2.0, 0.5, 3.0]) + y)
    model = ss.convert(native)
    assert model.features == () and isinstance(model.estimator, LinearModel)
    np.testing.assert_allclose(model.predict(X, backend="numpy"), native.predict(X), rtol=1e-9, atol=1e-12)


def test_standard_scaler_stays_in_front_of_a_linear_classifier():
    """Folding would move margins by ~1e-12: a row on a tie must be decided by sklearn's rounding."""
    X, y = _xy()
    native = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = ss.convert(native)
    assert len(model.features) == 1 and isinstance(model.estimator, LinearModel)
    np.testing.assert_array_equal(model.margin_model.scores(X, backend="numpy")[:, 0], native.decision_function(X))
    np.testing.assert_allclose(model.predict_proba(X, backend="numpy"), native.predict_proba(X), rtol=1e-12, atol=1e-15)


def test_scaler_with_a_huge_mean_stays_a_feature_map():
    X, y = _xy()
    X = X + np.array([1e9, 0, 0, 0])
    native = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = ss.convert(native)
    assert len(model.features) == 1 and model.features[0].center[0] != 0
    np.testing.assert_allclose(model.predict_proba(X, backend="numpy"), native.predict_proba(X), rtol=1e-6, atol=1e-6)


def test_imputer_and_scaler_merge_into_one_map_in_front_of_trees():
    X, y = _xy()
    X[::7, 1] = np.nan
    native = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), DecisionTreeClassifier(max_depth=4))
    native.fit(X, y)
    model = ss.convert(native)
    assert len(model.features) == 1 and isinstance(model.estimator, TreeEnsemble)
    fmap = model.features[0]
    assert not np.isnan(fmap.fill).any() and (fmap.scale != 1).all()
    np.testing.assert_array_equal(model.predict(X, backend="numpy"), native.predict(X))


def test_one_hot_string_column_becomes_a_categorical_input():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=120), "city": rng.choice(["rome", "oslo", "lima"], 120)})
    y = (frame.x + (frame.city == "oslo") > 0.3).astype(int)
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough")
    native = make_pipeline(ct, LogisticRegression()).fit(frame, y)
    model = ss.convert(native)
    city = model.signature.inputs[model.signature.index("city")]
    assert city.dtype == "varchar" and city.categories == ("lima", "oslo", "rome")
    test = pd.DataFrame({"x": [0.1, 0.2, 0.3], "city": ["oslo", "paris", "lima"]})
    np.testing.assert_allclose(model.predict_proba(test, backend="numpy"), native.predict_proba(test), rtol=1e-6, atol=1e-6)


def test_converted_model_round_trips_through_the_safe_format(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=150),
                          "colour": pd.Categorical(rng.choice(["red", "blue", "green"], 150))})
    y = ((frame.colour == "red") | (frame.x > 1)).astype(int)
    model = ss.convert(HistGradientBoostingClassifier(max_iter=5).fit(frame, y))
    model.save(tmp_path / "m")
    loaded = ss.Model.load(tmp_path / "m")
    assert loaded.signature == model.signature
    np.testing.assert_array_equal(loaded.predict_proba(frame, backend="numpy"), model.predict_proba(frame, backend="numpy"))


# ------------------------------------------------------------------------------------ properties
@lru_cache(maxsize=None)
def _pair(kind: str):
    """(native, converted) once per run."""
    native = _natives()[kind]
    return native, ss.convert(native)


@lru_cache(maxsize=None)
def _natives():
    X, y = _xy(300)
    X[::5, 2] = np.nan
    imputed = np.nan_to_num(X)
    return {
        "tree": DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y),
        "histgb": HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y),
        "logreg": make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(X, y),
        "linreg": LinearRegression().fit(imputed, imputed @ np.array([1.0, -2.0, 3.0, 0.5])),
    }


_cell = st.one_of(st.floats(-50, 50, width=32).map(float), st.floats(-50, 50), st.just(np.nan), st.just(-0.0))


@pytest.mark.parametrize("kind", ["tree", "histgb", "logreg", "linreg"])
@settings(max_examples=30, deadline=None)
@given(rows=arrays(np.float64, st.tuples(st.integers(1, 20), st.just(4)), elements=_cell))
def test_reference_matches_native_on_random_rows(kind, rows):
    native, model = _pair(kind)
    if kind == "linreg":
        rows = np.nan_to_num(rows)
    if model.is_classifier:
        np.testing.assert_array_equal(model.predict(rows, backend="numpy"), native.predict(rows))
        np.testing.assert_allclose(model.predict_proba(rows, backend="numpy"), native.predict_proba(rows),
                                   rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_allclose(model.predict(rows, backend="numpy"), native.predict(rows), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ linear label rules
from tests.zoo import params as zoo_params  # noqa: E402
from tests.zoo.sklearn_linear_cases import CASES as LINEAR_CASES  # noqa: E402

LINEAR_STRATEGIES = [("numpy", None, "cpu"), ("numba", "numba", "cpu"), ("numba", "numba_parallel", "cpu"),
                     ("torch", "gemm", "cpu"), ("auto", None, "cpu"), ("torch", "gemm", "cuda")]


@pytest.mark.parametrize("backend,strategy,device", LINEAR_STRATEGIES,
                         ids=[f"{s or b}-{d}" for b, s, d in LINEAR_STRATEGIES])
@pytest.mark.parametrize("case", zoo_params([c for c in LINEAR_CASES if c.task != "regression"]))
def test_linear_labels_are_decided_on_margins_on_every_backend(case, backend, strategy, device):
    """Labels from every kernel's margins equal sklearn's on boundary, tie and saturated rows."""
    from sparkscore import compiler

    fitted = case.fitted()
    model = fitted.model
    try:
        scorer = compiler.compile(model.margin_model, backend, device=device, strategy=strategy)
    except compiler.StrategyUnavailable as exc:
        pytest.skip(str(exc))
    labels = model.margins_to_predictions(scorer.scores(model.to_matrix(fitted.X)))
    mismatches = int(np.sum(np.asarray(labels, dtype=object) != np.asarray(fitted.expected_predict, dtype=object)))
    assert mismatches == 0, f"{case.id} / {strategy or backend}: {mismatches} label mismatches of {len(labels)}"


@pytest.mark.parametrize("case_id", ["sklearn-linear-logreg-binary", "sklearn-linear-perceptron-binary"])
def test_binary_boundary_rows_round_to_one_half_but_follow_the_margin(case_id):
    """The zoo holds rows whose probability is exactly 0.5 while sklearn's margin is > 0 (class 1):
    argmax of the probabilities would say class 0."""
    fitted = next(c for c in LINEAR_CASES if c.id == case_id).fitted()
    model = fitted.model
    p = model.scores(fitted.X, backend="numpy")[:, 0]
    margin = model.margin_model.scores(fitted.X, backend="numpy")[:, 0]
    tricky = (p == 0.5) & (margin > 0)
    assert tricky.any()
    assert (fitted.expected_predict[tricky] == model.classes[1]).all()
    assert (model.predict(fitted.X, backend="numpy")[tricky] == model.classes[1]).all()


def test_one_vs_rest_saturated_probabilities_tie_but_labels_follow_the_margins():
    fitted = next(c for c in LINEAR_CASES if c.id == "sklearn-linear-ovr-logreg-multiclass").fitted()
    model = fitted.model
    proba = model.predict_proba(fitted.X, backend="numpy")
    by_proba = np.asarray(model.classes, dtype=object)[np.argmax(proba, axis=1)]
    assert (by_proba != fitted.expected_predict).any()  # the rows really are ties of the probabilities
    np.testing.assert_array_equal(model.predict(fitted.X, backend="numpy"), fitted.expected_predict)


def test_one_class_classifier_predicts_its_label_with_one_probability_column():
    from sklearn.linear_model import RidgeClassifier

    X, _ = _xy()
    native = RidgeClassifier().fit(X, np.full(len(X), 7))
    model = ss.convert(native)
    assert model.classes == (7,)
    np.testing.assert_array_equal(model.predict(X, backend="numpy"), native.predict(X))
    assert model.predict_proba(X, backend="numpy").shape == (len(X), 1)


def test_one_class_rule_is_generic_in_the_ir():
    """The Model's one-class path holds for any estimator (trees use it too): label 'only', proba (n, 1)."""
    from sparkscore.ir import Model
    from sparkscore.ir.signature import Column, Signature

    sig = Signature((Column("x", "double"),), ())
    model = Model(LinearModel(np.zeros((1, 1)), np.ones(1), "identity"), sig, task="classification", classes=("only",))
    X = np.array([[0.0], [5.0], [-3.0]])
    assert model.predict(X, backend="numpy").tolist() == ["only"] * 3
    np.testing.assert_array_equal(model.predict_proba(X, backend="numpy"), np.ones((3, 1)))


@pytest.mark.parametrize("name", ["LinearRegression", "LogisticRegression", "PoissonRegressor"])
def test_float32_model_overflows_to_inf_like_sklearn(name):
    from sklearn import linear_model

    X, y = _xy()
    X32 = X.astype(np.float32)
    target = {"LogisticRegression": y, "LinearRegression": X @ np.array([10.0, 0.1, -20.0, 3.0]),
              "PoissonRegressor": np.abs(X @ np.array([1.0, 0.1, -2.0, 0.3])) + y}[name].astype(np.float32)
    native = getattr(linear_model, name)().fit(X32, target)
    model = ss.convert(native)
    assert model.estimator.dtype == "float32"
    big = np.float32(np.finfo(np.float32).max)
    rows = np.array([[big, 0, 0, 0], [-big, 0, 0, 0], [0, big, 0, 0], [big / 2, big / 2, 0, 0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        expected = native.predict_proba(rows) if name == "LogisticRegression" else native.predict(rows)
        got = model.predict_proba(rows.astype(np.float64), backend="numpy") if name == "LogisticRegression" \
            else model.predict(rows.astype(np.float64), backend="numpy")
    assert expected.dtype == np.float32 and np.isinf(native.decision_function(rows) if name == "LogisticRegression"
                                                     else expected).any()
    np.testing.assert_array_equal(got, expected.astype(np.float64))


def test_float64_model_predicts_in_float64():
    X, y = _xy()
    model = ss.convert(LinearRegression().fit(X, y))
    assert model.estimator.dtype == "float64"


@pytest.mark.parametrize("native, named", [
    (OneVsRestClassifier(LogisticRegression()), "single class"),
])
def test_one_vs_rest_on_one_class_is_refused(native, named):
    X, _ = _xy()
    native.fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(UnsupportedModelError, match=named):
        ss.convert(native)


@pytest.mark.parametrize("what", ["float32", "one-class"])
def test_models_sql_cannot_score_exactly_are_not_inlined(what):
    """SQL DOUBLE arithmetic would not round a float32 GLM; a one-class PREDICT is its label."""
    from sqlglot import exp

    from sparkscore.ir import Model
    from sparkscore.ir.signature import Signature
    from sparkscore.optimizer.context import OptimizerOptions
    from sparkscore.optimizer.inline_models import Decline, inline_call

    sig = Signature.from_names(("x", "y"))
    if what == "float32":
        model = Model(LinearModel(np.array([0.5, 0.25]), np.array([1.0]), dtype="float32", intercept_dtype="float32"), sig)
    else:
        model = Model(LinearModel(np.array([0.5, 0.25]), np.array([1.0]), "logistic"), sig, task="classification",
                      classes=(7,), decision="margin")
    with pytest.raises(Decline, match=what):
        inline_call(model, "predict", [exp.column("x"), exp.column("y")], OptimizerOptions())
