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
    if model.accumulate == "float32_sequential":
        return linear_sequential32(model, X)
    if model.dtype == "float64":
        return X @ model.coef + model.intercept
    return linear_from_dot(model, float32_input(X) @ model.coef)


def linear_sequential32(model: LinearModel, X: np.ndarray) -> np.ndarray:
    """XGBoost gblinear's margins: float32 ``acc = intercept``, then per present feature in order
    ``acc = float32(acc + float32(x * w))`` (vectorised over rows; NaN and ``missing_value`` absent).

    Checked bit for bit against ``Booster.predict`` (output_margin) on rows of huge, tiny, subnormal,
    overflowing, +-0 and missing values: a fused multiply-add would differ on ~10% of such rows.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = np.asarray(X).astype(np.float32)
        absent = np.isnan(X32)
        if model.has_missing_value:
            absent |= X32 == np.float32(model.missing_value[0])
        w = model.coef.astype(np.float32)
        acc = np.broadcast_to(model.intercept.astype(np.float32), (X32.shape[0], model.n_outputs)).copy()
        for f in range(model.n_features):
            x = X32[:, f:f + 1]
            acc = np.where(absent[:, f:f + 1], acc, acc + x * w[f])
    return acc.astype(np.float64)


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
    if link in FLOAT32_LINKS:
        with np.errstate(invalid="ignore"):
            return FLOAT32_LINKS[link](np.asarray(z).astype(np.float32)).astype(np.float64)
    if link in ("logistic", "sigmoid"):
        return sigmoid(z)
    if link == "softmax":
        return softmax(z)
    if link in ("ovr_logistic", "ovr_logistic_zero"):
        return normalise(sigmoid(z), uniform_if_zero=link == "ovr_logistic")
    if link == "modified_huber":
        return normalise((np.clip(z, -1.0, 1.0) + 1.0) / 2.0, uniform_if_zero=True)
    if link in ("exp", "exp_double"):
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


# ---------------------------------------------------------------------------- float32 links
# XGBoost applies its output transforms to float32 margins in float32 arithmetic with libm's
# ``expf`` (glibc's: it is not correctly rounded, so ``float32(exp(double))`` differs from it on
# ~0.06% of inputs).  ``expf`` below is glibc's algorithm (sysdeps/ieee754/flt-32/e_expf.c, the
# same double-precision steps, 32-entry table and cubic polynomial), bit-equal to the machine's
# ``expf`` on 2M sampled inputs.  Every backend applies links through ``apply_link``, so they all
# share this one definition.
_EXP2F_TAB = np.array([
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540], dtype=np.uint64)
_EXPF_N = 32
_EXPF_POLY = (float.fromhex("0x1.c6af84b912394p-5") / _EXPF_N ** 3,
              float.fromhex("0x1.ebfce50fac4f3p-3") / _EXPF_N ** 2,
              float.fromhex("0x1.62e42ff0c52d6p-1") / _EXPF_N)
_EXPF_SHIFT = float.fromhex("0x1.8p+52")
_EXPF_INVLN2N = float.fromhex("0x1.71547652b82fep+0") * _EXPF_N
_EXPF_OVERFLOW = float.fromhex("0x1.62e42ep6")    # x above: inf
_EXPF_UNDERFLOW = float.fromhex("-0x1.9fe368p6")  # x below: 0


def expf(x: np.ndarray) -> np.ndarray:
    """glibc's ``expf`` of a float32 array, as a float32 array (NaN -> NaN)."""
    xd = np.asarray(x, dtype=np.float32).astype(np.float64)
    finite = np.isfinite(xd)
    safe = np.where(finite, np.clip(xd, _EXPF_UNDERFLOW, _EXPF_OVERFLOW), 0.0)
    z = _EXPF_INVLN2N * safe
    kd = z + _EXPF_SHIFT
    ki = kd.view(np.uint64)
    kd = kd - _EXPF_SHIFT
    r = z - kd
    s = (_EXP2F_TAB[ki % np.uint64(_EXPF_N)] + (ki << np.uint64(52 - 5))).view(np.float64)
    c0, c1, c2 = _EXPF_POLY
    y = ((c0 * r + c1) * (r * r) + (c2 * r + 1.0)) * s
    with np.errstate(over="ignore"):
        out = y.astype(np.float32)
    out = np.where(xd > _EXPF_OVERFLOW, np.float32(np.inf), out)
    out = np.where(xd < _EXPF_UNDERFLOW, np.float32(0.0), out)
    return np.where(finite | np.isnan(xd), np.where(np.isnan(xd), xd.astype(np.float32), out),
                    np.where(xd > 0, np.float32(np.inf), np.float32(0.0))).astype(np.float32)


def sigmoid32(z: np.ndarray) -> np.ndarray:
    """XGBoost's ``common::Sigmoid(float)``: ``1.0f / (expf(min(-x, 88.7f)) + 1.0f + 1e-16f)``."""
    x = np.where(np.float32(88.7) < -z, np.float32(88.7), -z)  # std::min(-x, 88.7f): NaN stays
    denom = (expf(x) + np.float32(1.0)) + np.float32(1e-16)
    return (np.float32(1.0) / denom).astype(np.float32)


def softmax32(z: np.ndarray) -> np.ndarray:
    """XGBoost's ``common::Softmax``: fmaxf maximum, ``expf(x - max)`` summed in double, float32 divide."""
    wmax = z[:, 0].copy()
    for j in range(1, z.shape[1]):
        wmax = np.fmax(z[:, j], wmax)
    with np.errstate(over="ignore", invalid="ignore"):  # inf margins: inf - inf is NaN, as in XGBoost
        e = expf(z - wmax[:, None])
    wsum = np.zeros(z.shape[0])
    for j in range(z.shape[1]):
        wsum = wsum + e[:, j].astype(np.float64)
    return (e / wsum.astype(np.float32)[:, None]).astype(np.float32)


def hinge(z: np.ndarray) -> np.ndarray:
    """XGBoost's binary:hinge: ``x > 0 ? 1 : 0``."""
    return (z > 0).astype(np.float32)


def exp_double32(z: np.ndarray) -> np.ndarray:
    """XGBoost survival:aft: ``exp`` of the float32 margin computed in double, stored as float32."""
    with np.errstate(over="ignore"):
        return np.exp(z.astype(np.float64)).astype(np.float32)


# ONNX Runtime's tree-ensemble post-transforms (onnxruntime/core/providers/cpu/ml/ml_common.h,
# ``write_scores``): scalar float32 code on ``std::exp(float)``, i.e. libm's ``expf`` (the one above).
# Checked bit for bit against onnxruntime 1.32 (tests/importers/test_onnx.py).
def onnx_logistic32(z: np.ndarray) -> np.ndarray:
    """``ComputeLogistic``: ``v = 1 / (1 + expf(-|x|))``, ``1 - v`` for negative ``x``."""
    z = np.asarray(z, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        v = (np.float32(1.0) / (np.float32(1.0) + expf(-np.abs(z)))).astype(np.float32)
        return np.where(z < 0, np.float32(1.0) - v, v).astype(np.float32)


def _onnx_vmax(z: np.ndarray) -> np.ndarray:
    """``v_max`` of ``ComputeSoftmax``: starts at ``-FLT_MAX``, ``if (x > v_max)``: NaN never wins."""
    vmax = np.full(z.shape[0], -np.finfo(np.float32).max, dtype=np.float32)
    for j in range(z.shape[1]):
        with np.errstate(invalid="ignore"):
            vmax = np.where(z[:, j] > vmax, z[:, j], vmax)
    return vmax


def onnx_softmax32(z: np.ndarray) -> np.ndarray:
    """``ComputeSoftmax``: ``expf(x - v_max)`` summed in float32 in class order, float32 divide."""
    z = np.asarray(z, dtype=np.float32)
    vmax = _onnx_vmax(z)
    with np.errstate(over="ignore", invalid="ignore"):
        e = expf((z - vmax[:, None]).astype(np.float32))
        total = np.zeros(z.shape[0], dtype=np.float32)
        for j in range(z.shape[1]):
            total = (total + e[:, j]).astype(np.float32)
        return (e / total[:, None]).astype(np.float32)


def onnx_softmax_zero32(z: np.ndarray) -> np.ndarray:
    """``ComputeSoftmaxZero``: like softmax, but scores within 1e-7 of 0 become ``x * expf(-v_max)``
    and stay out of the sum."""
    z = np.asarray(z, dtype=np.float32)
    vmax = _onnx_vmax(z)
    eps = np.float32(0.0000001)
    with np.errstate(over="ignore", invalid="ignore"):
        exp_neg_vmax = expf(-vmax)
        e = expf((z - vmax[:, None]).astype(np.float32))
        nonzero = (z > eps) | (z < -eps)
        out = np.where(nonzero, e, (z * exp_neg_vmax[:, None]).astype(np.float32)).astype(np.float32)
        total = np.zeros(z.shape[0], dtype=np.float32)
        for j in range(z.shape[1]):
            total = np.where(nonzero[:, j], (total + out[:, j]).astype(np.float32), total)
        return (out / total[:, None]).astype(np.float32)


#: links applied to float32 margins in float32 (tree ensembles that accumulate in float32)
FLOAT32_LINKS = {"logistic32": sigmoid32, "softmax32": softmax32, "exp32": expf, "hinge": hinge,
                 "exp_double32": exp_double32, "onnx_logistic": onnx_logistic32,
                 "onnx_softmax": onnx_softmax32, "onnx_softmax_zero": onnx_softmax_zero32}


def tree_link(ens: TreeEnsemble) -> str:
    """The ``apply_link`` name of an ensemble's post-transform (float32 ones for float32 sums)."""
    link = "logistic" if ens.post_transform == "sigmoid" else ens.post_transform
    if ens.accumulate_dtype == "float32" and link in ("logistic", "softmax", "exp", "exp_double"):
        return link + "32"
    return link


def mark_missing(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """``X`` with NaN wherever a value equals the ensemble's ``missing_value`` (compared in
    ``threshold_dtype``, as XGBoost compares ``float(x) == float(missing)``); ``X`` itself if none."""
    if not ens.has_missing_value:
        return X
    dtype = np.float32 if ens.threshold_dtype == "float32" else np.float64
    with np.errstate(over="ignore"):
        hit = np.asarray(X).astype(dtype) == dtype(ens.missing_value[0])
    return np.where(hit, np.nan, X) if hit.any() else X


def comparison_input(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """Inputs as the native library compares them (float32-rounded for float32 models)."""
    X = mark_missing(ens, X)
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
    return apply_link(tree_link(ens), tree_raw(ens, X))


def raw(model, X: np.ndarray) -> np.ndarray:
    """Untransformed outputs (margins) of a whole Model on its encoded input matrix."""
    if model.kind == "ensemble":
        return scores(model.margin_model, X)
    Xf = apply_features(model.features, X)
    est = model.estimator
    return linear_raw(est, Xf) if isinstance(est, LinearModel) else tree_raw(est, Xf)


def scores(model, X: np.ndarray) -> np.ndarray:
    """Transformed outputs (n, k) of a whole Model on its encoded input matrix (an ensemble: its
    members' reference scores, combined; never fused, so this stays the oracle for fused ones)."""
    if model.kind == "ensemble":
        from sparkscore.compiler import ensemble  # it imports this module

        members = ensemble.member_scorer_models(model.estimator)
        return ensemble.run(model, X, [lambda Z, m=m: scores(m, Z) for m in members])
    Xf = apply_features(model.features, X)
    est = model.estimator
    return linear_scores(est, Xf) if isinstance(est, LinearModel) else tree_scores(est, Xf)
