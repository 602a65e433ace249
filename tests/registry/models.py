"""Tiny hand-built models for registry tests (no ML library needed)."""

from __future__ import annotations

import numpy as np

from sparkscore.ir import LinearModel, Model, Signature


def tiny_model(intercept: float = 0.0, names: tuple[str, ...] = ("age", "income")) -> Model:
    """A 2-input linear regressor; distinct intercepts give distinct sha256s."""
    return Model(LinearModel(np.arange(1.0, len(names) + 1), [intercept]), Signature.from_names(names),
                 metadata={"source": "test", "library_version": "0"})
