"""Serving a route ref (``churn@ab``): per-row arm choice with the same bucket function as SQL.

The key column is read from the request (one value per row, batched requests included) and hashed
with :func:`sparkscore.registry.routes.bucket` -- the function the SQL bucket expression is tested
against -- so a key lands on the same arm in ``sparkscore serve``, DuckDB and Spark.  Each arm then
scores only its own rows on its own loaded version (the batcher every other request of that
version uses); rows go back in request order.  The response names, per row, the arm and version
that answered (``arm`` / ``version`` outputs in OIP v2, ``arms`` / ``versions`` in ``/invocations``),
and the headers ``x-sparkscore-route`` (``churn@ab`` and its route version) and
``x-sparkscore-arms`` (``label=name/version`` of every arm that answered).

The key column is not sent to the models (unless it is also one of their inputs).  Shadow arms
are scored after the answer, in a background task, and handed to
:func:`sparkscore.registry.routes.emit_shadow` -- only when a sink is configured
(:func:`~sparkscore.registry.routes.set_shadow_sink`); a shadow failure is logged, never returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkscore.registry.routes import BUCKETS, ResolvedRoute, bucket
from sparkscore.serving import v2
from sparkscore.serving.common import BadRequestError


def arm_of_rows(rr: ResolvedRoute, keys: list[Any], who: str) -> np.ndarray:
    """Index into ``rr.arms`` of every row's arm."""
    route = rr.route
    try:
        buckets = np.fromiter((bucket(route.salt, k) for k in keys), dtype=np.int64, count=len(keys))
    except ValueError as exc:  # a key of a type with no canonical text (a list, an object)
        raise BadRequestError(f"{who}: {exc}") from None
    owner = np.empty(BUCKETS, dtype=np.int64)
    labels = [a.label for a in rr.arms]
    for start, end, label in route.ranges:
        owner[start:end] = labels.index(label) if label in labels else -1
    return owner[buckets]


def v2_keys(doc: Any, raw: bytes, key: str, model_inputs: set[str], who: str) -> tuple[list, Any, bytes]:
    """(key values, the request without the key tensor, its binary part without the key's bytes)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise BadRequestError(f"{who}: the infer request needs a non-empty 'inputs' list")
    offset, kept, raw_kept, found = 0, [], [], None
    for tensor in doc["inputs"]:
        name, shape, _, values, used = v2._tensor(tensor, raw, offset, who)
        if name == key:
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise BadRequestError(f"{who}: route key {key!r} must be a [n] or [n, 1] tensor, got shape {shape}")
            found = [v.item() if hasattr(v, "item") else v for v in values]
        if name != key or key in model_inputs:
            kept.append(tensor)
            raw_kept.append(raw[offset:offset + used])
        offset += used
    if found is None:
        raise BadRequestError(f"{who}: the route picks an arm by input {key!r}; send it as a tensor "
                              f"(one value per row)")
    return found, {**doc, "inputs": kept}, b"".join(raw_kept)


def mlflow_keys(columns: dict[str, list], key: str, who: str) -> list:
    if key not in columns:
        raise BadRequestError(f"{who}: the route picks an arm by column {key!r}; send it with the inputs "
                              "(one value per row)")
    return list(columns[key])
