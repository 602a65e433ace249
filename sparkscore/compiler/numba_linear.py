"""GLMs as one streaming pass with numba: read each input row once, write its transformed scores.

A GLM on CPU is memory-bound: numpy's ``X @ coef`` (BLAS gemv) followed by the link's elementwise
passes reads the inputs once but the margins several times more, and single-threaded BLAS gemv
leaves the second core idle.  Here each row's dot products and its link run while the row is in
registers, and row chunks run on the thread pool the tree kernels use (no OpenMP runtime).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from sparkscore.compiler.numba_trees import default_threads, parallel_chunks
from sparkscore.ir.linear import LinearModel

#: links fused into the kernel (the rest are applied by the reference on the margins)
FUSED_LINKS = {"identity": 0, "logistic": 1, "sigmoid": 1}


@nb.njit(inline="always", cache=True, nogil=True)
def _link(z, link):
    return 1.0 / (1.0 + math.exp(-z)) if link == 1 else z


@nb.njit(cache=True, nogil=True)
def _glm(X, coef, intercept, link, out):
    """Four rows at a time: each row sums ``x_f * w_f`` in feature order, but the four sums are
    independent chains, so the adds pipeline instead of each waiting on the previous one."""
    n, d = X.shape
    for j in range(coef.shape[1]):
        b = intercept[j]
        i = 0
        while i + 4 <= n:
            a0 = a1 = a2 = a3 = 0.0
            for f in range(d):
                w = coef[f, j]
                a0 += X[i, f] * w
                a1 += X[i + 1, f] * w
                a2 += X[i + 2, f] * w
                a3 += X[i + 3, f] * w
            out[i, j] = _link(a0 + b, link)
            out[i + 1, j] = _link(a1 + b, link)
            out[i + 2, j] = _link(a2 + b, link)
            out[i + 3, j] = _link(a3 + b, link)
            i += 4
        while i < n:
            a0 = 0.0
            for f in range(d):
                a0 += X[i, f] * coef[f, j]
            out[i, j] = _link(a0 + b, link)
            i += 1


class NumbaLinear:
    """``scores(X)`` of a GLM: margins plus its link in one pass when the link is fused, else margins."""

    def __init__(self, est: LinearModel, parallel: bool, threads: int | None = None) -> None:
        self.coef = np.ascontiguousarray(est.coef, dtype=np.float64)
        self.intercept = np.ascontiguousarray(est.intercept, dtype=np.float64)
        self.link = FUSED_LINKS.get(est.link, 0)
        self.fuses_link = est.link in FUSED_LINKS
        self.threads = (threads or default_threads()) if parallel else 1

    def _run(self, X: np.ndarray, out: np.ndarray) -> None:
        _glm(X, self.coef, self.intercept, self.link, out)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty((X.shape[0], self.coef.shape[1]), dtype=np.float64)
        parallel_chunks(self._run, X, out, self.threads)
        return out
