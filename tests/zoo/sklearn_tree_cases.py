"""scikit-learn zoo, issue 11: tree label rules, one-class and multi-output trees, numeric
categoricals in HistGradientBoosting, and the scalers / ColumnTransformer weights in front of models.

Each case fits on a small data set built to expose its rule and scores adversarial rows from the
converted model's own thresholds (scalers and weights in front of trees are folded into the
thresholds, so those rows probe the *transformed* split points in raw input space):

* ``gb-symmetric-binary``: a GradientBoostingClassifier whose raw score is exactly 0 on a third of
  the rows (every point appears with both labels), where sklearn predicts ``classes_[1]``;
* ``gb-symmetric-multiclass``: classes 1 and 2 are mirror images, so their raw scores tie exactly and
  sklearn's first-argmax picks class 1;
* one-class DecisionTree / RandomForest / ExtraTrees: predict the one label, ``predict_proba`` (n, 1);
* multi-output DecisionTree / RandomForest / ExtraTrees regressors: ``predict`` (n, 3);
* HistGradientBoosting with numeric categorical features (indices, boolean mask; negative categories,
  unknown, fractional and NaN values);
* MinMaxScaler(clip) / MaxAbsScaler(clip) / RobustScaler pipelines and ColumnTransformer
  ``transformer_weights`` (iris) in front of trees and linear regressors (linear classifiers refuse).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from sparkscore.importers import convert
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix
from tests.zoo.sklearn_cases import _accepted, _native_input


def _fitted(native, X: pd.DataFrame, y, *, categorical: tuple[int, ...] = (), names: bool = True) -> Fitted:
    """Fit, convert, score adversarial rows with the native model (single-threaded)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        native.fit(X if names else X.to_numpy(dtype=float), y)
        model = convert(native)
        M = adversarial_matrix(model, X.to_numpy(dtype=float), categorical=set(categorical))
        frame = _accepted(native, pd.DataFrame(M, columns=list(model.signature.names)))
        native_X = _native_input(native, frame)
        proba = native.predict_proba(native_X) if hasattr(native, "classes_") else None
        return Fitted(native, model, frame, np.asarray(native.predict(native_X)), proba)


# ---------------------------------------------------------------------------------- data
@lru_cache(maxsize=None)
def symmetric(n_classes: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A 4x4 grid twice at ``mirror == 0`` (once per tied label) and once at ``mirror == 1`` (decided).

    Binary: the two copies carry labels 0 and 1, so every tree leaves them a residual of exactly 0.
    Multiclass: the copies carry classes 1 and 2 (mirror images), the decided rows classes 0 and 3.
    """
    rows, y = [], []
    for a in (-2.0, -1.0, 1.0, 2.0):
        for b in (-2.0, -1.0, 1.0, 2.0):
            rows += [[a, b, 0.0], [a, b, 0.0], [a, b, 1.0]]
            y += [0, 1, int(a > 0)] if n_classes == 2 else [1, 2, 0 if a < 0 else 3]
    return pd.DataFrame(rows, columns=["a", "b", "mirror"]), np.asarray(y)


@lru_cache(maxsize=None)
def numeric(n: int = 240) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(11)
    X = pd.DataFrame({"u": rng.normal(0, 2, n), "v": rng.uniform(-1, 1, n), "w": rng.lognormal(0, 1, n)})
    z = X.u - 2 * X.v + np.log(X.w)
    return X, {"regression": np.column_stack([z, X.u * X.v, np.sin(X.u) + X.w]),
               "one": np.full(n, 7), "one_str": np.full(n, "only", dtype=object)}


@lru_cache(maxsize=None)
def with_codes(n: int = 400) -> tuple[pd.DataFrame, dict]:
    """Two numeric categorical columns (one with negative categories, NaN in the other) + a number."""
    rng = np.random.default_rng(5)
    code = rng.integers(0, 12, n).astype(float)
    code[rng.random(n) < 0.08] = np.nan
    signed = rng.integers(-3, 3, n) * 1.5
    x = rng.normal(0, 1, n)
    X = pd.DataFrame({"code": code, "x": x, "signed": signed})
    raw = np.where(np.nan_to_num(code, nan=1.0) % 3 == 0, 1.0, -1.0) + x + 0.4 * signed
    return X, {"binary": (raw > 0).astype(int), "regression": raw}


@lru_cache(maxsize=None)
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return X, np.asarray(y)


# ---------------------------------------------------------------------------------- builders
def _sk(name: str, **params):
    from sklearn import ensemble, linear_model, tree

    for module in (tree, ensemble, linear_model):
        if hasattr(module, name):
            return getattr(module, name)(**params)
    raise ValueError(name)


def _pipe(*steps):
    from sklearn.pipeline import make_pipeline

    return make_pipeline(*steps)


def _scaler(name: str, **params):
    from sklearn import preprocessing

    return getattr(preprocessing, name)(**params)


def _weighted_columns(final, kind: str):
    """Iris through a ColumnTransformer whose parts are weighted (issue 11: 0.139 off, labels flipped)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    X, _ = iris()
    sepal, petal = list(X.columns[:2]), list(X.columns[2:])
    if kind == "minmax":  # no FeatureMap survives: the adversarial rows hit every mapped threshold
        parts = [("sepal", MinMaxScaler(), sepal), ("petal", "passthrough", petal)]
    else:
        parts = [("sepal", StandardScaler(), sepal), ("petal", MinMaxScaler(feature_range=(-1, 1)), petal)]
    return _pipe(ColumnTransformer(parts, transformer_weights={"sepal": 0.3, "petal": 2.7}), final)


_GB = dict(n_estimators=10, max_depth=2, random_state=0)
_FOREST = dict(n_estimators=6, max_depth=5, random_state=0, n_jobs=1)
_HGB = dict(max_iter=12, max_depth=4, random_state=0, early_stopping=False)


def _symmetric_case(name: str, n_classes: int, **params) -> Fitted:
    X, y = symmetric(n_classes)
    return _fitted(_sk(name, **params), X, y)


def _numeric_case(estimator, target: str) -> Fitted:
    X, targets = numeric()
    return _fitted(estimator, X, targets[target])


def _codes_case(estimator, target: str) -> Fitted:
    X, targets = with_codes()
    return _fitted(estimator, X, targets[target], categorical=(0, 2), names=False)


def _iris_case(estimator, regression: bool = False) -> Fitted:
    X, y = iris()
    return _fitted(estimator, X, X.petal_width.to_numpy() * 1.5 + y if regression else y)


_SPECS: list[tuple[str, str, str, object]] = [
    ("gb-symmetric-binary", "trees", "binary", lambda: _symmetric_case("GradientBoostingClassifier", 2, **_GB)),
    ("gb-symmetric-multiclass", "trees", "multiclass",
     lambda: _symmetric_case("GradientBoostingClassifier", 4, **_GB)),
    ("hgb-symmetric-binary", "trees", "binary",
     lambda: _symmetric_case("HistGradientBoostingClassifier", 2, min_samples_leaf=2, **_HGB)),
    ("hgb-symmetric-multiclass", "trees", "multiclass",
     lambda: _symmetric_case("HistGradientBoostingClassifier", 4, min_samples_leaf=2, **_HGB)),
    ("dt-one-class", "trees", "multiclass", lambda: _numeric_case(_sk("DecisionTreeClassifier"), "one")),
    ("rf-one-class", "trees", "multiclass",
     lambda: _numeric_case(_sk("RandomForestClassifier", **_FOREST), "one_str")),
    ("et-one-class", "trees", "multiclass", lambda: _numeric_case(_sk("ExtraTreesClassifier", **_FOREST), "one")),
    ("dt-multioutput", "trees", "regression",
     lambda: _numeric_case(_sk("DecisionTreeRegressor", max_depth=5, random_state=0), "regression")),
    ("rf-multioutput", "trees", "regression",
     lambda: _numeric_case(_sk("RandomForestRegressor", **_FOREST), "regression")),
    ("et-multioutput", "trees", "regression",
     lambda: _numeric_case(_sk("ExtraTreesRegressor", **_FOREST), "regression")),
    ("hgb-numeric-categorical-binary", "trees", "binary",
     lambda: _codes_case(_sk("HistGradientBoostingClassifier", categorical_features=[0, 2], **_HGB), "binary")),
    ("hgb-numeric-categorical-regression", "trees", "regression",
     lambda: _codes_case(_sk("HistGradientBoostingRegressor", categorical_features=[True, False, True], **_HGB),
                         "regression")),
    ("pipe-minmax-clip-dt", "trees", "multiclass",
     lambda: _iris_case(_pipe(_scaler("MinMaxScaler", clip=True), _sk("DecisionTreeClassifier", random_state=0)))),
    ("pipe-maxabs-clip-hgb", "trees", "multiclass",
     lambda: _iris_case(_pipe(_scaler("MaxAbsScaler", clip=True), _sk("HistGradientBoostingClassifier", **_HGB)))),
    ("pipe-robust-minmax-gb", "trees", "multiclass",
     lambda: _iris_case(_pipe(_scaler("RobustScaler"), _scaler("MinMaxScaler", feature_range=(-3, 2)),
                              _sk("GradientBoostingClassifier", **_GB)))),
    ("pipe-robust-rf", "trees", "multiclass",
     lambda: _iris_case(_pipe(_scaler("RobustScaler"), _sk("RandomForestClassifier", **_FOREST)))),
    ("pipe-weights-minmax-rf", "trees", "multiclass",
     lambda: _iris_case(_weighted_columns(_sk("RandomForestClassifier", **_FOREST), "minmax"))),
    ("pipe-weights-gb", "trees", "multiclass",
     lambda: _iris_case(_weighted_columns(_sk("GradientBoostingClassifier", **_GB), "mixed"))),
    ("pipe-weights-ridge", "linear", "regression",
     lambda: _iris_case(_weighted_columns(_sk("Ridge", alpha=0.5), "mixed"), regression=True)),
    ("pipe-minmax-maxabs-linreg", "linear", "regression",
     lambda: _iris_case(_pipe(_scaler("MinMaxScaler", feature_range=(-1, 3)), _scaler("MaxAbsScaler"),
                              _sk("LinearRegression")), regression=True)),
]

CASES: list[Case] = [Case(f"sklearn-{suffix}", build, library="sklearn", kind=kind, task=task)
                     for suffix, kind, task, build in _SPECS]
