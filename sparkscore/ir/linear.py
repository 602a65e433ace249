"""Generalised linear models: ``link(X @ coef + intercept)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: identity: regression; logistic: binary (k=1) sigmoid; softmax: multinomial;
#: ovr_logistic: per-class sigmoid normalised to sum 1 (sklearn one-vs-rest);
#: exp: Poisson/Gamma/Tweedie log link.
LINKS = ("identity", "logistic", "softmax", "ovr_logistic", "exp")


@dataclass(frozen=True, eq=False)
class LinearModel:
    coef: np.ndarray       # (d, k) float64
    intercept: np.ndarray  # (k,) float64
    link: str = "identity"

    def __post_init__(self) -> None:
        coef = np.asarray(self.coef, dtype=np.float64)
        if coef.ndim == 1:
            coef = coef[:, None]
        coef = np.ascontiguousarray(coef)
        intercept = np.ascontiguousarray(np.atleast_1d(np.asarray(self.intercept, dtype=np.float64)))
        if intercept.shape != (coef.shape[1],):
            raise ValueError(f"LinearModel.intercept must have shape ({coef.shape[1]},), got {intercept.shape}")
        if self.link not in LINKS:
            raise ValueError(f"unknown link {self.link!r}; use one of {LINKS}")
        coef.setflags(write=False)
        intercept.setflags(write=False)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @property
    def n_features(self) -> int:
        return self.coef.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.coef.shape[1]
