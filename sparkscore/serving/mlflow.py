"""MLflow's scoring protocol: ``POST /invocations`` with a JSON body, so MLflow clients work unchanged.

Accepted bodies (MLflow 2.x / 3.x ``pyfunc`` scoring server, JSON only):

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``columns`` optional: then the
  signature's order; ``index`` is ignored);
* ``{"dataframe_records": [{"col": value, ...}, ...]}``;
* ``{"instances": ...}`` and ``{"inputs": ...}``: a list of records, a list of rows (signature
  order), a list of scalars (one-input models) or a dict of columns ``{"col": [values]}``.

``params`` must be absent or empty: no parameter changes a sparkscore prediction.  The response is
MLflow's ``{"predictions": [...]}`` plus ``model_name`` / ``model_version``; predictions are
PREDICT's values (``?kind=proba``: PREDICT_PROBA's lists).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkscore.ir.model import Model
from sparkscore.serving.common import (BadRequestError, PayloadTooLargeError, jsonable, matrix, named_columns,
                                       numeric_rows, output_values)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse(doc: Any, model: Model, who: str, max_rows: int) -> np.ndarray:
    """The model matrix of an ``/invocations`` body."""
    fast = _numeric_fast_path(doc, model)
    if fast is not None:
        return matrix_of_rows(model, fast, who, max_rows)
    return matrix(model, named_columns(model, columns(doc, model.signature.names, who), who), who, max_rows)


def columns(doc: Any, names: tuple[str, ...], who: str) -> dict[str, list]:
    """The body's values by column name (``names``: the column order of rows sent without names)."""
    if not isinstance(doc, dict):
        raise BadRequestError(f"{who}: the body must be a JSON object with one of {', '.join(FORMATS)}")
    keys = [k for k in FORMATS if k in doc]
    extra = [k for k in doc if k not in FORMATS and k != "params"]
    if len(keys) != 1 or extra:
        raise BadRequestError(f"{who}: the body needs exactly one of {', '.join(FORMATS)}"
                              f"{f' (unknown key {str(extra[0])[:40]!r})' if extra else ''}")
    if doc.get("params"):
        raise BadRequestError(f"{who}: 'params' are not supported (no parameter changes a sparkscore prediction)")
    key = keys[0]
    body = doc[key]
    if key == "dataframe_split":
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise BadRequestError(f"{who}: dataframe_split needs an object with 'data' (a list of rows)")
        columns = body.get("columns", list(names))
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise BadRequestError(f"{who}: dataframe_split 'columns' must be a list of strings")
        if len(set(columns)) != len(columns):
            raise BadRequestError(f"{who}: dataframe_split 'columns' names a column twice")
        by_name = _rows_to_columns(body["data"], columns, who)
    elif key == "dataframe_records":
        by_name = _records_to_columns(body, who)
    else:
        by_name = _instances(body, names, who, key)
    return by_name


def _numeric_fast_path(doc: Any, model: Model) -> np.ndarray | None:
    """The matrix of a well-formed body of plain numbers in signature order (one ``np.array`` call), else None.

    Only bodies :func:`columns` would accept as they are take this path (one format key, no params);
    everything else goes through :func:`columns`, which validates it and answers its one-line 400.
    """
    if not isinstance(doc, dict) or doc.get("params") or len([k for k in doc if k != "params"]) != 1:
        return None
    key = next(k for k in doc if k != "params")
    body = doc[key]
    if key == "dataframe_split":
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return None
        names = body.get("columns")
        if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
            return None
        return numeric_rows(model, body["data"], names)
    if key in ("instances", "inputs"):
        return numeric_rows(model, body, None)
    return None


def matrix_of_rows(model: Model, X: np.ndarray, who: str, max_rows: int) -> np.ndarray:
    """The fast path's matrix under the same row limit as :func:`~sparkscore.serving.common.matrix`."""
    if len(X) > max_rows:
        raise PayloadTooLargeError(f"{who}: {len(X)} rows in one request, over the limit of {max_rows}; split it")
    return X


def _rows_to_columns(rows: Any, columns: list[str], who: str) -> dict[str, list]:
    if not isinstance(rows, list):
        raise BadRequestError(f"{who}: rows must be a list")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequestError(f"{who}: row {i} must be a list of {len(columns)} values ({', '.join(columns[:8])})")
    return {name: [row[j] for row in rows] for j, name in enumerate(columns)}


def _records_to_columns(records: Any, who: str) -> dict[str, list]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) or not records:
        raise BadRequestError(f"{who}: records must be a non-empty list of objects")
    names = list(records[0])
    for i, record in enumerate(records):
        if set(record) != set(names):
            missing = sorted(set(names) ^ set(record))
            raise BadRequestError(f"{who}: record {i} lacks or adds input {str(missing[0])[:60]!r}; "
                                  "every record needs the same keys")
    return {name: [r[name] for r in records] for name in names}


def _instances(body: Any, names: tuple[str, ...], who: str, key: str) -> dict[str, list]:
    if isinstance(body, dict):  # columnar: {"col": [values]}
        if not all(isinstance(v, list) for v in body.values()):
            raise BadRequestError(f"{who}: {key} as an object maps each input to a list of values")
        return body
    if not isinstance(body, list) or not body:
        raise BadRequestError(f"{who}: {key} must be a non-empty list or an object of columns")
    if all(isinstance(r, dict) for r in body):
        return _records_to_columns(body, who)
    if all(isinstance(r, list) for r in body):
        return _rows_to_columns(body, list(names), who)
    if len(names) == 1 and not any(isinstance(r, (list, dict)) for r in body):
        return {names[0]: body}
    raise BadRequestError(f"{who}: {key} must hold all records, all rows (lists in signature order) "
                          "or, for a one-input model, all scalars")


def response(name: str, version: int, model: Model, S: np.ndarray, kind: str) -> dict:
    values = output_values(model, S, kind)
    predictions = values.tolist() if np.ndim(values) == 2 else jsonable(values)
    return {"predictions": predictions, "model_name": name, "model_version": str(version)}
