"""LightGBM and XGBoost zoo cases: small models (a few hundred rows, <= 40 trees, one thread).

Training data carries NaNs and exact zeros so that every missing-value rule (LightGBM NaN / None /
zero-as-missing, XGBoost default directions) and the near-zero thresholds appear in the trees.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb

import sparkscore as ss
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix

N_ROWS = 400


def _data(n_features: int = 4, seed: int = 0, nan_col: int | None = 1, zero_col: int | None = 2):
    """Features with a NaN-bearing and a zero-heavy column, plus a smooth target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_ROWS, n_features))
    if zero_col is not None:
        X[rng.random(N_ROWS) < 0.3, zero_col] = 0.0
    signal = X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) - 0.7 * (X[:, 2] == 0) + 0.3 * X[:, 3]
    if nan_col is not None:
        X[rng.random(N_ROWS) < 0.15, nan_col] = np.nan
    return X, signal, rng


def _frame(X: np.ndarray, names) -> pd.DataFrame:
    return pd.DataFrame(X, columns=list(names))


def _fitted(native, model, X: pd.DataFrame, proba: bool, predict=None) -> Fitted:
    expected = native.predict(X) if predict is None else predict(X)
    return Fitted(native=native, model=model, X=X, expected_predict=np.asarray(expected),
                  expected_proba=np.asarray(native.predict_proba(X)) if proba else None)


# ----------------------------------------------------------------------------------- LightGBM
_LGB = dict(n_estimators=25, num_leaves=8, min_child_samples=10, num_threads=1, verbose=-1)


def _lgb_sklearn(estimator, y_of, proba: bool, *, allow_inf: bool = True, **data_kw) -> Fitted:
    X, signal, rng = _data(**data_kw)
    names = [f"x{i}" for i in range(X.shape[1])]
    native = estimator.fit(_frame(X, names), y_of(signal, rng))
    model = ss.convert(native)
    rows = _frame(adversarial_matrix(model, X, allow_inf=allow_inf), model.signature.names)
    return _fitted(native, model, rows, proba)


def lgb_regression() -> Fitted:
    return _lgb_sklearn(lgb.LGBMRegressor(**_LGB), lambda s, rng: s + 0.1 * rng.normal(size=len(s)), False)


def lgb_binary() -> Fitted:
    labels = np.array(["stay", "churn"])
    return _lgb_sklearn(lgb.LGBMClassifier(sigmoid=0.7, **_LGB),
                        lambda s, rng: labels[(s + 0.3 * rng.normal(size=len(s)) > 0).astype(int)], True)


def lgb_multiclass() -> Fitted:
    return _lgb_sklearn(lgb.LGBMClassifier(**dict(_LGB, n_estimators=10)),
                        lambda s, rng: np.digitize(s + 0.3 * rng.normal(size=len(s)), [-0.5, 0.5]), True)


def lgb_multiclassova() -> Fitted:
    return _lgb_sklearn(lgb.LGBMClassifier(objective="multiclassova", **dict(_LGB, n_estimators=10)),
                        lambda s, rng: np.digitize(s, [-0.5, 0.5]) * 10, True)


def lgb_zero_as_missing() -> Fitted:
    return _lgb_sklearn(lgb.LGBMRegressor(zero_as_missing=True, **_LGB), lambda s, rng: s, False)


def lgb_categorical() -> Fitted:
    """Integer-coded categorical column (codes, NaN, negatives, fractions and unseen codes probed)."""
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.integers(0, 12, N_ROWS).astype(float), rng.normal(size=N_ROWS)])
    y = np.isin(X[:, 0], [1, 3, 5, 8]) * 2.0 + 0.5 * (X[:, 0] == 11) + X[:, 1]
    X[rng.random(N_ROWS) < 0.1, 0] = np.nan
    names = ["segment", "amount"]
    native = lgb.LGBMRegressor(min_data_per_group=5, cat_smooth=1.0, max_cat_to_onehot=2, **_LGB)
    native.fit(_frame(X, names), y, categorical_feature=["segment"])
    model = ss.convert(native)
    rows = _frame(adversarial_matrix(model, X, categorical={0}), names)
    return _fitted(native, model, rows, False)


def lgb_pandas_categorical() -> Fitted:
    """pandas category column: the model's signature carries the categories, rows carry strings."""
    rng = np.random.default_rng(4)
    cats = ["north", "south", "east", "west", "centre"]
    codes = rng.integers(0, len(cats), N_ROWS)
    amount = rng.normal(size=N_ROWS)
    frame = pd.DataFrame({"region": pd.Categorical.from_codes(codes, cats), "amount": amount})
    y = (np.isin(codes, [1, 3]) * 1.5 + amount + 0.2 * rng.normal(size=N_ROWS) > 0.7).astype(int)
    native = lgb.LGBMClassifier(min_data_per_group=5, cat_smooth=1.0, **_LGB).fit(frame, y)
    model = ss.convert(native)
    numeric = adversarial_matrix(model, np.column_stack([codes, amount]).astype(float), categorical={0})
    valid = np.isin(numeric[:, 0], np.arange(len(cats)))
    region = np.where(valid, np.asarray(cats, dtype=object)[np.where(valid, numeric[:, 0], 0).astype(int)], None)
    rows = pd.DataFrame({"region": pd.Categorical(region, categories=cats), "amount": numeric[:, 1]})
    return _fitted(native, model, rows, True)


def lgb_booster_poisson() -> Fitted:
    X, signal, rng = _data(seed=5)
    y = rng.poisson(np.exp(0.5 * signal))
    booster = lgb.train(dict(objective="poisson", num_leaves=8, min_data_in_leaf=10, num_threads=1, verbose=-1),
                        lgb.Dataset(X, y), num_boost_round=20)
    model = ss.convert(booster)
    rows = _frame(adversarial_matrix(model, X), model.signature.names)
    return _fitted(booster, model, rows, False, predict=lambda df: booster.predict(df.to_numpy()))


# ------------------------------------------------------------------------------------ XGBoost
_XGB = dict(n_estimators=20, max_depth=3, n_jobs=1, tree_method="hist")


def _xgb_sklearn(estimator, y_of, proba: bool, *, eval_split: bool = False) -> Fitted:
    X, signal, rng = _data(seed=6)
    names = [f"x{i}" for i in range(X.shape[1])]
    y = y_of(signal, rng)
    frame = _frame(X, names)
    if eval_split:
        estimator.fit(frame[:300], y[:300], eval_set=[(frame[300:], y[300:])], verbose=False)
    else:
        estimator.fit(frame, y)
    model = ss.convert(estimator)
    rows = _frame(adversarial_matrix(model, X), model.signature.names)
    return _fitted(estimator, model, rows, proba)


def xgb_regression() -> Fitted:
    return _xgb_sklearn(xgb.XGBRegressor(**_XGB), lambda s, rng: s + 0.1 * rng.normal(size=len(s)), False)


def xgb_poisson() -> Fitted:
    return _xgb_sklearn(xgb.XGBRegressor(objective="count:poisson", **_XGB),
                        lambda s, rng: rng.poisson(np.exp(0.5 * s)), False)


def xgb_binary_early_stopping() -> Fitted:
    """Early stopping: predict (and the conversion) use the trees up to best_iteration only."""
    native = xgb.XGBClassifier(early_stopping_rounds=3, learning_rate=0.3, **dict(_XGB, n_estimators=40))
    fitted = _xgb_sklearn(native, lambda s, rng: (s + 0.8 * rng.normal(size=len(s)) > 0).astype(int), True,
                          eval_split=True)
    assert native.best_iteration < 39, "the case must stop early to test best_iteration"
    return fitted


def xgb_multiclass() -> Fitted:
    return _xgb_sklearn(xgb.XGBClassifier(**dict(_XGB, n_estimators=10)),
                        lambda s, rng: np.digitize(s + 0.3 * rng.normal(size=len(s)), [-0.5, 0.5]), True)


def _dmatrix(X, feature_types=None) -> xgb.DMatrix:
    return xgb.DMatrix(X, feature_types=feature_types, enable_categorical=feature_types is not None)


def xgb_booster_regression() -> Fitted:
    X, signal, rng = _data(seed=7)
    booster = xgb.train(dict(max_depth=3, nthread=1, base_score=0.25), xgb.DMatrix(X, signal),
                        num_boost_round=20)
    model = ss.convert(booster)
    rows = _frame(adversarial_matrix(model, X, allow_inf=False), model.signature.names)  # DMatrix rejects inf
    return _fitted(booster, model, rows, False, predict=lambda df: booster.predict(_dmatrix(df.to_numpy())))


def xgb_categorical() -> Fitted:
    """Native categorical splits on a coded column (in-set goes right in XGBoost)."""
    rng = np.random.default_rng(8)
    X = np.column_stack([rng.integers(0, 10, N_ROWS).astype(float), rng.normal(size=N_ROWS)])
    y = np.isin(X[:, 0], [1, 4, 5, 9]) * 2.0 + X[:, 1]
    X[rng.random(N_ROWS) < 0.1, 0] = np.nan
    types = ["c", "q"]
    booster = xgb.train(dict(max_depth=3, nthread=1, max_cat_to_onehot=1, tree_method="hist"),
                        xgb.DMatrix(X, y, feature_types=types, enable_categorical=True), num_boost_round=15)
    model = ss.convert(booster)
    rows = _frame(adversarial_matrix(model, X, allow_inf=False, categorical={0}), model.signature.names)
    return _fitted(booster, model, rows, False, predict=lambda df: booster.predict(_dmatrix(df.to_numpy(), types)))


CASES = [
    Case("lightgbm-regression", lgb_regression, "lightgbm", "trees", "regression"),
    Case("lightgbm-binary", lgb_binary, "lightgbm", "trees", "binary"),
    Case("lightgbm-multiclass", lgb_multiclass, "lightgbm", "trees", "multiclass"),
    Case("lightgbm-multiclassova", lgb_multiclassova, "lightgbm", "trees", "multiclass"),
    Case("lightgbm-zero-as-missing", lgb_zero_as_missing, "lightgbm", "trees", "regression"),
    Case("lightgbm-categorical", lgb_categorical, "lightgbm", "trees", "regression"),
    Case("lightgbm-pandas-categorical", lgb_pandas_categorical, "lightgbm", "trees", "binary"),
    Case("lightgbm-booster-poisson", lgb_booster_poisson, "lightgbm", "trees", "regression"),
    Case("xgboost-regression", xgb_regression, "xgboost", "trees", "regression"),
    Case("xgboost-poisson", xgb_poisson, "xgboost", "trees", "regression"),
    Case("xgboost-binary", xgb_binary_early_stopping, "xgboost", "trees", "binary"),
    Case("xgboost-multiclass", xgb_multiclass, "xgboost", "trees", "multiclass"),
    Case("xgboost-booster-regression", xgb_booster_regression, "xgboost", "trees", "regression"),
    Case("xgboost-categorical", xgb_categorical, "xgboost", "trees", "regression"),
]
