"""The numpy reference evaluator: the executable definition of the IR's semantics.

Written for clarity and exactness, not speed; every faster backend is tested against it.
"""

from __future__ import annotations

import numpy as np

from sparkscore.ir.features import FeatureMap
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.trees import LEAF, MISSING_NAN, MISSING_ZERO, ZERO_THRESHOLD, TreeEnsemble


def apply_features(features: tuple[FeatureMap, ...], X: np.ndarray) -> np.ndarray:
    for fmap in features:
        X = fmap.apply(X)
    return X


def linear_raw(model: LinearModel, X: np.ndarray) -> np.ndarray:
    return X @ model.coef + model.intercept


def linear_scores(model: LinearModel, X: np.ndarray) -> np.ndarray:
    return apply_link(model.link, linear_raw(model, X))


def apply_link(link: str, z: np.ndarray) -> np.ndarray:
    if link == "identity":
        return z
    if link in ("logistic", "sigmoid"):
        return sigmoid(z)
    if link == "softmax":
        return softmax(z)
    if link == "ovr_logistic":
        p = sigmoid(z)
        if p.shape[1] == 1:
            return p
        return p / p.sum(axis=1, keepdims=True)
    if link == "exp":
        return np.exp(z)
    raise ValueError(f"unknown link {link!r}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def softmax(z: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def comparison_input(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """Inputs as the native library compares them (float32-rounded for float32 models)."""
    if ens.threshold_dtype == "float32":
        with np.errstate(over="ignore"):
            return X.astype(np.float32).astype(np.float64)
    return np.asarray(X, dtype=np.float64)


def go_left(ens: TreeEnsemble, nodes: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Routing decision at internal ``nodes`` for comparison-ready values ``v`` (same shape)."""
    miss = ens.missing[nodes]
    isnan = np.isnan(v)
    v0 = np.where(isnan & (miss != MISSING_NAN), 0.0, v)
    is_missing = np.where(miss == MISSING_NAN, isnan,
                          (miss == MISSING_ZERO) & (np.abs(v0) <= ZERO_THRESHOLD))
    thr = ens.threshold[nodes]
    with np.errstate(invalid="ignore"):
        left = (v0 < thr) if ens.cmp == "<" else (v0 <= thr)
    cat = ens.is_categorical[nodes]
    if cat.any():
        left = left.copy()
        left[cat] = category_in_set(ens, ens.cat_index[nodes[cat]], v0[cat])
    return np.where(is_missing, ens.default_left[nodes], left)


def category_in_set(ens: TreeEnsemble, cat_rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    n_bits = ens.cat_words.shape[1] * 32
    with np.errstate(invalid="ignore"):
        trunc = np.trunc(v)
        invalid = np.isnan(v) | (v < 0 if ens.cat_negative_before_trunc else trunc < 0) | (trunc >= n_bits)
    c = np.where(invalid, 0, trunc).astype(np.int64)
    words = ens.cat_words[cat_rows, c // 32]
    return ~invalid & (((words >> (c % 32).astype(np.uint32)) & 1) == 1)


def tree_leaves(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """Leaf node index (n, n_trees) each row reaches in each tree."""
    Xc = comparison_input(ens, X)
    n = Xc.shape[0]
    nodes = np.broadcast_to(ens.roots, (n, ens.n_trees)).copy()
    while True:
        feat = ens.feature[nodes]
        rows, trees = np.nonzero(feat != LEAF)
        if rows.size == 0:
            return nodes
        nd = nodes[rows, trees]
        left = go_left(ens, nd, Xc[rows, feat[rows, trees]])
        nodes[rows, trees] = np.where(left, ens.left[nd], ens.right[nd])


def tree_raw(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """Untransformed ensemble output (n, n_outputs), accumulated like the native library."""
    leaves = tree_leaves(ens, X)
    n = leaves.shape[0]
    acc_dtype = np.float32 if ens.accumulate_dtype == "float32" else np.float64
    out = np.empty((n, ens.n_outputs), dtype=acc_dtype)
    out[:] = ens.base_score.astype(acc_dtype)
    vals = ens.value.astype(acc_dtype)[leaves]  # (n, T, V)
    if acc_dtype is np.float32:
        # XGBoost: start from float32(base_score) and round after every tree, in tree order
        scale = np.float32(1.0 / ens.n_trees) if ens.aggregation == "mean" else np.float32(1.0)
        for t in range(ens.n_trees):
            if vals.shape[2] == 1:
                out[:, ens.tree_output[t]] += vals[:, t, 0] * scale
            else:
                out += vals[:, t, :] * scale
        return out.astype(np.float64)
    if ens.aggregation == "sum":
        # from base_score, one tree at a time in tree order: sklearn (GradientBoosting, HistGB) and
        # LightGBM add each tree to the running raw prediction, and that order decides exact ties
        for t in range(ens.n_trees):
            if vals.shape[2] == 1:
                out[:, ens.tree_output[t]] += vals[:, t, 0]
            else:
                out += vals[:, t, :]
        return out
    # mean (forests): per-tree outputs summed from 0 in tree order, divided, then base_score
    total = np.zeros((n, ens.n_outputs))
    for t in range(ens.n_trees):
        if vals.shape[2] == 1:
            total[:, ens.tree_output[t]] += vals[:, t, 0]
        else:
            total += vals[:, t, :]
    return out + total / ens.n_trees


def tree_scores(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    return apply_link("logistic" if ens.post_transform == "sigmoid" else ens.post_transform, tree_raw(ens, X))


def raw(model, X: np.ndarray) -> np.ndarray:
    """Untransformed outputs (margins) of a whole Model on its encoded input matrix."""
    Xf = apply_features(model.features, X)
    est = model.estimator
    return linear_raw(est, Xf) if isinstance(est, LinearModel) else tree_raw(est, Xf)


def scores(model, X: np.ndarray) -> np.ndarray:
    """Transformed outputs (n, k) of a whole Model on its encoded input matrix."""
    Xf = apply_features(model.features, X)
    est = model.estimator
    return linear_scores(est, Xf) if isinstance(est, LinearModel) else tree_scores(est, Xf)
