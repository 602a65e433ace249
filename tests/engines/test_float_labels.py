"""Float class labels (CatBoost, 0.5, 1.5, 2.5): the signature and PREDICT both type them DOUBLE and
return the native labels exactly (the zoo's trust_cases run them through every backend and engine)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("catboost")
duckdb = pytest.importorskip("duckdb")

import sparkscore as ss  # noqa: E402
from tests.zoo.trust_cases import catboost_halves  # noqa: E402


def test_float_labels_are_doubles_in_the_signature_and_in_duckdb(registry):
    fitted = catboost_halves()
    assert fitted.model.signature.outputs[0].dtype == "double"
    registry.register("halves", fitted.model)
    con = duckdb.connect()
    frame = fitted.X.assign(row_id=np.arange(len(fitted.X)))  # noqa: F841 - read by name
    con.execute("CREATE TABLE t AS SELECT * FROM frame")
    for rules in ((), ("inline_models",)):
        rel = ss.duckdb.sql(con, "SELECT PREDICT('halves', *) AS label FROM t ORDER BY row_id", registry,
                            disable_rules=rules)
        assert str(rel.types[0]) == "DOUBLE"
        got = np.array([r[0] for r in rel.fetchall()])
        assert got.dtype == np.float64 and np.array_equal(got, fitted.expected_predict.astype(np.float64))
        assert set(np.unique(got)) <= {0.5, 1.5, 2.5}
