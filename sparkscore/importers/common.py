"""Helpers every importer shares: input names -> Signature, outputs, provenance metadata."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sparkscore.errors import SignatureError
from sparkscore.ir.inputs import default_names
from sparkscore.ir.signature import Column, Signature


def resolve_names(n_features: int, native_names: Sequence | None, given: Sequence[str] | None,
                  model_label: str) -> tuple[str, ...]:
    """Input column names: the names the model was fitted with, else ``given``, else ``f0..fN``.

    Passing names that contradict the fitted ones is an error: the native model binds by those
    names, so scoring by different ones would silently shuffle features.
    """
    native = tuple(str(n) for n in native_names) if native_names is not None else None
    chosen = tuple(str(n) for n in given) if given is not None else None
    if chosen is not None and len(chosen) != n_features:
        raise SignatureError(f"{model_label}: feature_names has {len(chosen)} names but the model takes "
                             f"{n_features} features; pass one name per feature")
    if native is not None and chosen is not None and native != chosen:
        raise SignatureError(f"{model_label}: feature_names {list(chosen)[:4]}... differ from the names the model "
                             f"was fitted with {list(native)[:4]}...; omit feature_names or pass the fitted ones")
    return native or chosen or default_names(n_features)


def make_signature(names: Sequence[str], task: str, classes: Sequence | None = None,
                   categories: Mapping[int, tuple] | None = None, n_outputs: int = 1,
                   accepts: Mapping[int, tuple] | None = None) -> Signature:
    """Signature with double inputs (``categories[i]``: categorical input i; ``accepts[i]``: the only
    values input i may take, see ``Column.accepts``) and the model's outputs (``n_outputs`` > 1: a
    multi-output regressor, one ``double[]`` prediction per row)."""
    categories = categories or {}
    accepts = accepts or {}
    inputs = []
    for i, name in enumerate(names):
        cats = categories.get(i)
        strict = tuple(accepts[i]) if i in accepts else None
        if cats is None:
            inputs.append(Column(name, "double", accepts=strict))
        else:
            dtype = "varchar" if cats and isinstance(cats[0], str) else "double"
            inputs.append(Column(name, dtype, categories=tuple(cats), accepts=strict))
    outputs = output_columns(task, classes)
    if task != "classification" and n_outputs > 1:
        outputs = (Column("prediction", "double[]"),)
    return Signature(tuple(inputs), outputs)


def output_columns(task: str, classes: Sequence | None = None) -> tuple[Column, ...]:
    """``prediction`` (+ ``probability`` for classifiers) typed as the SQL surface returns them."""
    if task != "classification":
        return (Column("prediction", "double"),)
    if len(classes) == 2:
        return (Column("prediction", "double"), Column("probability", "double[]"))
    # the rule of ``ir.naming.output_type`` (what PREDICT returns): float labels such as 0.5 are doubles
    if all(isinstance(c, str) for c in classes):
        label_type = "varchar"
    elif all(isinstance(c, (int, np.integer)) or float(c).is_integer() for c in classes):
        label_type = "bigint"
    else:
        label_type = "double"
    return (Column("prediction", label_type), Column("probability", "double[]"))


def metadata(source: str, native, library_version: str) -> dict:
    """Provenance recorded with every converted model."""
    cls = type(native)
    return {"source": source, "library_version": str(library_version),
            "class": f"{cls.__module__}.{cls.__qualname__}", "name": cls.__name__}
