"""DuckDBCatalog row counts: found however the query spells the name, with their provenance for EXPLAIN.

Row counts steer ``factorize_linear``'s cost only; where one comes from (table statistics that
DELETE does not lower, parquet footers, a frame's length, a planner estimate) or why there is none
must reach EXPLAIN instead of a silent "unknown".
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from sparkscore.engines.catalog import DuckDBCatalog
from sparkscore.ir import LinearModel, Model, Signature
from sparkscore.optimizer import ResolvedModel, plan_query


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalog")
    con = duckdb.connect()
    con.execute("CREATE TABLE lineitem AS SELECT range AS id, range % 40 AS k, random() AS f0, random() AS f1 "
                "FROM range(4000)")
    con.execute("CREATE TABLE part AS SELECT range AS k, random() AS g0, random() AS g1, random() AS g2, "
                "random() AS g3, random() AS g4, random() AS g5 FROM range(40)")
    con.execute("CREATE SCHEMA sales")
    con.execute('CREATE TABLE sales."Orders" AS SELECT range AS o FROM range(30)')
    con.execute("CREATE TABLE shrinking AS SELECT range AS a FROM range(100)")
    con.execute("DELETE FROM shrinking WHERE a < 60")
    con.execute("CREATE VIEW big_ids AS SELECT * FROM lineitem WHERE id > 10")
    con.register("frame", pd.DataFrame({"a": np.arange(17)}))
    for i, n in enumerate((5, 7)):
        con.execute(f"COPY (SELECT range AS a FROM range({n})) TO '{folder}/p{i}.parquet' (FORMAT parquet)")
    yield con, folder
    con.close()


@pytest.mark.parametrize("name, rows", [
    ("lineitem", 4000), ("LINEITEM", 4000), ("LineItem", 4000), ("main.LINEITEM", 4000), ('"LINEITEM"', 4000),
    ("memory.main.lineitem", 4000), ("sales.orders", 30), ("SALES.ORDERS", 30),
])
def test_row_count_binds_any_spelling(database, name, rows):
    con, _ = database
    stats = DuckDBCatalog(con).row_stats(name)
    assert stats.rows == rows and "from the statistics of" in stats.note


def test_stale_count_after_delete_is_said_to_be_stale(database):
    """DuckDB keeps the pre-DELETE estimate: fine for cost, and EXPLAIN says it may be stale."""
    stats = DuckDBCatalog(database[0]).row_stats("shrinking")
    assert stats.rows in (40, 100) and "may be stale" in stats.note


@pytest.mark.parametrize("name, rows, note", [
    ("frame", 17, "DataFrame's length"),
    ("big_ids", None, "planner estimate"),          # a filtered view: an estimate, named as such
    ("{folder}/p0.parquet", 5, "parquet footers"),
    ("read_parquet(['{folder}/p0.parquet', '{folder}/p1.parquet'])", 12, "parquet footers"),
    ("read_parquet('{folder}/p*.parquet')", 12, "parquet footers"),
    ("no_such_table", None, "does not bind"),
])
def test_row_count_says_where_it_comes_from(database, name, rows, note):
    con, folder = database
    stats = DuckDBCatalog(con).row_stats(name.format(folder=folder))
    assert note in stats.note
    if rows is not None:
        assert stats.rows == rows
    elif note == "planner estimate":
        assert stats.rows is not None and stats.rows > 0
    else:
        assert stats.rows is None


def _resolve(ref: str) -> ResolvedModel:
    rng = np.random.default_rng(0)
    inputs = ["f0", "f1"] + [f"g{j}" for j in range(6)]
    model = Model(LinearModel(rng.normal(0, 0.3, (8, 1)), np.array([0.1]), "logistic"), Signature.from_names(inputs),
                  task="classification", classes=(0, 1), metadata={"name": "m"})
    return ResolvedModel("m", 1, model.sha256, model)


@pytest.mark.parametrize("fact, dim", [("lineitem", "part"), ("LINEITEM", "PART"), ("main.LineItem", "Main.Part")])
def test_factorization_fires_on_any_spelling_and_explains_its_row_counts(database, fact, dim):
    con, _ = database
    sql = f"SELECT SUM(PREDICT('m', *)) FROM {fact} AS s JOIN {dim} AS r ON s.k = r.k"
    plan = plan_query(sql, dialect="duckdb", resolve=_resolve, catalog=DuckDBCatalog(con))
    decision = next(d for d in plan.decisions if d.rule == "factorize_linear")
    assert decision.fired, decision.reason
    assert "rows=4000, |R|=40" in decision.reason and "may be stale" in decision.reason
    off = plan_query(sql, dialect="duckdb", resolve=_resolve, catalog=DuckDBCatalog(con),
                     disable_rules=("factorize_linear",))
    assert np.isclose(con.execute(plan.sql).fetchall()[0][0], con.execute(off.sql).fetchall()[0][0], rtol=1e-12)


def test_unknown_row_count_declines_with_the_catalogs_reason(database):
    con, _ = database
    sql = "SELECT SUM(PREDICT('m', *)) FROM lineitem AS s JOIN (SELECT * FROM part) AS r ON s.k = r.k"
    plan = plan_query(sql, dialect="duckdb", resolve=_resolve, catalog=DuckDBCatalog(con))
    decision = next(d for d in plan.decisions if d.rule == "factorize_linear")
    assert not decision.fired and "not a catalog table" in decision.reason
