"""Adversarial rows built from a fitted model's own split thresholds.

For every numerical split ``(feature, threshold)`` the rows put that feature exactly on the
threshold, one ulp either side, on ``float32(threshold)`` and one float32-ulp either side of it, and
on the doubles where the float32 cast flips (the midpoints to those neighbours, one ulp either side);
then rows with NaN, +-0 and +-inf in every feature (where the native library accepts them), on
top of base rows drawn from the training data.  Routing must be identical on all of them.
"""

from __future__ import annotations

import numpy as np

from sparkscore.ir import LEAF, TreeEnsemble

FLOAT32_MAX = float(np.finfo(np.float32).max)
OVERFLOW32 = 2.0 ** 128 - 2.0 ** 103  # the smallest double that rounds to float32 inf (ties to even)


def threshold_values(t: float) -> list[float]:
    """The threshold, its double and float32 neighbours, and the doubles where float32 rounding flips
    (the midpoints to the float32 neighbours, and one double ulp either side of them)."""
    t32 = np.float32(t)
    vals = [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), float(t32),
            float(np.nextafter(t32, np.float32(-np.inf))), float(np.nextafter(t32, np.float32(np.inf)))]
    with np.errstate(over="ignore"):
        for other in (np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))):
            mid = (float(t32) + float(other)) / 2.0
            vals += [mid, np.nextafter(mid, -np.inf), np.nextafter(mid, np.inf)]
    return [float(v) for v in vals if np.isfinite(v)]


def adversarial_matrix(model, X_base: np.ndarray, *, rng=None, max_splits: int = 300,
                       allow_nan: bool = True, allow_inf: bool = True,
                       categorical: set[int] | None = None) -> np.ndarray:
    """Float64 rows (in the model's *input* column order) that stress every routing rule.

    ``X_base``: training-like rows to start from (numeric, input order).  ``categorical``: input
    columns that hold category codes (they get codes, unseen codes, negatives and NaN instead of
    threshold neighbours).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    X_base = np.asarray(X_base, dtype=np.float64)
    n_in = X_base.shape[1]
    categorical = categorical or set()
    rows = [X_base[rng.integers(0, len(X_base), size=min(len(X_base), 200))]]
    est = model.estimator
    if isinstance(est, TreeEnsemble) and not model.features:
        internal = np.nonzero((est.feature != LEAF) & ~est.is_categorical)[0]
        if len(internal) > max_splits:
            internal = rng.choice(internal, size=max_splits, replace=False)
        for node in internal:
            f = int(est.feature[node])
            if f in categorical:
                continue
            vals = threshold_values(float(est.threshold[node]))
            block = X_base[rng.integers(0, len(X_base), size=len(vals))].copy()
            block[:, f] = vals
            rows.append(block)
    specials = [0.0, -0.0]
    if allow_nan:
        specials.append(np.nan)
    if allow_inf:  # and doubles whose float32 cast overflows to inf (at and beside the rounding boundary)
        specials += [np.inf, -np.inf, FLOAT32_MAX, -FLOAT32_MAX, OVERFLOW32, -OVERFLOW32, float(np.nextafter(OVERFLOW32, 0.0)), 1e300, -1e300]
    for j in range(n_in):
        vals = list(specials)
        if j in categorical:
            vals += [-1.0, -0.5, 0.5, 1.7, 1000.0]
        block = X_base[rng.integers(0, len(X_base), size=len(vals))].copy()
        block[:, j] = vals
        rows.append(block)
    if allow_nan:  # all-missing row: every default direction at once
        rows.append(np.full((1, n_in), np.nan))
    return np.concatenate(rows)
