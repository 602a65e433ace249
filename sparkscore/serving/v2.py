"""Open Inference Protocol v2 (KServe / Triton / MLServer): request parsing and responses.

Inputs accepted by ``POST /v2/models/{ref}[/versions/{v}]/infer``:

* one tensor per model input, named as the signature column, shape ``[n]`` or ``[n, 1]``; numeric
  inputs take any numeric datatype (``FP64`` advertised; ``FP32``/``INT*``/``UINT*``/``BOOL`` are
  cast to float64, as PREDICT casts to DOUBLE), string inputs take ``BYTES``; or
* ONE tensor of shape ``[n, d]`` (any name, ``d`` = number of model inputs) in signature order,
  numeric inputs only.

``data`` may be flat (row-major) or nested; ``null`` is a missing value.  Triton's binary tensor
extension (``Inference-Header-Content-Length`` + ``parameters.binary_data_size``) is accepted on
inputs; outputs are always JSON (``data``), which every OIP client reads.

Outputs: ``predict`` (PREDICT's value: regression value, binary P(positive), multiclass label) and,
for classifiers, ``proba`` (PREDICT_PROBA, shape ``[n, k]``).  The request's ``outputs`` list picks
among them.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from sparkscore.ir.model import Model
from sparkscore.ir.signature import Column
from sparkscore.serving.common import (DATATYPE_OF, NUMERIC_DATATYPES, BadRequestError, column_values, input_datatype,
                                       is_string_input, jsonable, matrix, output_type, output_values)

OUTPUTS = ("predict", "proba")
_MAX_DIMS = 8


def output_names(model: Model) -> tuple[str, ...]:
    return OUTPUTS if model.is_classifier else OUTPUTS[:1]


def metadata(name: str, version: int, model: Model) -> dict:
    """``GET /v2/models/{name}/versions/{v}``: typed inputs from the signature."""
    inputs = [{"name": c.name, "datatype": input_datatype(c), "shape": [-1]} for c in model.signature.inputs]
    outputs = []
    for out in output_names(model):
        sql_type = output_type(model, out)
        shape = [-1, model.n_classes] if out == "proba" else ([-1, model.estimator.n_outputs] if sql_type == "DOUBLE[]" else [-1])
        outputs.append({"name": out, "datatype": DATATYPE_OF[sql_type], "shape": shape})
    return {"name": name, "versions": [str(version)], "platform": f"sparkscore_{model.kind}", "inputs": inputs,
            "outputs": outputs, "parameters": {"task": model.task}}


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request (Triton's binary tensor extension)."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise BadRequestError(f"Inference-Header-Content-Length {header_length[:20]!r} is not a length within the body")
    n = int(header_length)
    return body[:n], body[n:]


def _decode_binary(tensor: dict, raw: bytes, datatype: str, count: int, who: str) -> list | np.ndarray:
    name = tensor.get("name")
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise BadRequestError(f"{who}: input {name!r}: truncated BYTES element")
            (size,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + size > len(raw):
                raise BadRequestError(f"{who}: input {name!r}: truncated BYTES element")
            try:
                out.append(raw[pos:pos + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise BadRequestError(f"{who}: input {name!r}: BYTES element is not UTF-8") from None
            pos += size
        return out
    dtype = np.dtype(NUMERIC_DATATYPES[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadRequestError(f"{who}: input {name!r}: {len(raw)} binary bytes do not hold {count} {datatype} values")
    return np.frombuffer(raw, dtype=dtype)


def _flat(data: Any, who: str, name: str) -> list:
    """Row-major flat list of a (possibly nested) JSON array."""
    if not isinstance(data, list):
        raise BadRequestError(f"{who}: input {name!r}: 'data' must be a JSON array")
    out: list = []

    def walk(items: list, depth: int) -> None:
        if depth > _MAX_DIMS:
            raise BadRequestError(f"{who}: input {name!r}: 'data' is nested deeper than {_MAX_DIMS}")
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                out.append(item)

    walk(data, 1)
    return out


def _tensor(tensor: Any, raw: bytes, offset: int, who: str) -> tuple[str, list[int], str, Any, int]:
    """(name, shape, datatype, flat values, bytes consumed) of one request tensor."""
    if not isinstance(tensor, dict):
        raise BadRequestError(f"{who}: each entry of 'inputs' must be an object with name, shape, datatype, data")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise BadRequestError(f"{who}: an input has no string 'name'")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= _MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 31 for d in shape)):
        raise BadRequestError(f"{who}: input {name!r}: 'shape' must be a list of 1-{_MAX_DIMS} non-negative integers")
    datatype = tensor.get("datatype")
    if datatype != "BYTES" and datatype not in NUMERIC_DATATYPES:
        raise BadRequestError(f"{who}: input {name!r}: unsupported datatype {str(datatype)[:20]!r}; "
                              f"use FP64 (numbers) or BYTES (strings)")
    count = int(np.prod(shape, dtype=np.int64))
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(raw):
            raise BadRequestError(f"{who}: input {name!r}: binary_data_size {size!r} runs past the body")
        values = _decode_binary(tensor, raw[offset:offset + size], datatype, count, who)
        used = size
    else:
        values = _flat(tensor.get("data"), who, name)
        used = 0
    if len(values) != count:
        raise BadRequestError(f"{who}: input {name!r}: shape {shape} needs {count} values, got {len(values)}")
    if datatype == "BYTES":
        bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise BadRequestError(f"{who}: input {name!r} is BYTES but holds {type(bad).__name__} {str(bad)[:40]!r}")
    return name, shape, datatype, values, used


def parse_infer(doc: Any, raw: bytes, model: Model, who: str, max_rows: int) -> tuple[np.ndarray, tuple[str, ...], Any]:
    """(model matrix, requested outputs, request id) of an infer request body."""
    if not isinstance(doc, dict):
        raise BadRequestError(f"{who}: the infer request must be a JSON object with 'inputs'")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError(f"{who}: the infer request needs a non-empty 'inputs' list")
    tensors, offset = [], 0
    for t in inputs:
        parsed = _tensor(t, raw, offset, who)
        offset += parsed[4]
        tensors.append(parsed)
    signature = model.signature
    by_name = {c.name: c for c in signature.inputs}
    if len(tensors) == 1 and tensors[0][0] not in by_name:
        name, shape, datatype, values, _ = tensors[0]
        d = len(signature)
        if len(shape) != 2 or shape[1] != d:
            raise BadRequestError(f"{who}: input {name!r} is not a model input; send one tensor per input "
                                  f"({', '.join(signature.names[:8])}) or one [n, {d}] tensor")
        if datatype == "BYTES" or any(is_string_input(c) for c in signature.inputs):
            raise BadRequestError(f"{who}: input {name!r}: an [n, {d}] tensor must be numeric and the model must "
                                  "have numeric inputs only; send one tensor per input instead")
        n = shape[0]
        flat = values if isinstance(values, np.ndarray) else column_values(Column(name), values, who)
        grid = np.asarray(flat, dtype=np.float64).reshape(n, d)
        columns = {c.name: grid[:, j] for j, c in enumerate(signature.inputs)}
    else:
        columns = {}
        for name, shape, datatype, values, _ in tensors:
            column = by_name.get(name)
            if column is None:
                raise BadRequestError(f"{who}: input {name!r} is not a model input; it takes "
                                      f"{', '.join(signature.names[:8])}{', ...' if len(signature) > 8 else ''}")
            if name in columns:
                raise BadRequestError(f"{who}: input {name!r} is given twice")
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise BadRequestError(f"{who}: input {name!r} has shape {shape}; a per-input tensor is [n] or [n, 1]")
            want = input_datatype(column)
            if (want == "BYTES") != (datatype == "BYTES"):
                raise BadRequestError(f"{who}: input {name!r} must be {want}, got {datatype}")
            columns[name] = column_values(column, values, who)
        missing = [c.name for c in signature.inputs if c.name not in columns]
        if missing:
            raise BadRequestError(f"{who}: missing input {missing[0]!r}"
                                  f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    X = matrix(model, columns, who, max_rows)
    wanted = _requested(doc.get("outputs"), model, who)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"{who}: 'id' must be a string")
    return X, wanted, request_id


def _requested(outputs: Any, model: Model, who: str) -> tuple[str, ...]:
    names = output_names(model)
    if outputs is None:
        return names
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise BadRequestError(f"{who}: 'outputs' must be a list of objects with a 'name'")
    wanted = tuple(o["name"] for o in outputs)
    for name in wanted:
        if name not in names:
            raise BadRequestError(f"{who}: unknown output {name[:40]!r}; it has {', '.join(names)}")
    return wanted


def infer_response(name: str, version: int, model: Model, S: np.ndarray, wanted: tuple[str, ...],
                   request_id: str | None) -> dict:
    outputs = []
    for out in wanted:
        values = output_values(model, S, out)
        sql_type = output_type(model, out)
        outputs.append({"name": out, "datatype": DATATYPE_OF[sql_type], "shape": list(np.shape(values)),
                        "data": jsonable(values)})
    doc = {"model_name": name, "model_version": str(version), "outputs": outputs}
    if request_id is not None:
        doc["id"] = request_id
    return doc


def loads(text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequestError("the request body is not valid JSON") from None
