"""Ensemble zoo cases (issue 16 item 3): each member is a native model scored natively, the
expected output is that combined in numpy (``weights`` normalised, vote ties to the first class).

Members read overlapping column subsets (the ensemble's signature is their union), and the rows
are every member's adversarial rows (thresholds and their float32 / double neighbours, specials)
with the other columns drawn from training rows.  Fused cases (one GLM / one tree ensemble) are
checked at rtol 1e-9 (float64 reassociation of the weighted sums); unfused ones, whose members
run as they would alone, at 1e-12.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb

import sparkscore as ss
from sparkscore.ir import ensemble as E
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix

FUSED = dict(rtol=1e-9, atol=1e-9)
UNFUSED = dict(rtol=1e-12, atol=1e-12)
_LGB = dict(n_estimators=8, num_leaves=7, min_child_samples=5, verbose=-1, n_jobs=1, random_state=0)
COLUMNS = ("a", "b", "c", "d", "e")


def _data(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(COLUMNS))), columns=list(COLUMNS))
    X.loc[rng.random(n) < 0.2, "c"] = 0.0
    return X


def _target(X: pd.DataFrame) -> np.ndarray:
    return (X.a - 0.5 * X.b + 0.8 * (X.c == 0) + 0.3 * X.d * X.e).to_numpy()


def _members(specs, X: pd.DataFrame, y):
    """Fit ``(native, columns)`` specs; returns natives, columns and converted models."""
    natives, cols, models = [], [], []
    for native, columns in specs:
        native.fit(X[list(columns)], y)
        natives.append(native)
        cols.append(list(columns))
        models.append(ss.convert(native))
    return natives, cols, models


def _rows(ensemble, natives, cols, models, X: pd.DataFrame) -> pd.DataFrame:
    """Adversarial rows of every member, in the union's column order, accepted by every native."""
    rng = np.random.default_rng(0)
    names = list(ensemble.signature.names)
    base = X[names].to_numpy(dtype=float)
    blocks = []
    for model, columns in zip(models, cols):
        M = adversarial_matrix(model, X[columns].to_numpy(dtype=float), rng=rng)
        block = base[rng.integers(0, len(base), size=len(M))].copy()
        block[:, [names.index(c) for c in columns]] = M
        blocks.append(block)
    frame = pd.DataFrame(np.concatenate(blocks), columns=names)
    keep = np.ones(len(frame), dtype=bool)
    for native, columns in zip(natives, cols):
        keep &= _accepted_rows(native, frame[columns])
    return frame[keep].reset_index(drop=True)


def _accepted_rows(native, frame: pd.DataFrame) -> np.ndarray:
    """Mask of the rows the native predict accepts (NaN / beyond-float32 values probed per column,
    as :func:`tests.zoo.sklearn_cases._accepted` does)."""
    keep = np.ones(len(frame), dtype=bool)
    for name in frame.columns:
        values = frame[name].to_numpy(dtype=float)
        for special, rows in ((np.nan, np.isnan(values)), (np.inf, np.abs(values) >= np.finfo(np.float32).max)):
            if rows.any():
                probe = frame.iloc[[0]].copy()
                probe[name] = special
                try:
                    native.predict(probe)
                except ValueError:
                    keep &= ~rows
    return keep


def _case(specs, combiner, y_of, *, weights=None, expected, stack=None, classes=None, tol=UNFUSED):
    X = _data()
    y = y_of(X)
    natives, cols, models = _members(specs, X, y)
    stack_model = stack(natives, cols, X) if stack is not None else None
    ensemble = E.build(models, combiner, weights, stack=stack_model, classes=classes, name="zoo_ensemble")
    rows = _rows(ensemble, natives, cols, models, X)
    w = np.full(len(natives), 1.0 / len(natives)) if weights is None else np.asarray(weights) / np.sum(weights)
    predict, proba = expected(natives, [rows[c] for c in cols], w)
    return Fitted(native=natives, model=ensemble, X=rows, expected_predict=np.asarray(predict),
                  expected_proba=proba, **tol)


# ---------------------------------------------------------------------------------- combiners
def _mean_values(natives, frames, w):
    return sum(wi * n.predict(f) for wi, n, f in zip(w, natives, frames)), None


def _mean_proba(natives, frames, w):
    P = sum(wi * n.predict_proba(f) for wi, n, f in zip(w, natives, frames))
    return natives[0].classes_[np.argmax(P, axis=1)], P


def _margin_mean_binary(natives, frames, w):
    z = sum(wi * n.predict(f, raw_score=True) for wi, n, f in zip(w, natives, frames))
    p = 1.0 / (1.0 + np.exp(-z))
    return natives[0].classes_[(z > 0).astype(int)], np.column_stack([1.0 - p, p])


def _vote(natives, frames, w):
    classes = natives[0].classes_
    shares = np.zeros((len(frames[0]), len(classes)))
    for wi, n, f in zip(w, natives, frames):
        shares[np.arange(len(f)), np.searchsorted(classes, n.predict(f))] += wi
    return classes[np.argmax(shares, axis=1)], shares  # ties: the first class


def _stack_inputs(natives, frames):
    return np.column_stack([n.predict_proba(f)[:, 1] for n, f in zip(natives, frames)])


def _fit_stack(natives, cols, X):
    from sklearn.linear_model import LogisticRegression

    y = (_target(X) > 0).astype(int)
    lr = LogisticRegression().fit(_stack_inputs(natives, [X[c] for c in cols]), y)
    _fit_stack.native = lr
    return ss.convert(lr)


def _stacked(natives, frames, w):
    lr = _fit_stack.native
    F = _stack_inputs(natives, frames)
    return lr.predict(F), lr.predict_proba(F)


# ---------------------------------------------------------------------------------- cases
def glm_mean():
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    specs = [(LinearRegression(), "abc"), (Ridge(alpha=2.0), "bcd"), (make_pipeline(StandardScaler(), Ridge()), "ade"),
             (LinearRegression(), "e")]
    return _case(specs, "mean", _target, expected=_mean_values, tol=FUSED)


def trees_weighted():
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    specs = [(GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0), "abc"),
             (RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0), "cde")]
    return _case(specs, "weighted", _target, weights=[0.7, 0.3], expected=_mean_values, tol=FUSED)


def lgbm_margin_mean():
    specs = [(lgb.LGBMClassifier(**_LGB), "abc"), (lgb.LGBMClassifier(**dict(_LGB, num_leaves=5)), "bde")]
    return _case(specs, "margin_mean", lambda X: (_target(X) > 0).astype(int), weights=[2.0, 1.0],
                 expected=_margin_mean_binary, tol=FUSED)


def mixed_mean_proba():
    from sklearn.linear_model import LogisticRegression

    specs = [(LogisticRegression(), "ab"), (xgb.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1), "cde"),
             (lgb.LGBMClassifier(**_LGB), "ace")]
    return _case(specs, "weighted", lambda X: (_target(X) > 0).astype(int), weights=[1.0, 2.0, 1.0],
                 expected=_mean_proba)


def multiclass_vote():
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    def y_of(X):
        return np.digitize(_target(X), [-0.5, 0.5])

    specs = [(LogisticRegression(max_iter=500), "abc"), (DecisionTreeClassifier(max_depth=3, random_state=0), "cde"),
             (lgb.LGBMClassifier(**_LGB), "abe"), (DecisionTreeClassifier(max_depth=2, random_state=1), "ab")]
    return _case(specs, "vote", y_of, expected=_vote)


def stacked_binary():
    from sklearn.linear_model import LogisticRegression

    specs = [(LogisticRegression(), "abc"), (lgb.LGBMClassifier(**_LGB), "cde")]
    return _case(specs, "stack", lambda X: (_target(X) > 0).astype(int), stack=_fit_stack, expected=_stacked)


CASES = [
    Case("ensemble-glm-mean-fused", glm_mean, "ensemble", "ensemble", "regression"),
    Case("ensemble-trees-weighted-fused", trees_weighted, "ensemble", "ensemble", "regression"),
    Case("ensemble-lgbm-margin-mean-fused", lgbm_margin_mean, "ensemble", "ensemble", "binary"),
    Case("ensemble-mixed-weighted-proba", mixed_mean_proba, "ensemble", "ensemble", "binary"),
    Case("ensemble-multiclass-vote", multiclass_vote, "ensemble", "ensemble", "multiclass"),
    Case("ensemble-stack-binary", stacked_binary, "ensemble", "ensemble", "binary"),
]
