"""Cross-engine matrix: the same PREDICT queries on DuckDB and Spark give identical results (1e-9)
and match the native library, for every zoo model (a handful of adversarial rows each)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from tests.zoo import params

pytestmark = pytest.mark.spark
duckdb = pytest.importorskip("duckdb")
ss_spark = pytest.importorskip("sparkscore.engines.spark")

ROWS = 12
ROW_ID = "sparkscore_row"


def _values(column) -> list:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in column]


def _assert_same(spark_values, duck_values, what: str) -> None:
    a, b = _values(spark_values), _values(duck_values)
    assert [v is None for v in a] == [v is None for v in b], f"{what}: NULLs differ"
    for x, y in zip(a, b):
        if x is None:
            continue
        if isinstance(x, (str, bool)) or isinstance(y, str):
            assert x == y, what
        else:
            np.testing.assert_allclose(np.asarray(x, dtype=float), np.asarray(y, dtype=float), rtol=1e-9, atol=1e-9,
                                       err_msg=what)


@pytest.mark.parametrize("case", params())
def test_spark_matches_duckdb_and_native(case, spark, registry):
    import sparkscore as ss

    fitted = case.fitted()
    model = fitted.model
    name = re.sub(r"[^A-Za-z0-9_]", "_", case.id)
    registry.register(name, model)
    data = fitted.X.head(ROWS).reset_index(drop=True).assign(**{ROW_ID: np.arange(min(ROWS, len(fitted.X)))})
    data = data.astype({c: object for c, t in data.dtypes.items() if isinstance(t, pd.CategoricalDtype)})
    view = f"matrix_{name}"
    spark.createDataFrame(data).createOrReplaceTempView(view)
    con = duckdb.connect()
    con.register("pdf", data)
    con.execute(f'CREATE TABLE "{view}" AS SELECT * FROM pdf')

    proba = model.is_classifier
    calls = f"PREDICT('{name}', *) AS p" + (f", PREDICT_PROBA('{name}', *) AS pp" if proba else "")
    query = f"SELECT {ROW_ID}, {calls} FROM {view} ORDER BY {ROW_ID}"
    got = ss_spark.sql(spark, query, registry=registry).toPandas()
    want = ss.duckdb.sql(con, query, registry=registry).df()
    _assert_same(got.p, want.p, f"{case.id} PREDICT spark vs duckdb")
    if proba:
        _assert_same(got.pp, want.pp, f"{case.id} PREDICT_PROBA spark vs duckdb")

    n = len(data)
    if model.is_classifier and fitted.expected_proba is None:  # e.g. hinge loss: native labels only
        pp = np.stack(got.pp)
        # binary P == 0.5 exactly: the label is the margin's sign, which PREDICT (a probability) does not return
        keep = ~((pp[:, -1] == 0.5) & (model.n_classes == 2 and model.labels_from_margins))
        labels = [model.classes[i] for i in np.argmax(pp, axis=1)[keep]]
        assert labels == [v.item() if isinstance(v, np.generic) else v for v in fitted.expected_predict[:n][keep]]
    elif model.is_classifier and model.n_classes == 2:
        np.testing.assert_allclose(got.p.astype(float), fitted.expected_proba[:n, 1], rtol=fitted.rtol, atol=fitted.atol)
    elif model.is_classifier:
        assert list(got.p) == [v.item() if isinstance(v, np.generic) else v for v in fitted.expected_predict[:n]]
    else:  # multi-output regressors return DOUBLE[] per row
        values = np.stack(got.p) if np.ndim(fitted.expected_predict) == 2 else got.p.astype(float)
        np.testing.assert_allclose(values, fitted.expected_predict[:n], rtol=fitted.rtol, atol=fitted.atol)
    if fitted.expected_proba is not None:
        np.testing.assert_allclose(np.stack(got.pp), fitted.expected_proba[:n], rtol=fitted.rtol, atol=fitted.atol)
