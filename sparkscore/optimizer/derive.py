"""Build the derived models the rewrite rules bind (a GLM's part, a smaller signature, ...).

A derived model keeps its source's task, classes and metadata, so ``PREDICT`` / ``PREDICT_PROBA``
of the derived call mean exactly what they meant for the registry model.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from sparkscore.ir import PASSTHROUGH, Column, FeatureMap, LinearModel, Model, Signature


def feature_map(model: Model) -> FeatureMap | None:
    """The model's single preprocessing map (identity when it has none); None for chained maps."""
    if len(model.features) > 1:
        return None
    return model.features[0] if model.features else FeatureMap.identity(len(model.signature))


def restrict(fmap: FeatureMap, features: Sequence[int], inputs: Sequence[int]) -> FeatureMap:
    """``fmap``'s ``features`` over the sub-signature ``inputs`` (old input indices, in new order)."""
    position = {old: new for new, old in enumerate(inputs)}
    f = np.asarray(features, dtype=np.int64)
    return FeatureMap(len(inputs), fmap.kind[f], [position[int(s)] for s in fmap.source[f]], fmap.fill[f],
                      fmap.center[f], fmap.scale[f], fmap.category[f])


def concat(maps: Sequence[FeatureMap]) -> FeatureMap:
    """Maps over the same inputs side by side (outputs of the first, then the second, ...)."""
    return FeatureMap(maps[0].n_inputs, *(np.concatenate([getattr(m, name) for m in maps])
                                          for name in ("kind", "source", "fill", "center", "scale", "category")))


def is_identity(fmap: FeatureMap) -> bool:
    return (fmap.n_outputs == fmap.n_inputs and bool((fmap.kind == PASSTHROUGH).all())
            and bool(np.isnan(fmap.fill).all()) and bool((fmap.center == 0.0).all())
            and bool((fmap.scale == 1.0).all()) and bool((fmap.source == np.arange(fmap.n_inputs)).all()))


def glm(base: Model, columns: Sequence[Column], fmap: FeatureMap, coef: np.ndarray, intercept: np.ndarray,
        link: str, *, regression: bool = False, note: str) -> Model:
    """A GLM derived from ``base`` over ``columns``; ``regression`` drops the classifier task."""
    extra = dict(task="regression", classes=None) if regression else {}
    return dataclasses.replace(
        base, estimator=LinearModel(coef, intercept, link),
        signature=Signature(tuple(columns), () if regression else base.signature.outputs),
        features=() if is_identity(fmap) else (fmap,), metadata={**base.metadata, "derived": note}, **extra)
