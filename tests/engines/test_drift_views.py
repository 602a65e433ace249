"""DRIFT(...) in a query leaves nothing behind in the engine's catalog: its rows travel inside the
SQL (a few kilobytes), so a long notebook session does not gather one view per DRIFT call, and the
relation ``sql`` returns stays valid however late it is read.  The inline rows keep every value
exactly (NULL, NaN, +-inf, -0.0, 64-bit counts) in DuckDB and Spark; Spark's DRIFT itself runs in
tests/monitor/test_spark.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
duckdb = pytest.importorskip("duckdb")

import sparkscore as ss  # noqa: E402
from tests.monitor.conftest import frame  # noqa: E402

QUERIES = ("SELECT feature, metric, value, is_anomaly FROM DRIFT('churn', 'SELECT * FROM batch') AS d "
           "ORDER BY feature, metric",
           "SELECT count(*) AS n FROM DRIFT('churn', 'SELECT * FROM batch', 'SELECT * FROM ref')",
           "SELECT d.feature FROM DRIFT('churn', 'SELECT * FROM batch') d WHERE d.metric = 'psi' AND d.value > 1e9")


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = frame(600, 0)
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])], remainder="passthrough")
    native = make_pipeline(ct, LogisticRegression(max_iter=500)).fit(train.drop(columns="y"), train.y)
    reg = ss.Registry(tmp_path_factory.mktemp("drift-views") / "registry")
    reg.register("churn", native, training_data=train, training_labels="y", profile=True)
    return reg, frame(300, 1).drop(columns="y").assign(age=lambda d: d.age + 10)


def _catalog(con) -> list:
    return (con.execute("SELECT database_name, schema_name, table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
            + con.execute("SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal "
                          "ORDER BY ALL").fetchall())


def test_three_drift_queries_leave_the_duckdb_catalog_as_it_was(churn):
    reg, batch = churn
    con = duckdb.connect()
    con.register("batch_frame", batch)
    con.execute("CREATE TABLE batch AS SELECT * FROM batch_frame")
    con.execute("CREATE TABLE ref AS SELECT * FROM batch_frame LIMIT 100")
    con.unregister("batch_frame")
    before = _catalog(con)
    relations = [ss.duckdb.sql(con, q, registry=reg, namespace={}) for q in QUERIES]
    assert _catalog(con) == before  # the relations are built, not read yet: nothing was registered for them
    rows = [r.fetchall() for r in relations]
    assert _catalog(con) == before
    expected = ss.monitor.drift("churn", batch, registry=reg)
    want = sorted((r.feature, r.metric, r.value, r.is_anomaly) for r in expected.rows if r.slice_key is None)
    assert [(f, m, is_a) for f, m, _, is_a in rows[0]] == [(f, m, is_a) for f, m, _, is_a in want]
    psi = [(f, v) for f, m, v, _ in rows[0] if m == "psi"]  # exact histogram metrics: bit-equal doubles
    assert psi and psi == [(f, v) for f, m, v, _ in want if m == "psi"]
    assert rows[1][0][0] > 0 and rows[2] == []


class _Result:
    """A drift result of hard values (NULL, NaN, +-inf, -0.0, a huge count) for the inline-rows round trip."""

    def to_arrow(self):
        import pyarrow as pa

        return pa.table({"feature": ["a", None], "metric": ["psi", "ks"], "value": [-0.0, float("nan")],
                         "threshold": [float("inf"), 0.1], "is_anomaly": [True, None], "n_ref": [2 ** 62, None]})


def _inline(dialect: str) -> str:
    from sparkscore.engines.monitoring import expand_drift

    return expand_drift("SELECT * FROM DRIFT('m', 'SELECT 1') AS d", dialect, lambda *_: _Result())


def _same(rows: list) -> None:
    (a, b) = rows
    assert a[0] == "a" and a[1] == "psi" and a[2] == 0.0 and np.signbit(a[2]) and a[3] == np.inf and a[4] is True
    assert a[5] == 2 ** 62 and b[0] is None and np.isnan(b[2]) and b[3] == 0.1 and b[4] is None and b[5] is None


def test_inline_drift_rows_are_exact_in_duckdb():
    con = duckdb.connect()
    _same(con.execute(_inline("duckdb")).fetchall())


@pytest.mark.spark
def test_inline_drift_rows_are_exact_in_spark_and_leave_no_temporary_view(spark):
    before = sorted(t.name for t in spark.catalog.listTables())
    _same([tuple(r) for r in spark.sql(_inline("spark")).collect()])
    assert sorted(t.name for t in spark.catalog.listTables()) == before
