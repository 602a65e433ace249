"""Turn user input (numpy, pandas, pyarrow, dict of columns) into the float64 matrix models read.

Columns are matched **by name** when the input has names that cover the signature, otherwise by
position (numpy arrays, unnamed frames).  NULL/None become NaN, which every model routes as a
missing value.  Categorical columns are encoded to their code
(index in ``Column.categories``, whatever the categories' type); unknown values become NaN.
"""

from __future__ import annotations

import numpy as np

from sparkscore.errors import SignatureError, UnknownCategoryError
from sparkscore.ir.signature import Column, Signature

#: How a native library rewrote the fitted frame's column names (``Model.metadata["feature_name_rule"]``).
#: LightGBM's ``Dataset::set_feature_names`` replaces every ' ' with '_' (and refuses JSON special
#: characters), so a frame column ``mean radius`` is stored as ``mean_radius``: the model must still
#: bind that frame, as native ``predict`` does.
NAME_RULES = {"lightgbm": lambda name: name.replace(" ", "_")}


def bind_names(wanted, available, rule: str | None = None, model_name: str = "model") -> list:
    """For each wanted (signature) name, the available column that binds to it, or None.

    An exact name binds first; otherwise, under ``rule``, the one available column the library
    would have renamed to it (two such columns are ambiguous: an error naming both).
    """
    available = list(available)
    exact = set(available)
    renamed: dict[str, list] = {}
    if rule in NAME_RULES:
        for name in available:
            if isinstance(name, str):
                renamed.setdefault(NAME_RULES[rule](name), []).append(name)
    out = []
    for name in wanted:
        if name in exact:
            out.append(name)
            continue
        hits = renamed.get(name, [])
        if len(hits) > 1:
            raise SignatureError(f"{model_name}: input column {name!r} matches both {hits[0]!r} and {hits[1]!r} "
                                 f"({rule} stores spaces as '_'); keep one of them or rename it to {name!r}")
        out.append(hits[0] if hits else None)
    return out


def as_matrix(signature: Signature, X, model_name: str = "model", name_rule: str | None = None) -> np.ndarray:
    """Float64 C-contiguous matrix (n, len(signature)) for ``X`` (``name_rule``: see :data:`NAME_RULES`)."""
    columns = _columns_by_name(signature, X, model_name, name_rule)
    if columns is None:
        arr = np.asarray(X)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1) if len(signature) > 1 else arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise SignatureError(f"{model_name}: input must be 2-D (rows x {len(signature)} columns), got {arr.ndim}-D")
        if arr.shape[1] != len(signature):
            raise SignatureError(
                f"{model_name}: input has {arr.shape[1]} columns but the model takes {len(signature)} "
                f"({', '.join(signature.names[:8])}{', ...' if len(signature) > 8 else ''}); pass those columns in order"
            )
        if arr.dtype.kind in "fiub" and not any(c.categories is not None or c.is_strict for c in signature.inputs):
            return np.ascontiguousarray(arr, dtype=np.float64)
        columns = [arr[:, j] for j in range(arr.shape[1])]
    out = np.empty((len(columns[0]) if columns else 0, len(signature)), dtype=np.float64)
    for j, (col, values) in enumerate(zip(signature.inputs, columns)):
        out[:, j] = encode_column(col, values, model_name)
    return out


def encode_column(col: Column, values, model_name: str = "model") -> np.ndarray:
    """One input column as float64 (categorical values -> their code, NULL/unknown -> NaN).

    A strict column (``col.accepts``) raises :class:`UnknownCategoryError` on the first value
    outside it, before anything is scored.
    """
    out = _encode(col, values, model_name)
    if col.is_strict and col.categories is None:
        check_accepted(col, out, out, model_name)
    return out


def _encode(col: Column, values, model_name: str) -> np.ndarray:
    if col.categories is not None:
        import pandas as pd

        vals = values.to_numpy(zero_copy_only=False) if hasattr(values, "to_numpy") and not isinstance(values, (pd.Series, pd.Index, np.ndarray)) else values
        if isinstance(vals, pd.Series) and isinstance(vals.dtype, pd.CategoricalDtype):
            vals = vals.astype(object)
        raw = np.asarray(vals, dtype=object)
        codes = pd.Categorical(raw, categories=list(col.categories)).codes
        encoded = np.where(codes < 0, np.nan, codes.astype(np.float64))
        if col.is_strict:
            check_accepted(col, encoded, raw, model_name, codes=True)
        return encoded
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        try:
            import pyarrow as pa

            if isinstance(values, (pa.Array, pa.ChunkedArray)):
                if pa.types.is_dictionary(values.type):
                    values = values.cast(values.type.value_type)
                return _float(values.to_numpy(zero_copy_only=False), col, model_name)
        except ImportError:  # pragma: no cover - pyarrow is a core dependency
            pass
        import pandas as pd

        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        values = values.to_numpy()
    return _float(np.asarray(values), col, model_name)


def check_accepted(col: Column, encoded: np.ndarray, raw: np.ndarray, model_name: str, codes: bool = False) -> None:
    """Raise :class:`UnknownCategoryError` naming the first value of a strict column outside
    ``col.accepts`` (``encoded``: the float64 column, category codes when ``codes``; ``raw``: the
    values as given, for the message).  Numbers compare as float64 (``-0.0`` is ``0.0``, as in
    sklearn's ``_check_unknown``); NULL and NaN are accepted only when ``None`` is listed."""
    missing = np.isnan(encoded)
    if codes:  # a string column: an unknown value is encoded to NaN like NULL, told apart on raw
        bad = missing
        if col.accepts_null:
            bad = bad & ~_is_null(raw)
    else:
        known = np.asarray([float(v) for v in col.accepted_values], dtype=np.float64)
        bad = ~np.isin(encoded, known) & ~(missing & col.accepts_null)
    if bad.any():
        i = int(np.argmax(bad))
        raise UnknownCategoryError(model_name, col.name, shown_value(raw[i]))


def _is_null(raw: np.ndarray) -> np.ndarray:
    return np.fromiter((v is None or (isinstance(v, float) and v != v) for v in raw), dtype=bool, count=len(raw))


def shown_value(value) -> str:
    """A value as the error message shows it: ``NULL``, ``'text'``, or the float64 (``7.0``)."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "NULL"
    if isinstance(value, (str, np.str_)):
        return repr(str(value))
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return repr(value)


def _float(arr: np.ndarray, col: Column, model_name: str) -> np.ndarray:
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "O":
        out = np.empty(len(arr), dtype=np.float64)
        for i, v in enumerate(arr):
            if v is None:
                out[i] = np.nan
                continue
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                raise SignatureError(
                    f"{model_name}: column {col.name!r} must be numeric ({col.dtype}), got {type(v).__name__} {v!r}; cast it"
                ) from None
        return out
    raise SignatureError(f"{model_name}: column {col.name!r} must be numeric ({col.dtype}), got dtype {arr.dtype}; cast it")


def default_names(n: int) -> tuple[str, ...]:
    """Names given to the inputs of a model trained on unnamed data (``f0``, ``f1``, ...)."""
    return tuple(f"f{i}" for i in range(n))


def _columns_by_name(signature: Signature, X, model_name: str, name_rule: str | None = None):
    """List of per-column arrays in signature order, or None when X has no usable names."""
    names = None
    getter = None
    try:
        import pyarrow as pa

        if isinstance(X, (pa.Table, pa.RecordBatch)):
            names = list(X.schema.names)
            getter = X.column
    except ImportError:  # pragma: no cover
        pass
    if names is None and isinstance(X, dict):
        names = list(X)
        getter = X.__getitem__
    if names is None and hasattr(X, "columns") and hasattr(X, "iloc"):
        cols = list(X.columns)
        if all(isinstance(c, str) for c in cols):
            names = cols
            getter = X.__getitem__
        else:
            return None
    if names is None:
        return None
    bound = bind_names(signature.names, names, name_rule, model_name)
    missing = [n for n, b in zip(signature.names, bound) if b is None]
    if missing:
        if len(names) == len(signature) and signature.names == default_names(len(signature)) and not isinstance(X, dict):
            return [getter(n) for n in names]  # model trained without names: bind by position
        raise SignatureError(
            f"{model_name}: input is missing column {missing[0]!r}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; the model needs "
            f"{', '.join(signature.names[:8])}{', ...' if len(signature) > 8 else ''}"
        )
    return [getter(n) for n in bound]
