"""Names and result types that models get inside SQL engines and servers (shared by the optimizer,
the engines and serving, so PREDICT and a served prediction agree on both)."""

from __future__ import annotations

import re

import numpy as np

_NON_IDENT = re.compile(r"[^A-Za-z0-9_]")


def identifier(text: str) -> str:
    """``text`` as a plain SQL identifier: every character but letters, digits and ``_`` becomes ``_``."""
    return _NON_IDENT.sub("_", text)


def udf_name(model_name: str, version: int, kind: str = "predict") -> str:
    """Engine function name of one model version: ``churn_v3`` / ``churn_v3_proba``.

    Registry names allow ``.`` and ``-``; they become ``_``.  The result is always a plain SQL
    identifier; the SQL generator still quotes it where the dialect needs.
    """
    base = f"{identifier(model_name)}_v{int(version)}"
    return base if kind == "predict" else f"{base}_{kind}"


def input_type(column) -> str:
    """SQL parameter type of one model input (a signature ``Column``): text columns and text
    categories stay VARCHAR, everything else is DOUBLE (the optimizer and the engines agree on it)."""
    categories = column.categories
    return "VARCHAR" if column.dtype == "varchar" or (categories and isinstance(categories[0], str)) else "DOUBLE"


#: PREDICT kinds: ``predict`` (PREDICT), ``proba`` (PREDICT_PROBA), ``raw`` (untransformed margins)
KINDS = ("predict", "proba", "raw")


def output_type(model, kind: str) -> str:
    """SQL result type of ``kind`` for ``model`` (DESIGN section 4): ``DOUBLE``, ``DOUBLE[]``,
    ``VARCHAR`` or ``BIGINT``; labels take the type their classes all share."""
    if kind not in KINDS:
        raise ValueError(f"{model.name}: unknown function kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "proba":
        return "DOUBLE[]"
    if kind == "raw" or (model.is_classifier and model.n_classes == 2):
        return "DOUBLE"
    if not model.is_classifier:
        return "DOUBLE" if model.estimator.n_outputs == 1 else "DOUBLE[]"
    if all(isinstance(c, str) for c in model.classes):
        return "VARCHAR"
    if all(isinstance(c, (int, np.integer)) or float(c).is_integer() for c in model.classes):
        return "BIGINT"
    return "DOUBLE"
