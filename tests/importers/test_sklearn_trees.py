"""sklearn trees / pipelines (issue 11): label rules, summation order, one-class, preprocessing parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sparkscore as ss
from sparkscore.errors import UnsupportedModelError
from sparkscore.ir import Model, TreeBuilder
from tests.compiler import synthetic
from tests.zoo import sklearn_tree_cases as cases
from tests.zoo.adversarial import adversarial_matrix, threshold_values

BACKENDS = ["numpy", "numba", "torch"]


def _labels_and_proba(model, X, backend):
    return model.predict(X, backend=backend), model.predict_proba(X, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", ["sklearn-gb-symmetric-binary", "sklearn-gb-symmetric-multiclass",
                                     "sklearn-hgb-symmetric-binary", "sklearn-hgb-symmetric-multiclass"])
def test_exact_raw_ties_take_sklearns_label_on_every_backend(case_id, backend):
    """raw == 0 (GB: classes_[1], HistGB: classes_[0]) and exactly tied multiclass raws (first argmax)."""
    fitted = next(c for c in cases.CASES if c.id == case_id).fitted()
    raw = fitted.native.decision_function(fitted.X)
    ties = (raw == 0) if raw.ndim == 1 else (np.sort(raw, 1)[:, -1] == np.sort(raw, 1)[:, -2])
    assert ties.sum() > 50, "the symmetric data no longer produces exact ties: the case tests nothing"
    labels, proba = _labels_and_proba(fitted.model, fitted.X, backend)
    assert int(np.sum(labels != fitted.expected_predict)) == 0
    np.testing.assert_allclose(proba, fitted.expected_proba, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_tree_sums_start_from_base_in_tree_order(backend):
    """base + t1 + t2 ... as sklearn / LightGBM add them: another association moves the last bit."""
    base, leaves = 0.3, [0.1, -0.2, -0.2]
    builder = TreeBuilder(synthetic.N_FEATURES)
    for v in leaves:
        builder.add_tree(feature=[-1], threshold=[0.0], left=[-1], right=[-1], value=[v])
    model = Model(builder.build(base_score=[base]), synthetic._signature(), (), "regression", None, {"name": "order"})
    expected = base
    for v in leaves:
        expected += v
    assert expected != base + sum(leaves), "the leaf values no longer expose the summation order"
    X = np.zeros((3, synthetic.N_FEATURES))
    from sparkscore import compiler

    got = compiler.compile(model, backend).scores(X)[:, 0]
    assert got.tolist() == [expected] * 3


def test_model_decision_round_trips_and_proba_models_keep_their_payload(tmp_path):
    fitted = next(c for c in cases.CASES if c.id == "sklearn-gb-symmetric-binary").fitted()
    assert fitted.model.decision == "margin_ge"
    fitted.model.save(tmp_path / "gb")
    assert Model.load(tmp_path / "gb").decision == "margin_ge"
    rf = next(c for c in cases.CASES if c.id == "sklearn-rf-one-class").fitted().model
    assert rf.decision == "proba" and "decision" not in rf.to_payload()[0]


@pytest.mark.parametrize("case_id", ["sklearn-dt-one-class", "sklearn-rf-one-class", "sklearn-et-one-class"])
def test_one_class_trees_predict_the_label_with_one_probability_column(case_id):
    fitted = next(c for c in cases.CASES if c.id == case_id).fitted()
    for backend in BACKENDS:
        labels, proba = _labels_and_proba(fitted.model, fitted.X, backend)
        assert proba.shape == fitted.expected_proba.shape == (len(fitted.X), 1)
        assert list(labels) == list(fitted.expected_predict)


def test_one_class_hist_gradient_boosting_is_refused():
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, _ = cases.numeric()
    native = HistGradientBoostingClassifier(max_iter=3).fit(X, np.zeros(len(X)))
    with pytest.raises(UnsupportedModelError, match="HistGradientBoostingClassifier.*single class"):
        ss.convert(native)


# ---------------------------------------------------------------------------------- preprocessing
def _iris_weighted(final, weights):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cases.iris()
    ct = ColumnTransformer([("sepal", StandardScaler(), list(X.columns[:2])),
                            ("petal", "passthrough", list(X.columns[2:]))], transformer_weights=weights)
    return make_pipeline(ct, final).fit(X, y), X


@pytest.mark.parametrize("final", ["RandomForestClassifier", "GradientBoostingClassifier"])
def test_column_transformer_weights_multiply_the_outputs(final):
    """issue 11: the weights were ignored (max diff 0.139, label flips on iris); linear regressors:
    the zoo's sklearn-pipe-weights-ridge."""
    native, X = _iris_weighted(cases._sk(final, n_estimators=10, random_state=0), {"sepal": 0.3, "petal": 2.7})
    rng = np.random.default_rng(3)
    rows = X.sample(300, replace=True, random_state=1).reset_index(drop=True)
    rows = rows * rng.choice([1.0, 1 + 1e-7, 1 - 1e-7, 1.05], size=rows.shape)
    model = ss.convert(native)
    for backend in BACKENDS:
        labels, proba = _labels_and_proba(model, rows, backend)
        assert int(np.sum(labels != native.predict(rows))) == 0, backend
        np.testing.assert_allclose(proba, native.predict_proba(rows), rtol=1e-6, atol=1e-6, err_msg=backend)


@pytest.mark.parametrize("scaler", ["StandardScaler", "MaxAbsScaler"])
def test_sparse_column_transformer_output_scales_by_the_reciprocal(scaler):
    """On sparse input StandardScaler / MaxAbsScaler multiply by 1 / scale_ (not divide): replayed."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    X, y = cases.iris()
    X = X.assign(size=np.where(X.sepal_length > 5.8, "big", "small"))
    ct = ColumnTransformer([("size", OneHotEncoder(), ["size"])], remainder="passthrough", sparse_threshold=0.9)
    params = dict(with_mean=False) if scaler == "StandardScaler" else {}
    native = make_pipeline(ct, cases._scaler(scaler, **params), DecisionTreeClassifier(random_state=0)).fit(X, y)
    assert native[0].sparse_output_
    model = ss.convert(native)
    assert model.estimator.threshold_dtype == "float64"  # thresholds mapped back through x * (1 / scale_)
    # rows within 12 ulps of where the native tree's float32 split falls in raw input space
    tree, scale = native[-1].tree_, native[1].scale_
    numeric = X[X.columns[:4]].to_numpy()
    rows = []
    for node in np.flatnonzero(tree.feature >= 2):
        j = int(tree.feature[node]) - 2
        for t in threshold_values(float(tree.threshold[node])):  # incl. the float32 rounding midpoints
            v = t * scale[j + 2]
            for _ in range(12):
                v = np.nextafter(v, -np.inf)
            for _ in range(25):
                row = numeric[node % len(numeric)].copy()
                row[j] = v
                rows.append(row)
                v = np.nextafter(v, np.inf)
    frame = pd.DataFrame(rows, columns=X.columns[:4]).assign(size=np.where(np.arange(len(rows)) % 2, "big", "small"))
    scale = scale[2:]
    Z = frame[X.columns[:4]].to_numpy()
    assert ((Z / scale).astype(np.float32) != (Z * (1.0 / scale)).astype(np.float32)).any(), \
        "no row where dividing would round differently: the test would not tell the two apart"
    for backend in BACKENDS:
        assert int(np.sum(model.predict(frame, backend=backend) != native.predict(frame))) == 0, backend


@pytest.mark.parametrize("make, match", [
    (lambda: ("MinMaxScaler", dict(clip=True), "LinearRegression"), "clip"),
    (lambda: ("MinMaxScaler", {}, "LogisticRegression"), "linear classifier"),
    (lambda: ("MinMaxScaler", {}, "then-imputer"), "SimpleImputer after"),
])
def test_preprocessing_that_cannot_be_exact_is_refused(make, match):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    scaler, params, final = make()
    X, y = cases.iris()
    steps = [cases._scaler(scaler, **params)]
    if final == "then-imputer":
        steps += [SimpleImputer(), cases._sk("DecisionTreeClassifier", random_state=0)]
    else:
        steps.append(cases._sk(final, **({"max_iter": 1000} if final == "LogisticRegression" else {})))
    native = make_pipeline(*steps).fit(X, y)
    with pytest.raises(UnsupportedModelError, match=match):
        ss.convert(native)


def test_large_offsets_in_front_of_a_glm_are_refused():
    """Folding x * s + m into coefficients loses ~eps * |m| relative precision: bounded like standardising."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    X = pd.DataFrame({"x": np.linspace(1e6, 1e6 + 1, 50)})
    native = make_pipeline(MinMaxScaler(), LinearRegression()).fit(X, np.linspace(0, 1, 50) ** 2)
    with pytest.raises(UnsupportedModelError, match="offsets"):
        ss.convert(native)


def test_multi_output_classifiers_are_refused():
    from sklearn.tree import DecisionTreeClassifier

    X, _ = cases.numeric()
    native = DecisionTreeClassifier(max_depth=2).fit(X, np.column_stack([X.u > 0, X.v > 0]).astype(int))
    with pytest.raises(UnsupportedModelError, match="multi-output"):
        ss.convert(native)


def test_multi_output_regressor_signature_is_a_double_array():
    fitted = next(c for c in cases.CASES if c.id == "sklearn-rf-multioutput").fitted()
    assert fitted.model.signature.outputs[0].dtype == "double[]"
    assert fitted.model.predict(fitted.X).shape == fitted.expected_predict.shape == (len(fitted.X), 3)


def test_mapped_thresholds_are_hit_by_the_adversarial_rows():
    """Scalers in front of trees fold into float64 thresholds in raw input space, so the zoo's rows
    land exactly on (and beside) the transformed split points."""
    fitted = next(c for c in cases.CASES if c.id == "sklearn-pipe-minmax-clip-dt").fitted()
    model = fitted.model
    assert not model.features and model.estimator.threshold_dtype == "float64"
    X, _ = cases.iris()
    M = adversarial_matrix(model, X.to_numpy())
    tree = model.estimator
    for node in np.flatnonzero(tree.feature >= 0):
        assert (M[:, tree.feature[node]] == tree.threshold[node]).any()


@pytest.mark.parametrize("labels", [(-1.0, 2.0, 4.0, 8.0), ("w", "x", "y", "z")])
def test_engine_predict_labels_follow_the_margin_rule(labels):
    """The SQL PREDICT of a margin-rule multiclass model, numeric and string labels, on exact ties."""
    import pyarrow as pa

    from sparkscore.engines.functions import ScoringFunction

    X, y = cases.symmetric(4)
    native = cases._sk("GradientBoostingClassifier", **cases._GB).fit(X, np.asarray(labels, dtype=object)[y]
                                                                     if isinstance(labels[0], str) else
                                                                     np.asarray(labels)[y])
    model = ss.convert(native)
    fn = ScoringFunction.for_version("gb", 1, model, "predict")
    got = fn.score(pa.Table.from_pandas(X)).to_pylist()
    assert got == list(native.predict(X))


@pytest.mark.parametrize("final", ["RandomForestClassifier", "GradientBoostingClassifier"])
def test_column_transformer_remainder_estimator_and_its_weight(final):
    """remainder=<estimator> is a part like the others, weighted by transformer_weights['remainder']."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, RobustScaler

    X, y = cases.iris()
    X = X.assign(size=np.where(X.sepal_length > 5.8, "big", "small"))
    ct = ColumnTransformer([("size", OneHotEncoder(sparse_output=False), ["size"])], remainder=RobustScaler(),
                           transformer_weights={"size": 1.5, "remainder": 0.7})
    native = make_pipeline(ct, cases._sk(final, n_estimators=8, random_state=0)).fit(X, y)
    model = ss.convert(native)
    rows = X.sample(200, replace=True, random_state=2).reset_index(drop=True)
    rows[X.columns[:4]] = rows[X.columns[:4]] * np.random.default_rng(0).choice([1.0, 1 + 1e-9, 0.97], (200, 4))
    for backend in BACKENDS:
        assert int(np.sum(model.predict(rows, backend=backend) != native.predict(rows))) == 0, backend
        np.testing.assert_allclose(model.predict_proba(rows, backend=backend), native.predict_proba(rows),
                                   rtol=1e-6, atol=1e-6)


def test_weighted_columns_in_front_of_a_linear_classifier_are_refused():
    """Folding the weights into the coefficients would move tied margins by an ulp: refused, named."""
    native, _ = _iris_weighted(cases._sk("LogisticRegression", max_iter=1000), {"sepal": 0.3, "petal": 2.7})
    with pytest.raises(UnsupportedModelError, match="LogisticRegression.*linear classifier"):
        ss.convert(native)
