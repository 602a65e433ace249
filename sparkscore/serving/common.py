"""What both protocols share: client-error types, typed input columns, PREDICT-typed outputs.

Inputs are validated against the signature *before* anything is queued, so a bad request costs
one parse and a 400, never a kernel call or a 500.  Outputs follow PREDICT's SQL semantics
(DESIGN section 4) so a served value is the value ``PREDICT()`` returns for the same version.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from sparkscore.errors import SignatureError, SparkscoreError, UnknownCategoryError
from sparkscore.ir.model import Model
from sparkscore.ir.naming import output_type
from sparkscore.ir.signature import Column


class BadRequestError(SparkscoreError, ValueError):
    """A request body that is not valid for the protocol or the model (HTTP 400)."""


class PayloadTooLargeError(SparkscoreError, ValueError):
    """A request body (or row count) over the configured limit (HTTP 413)."""


class UnauthorizedError(SparkscoreError, PermissionError):
    """A missing or wrong bearer token (HTTP 401)."""


#: numeric OIP datatypes a numeric model input accepts (cast to float64, exact for all of them
#: but INT64/UINT64 beyond 2**53, which DuckDB's DOUBLE parameters round the same way)
NUMERIC_DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
                     "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
                     "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def is_string_input(column: Column) -> bool:
    """Strings stay strings (VARCHAR in SQL, BYTES in OIP); everything else is a DOUBLE.

    The same rule as ``engines.functions.input_type`` (serving may not import the engines).
    """
    cats = column.categories
    return column.dtype == "varchar" or bool(cats and isinstance(cats[0], str))


def input_datatype(column: Column) -> str:
    return "BYTES" if is_string_input(column) else "FP64"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def column_values(column: Column, values: Any, who: str) -> np.ndarray:
    """One input column from JSON values: float64 (None -> NaN) or an object array of str/None.

    ``who`` names the model version in errors.  Anything else is a one-line 400 naming the input.
    """
    if is_string_input(column):
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, str):
                raise BadRequestError(f"{who}: input {column.name!r} must be a string (BYTES) or null, "
                                      f"got {type(v).__name__} {_shown(v)}")
            out[i] = v
        return out
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64)
    if isinstance(values, list) and values and type(values[0]) in (float, int):
        try:  # fast path: a homogeneous numeric list (str / None / nested / mixed fall through)
            arr = np.asarray(values)
        except (ValueError, TypeError, OverflowError):
            arr = None
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "fiu":
            return arr.astype(np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
        elif isinstance(v, (int, float)):  # bool is an int: 0 / 1, as DuckDB casts it
            try:
                out[i] = float(v)
            except OverflowError:
                raise BadRequestError(f"{who}: input {column.name!r} value {_shown(v)} is out of the float64 range") from None
        else:
            raise BadRequestError(f"{who}: input {column.name!r} must be a number (FP64) or null, "
                                  f"got {type(v).__name__} {_shown(v)}")
    return out


_PLAIN_NUMBERS = (float, int, bool, type(None))
_PLAIN_SIGNATURES: dict[int, tuple] = {}


def _plain_signature(signature) -> tuple[tuple[str, ...], bool]:
    """(names, every input a plain number) of a signature, computed once per signature object."""
    hit = _PLAIN_SIGNATURES.get(id(signature))
    if hit is None or hit[0] is not signature:  # an id reused by a new object is recomputed
        plain = all(c.categories is None and not c.is_strict and not is_string_input(c) for c in signature.inputs)
        hit = (signature, signature.names, plain)
        if len(_PLAIN_SIGNATURES) > 256:
            _PLAIN_SIGNATURES.clear()
        _PLAIN_SIGNATURES[id(signature)] = hit
    return hit[1], hit[2]


def numeric_rows(model: Model, rows: Any, columns: Sequence[str] | None) -> np.ndarray | None:
    """The float64 matrix of row-major JSON ``rows`` when nothing needs the general path, else None.

    Why: a one-row request is dominated by per-column Python work (28 columns: ~0.5 ms on this
    machine, 5-10x the kernel).  When every input is a plain number (no strings, no categories),
    ``columns`` is the signature's own order (or absent) and every cell is a JSON number, bool or
    null, one ``np.array`` call gives the same matrix the general path builds: bool -> 0/1,
    null -> NaN, the same float64 rounding.  Anything else (a string, a nested list, a short row,
    an int beyond the float64 range) returns None and the general path validates it and answers
    its one-line 400, so the errors do not change.
    """
    names, plain = _plain_signature(model.signature)
    if not plain or (columns is not None and tuple(columns) != names) or not isinstance(rows, list) or not rows:
        return None
    width = len(names)
    for row in rows:
        if type(row) is not list or len(row) != width:
            return None
        for v in row:
            if not isinstance(v, _PLAIN_NUMBERS):
                return None
    try:
        return np.array(rows, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        return None


def matrix(model: Model, columns: dict[str, np.ndarray], who: str, max_rows: int) -> np.ndarray:
    """The float64 model matrix of validated columns (same encoder PREDICT's UDFs use)."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise BadRequestError(f"{who}: inputs have different lengths {sorted(lengths)}; send one value per row in each")
    n = lengths.pop() if lengths else 0
    if n == 0:
        raise BadRequestError(f"{who}: the request holds no rows; send at least one")
    if n > max_rows:
        raise PayloadTooLargeError(f"{who}: {n} rows in one request, over the limit of {max_rows}; split it")
    try:
        return model.to_matrix(columns)
    except SignatureError as exc:
        raise BadRequestError(f"{who}: {exc}") from None
    except UnknownCategoryError as exc:  # the line PREDICT gives, naming the version served
        raise BadRequestError(str(exc.for_model(who))) from None


def named_columns(model: Model, rows_by_name: dict[str, Sequence], who: str) -> dict[str, np.ndarray]:
    """Validated arrays for every signature input (missing input -> 400 naming it)."""
    out = {}
    for column in model.signature.inputs:
        if column.name not in rows_by_name:
            raise BadRequestError(f"{who}: missing input {column.name!r}; the model needs "
                                  f"{', '.join(model.signature.names[:8])}{', ...' if len(model.signature) > 8 else ''}")
        out[column.name] = column_values(column, rows_by_name[column.name], who)
    return out


# ---------------------------------------------------------------------- outputs
DATATYPE_OF = {"DOUBLE": "FP64", "DOUBLE[]": "FP64", "VARCHAR": "BYTES", "BIGINT": "INT64"}


def output_values(model: Model, S: np.ndarray, kind: str) -> np.ndarray:
    """PREDICT (``predict``) or PREDICT_PROBA (``proba``) values from the scorer's outputs ``S``.

    The same arithmetic as ``ScoringFunction._to_arrow``: binary classifiers give P(positive),
    multiclass the label, regressors the value; probabilities are ``outputs_to_proba``.
    """
    if kind == "proba":
        return model.outputs_to_proba(S)
    if model.is_classifier and model.n_classes == 2:
        return model.outputs_to_proba(S)[:, 1]
    values = model.outputs_to_predictions(S)
    if output_type(model, kind) == "BIGINT":
        return np.asarray(values).astype(np.int64)
    return values


def jsonable(values: np.ndarray) -> list:
    """Flat list for JSON: floats stay exact (repr round-trips), NaN/Infinity as JSON's extensions."""
    flat = np.asarray(values).reshape(-1)
    return flat.tolist()
