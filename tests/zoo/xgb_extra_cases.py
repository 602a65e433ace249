"""XGBoost zoo cases for issue 11: ``missing=``, float32 transforms, more objectives and boosters.

XGBoost returns float32, so every case here asks for bit-equal outputs (``rtol = atol = 0``).
Rows: the adversarial matrix of the fitted model, plus (for ``missing=`` cases) every feature set
to the missing value, its float32 neighbours and the doubles on either side of where float32
rounding reaches it (``threshold_values``), -M, +-0 and +-tiny.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

import sparkscore as ss
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix, threshold_values
from tests.zoo.gbm_cases import _data, _frame

_XGB = dict(n_estimators=12, max_depth=3, n_jobs=1, tree_method="hist")
TINY = [2.0 ** -150, -(2.0 ** -150), 2.0 ** -149, float(np.nextafter(2.0 ** -150, 1.0)), 1e-46, -1e-46]


def _names(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


def missing_rows(X: np.ndarray, value: float, rng) -> np.ndarray:
    """Rows with every feature at once, then each feature alone, at / around the missing value."""
    vals = [value, -value, 0.0, -0.0, *TINY]
    if np.isfinite(value):
        vals += threshold_values(value)
    else:
        vals += [2.0 ** 128 - 2.0 ** 103, float(np.nextafter(2.0 ** 128 - 2.0 ** 103, 0.0)), 1e300,
                 float(np.finfo(np.float32).max)]
        vals += [-v for v in vals[-4:]]
    blocks = [np.repeat(np.asarray(vals, dtype=np.float64)[:, None], X.shape[1], axis=1)]  # every feature at once
    for j in range(X.shape[1]):
        block = X[rng.integers(0, len(X), size=len(vals))].copy()
        block[:, j] = vals
        blocks.append(block)
    return np.concatenate(blocks)


def _with_sentinel(X: np.ndarray, value: float, rng, share: float = 0.15) -> np.ndarray:
    """Training data where the NaNs of ``_data`` become the sentinel and some more cells hold it."""
    X = np.where(np.isnan(X), value, X)
    X[rng.random(X.shape) < share / X.shape[1]] = value
    return X


def _wrapper_case(estimator, y_of, proba: bool, *, missing: float | None = None, seed: int = 31,
                  allow_inf: bool = True, fit_kw=None) -> Fitted:
    X, signal, rng = _data(seed=seed)
    if missing is not None:
        X = _with_sentinel(X, missing, rng)
    names = _names(X.shape[1])
    y = y_of(signal, rng)
    estimator.fit(_frame(X, names), y, **(fit_kw or {}))
    model = ss.convert(estimator)
    rows = adversarial_matrix(model, X, allow_inf=allow_inf)
    if missing is not None:  # first, so that engine tests that take the head of the rows see them
        rows = np.concatenate([missing_rows(X, missing, rng), rows])
    frame = _frame(rows, model.signature.names)
    expected = np.asarray(estimator.predict(frame))
    expected_proba = np.asarray(estimator.predict_proba(frame)) if proba else None
    return Fitted(native=estimator, model=model, X=frame, expected_predict=expected, expected_proba=expected_proba,
                  rtol=0.0, atol=0.0)


def _booster_case(params: dict, y_of, *, seed: int = 32, rounds: int = 12, group: list[int] | None = None,
                  label_bounds=None) -> Fitted:
    """A bare Booster: NaN is its only missing value, and DMatrix rejects inf."""
    X, signal, rng = _data(seed=seed)
    dtrain = xgb.DMatrix(X, y_of(signal, rng))
    if group is not None:
        dtrain.set_group(group)
    if label_bounds is not None:
        lo, hi = label_bounds(signal, rng)
        dtrain.set_float_info("label_lower_bound", lo)
        dtrain.set_float_info("label_upper_bound", hi)
    booster = xgb.train(dict(params, max_depth=3, nthread=1, tree_method="hist"), dtrain, num_boost_round=rounds)
    model = ss.convert(booster)
    rows = adversarial_matrix(model, X, allow_inf=False)
    frame = _frame(rows, model.signature.names)
    expected = booster.predict(xgb.DMatrix(rows))
    return Fitted(native=booster, model=model, X=frame, expected_predict=np.asarray(expected), rtol=0.0, atol=0.0)


def _binary(s, rng):
    return (s + 0.8 * rng.normal(size=len(s)) > 0).astype(int)


def _three(s, rng):
    return np.digitize(s + 0.3 * rng.normal(size=len(s)), [-0.5, 0.5])


def _noisy(s, rng):
    return s + 0.1 * rng.normal(size=len(s))


# --------------------------------------------------------------------------- missing=
def missing_sentinel_binary() -> Fitted:
    return _wrapper_case(xgb.XGBClassifier(missing=-999.0, **_XGB), _binary, True, missing=-999.0)


def missing_zero_regression() -> Fitted:
    return _wrapper_case(xgb.XGBRegressor(missing=0.0, **_XGB), _noisy, False, missing=0.0)


def missing_inf_multiclass() -> Fitted:
    return _wrapper_case(xgb.XGBClassifier(missing=np.inf, **dict(_XGB, n_estimators=6)), _three, True,
                         missing=np.inf)


def missing_neg_inf_binary() -> Fitted:
    return _wrapper_case(xgb.XGBClassifier(missing=-np.inf, **_XGB), _binary, True, missing=-np.inf)


def missing_inexact_regression() -> Fitted:
    """missing=0.1: compared as float32, so every double that rounds to float32(0.1) is missing."""
    return _wrapper_case(xgb.XGBRegressor(missing=0.1, **_XGB), _noisy, False, missing=0.1)


# --------------------------------------------------------------------------- float32 transforms
def binary_float32() -> Fitted:
    """Many margins near 0 (weak signal): sigmoid in float32, labels by p > 0.5 on the float32 p."""
    return _wrapper_case(xgb.XGBClassifier(**dict(_XGB, learning_rate=0.05)), _binary, True, seed=33)


def multiclass_float32() -> Fitted:
    return _wrapper_case(xgb.XGBClassifier(**dict(_XGB, n_estimators=8)), _three, True, seed=34)


def reg_logistic() -> Fitted:
    return _booster_case(dict(objective="reg:logistic"), lambda s, rng: 1.0 / (1.0 + np.exp(-s)))


def gamma_regression() -> Fitted:
    return _booster_case(dict(objective="reg:gamma"), lambda s, rng: np.exp(0.4 * s))


def tweedie_regression() -> Fitted:
    return _wrapper_case(xgb.XGBRegressor(objective="reg:tweedie", **_XGB),
                         lambda s, rng: rng.poisson(np.exp(0.5 * s)) * 1.0, False, seed=35)


def survival_cox() -> Fitted:
    return _booster_case(dict(objective="survival:cox"),
                         lambda s, rng: np.where(rng.random(len(s)) < 0.8, 1, -1) * (1.0 + np.exp(-0.5 * s)))


def survival_aft() -> Fitted:
    """survival:aft exponentiates in double (unlike every other log-link objective): see exp_double."""
    return _booster_case(dict(objective="survival:aft", eta=0.37), lambda s, rng: np.zeros(len(s)), rounds=20,
                         label_bounds=lambda s, rng: (np.exp(0.3 * s), np.where(rng.random(len(s)) < 0.3, np.inf,
                                                                                  np.exp(0.3 * s))))


# --------------------------------------------------------------------------- more objectives
def _ranker(objective: str) -> Fitted:
    X, signal, rng = _data(seed=36)
    qid = np.repeat(np.arange(20), 20)
    y = np.digitize(signal + 0.3 * rng.normal(size=len(signal)), [0.3] if objective == "rank:map" else [-0.5, 0.5, 1.2])
    native = xgb.XGBRanker(objective=objective, **_XGB).fit(_frame(X, _names(4)), y, qid=qid)
    model = ss.convert(native)
    frame = _frame(adversarial_matrix(model, X), model.signature.names)
    return Fitted(native=native, model=model, X=frame, expected_predict=np.asarray(native.predict(frame)),
                  rtol=0.0, atol=0.0)


def logitraw() -> Fitted:
    return _booster_case(dict(objective="binary:logitraw"), _binary)


def logitraw_classifier() -> Fitted:
    """XGBClassifier(binary:logitraw): predict_proba is [1 - margin, margin] in float32, predict margin > 0.5."""
    return _wrapper_case(xgb.XGBClassifier(objective="binary:logitraw", **_XGB), _binary, True, seed=44)


def hinge() -> Fitted:
    return _wrapper_case(xgb.XGBClassifier(objective="binary:hinge", **_XGB), _binary, True, seed=37)


def squaredlogerror() -> Fitted:
    return _wrapper_case(xgb.XGBRegressor(objective="reg:squaredlogerror", **_XGB),
                         lambda s, rng: np.exp(0.3 * s), False, seed=38)


def quantile() -> Fitted:
    return _wrapper_case(xgb.XGBRegressor(objective="reg:quantileerror", quantile_alpha=0.8, **_XGB), _noisy,
                         False, seed=39)


def dart_regression() -> Fitted:
    """dart: predict uses every tree, each scaled by its weight_drop (no dropout at inference)."""
    return _wrapper_case(xgb.XGBRegressor(booster="dart", rate_drop=0.3, skip_drop=0.0, random_state=1, **_XGB),
                         _noisy, False, seed=40)


def dart_booster() -> Fitted:
    """A bare dart Booster: Booster.predict(DMatrix) scales the leaf itself (not base + leaf - base)."""
    return _booster_case(dict(booster="dart", rate_drop=0.3, skip_drop=0.0, seed=4, base_score=0.3), _noisy)


def softmax_booster() -> Fitted:
    """multi:softmax Booster: predict returns the class index."""
    return _booster_case(dict(objective="multi:softmax", num_class=3), _three, rounds=6)


def dart_binary_missing() -> Fitted:
    return _wrapper_case(xgb.XGBClassifier(booster="dart", rate_drop=0.2, random_state=2, missing=-1.0, **_XGB),
                         _binary, True, missing=-1.0, seed=41)


def random_forest() -> Fitted:
    """num_parallel_tree > 1 (XGBRFClassifier): one boosting round of several trees."""
    return _wrapper_case(xgb.XGBRFClassifier(n_estimators=6, max_depth=3, n_jobs=1, subsample=0.7, random_state=3),
                         _binary, True, seed=42)


def onehot_categorical() -> Fitted:
    """enable_categorical with max_cat_to_onehot above the category count: one-hot splits."""
    rng = np.random.default_rng(43)
    cats = ["a", "b", "c", "d"]
    codes = rng.integers(0, 4, 400)
    usage = rng.normal(size=400)
    frame = pd.DataFrame({"plan": pd.Categorical.from_codes(codes, cats), "usage": usage})
    y = ((codes == 2) + usage > 0.5).astype(int)
    native = xgb.XGBClassifier(enable_categorical=True, max_cat_to_onehot=8, **_XGB).fit(frame, y)
    model = ss.convert(native)
    numeric = np.column_stack([codes.astype(float), usage])
    rows = adversarial_matrix(model, numeric, allow_inf=False, categorical={0})
    plan = pd.Categorical.from_codes(np.where(np.isin(rows[:, 0], [0, 1, 2, 3]), rows[:, 0], -1).astype(int), cats)
    X = pd.DataFrame({"plan": plan, "usage": rows[:, 1]})
    return Fitted(native=native, model=model, X=X, expected_predict=np.asarray(native.predict(X)),
                  expected_proba=np.asarray(native.predict_proba(X)), rtol=0.0, atol=0.0)


# --------------------------------------------------------------------------- gblinear
def linear_rows(X: np.ndarray, rng, missing: float | None = None) -> np.ndarray:
    """Rows for float32 sequential sums: huge values whose products or partial sums overflow
    float32 (one sign, then cancelling signs: inf - inf = NaN), tiny and subnormal ones, +-0, NaN,
    doubles that round to another float32, and the missing value scattered over real rows."""
    big = float(np.finfo(np.float32).max)
    vals = np.asarray([big, -big, 1e38, -1e38, 3e37, 1e30, -1e30, 1e-30, 1e-38, 1e-45, 2.0 ** -149,
                       -(2.0 ** -149), 1.0 + 2.0 ** -30, 0.1, -0.0, 0.0, np.nan], dtype=np.float64)
    d = X.shape[1]
    blocks = [np.repeat(vals[:, None], d, axis=1)]
    for _ in range(4):  # every cell drawn from the values, mixed with ordinary ones
        block = X[rng.integers(0, len(X), size=120)].copy()
        pick = rng.random(block.shape) < 0.5
        block[pick] = rng.choice(vals, size=int(pick.sum()))
        blocks.append(block)
    out = np.concatenate(blocks)
    if missing is not None:
        out[rng.random(out.shape) < 0.15] = missing
    return out


def _gblinear_case(estimator, y_of, proba: bool, *, missing: float | None = None, seed: int = 50) -> Fitted:
    """gblinear via the sklearn wrapper (which predicts through ``DMatrix(X, missing=missing)``):
    XGBoost rejects inf in a DMatrix unless inf is the missing value, so the rows hold none."""
    X, signal, rng = _data(seed=seed)
    if missing is not None:
        X = _with_sentinel(X, missing, rng)
    names = _names(X.shape[1])
    estimator.fit(_frame(X, names), y_of(signal, rng))
    model = ss.convert(estimator)
    rows = np.concatenate([linear_rows(np.nan_to_num(X), rng, missing), adversarial_matrix(model, X, allow_inf=False)])
    frame = _frame(rows, model.signature.names)
    return Fitted(native=estimator, model=model, X=frame, expected_predict=np.asarray(estimator.predict(frame)),
                  expected_proba=np.asarray(estimator.predict_proba(frame)) if proba else None, rtol=0.0, atol=0.0)


_LIN = dict(booster="gblinear", n_estimators=8, n_jobs=1)


def gblinear_regression() -> Fitted:
    return _gblinear_case(xgb.XGBRegressor(missing=-999.0, **_LIN), _noisy, False, missing=-999.0)


def gblinear_binary() -> Fitted:
    return _gblinear_case(xgb.XGBClassifier(**_LIN), _binary, True, seed=51)


def gblinear_multiclass() -> Fitted:
    """multi:softprob: every class starts from the first base score (XGBoost's gblinear)."""
    return _gblinear_case(xgb.XGBClassifier(missing=0.0, **_LIN), _three, True, missing=0.0, seed=52)


def gblinear_poisson() -> Fitted:
    return _gblinear_case(xgb.XGBRegressor(objective="count:poisson", **_LIN),
                          lambda s, rng: rng.poisson(np.exp(np.clip(s, -3, 3) / 2)), False, seed=53)


CASES = [
    Case("xgboost-missing-sentinel", missing_sentinel_binary, "xgboost", "trees", "binary"),
    Case("xgboost-missing-zero", missing_zero_regression, "xgboost", "trees", "regression"),
    Case("xgboost-missing-inf", missing_inf_multiclass, "xgboost", "trees", "multiclass"),
    Case("xgboost-missing-neg-inf", missing_neg_inf_binary, "xgboost", "trees", "binary"),
    Case("xgboost-missing-inexact", missing_inexact_regression, "xgboost", "trees", "regression"),
    Case("xgboost-binary-float32", binary_float32, "xgboost", "trees", "binary"),
    Case("xgboost-multiclass-float32", multiclass_float32, "xgboost", "trees", "multiclass"),
    Case("xgboost-reg-logistic", reg_logistic, "xgboost", "trees", "regression"),
    Case("xgboost-gamma", gamma_regression, "xgboost", "trees", "regression"),
    Case("xgboost-tweedie", tweedie_regression, "xgboost", "trees", "regression"),
    Case("xgboost-survival-cox", survival_cox, "xgboost", "trees", "regression"),
    Case("xgboost-survival-aft", survival_aft, "xgboost", "trees", "regression"),
    Case("xgboost-rank-pairwise", lambda: _ranker("rank:pairwise"), "xgboost", "trees", "regression"),
    Case("xgboost-rank-ndcg", lambda: _ranker("rank:ndcg"), "xgboost", "trees", "regression"),
    Case("xgboost-rank-map", lambda: _ranker("rank:map"), "xgboost", "trees", "regression"),
    Case("xgboost-logitraw", logitraw, "xgboost", "trees", "regression"),
    Case("xgboost-logitraw-classifier", logitraw_classifier, "xgboost", "trees", "binary"),
    Case("xgboost-hinge", hinge, "xgboost", "trees", "binary"),
    Case("xgboost-squaredlogerror", squaredlogerror, "xgboost", "trees", "regression"),
    Case("xgboost-quantile", quantile, "xgboost", "trees", "regression"),
    Case("xgboost-dart", dart_regression, "xgboost", "trees", "regression"),
    Case("xgboost-dart-booster", dart_booster, "xgboost", "trees", "regression"),
    Case("xgboost-softmax-booster", softmax_booster, "xgboost", "trees", "multiclass"),
    Case("xgboost-dart-missing", dart_binary_missing, "xgboost", "trees", "binary"),
    Case("xgboost-random-forest", random_forest, "xgboost", "trees", "binary"),
    Case("xgboost-onehot-categorical", onehot_categorical, "xgboost", "trees", "binary"),
    Case("xgboost-gblinear-regression", gblinear_regression, "xgboost", "linear", "regression"),
    Case("xgboost-gblinear-binary", gblinear_binary, "xgboost", "linear", "binary"),
    Case("xgboost-gblinear-multiclass", gblinear_multiclass, "xgboost", "linear", "multiclass"),
    Case("xgboost-gblinear-poisson", gblinear_poisson, "xgboost", "linear", "regression"),
]
