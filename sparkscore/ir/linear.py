"""Generalised linear models: ``link(X @ coef + intercept)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: identity: regression; logistic: binary (k=1) sigmoid; softmax: multinomial;
#: ovr_logistic: per-class sigmoid normalised to sum 1, rows whose sigmoids all underflow to 0 get
#: ``1 / k`` each (sklearn ``_predict_proba_lr``: SGDClassifier(loss="log_loss"));
#: ovr_logistic_zero: the same, but all-zero rows stay 0 (``OneVsRestClassifier.predict_proba``);
#: exp: Poisson/Gamma/Tweedie log link.
#: modified_huber: SGDClassifier(loss="modified_huber"): ``(clip(z, -1, 1) + 1) / 2``, per class
#: normalised to sum 1 (rows whose classes all clip to 0 get ``1 / k`` each), as sklearn's predict_proba.
#: logistic32 / softmax32 / exp32: XGBoost's float32 transforms on float32 margins (gblinear), the
#: same :data:`sparkscore.compiler.reference.FLOAT32_LINKS` its tree ensembles use.
LINKS = ("identity", "logistic", "softmax", "ovr_logistic", "ovr_logistic_zero", "exp", "modified_huber",
         "logistic32", "softmax32", "exp32")
#: ``float64``: ``X @ coef + intercept`` in float64.  ``float32``: a model sklearn fitted on float32
#: data (float32 ``coef_``) scoring float32 input: X rounded to float32, the dot product rounded to
#: float32, then the intercept added in ``intercept_dtype`` (sklearn's numpy type promotion: a float32
#: intercept keeps the result, and the link, float32; SGD's float64 intercept makes it float64).
DTYPES = ("float64", "float32")
#: how the margins are summed.  ``blas``: as the dtype rule above says (sklearn's BLAS product).
#: ``float32_sequential``: XGBoost gblinear's ``PredValue``: per row and output, a float32
#: ``acc = intercept`` (XGBoost's ``bias + base_margin``, already one float32 value), then for each
#: *present* feature in feature order ``acc = float32(acc + float32(x * w))`` -- two roundings, no
#: FMA -- where a value is absent when it is NaN or equals ``missing_value`` (compared in float32:
#: XGBoost leaves such entries out of the DMatrix row, so they add nothing, not even a zero).
ACCUMULATE = ("blas", "float32_sequential")

@dataclass(frozen=True, eq=False)
class LinearModel:
    coef: np.ndarray       # (d, k) float64
    intercept: np.ndarray  # (k,) float64
    link: str = "identity"
    dtype: str = "float64"
    intercept_dtype: str = "float64"
    accumulate: str = "blas"
    missing_value: np.ndarray = None  # (0,): only NaN is absent, or (1,) [M] (float32_sequential): M too

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
        if self.dtype not in DTYPES or self.intercept_dtype not in DTYPES:
            raise ValueError(f"LinearModel dtypes must be in {DTYPES}, got {self.dtype!r} / {self.intercept_dtype!r}")
        if self.dtype == "float32" and not np.array_equal(coef.astype(np.float32), coef, equal_nan=True):
            raise ValueError("a float32 LinearModel needs float32-representable coefficients")
        if self.accumulate not in ACCUMULATE:
            raise ValueError(f"unknown LinearModel accumulate {self.accumulate!r}; use one of {ACCUMULATE}")
        if self.accumulate == "float32_sequential":
            if self.dtype != "float32" or self.intercept_dtype != "float32":
                raise ValueError("a float32_sequential LinearModel needs dtype and intercept_dtype 'float32'")
            if not np.array_equal(intercept.astype(np.float32), intercept, equal_nan=True):
                raise ValueError("a float32_sequential LinearModel needs a float32-representable intercept")
        missing_value = np.zeros(0) if self.missing_value is None else self.missing_value
        missing_value = np.ascontiguousarray(np.atleast_1d(np.asarray(missing_value, dtype=np.float64)))
        if missing_value.shape[0] > 1 or (missing_value.shape[0] == 1 and np.isnan(missing_value[0])):
            raise ValueError("LinearModel.missing_value must be empty or hold one non-NaN value")
        if missing_value.shape[0] and self.accumulate != "float32_sequential":
            raise ValueError("LinearModel.missing_value needs accumulate='float32_sequential'")
        missing_value.setflags(write=False)
        object.__setattr__(self, "missing_value", missing_value)
        coef.setflags(write=False)
        intercept.setflags(write=False)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @property
    def output_dtype(self) -> str:
        """dtype of the margins and the link's output (what sklearn returns for float32 input)."""
        return "float32" if self.dtype == "float32" and self.intercept_dtype == "float32" else "float64"

    @property
    def has_missing_value(self) -> bool:
        """Whether inputs equal to ``missing_value[0]`` are absent, as NaN is (XGBoost's ``missing=``)."""
        return self.missing_value.shape[0] == 1

    @property
    def n_features(self) -> int:
        return self.coef.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.coef.shape[1]
