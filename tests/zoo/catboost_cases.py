"""CatBoost zoo cases: oblivious (and two non-symmetric) trees on numeric features, one thread.

Training data carries NaNs (``nan_mode`` Min and Max), exact zeros and, in one case, a feature
quantized into many borders.  Rows: the adversarial matrix of the converted model (each border,
its double and float32 neighbours, the doubles where the float32 cast flips, +-0, +-inf, doubles
that overflow float32, NaN), led by a block of the hardest ones so that the Spark matrix (which
takes the first 12 rows) sees a border, its neighbours, NaN and +-inf too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import catboost as cb
import numpy as np

import sparkscore as ss
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix, threshold_values
from tests.zoo.gbm_cases import _data, _frame

_CB = dict(iterations=15, depth=4, learning_rate=0.3, thread_count=1, verbose=0, random_seed=0,
           allow_writing_files=False)


def _names(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


def head_rows(model, X: np.ndarray) -> np.ndarray:
    """12 rows: one border of the first split and its neighbours, the all-NaN row, +inf and -inf rows."""
    est = model.estimator
    internal = np.nonzero(est.feature >= 0)[0]
    block = [np.full((1, X.shape[1]), np.nan), np.full((1, X.shape[1]), np.inf), np.full((1, X.shape[1]), -np.inf)]
    if len(internal):
        node = internal[0]
        vals = threshold_values(float(est.threshold[node]))[:9]
        rows = X[:len(vals)].copy()
        rows[:, int(est.feature[node])] = vals
        block.insert(0, rows)
    return np.concatenate(block)


def _fitted(native, model, X: np.ndarray, *, proba: bool) -> Fitted:
    rows = np.concatenate([head_rows(model, X), adversarial_matrix(model, X)])
    frame = _frame(rows, model.signature.names)
    expected = np.asarray(native.predict(frame))
    if proba and expected.ndim == 2:  # multiclass predict returns labels as an (n, 1) column
        expected = expected[:, 0]
    return Fitted(native=native, model=model, X=frame, expected_predict=expected,
                  expected_proba=np.asarray(native.predict_proba(frame)) if proba else None)


def _fit(estimator, y_of, *, proba: bool, seed: int = 40) -> Fitted:
    X, signal, rng = _data(seed=seed)
    estimator.fit(_frame(X, _names(X.shape[1])), y_of(signal, rng))
    return _fitted(estimator, ss.convert(estimator), X, proba=proba)


def cb_regression() -> Fitted:
    """RMSE, nan_mode Min (the default): NaN is 'not greater' than every border."""
    return _fit(cb.CatBoostRegressor(**_CB), lambda s, rng: s + 0.1 * rng.normal(size=len(s)), proba=False)


def cb_multi_target_nan_max() -> Fitted:
    """MultiRMSE (a double[] per row), nan_mode Max: NaN goes to the 'greater' side of every split on a
    feature that had NaNs."""
    X, signal, rng = _data(seed=41)
    Y = np.column_stack([signal, -signal + 0.1 * rng.normal(size=len(signal)), np.nan_to_num(X[:, 1], nan=2.0)])
    native = cb.CatBoostRegressor(nan_mode="Max", loss_function="MultiRMSE", **_CB)
    native.fit(_frame(X, _names(4)), Y)
    return _fitted(native, ss.convert(native), X, proba=False)


def cb_binary() -> Fitted:
    labels = np.array(["stay", "churn"])
    return _fit(cb.CatBoostClassifier(**_CB),
                lambda s, rng: labels[(s + 0.3 * rng.normal(size=len(s)) > 0).astype(int)], proba=True, seed=42)


def cb_multiclass() -> Fitted:
    """Integer labels out of order: CatBoost's class_names (sorted) give the output order."""
    labels = np.array([7, 2, 5])
    return _fit(cb.CatBoostClassifier(**dict(_CB, depth=3, iterations=10)),
                lambda s, rng: labels[np.digitize(s + 0.3 * rng.normal(size=len(s)), [-0.5, 0.5])], proba=True, seed=43)


def cb_deep() -> Fitted:
    """Depth 10: 1,024 leaves per oblivious tree (the perfect-tree strategies' worst case here)."""
    return _fit(cb.CatBoostRegressor(**dict(_CB, depth=10, iterations=4)), lambda s, rng: s, proba=False, seed=44)


def cb_many_borders() -> Fitted:
    """One feature quantized into 1,024 borders, with a target that keeps splitting on it."""
    X, signal, rng = _data(seed=45)
    X[:, 0] = rng.normal(size=len(X)) * 1e3
    y = 3 * np.sin(X[:, 0] / 150.0) + 0.2 * signal
    native = cb.CatBoostRegressor(per_float_feature_quantization=["0:border_count=1024"],
                                  **dict(_CB, depth=6, iterations=30))
    native.fit(_frame(X, _names(4)), y)
    return _fitted(native, ss.convert(native), X, proba=False)


def cb_lossguide() -> Fitted:
    """grow_policy=Lossguide: non-symmetric trees ("trees" in the JSON), node by node."""
    return _fit(cb.CatBoostRegressor(grow_policy="Lossguide", max_leaves=12, loss_function="MAE", **_CB),
                lambda s, rng: s, proba=False, seed=46)


def cb_json_file_max_multiclass() -> Fitted:
    """A JSON export converted through ``ss.convert(path)``, scored natively by the model loaded from it."""
    X, signal, rng = _data(seed=47)
    native = cb.CatBoostClassifier(nan_mode="Max", grow_policy="Depthwise", **dict(_CB, depth=3, iterations=8))
    native.fit(_frame(X, _names(4)), np.array(["a", "b", "c"])[np.digitize(signal, [-0.4, 0.6])])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        native.save_model(str(path), format="json")
        model = ss.convert(path)
        loaded = cb.CatBoostClassifier()
        loaded.load_model(str(path), format="json")
    return _fitted(loaded, model, X, proba=True)


CASES = [
    Case("catboost-regression", cb_regression, "catboost", "trees", "regression"),
    Case("catboost-multirmse-nan-max", cb_multi_target_nan_max, "catboost", "trees", "regression"),
    Case("catboost-binary", cb_binary, "catboost", "trees", "binary"),
    Case("catboost-multiclass", cb_multiclass, "catboost", "trees", "multiclass"),
    Case("catboost-depth10", cb_deep, "catboost", "trees", "regression"),
    Case("catboost-many-borders", cb_many_borders, "catboost", "trees", "regression"),
    Case("catboost-lossguide-mae", cb_lossguide, "catboost", "trees", "regression"),
    Case("catboost-json-depthwise-multiclass", cb_json_file_max_multiclass, "catboost", "trees", "multiclass"),
]
