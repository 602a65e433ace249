"""Optimizer fixture files and the reference meaning of a UdfSpec call.

Fixture files (``tests/fixtures/optimizer/<rule>.sql``, sqlglot-fixture style)::

    -- name: glm is inlined
    SELECT PREDICT('glm', x, y) FROM t;
    -- expected
    SELECT 1e0 * x + ... FROM t;

``udf_outputs`` is what a registered UDF must return for a batch of input columns; the test
harness and engines register it so inlined and UDF plans can be compared row by row.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparkscore.errors import QueryError
from sparkscore.optimizer.plan import UdfSpec

_NAME = re.compile(r"^--\s*name:\s*(.+?)\s*$")
_EXPECTED = re.compile(r"^--\s*expected\s*$")


@dataclass(frozen=True)
class Fixture:
    name: str
    sql: str
    expected: str


def read_fixtures(path: str | Path) -> list[Fixture]:
    """Blocks of ``-- name: ...`` / input SQL / ``-- expected`` / expected SQL."""
    fixtures: list[Fixture] = []
    name, parts, current = None, {"sql": [], "expected": []}, "sql"
    for line in Path(path).read_text().splitlines() + ["-- name: <end>"]:
        match = _NAME.match(line)
        if match:
            if name is not None:
                fixtures.append(Fixture(name, _statement(parts["sql"]), _statement(parts["expected"])))
            name, parts, current = match.group(1), {"sql": [], "expected": []}, "sql"
        elif _EXPECTED.match(line):
            current = "expected"
        elif name is not None:
            parts[current].append(line)
    return fixtures


def _statement(lines: list[str]) -> str:
    return "\n".join(lines).strip().rstrip(";").strip()


def udf_outputs(spec: UdfSpec, columns, backend: str = "auto") -> list | np.ndarray:
    """Values ``spec``'s function returns for ``columns`` (Arrow table / dict, signature names)."""
    model = spec.model
    if spec.kind == "raw" and model.kind == "linear":  # margins: the GLM without its link, first output
        margins = dataclasses.replace(model, estimator=dataclasses.replace(model.estimator, link="identity"))
        return margins.scores(columns, backend=backend)[:, 0]
    scores = model.scores(columns, backend=backend)
    if spec.kind == "proba":
        return [list(row) for row in model.outputs_to_proba(scores)]
    if spec.kind == "predict":
        if model.is_classifier and model.n_classes == 2:
            return model.outputs_to_proba(scores)[:, 1]
        predictions = (model.margins_to_predictions(model.margin_model.scores(columns, backend=backend))
                       if model.labels_from_margins else model.outputs_to_predictions(scores))
        return [list(row) for row in predictions] if predictions.ndim == 2 else predictions
    raise QueryError(f"UDF kind {spec.kind!r} of {spec.name} has no reference meaning here; use predict, proba or a GLM's raw")
