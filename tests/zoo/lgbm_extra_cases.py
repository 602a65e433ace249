"""More LightGBM model kinds (issue 11 item 10, issue 12 item 7): rankers, dart / goss / rf boosting,
quantile / mape objectives, use_missing=False, and frame columns whose names LightGBM rewrites.

Small models (a few hundred rows, <= 20 trees, one thread); rows from the shared adversarial builder
(thresholds, nextafter, float32-rounded, NaN, +-0, +-inf).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

import sparkscore as ss
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix
from tests.zoo.gbm_cases import _data, _fitted, _frame

_LGB = dict(n_estimators=15, num_leaves=8, min_child_samples=10, num_threads=1, verbose=-1)
_GROUPS = [50] * 8  # 400 rows


def _relevance(signal: np.ndarray) -> np.ndarray:
    return np.digitize(signal, [-0.8, 0.0, 0.8]).astype(int)


def lgb_ranker() -> Fitted:
    """LGBMRanker (lambdarank): predict is the raw summed score."""
    X, signal, _ = _data(seed=21)
    names = [f"x{i}" for i in range(X.shape[1])]
    native = lgb.LGBMRanker(**_LGB).fit(_frame(X, names), _relevance(signal), group=_GROUPS)
    model = ss.convert(native)
    return _fitted(native, model, _frame(adversarial_matrix(model, X), model.signature.names), False)


def _booster(params: dict, seed: int, y_of=lambda s, rng: s + 0.1 * rng.normal(size=len(s)), group=None,
             allow_inf: bool = True) -> Fitted:
    X, signal, rng = _data(seed=seed)
    base = dict(num_leaves=8, min_data_in_leaf=10, num_threads=1, verbose=-1)
    booster = lgb.train(dict(base, **params), lgb.Dataset(X, y_of(signal, rng), group=group), num_boost_round=15)
    model = ss.convert(booster)
    rows = _frame(adversarial_matrix(model, X, allow_inf=allow_inf), model.signature.names)
    return _fitted(booster, model, rows, False, predict=lambda df: booster.predict(df.to_numpy()))


def lgb_rank_xendcg() -> Fitted:
    return _booster(dict(objective="rank_xendcg"), 22, lambda s, rng: _relevance(s), group=_GROUPS)


def lgb_dart() -> Fitted:
    """dart: the saved trees already carry their drop-normalised weights."""
    return _booster(dict(boosting="dart", drop_rate=0.3, skip_drop=0.0, seed=1), 23)


def lgb_goss() -> Fitted:
    return _booster(dict(boosting="goss", learning_rate=0.3), 24)


def lgb_rf() -> Fitted:
    """boosting=rf: the trees' outputs are averaged, not summed."""
    return _booster(dict(boosting="rf", bagging_freq=1, bagging_fraction=0.7), 25)


def lgb_quantile() -> Fitted:
    return _booster(dict(objective="quantile", alpha=0.8), 26)


def lgb_mape() -> Fitted:
    return _booster(dict(objective="mape"), 27, lambda s, rng: 3.0 + s)


def lgb_no_missing() -> Fitted:
    """use_missing=False: NaN is read as 0.0 at every split (missing type None)."""
    return _booster(dict(use_missing=False), 28)


def lgb_spaced_names() -> Fitted:
    """Column names with spaces / punctuation (sklearn's breast_cancer style): LightGBM stores
    ``mean radius`` as ``mean_radius``; the conversion with the frame's names scores the frame."""
    X, signal, rng = _data(seed=29)
    names = ["mean radius", "worst  area", "ratio (a/b)", "x-3 %"]
    y = (signal + 0.3 * rng.normal(size=len(signal)) > 0).astype(int)
    native = lgb.LGBMClassifier(**_LGB).fit(_frame(X, names), y)
    assert native.booster_.feature_name()[0] == "mean_radius", "LightGBM no longer rewrites names: revisit"
    model = ss.convert(native, feature_names=names)
    return _fitted(native, model, _frame(adversarial_matrix(model, X), names), True)


CASES = [
    Case("lightgbm-ranker-lambdarank", lgb_ranker, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-rank-xendcg", lgb_rank_xendcg, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-dart", lgb_dart, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-goss", lgb_goss, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-rf", lgb_rf, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-quantile", lgb_quantile, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-mape", lgb_mape, "lightgbm", "trees", "regression"),
    Case("lightgbm-booster-use-missing-false", lgb_no_missing, "lightgbm", "trees", "regression"),
    Case("lightgbm-spaced-names", lgb_spaced_names, "lightgbm", "trees", "binary"),
]
