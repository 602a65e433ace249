"""Small hand-built IR models covering every DuckDB output type, and helpers shared by the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlglot import exp

from sparkscore.ir import MISSING_NAN, Column, LinearModel, Model, Signature, TreeBuilder


def glm_regressor() -> Model:
    return Model(LinearModel(np.array([[1.5], [-2.0]]), np.array([0.25])), Signature.from_names(["a", "b"]))


def logistic_binary() -> Model:
    return Model(LinearModel(np.array([[0.7], [-1.1]]), np.array([0.1]), "logistic"), Signature.from_names(["a", "b"]),
                 task="classification", classes=(0, 1))


def softmax_strings() -> Model:
    """Multiclass with string labels and a categorical string input (a VARCHAR parameter)."""
    signature = Signature((Column("a"), Column("s", "varchar", categories=("x", "y", "z"))))
    coef = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 2.0]])
    return Model(LinearModel(coef, np.zeros(3), "softmax"), signature, task="classification",
                 classes=("lo", "mid", "hi"))


def tree_multiclass_ints() -> Model:
    """Trees with NaN routing (missing -> right at the root) and integer labels (BIGINT)."""
    builder = TreeBuilder(n_features=2, n_outputs=3)
    for k in range(3):
        builder.add_tree(feature=[0, 1, -1, -1, -1], threshold=[0.5, 1.0 + k, 0, 0, 0], left=[1, 2, -1, -1, -1],
                         right=[4, 3, -1, -1, -1], value=[0, 0, 1.0 * k, -1.0, 0.3 * k],
                         default_left=[False, True, False, False, False], missing=MISSING_NAN, output=k)
    return Model(builder.build(post_transform="softmax"), Signature.from_names(["a", "b"]),
                 task="classification", classes=(3, 5, 7))


MODELS = {
    "glm": glm_regressor,
    "logit": logistic_binary,
    "multi": softmax_strings,
    "trees": tree_multiclass_ints,
}


def frame(n: int = 50, seed: int = 0) -> pd.DataFrame:
    """Input rows with NULLs in every column and a row id to restore order."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.normal(1.5, 1.0, size=n)
    s = rng.choice(np.array(["x", "y", "z", "unseen"], dtype=object), size=n)
    a[::7] = np.nan
    b[3::11] = np.nan
    s[5::9] = None
    return pd.DataFrame({"row_id": np.arange(n), "a": a, "b": b, "s": s})


def call_sql(function: str, columns, table: str = "t", *, order_by: str = "row_id") -> str:
    """``SELECT function(col, ...) FROM table ORDER BY row_id`` built as a sqlglot AST."""
    call = exp.Anonymous(this=function, expressions=[exp.column(c, quoted=True) for c in columns])
    return exp.select(call).from_(exp.to_table(table)).order_by(exp.column(order_by)).sql("duckdb")
