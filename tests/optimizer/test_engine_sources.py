"""Sources as DuckDB presents them, planned against the engine's own catalog and executed.

* pandas categoricals become ENUM columns: a text categorical input accepts them (the UDF gets the
  text, the inlined one-hot CASE compares it, predicates on it specialise the model);
* parquet files read without an alias (``FROM 'x.parquet'``, ``FROM read_parquet('x.parquet')``):
  ``PREDICT(*)`` binds the columns DuckDB describes for them and references them unqualified.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from sparkscore.engines import duckdb as engine
from sparkscore.engines.catalog import DuckDBCatalog
from sparkscore.errors import SignatureError
from sparkscore.optimizer import OptimizerOptions
from tests.optimizer.conftest import Runner, assert_same_rows, build_database
from tests.zoo import ALL_CASES

RULE_SETS = [pytest.param((), id="default"), pytest.param(("inline_models",), id="udf-only")]


@pytest.fixture(scope="module")
def engine_runner(tmp_path_factory) -> Runner:
    """The optimizer fixtures' tables on the engine's catalog, plus customers with an ENUM region
    (as a table and as a registered pandas frame) and customers / regions as parquet files."""
    con = build_database()
    frame = con.table("customers").df()
    frame["region"] = frame["region"].astype("category")
    con.register("customers_frame", frame)
    con.execute("CREATE TABLE customers_enum AS SELECT * FROM customers_frame")
    folder = tmp_path_factory.mktemp("parquet_sources")
    for table in ("customers", "regions"):
        con.table(table).write_parquet(str(folder / f"{table}.parquet"))
    runner = Runner(con)
    runner.catalog = DuckDBCatalog(con)
    runner.folder = folder
    yield runner
    con.close()


def _decisions(plan, rule: str) -> list:
    return [d for d in plan.decisions if d.rule == rule]


# ---------------------------------------------------------------------------- ENUM columns
@pytest.mark.parametrize("source", ["customers_enum", "customers_frame"])
def test_pandas_categorical_is_an_enum_column(engine_runner, source):
    assert engine_runner.catalog.columns(source)[2][1].startswith("ENUM(")


@pytest.mark.parametrize("disable_rules", RULE_SETS)
@pytest.mark.parametrize("source", ["customers_enum", "customers_frame"])
@pytest.mark.parametrize("query", [
    "SELECT id, PREDICT('spend_glm', *) AS s, PREDICT('region_tree', *) AS t FROM {} ORDER BY id",
    "SELECT id, PREDICT('dead_region', age, region) FROM {} WHERE region IN ('EU', 'LATAM') ORDER BY id",
    "SELECT id, PREDICT('region_tree', *) FROM {} WHERE region = 'APAC' AND tenure > 3 ORDER BY id",
])
def test_enum_region_scores_like_the_text_column(engine_runner, source, query, disable_rules):
    plan = engine_runner.plan(query.format(source), disable_rules)
    assert all(d.fired for d in _decisions(plan, "bind_models"))
    text = engine_runner.plan(query.format("customers"), disable_rules)
    assert_same_rows(engine_runner.rows(plan), engine_runner.rows(text))
    assert [d.fired for d in _decisions(plan, "prune_by_predicates")] == \
        [d.fired for d in _decisions(text, "prune_by_predicates")]


def test_enum_column_is_not_a_number(engine_runner):
    with pytest.raises(SignatureError, match=r"input 'tenure' must be numeric.*region is ENUM"):
        engine_runner.plan("SELECT PREDICT('glm', age, region, spend) FROM customers_enum")


@pytest.mark.parametrize("disable_rules", RULE_SETS)
def test_lightgbm_string_categories_over_an_enum_match_native(registry, disable_rules):
    """The zoo's LightGBM fitted on a pandas categorical, scored from a categorical frame."""
    fitted = next(c for c in ALL_CASES if c.id == "lightgbm-pandas-categorical").fitted()
    registry.register("zoo", fitted.model)
    con = duckdb.connect()
    con.register("rows", fitted.X.reset_index(drop=True).assign(row_id=np.arange(len(fitted.X))))
    assert dict(zip(con.table("rows").columns, map(str, con.table("rows").types)))["region"].startswith("ENUM(")
    result = engine.sql(con, "SELECT PREDICT('zoo', *), PREDICT_PROBA('zoo', *) FROM rows ORDER BY row_id", registry,
                        disable_rules=disable_rules).fetchall()
    con.close()
    proba = np.array([r[1] for r in result], dtype=float)
    np.testing.assert_allclose(proba, fitted.expected_proba, rtol=fitted.rtol, atol=fitted.atol)
    np.testing.assert_allclose(np.array([r[0] for r in result], dtype=float), proba[:, 1], rtol=1e-12)


# ---------------------------------------------------------------------------- unaliased files
FILES = [pytest.param("'customers.parquet'", id="path"),
         pytest.param("read_parquet('customers.parquet')", id="read_parquet")]


@pytest.mark.parametrize("disable_rules", RULE_SETS)
@pytest.mark.parametrize("source", FILES)
@pytest.mark.parametrize("query", [
    "SELECT id, PREDICT('glm', *) AS p, PREDICT('lgbm', *) FROM {} ORDER BY id",
    "SELECT id, PREDICT('spend_glm', *) FROM {} WHERE region = 'EU' ORDER BY id",
    "SELECT id, PREDICT('planned', *) FROM {} JOIN plans AS p USING (plan_id) WHERE age > 20 ORDER BY id",
])
def test_unaliased_file_binds_star_and_matches_the_table(engine_runner, monkeypatch, source, query, disable_rules):
    monkeypatch.chdir(engine_runner.folder)
    plan = engine_runner.plan(query.format(source), disable_rules)
    assert all("unchecked" not in d.reason for d in _decisions(plan, "bind_models"))
    table = engine_runner.plan(query.format("customers"), disable_rules)
    assert_same_rows(engine_runner.rows(plan), engine_runner.rows(table))


def test_unaliased_file_predicates_specialise_the_model(engine_runner, monkeypatch):
    monkeypatch.chdir(engine_runner.folder)
    plan = engine_runner.plan("SELECT PREDICT('spend_glm', *) FROM read_parquet('customers.parquet') "
                              "WHERE region = 'EU'")
    assert [d.fired for d in _decisions(plan, "prune_by_predicates")] == [True]


def test_ambiguous_column_over_unaliased_files_asks_for_aliases(engine_runner, monkeypatch):
    monkeypatch.chdir(engine_runner.folder)
    with pytest.raises(SignatureError, match="alias the sources"):
        engine_runner.plan("SELECT PREDICT('glm', *) FROM 'customers.parquet' JOIN read_parquet('customers.parquet') "
                           "USING (id)")


@pytest.mark.parametrize("dimension, fires", [("'regions.parquet'", False), ("read_parquet('regions.parquet')", False),
                                              ("'regions.parquet' AS r", True),
                                              ("read_parquet('regions.parquet') AS r", True)])
def test_factorize_needs_an_alias_for_a_file_dimension(engine_runner, monkeypatch, dimension, fires):
    monkeypatch.chdir(engine_runner.folder)
    query = f"SELECT c.id, PREDICT('star', *) AS p FROM customers AS c JOIN {dimension} USING (region) ORDER BY c.id"
    plan = engine_runner.plan(query, disable_rules=("inline_models",),
                              options=OptimizerOptions(factorize_min_speedup=0.0))  # whatever the cost rule says
    decision, = _decisions(plan, "factorize_linear")
    assert decision.fired == fires, decision.reason
    if not fires:
        assert "without an alias" in decision.reason
    plain = engine_runner.plan(query, disable_rules=("inline_models", "factorize_linear"))
    assert_same_rows(engine_runner.rows(plan), engine_runner.rows(plain))
