"""MLflow bodies of plain numbers take one ``np.array`` call, and it builds the general path's matrix bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sparkscore.serving import mlflow
from sparkscore.serving.common import BadRequestError, matrix, named_columns
from tests.serving.conftest import FEATURES, glm

MODEL = glm(1)
WHO = "model lin/1"


def general(rows):
    """The column-by-column path every other body takes (validates each value)."""
    return matrix(MODEL, named_columns(MODEL, mlflow._rows_to_columns(rows, list(FEATURES), WHO), WHO), WHO, 100)


@pytest.mark.parametrize("rows", [
    [[1.5, -2.0, 3.25]],
    [[1, 2, 3], [4, 5, 6]],                                    # ints
    [[True, False, 1]],                                        # bools: 0 / 1 as DuckDB casts them
    [[None, float("nan"), 0.0]],                               # null and NaN: missing
    [[-0.0, float("inf"), float("-inf")]],                     # signed zero and infinities kept
    [[2 ** 53 + 1, -(2 ** 63) - 1, 10 ** 300]],                # ints rounded to float64 the same way
    [[np.nextafter(0.5, 1.0), 5e-324, 1.7976931348623157e308]],
])
@pytest.mark.parametrize("key", ["dataframe_split", "instances", "inputs"])
def test_fast_path_equals_the_general_path_bit_for_bit(rows, key):
    body = {"columns": list(FEATURES), "data": rows} if key == "dataframe_split" else rows
    got = mlflow.parse({key: body}, MODEL, WHO, 100)
    want = general(rows)
    assert got.dtype == np.float64 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


def test_numeric_rows_skip_the_per_column_work(monkeypatch):
    def per_column(*args, **kwargs):
        raise AssertionError("a body of plain numbers went through the per-column path")
    monkeypatch.setattr(mlflow, "named_columns", per_column)
    X = mlflow.parse({"dataframe_split": {"columns": list(FEATURES), "data": [[1.0, 2.0, 3.0]]}}, MODEL, WHO, 100)
    assert X.tolist() == [[1.0, 2.0, 3.0]]


@pytest.mark.parametrize("data, needle", [
    ([[1.0, "2", 3.0]], "input 'b' must be a number"),           # np.array would have read "2" as 2.0
    ([[1.0, 10 ** 400, 3.0]], "out of the float64 range"),
    ([[1.0, [2.0], 3.0]], "input 'b' must be a number"),
    ([[1.0, 2.0]], "row 0 must be a list of 3 values"),
])
def test_anything_else_is_still_the_general_paths_400(data, needle):
    with pytest.raises(BadRequestError, match=needle):
        mlflow.parse({"dataframe_split": {"columns": list(FEATURES), "data": data}}, MODEL, WHO, 100)


def test_reordered_columns_bind_by_name():
    X = mlflow.parse({"dataframe_split": {"columns": ["c", "a", "b"], "data": [[3.0, 1.0, 2.0]]}}, MODEL, WHO, 100)
    assert X.tolist() == [[1.0, 2.0, 3.0]]


def test_fast_path_keeps_the_row_limit():
    from sparkscore.serving.common import PayloadTooLargeError

    with pytest.raises(PayloadTooLargeError, match="3 rows"):
        mlflow.parse({"instances": [[1.0, 2.0, 3.0]] * 3}, MODEL, WHO, 2)
