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
    """Margins ``X @ coef + intercept`` (float64 values; float32-rounded for float32 models).

    Row-major X makes numpy hand BLAS the call sklearn's ``decision_function`` makes, so these
    margins are bit-identical to sklearn's (tests/importers/test_sklearn.py checks it behind a
    scaler).  The compiled kernels sum in their own order: on a row with several non-zero products
    that is a last-bit difference, which sklearn's own BLAS result also shows between CPU kernels
    and batch splits (native noise); a row with one non-zero product has one margin in every order
    (the zoo's decision-boundary rows).
    """
    X = np.ascontiguousarray(X)
    if model.dtype == "float64":
        return X @ model.coef + model.intercept
    return linear_from_dot(model, float32_input(X) @ model.coef)


def float32_input(X: np.ndarray) -> np.ndarray:
    """X as a float32 model reads it: rounded to float32 (beyond FLT_MAX: +-inf), held in float64."""
    with np.errstate(over="ignore"):
        return X.astype(np.float32).astype(np.float64)


def linear_from_dot(model: LinearModel, dot: np.ndarray) -> np.ndarray:
    """Margins of a float32 model from ``float32_input(X) @ coef`` computed in float64.

    sklearn computes the float32 dot product with BLAS ``sgemv``/``sgemm``, whose rounding for one
    row depends on the *other* rows of the call (OpenBLAS blocks rows by 4: the same rows scored in
    chunks of 7 differ in ~25% of rows by 1 float32 ulp), so no per-row sum order is the native one.
    The products of float32 values are exact in float64; their float64 sum rounded once to float32 is
    within a float32 ulp of ``sum |x_i w_i|`` of every order BLAS may use, and overflows to +-inf
    exactly when the float32 value does.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        dot32 = dot.astype(np.float32)
        if model.intercept_dtype == "float32":
            return (dot32 + model.intercept.astype(np.float32)).astype(np.float64)
        return dot32.astype(np.float64) + model.intercept


def linear_scores(model: LinearModel, X: np.ndarray) -> np.ndarray:
    return linear_link(model, linear_raw(model, X))


def linear_link(model: LinearModel, z: np.ndarray) -> np.ndarray:
    """The GLM's link on its margins, rounded to float32 where sklearn's output is float32."""
    out = apply_link(model.link, z)
    if model.output_dtype == "float32":
        with np.errstate(over="ignore"):
            return out.astype(np.float32).astype(np.float64)
    return out


def apply_link(link: str, z: np.ndarray) -> np.ndarray:
    if link == "identity":
        return z
    if link in ("logistic", "sigmoid"):
        return sigmoid(z)
    if link == "softmax":
        return softmax(z)
    if link in ("ovr_logistic", "ovr_logistic_zero"):
        return normalise(sigmoid(z), uniform_if_zero=link == "ovr_logistic")
    if link == "modified_huber":
        return normalise((np.clip(z, -1.0, 1.0) + 1.0) / 2.0, uniform_if_zero=True)
    if link == "exp":
        with np.errstate(over="ignore"):
            return np.exp(z)
    raise ValueError(f"unknown link {link!r}")


def normalise(p: np.ndarray, uniform_if_zero: bool) -> np.ndarray:
    """Per-class scores divided by their row sum (single-output: unchanged), as sklearn does it:
    rows summing to 0 become ``1 / k`` (``_predict_proba_lr``, SGD) or stay 0 (one-vs-rest)."""
    if p.shape[1] == 1:
        return p
    total = p.sum(axis=1, keepdims=True)
    zero = total == 0
    if uniform_if_zero:
        p = np.where(zero, 1.0, p)
        total = np.where(zero, float(p.shape[1]), total)
    else:
        total = np.where(zero, 1.0, total)  # 0 / 1: the row stays 0
    return p / total


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
    if vals.shape[2] == 1:
        total = np.zeros((n, ens.n_outputs))
        for k in range(ens.n_outputs):
            mask = ens.tree_output == k
            total[:, k] = vals[:, mask, 0].sum(axis=1)
    else:
        total = vals.sum(axis=1)
    if ens.aggregation == "mean":
        total = total / ens.n_trees
    return out + total


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
