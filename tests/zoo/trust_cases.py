"""Zoo cases for class labels that are floats (``classes = (0.5, 1.5, 2.5)``): PREDICT must return the
native labels exactly, typed DOUBLE (never truncated to a BIGINT), on every backend and engine.

CatBoost is the importer that meets them (``class_label_type`` Float): sklearn and LightGBM call a
fractional float target "continuous" and refuse it, XGBoost, ONNX and pyspark.ml labels are
integers or strings.  CatBoost keeps its float class names in float32 (0.1 reads back as
0.10000000149011612, and its own ``predict`` returns that value): the labels must match it bit for bit.
"""

from __future__ import annotations

import catboost  # noqa: F401 - without it the zoo skips this module, as it skips catboost_cases
import numpy as np

from tests.zoo import Case, Fitted

HALVES = np.array([0.5, 1.5, 2.5])
ODD = np.array([-1.25, 0.1, 3.75])


def _catboost(labels: np.ndarray, loss: str) -> Fitted:
    import catboost as cb

    from tests.zoo.catboost_cases import _CB, _fit  # the catboost zoo's data, rows and native outputs

    cuts = [-0.5, 0.5] if len(labels) == 3 else [0.0]
    return _fit(cb.CatBoostClassifier(loss_function=loss, **_CB),
                lambda s, rng: labels[np.digitize(s + 0.3 * rng.normal(size=len(s)), cuts)], proba=True)


def catboost_halves() -> Fitted:
    return _catboost(HALVES, "MultiClass")


def catboost_odd() -> Fitted:
    return _catboost(ODD, "MultiClass")


def catboost_binary_floats() -> Fitted:
    return _catboost(np.array([0.5, 2.5]), "Logloss")


CASES = [
    Case("trust-catboost-float-labels-halves", catboost_halves, "catboost", "trees", "multiclass"),
    Case("trust-catboost-float-labels-odd", catboost_odd, "catboost", "trees", "multiclass"),
    Case("trust-catboost-float-labels-binary", catboost_binary_floats, "catboost", "trees", "binary"),
]
