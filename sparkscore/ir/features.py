"""Simple, foldable preprocessing (imputation, standardisation, one-hot) as one flat feature map.

A :class:`FeatureMap` turns a float64 input matrix (n, n_in) into the model's feature matrix
(n, n_out).  Each output feature is either

* ``PASSTHROUGH``: ``x = X[:, source]``; ``NaN`` replaced by ``fill`` when ``fill`` is not NaN;
  then ``(x - center) / scale``;
* ``INDICATOR``: ``1.0 if X[:, source] == category else 0.0`` (NaN and unknown values give 0, the
  all-zero row of ``handle_unknown='ignore'``; an input whose encoder raises on unknown values is
  a strict signature column, ``Column.accepts``, checked before any map runs).

One flat array-of-outputs form covers ``SimpleImputer``, ``StandardScaler``, ``OneHotEncoder`` and
``ColumnTransformer`` arrangements, vectorises in every backend, folds into a GLM where exact,
and inlines as SQL (``COALESCE``, arithmetic, ``CASE``).  Several maps compose by sequencing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PASSTHROUGH = 0
INDICATOR = 1


@dataclass(frozen=True, eq=False)
class FeatureMap:
    n_inputs: int
    kind: np.ndarray      # (m,) int8: PASSTHROUGH | INDICATOR
    source: np.ndarray    # (m,) int32: input column
    fill: np.ndarray      # (m,) float64: imputation value, NaN = no imputation
    center: np.ndarray    # (m,) float64: subtracted after imputation (0 = none)
    scale: np.ndarray     # (m,) float64: divided after centering (1 = none)
    category: np.ndarray  # (m,) float64: value an INDICATOR compares to (NaN for PASSTHROUGH)

    def __post_init__(self) -> None:
        m = len(self.kind)
        for name, dtype in (("kind", np.int8), ("source", np.int32), ("fill", np.float64),
                            ("center", np.float64), ("scale", np.float64), ("category", np.float64)):
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.shape != (m,):
                raise ValueError(f"FeatureMap.{name} must have shape ({m},), got {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if m and (self.source.min() < 0 or self.source.max() >= self.n_inputs):
            raise ValueError("FeatureMap.source points outside the input columns")

    @property
    def n_outputs(self) -> int:
        return len(self.kind)

    @classmethod
    def identity(cls, n: int) -> "FeatureMap":
        return cls(n, np.zeros(n), np.arange(n), np.full(n, np.nan), np.zeros(n), np.ones(n),
                   np.full(n, np.nan))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Reference (numpy) application; backends reproduce exactly this arithmetic."""
        cols = X[:, self.source]
        fill_mask = ~np.isnan(self.fill)
        if fill_mask.any():
            cols = np.where(np.isnan(cols) & fill_mask, self.fill, cols)
        passthrough = (cols - self.center) / self.scale
        indicator = (cols == self.category).astype(np.float64)
        return np.where(self.kind == INDICATOR, indicator, passthrough)
