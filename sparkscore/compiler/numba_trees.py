"""Compiled CPU tree traversal with numba (imported lazily: numba is an optional dependency).

Layout and loop order are what make this beat the native predictors (a naive per-row recursion
was measured at ~0.5x sklearn): rows are cut into blocks that stay in L1, trees run in the inner
loop so each tree's top levels stay cached across the block, and all rows of a block descend one
level at a time (leaves point to themselves), so the row loop has independent iterations the CPU
overlaps instead of one dependent chain of loads per row.  Blocks run in parallel (``prange``).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sparkscore.compiler.layout import TreeLayout
from sparkscore.ir.trees import ZERO_THRESHOLD

_ZERO = ZERO_THRESHOLD


@nb.njit(inline="always", cache=True)
def _general_left(v, nd, threshold, zero_missing, default_left, is_cat, cat_index, cat_words, n_bits, neg_before):
    """The full routing rule of a non-NaN value at a categorical or zero-as-missing node."""
    if zero_missing[nd] and abs(v) <= _ZERO:
        return default_left[nd]
    if is_cat[nd]:
        c = np.trunc(v)
        negative = v < 0 if neg_before else c < 0
        if negative or c >= n_bits:
            return False
        ci = np.int64(c)
        word = np.int64(cat_words[cat_index[nd], ci >> 5])
        return ((word >> (ci & 31)) & 1) == 1
    return v <= threshold[nd]


def _traverse(X, feature, threshold, nan_left, children, general, zero_missing, default_left, is_cat,
              cat_index, cat_words, n_bits, neg_before, roots, depth, tree_output, leaf_value, out, block):
    n = X.shape[0]
    width = leaf_value.shape[1]
    n_blocks = (n + block - 1) // block
    for b in nb.prange(n_blocks):
        lo = b * block
        m = min(n, lo + block) - lo
        idx = np.empty(m, np.int32)
        for t in range(roots.shape[0]):
            for r in range(m):
                idx[r] = roots[t]
            for _ in range(depth[t]):
                for r in range(m):
                    nd = idx[r]
                    v = X[lo + r, feature[nd]]
                    if v != v:
                        left = nan_left[nd]
                    elif general[nd]:
                        left = _general_left(v, nd, threshold, zero_missing, default_left, is_cat, cat_index,
                                             cat_words, n_bits, neg_before)
                    else:
                        left = v <= threshold[nd]
                    idx[r] = children[nd, 0] if left else children[nd, 1]
            if width == 1:
                k = tree_output[t]
                for r in range(m):
                    out[lo + r, k] += leaf_value[idx[r], 0]
            else:
                for r in range(m):
                    for j in range(width):
                        out[lo + r, j] += leaf_value[idx[r], j]


_serial = nb.njit(cache=True)(_traverse)
_parallel = nb.njit(cache=True, parallel=True)(_traverse)


class NumbaTrees:
    """``raw(X) -> (n, n_outputs)`` float64 margins of a tree layout, accumulated like the reference."""

    def __init__(self, layout: TreeLayout, parallel: bool) -> None:
        self.layout = layout
        self.parallel = parallel
        self._kernel = _parallel if parallel else _serial
        lay = layout
        self._args = (lay.feature, lay.threshold, lay.nan_left, lay.children, lay.general, lay.zero_missing,
                      lay.default_left, lay.is_categorical, lay.cat_index, lay.cat_words, lay.n_bits,
                      lay.negative_before_trunc, lay.roots, lay.depth, lay.tree_output, lay.leaf_value)

    def _block(self, n: int) -> int:
        if not self.parallel:
            return 256
        return int(min(256, max(16, n // (4 * nb.get_num_threads()))))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        lay = self.layout
        with np.errstate(over="ignore"):
            Xc = np.ascontiguousarray(X, dtype=lay.compare_dtype)
        n = Xc.shape[0]
        out = np.zeros((n, lay.n_outputs), dtype=lay.acc_dtype)
        if lay.acc_dtype is np.float32:
            out[:] = lay.base
        self._kernel(Xc, *self._args, out, self._block(n))
        if lay.acc_dtype is np.float32:
            return out.astype(np.float64)
        if lay.mean_divisor != 1.0:
            out /= lay.mean_divisor
        return out + lay.base
