"""prune_model_inputs: smaller signatures and removed joins return the rows of the full plan."""

from __future__ import annotations

import pytest

from tests.optimizer.conftest import Runner, assert_same_rows

LEFT_PLANS = "FROM customers AS c LEFT JOIN plans AS p ON c.plan_id = p.plan_id"


@pytest.mark.parametrize("sql", [
    f"SELECT c.id, PREDICT('ptree', c.age, c.tenure, c.spend, p.price) AS s {LEFT_PLANS} ORDER BY c.id",
    f"SELECT COUNT(*), SUM(PREDICT('ptree', c.age, c.tenure, c.spend, p.price)) {LEFT_PLANS}",
    "SELECT id, PREDICT('dead_region', age, region) AS s FROM customers ORDER BY id",
])
@pytest.mark.parametrize("inline", [True, False])
def test_pruned_plan_returns_the_full_rows(runner, sql, inline):
    off = () if inline else ("inline_models",)
    plan = runner.plan(sql, disable_rules=off)
    assert any(d.fired for d in plan.decisions if d.rule == "prune_model_inputs")
    assert "p.price" not in plan.sql and ", region)" not in plan.sql
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=off + ("prune_model_inputs",))))


def test_udf_of_the_pruned_model_takes_only_the_used_inputs(runner):
    plan = runner.plan(f"SELECT PREDICT('ptree', c.age, c.tenure, c.spend, p.price) {LEFT_PLANS}",
                       disable_rules=("inline_models",))
    assert [u.inputs for u in plan.udfs] == [("age", "tenure")]
    assert "JOIN" not in plan.sql


@pytest.mark.parametrize("where, reason", [("WHERE p.price > 10", "still reads it"), ("", None)])
def test_join_is_kept_while_something_reads_it(runner, where, reason):
    plan = runner.plan(f"SELECT PREDICT('ptree', c.age, c.tenure, c.spend, p.price) {LEFT_PLANS} {where}")
    kept = [d.reason for d in plan.decisions if d.rule == "prune_model_inputs" and d.reason.startswith("kept JOIN")]
    assert (reason is None and not kept) or reason in kept[0]


DUP_PLANS = ("SELECT c.id, PREDICT('ptree', c.age, c.tenure, c.spend, p.price) AS s FROM customers AS c "
             "LEFT JOIN plans_dup AS p ON c.plan_id = p.plan_id ORDER BY c.id, s")


@pytest.fixture
def engine_runner(database):
    """The fixtures' database seen through the engine's own catalog (approx_unique statistics)."""
    from sparkscore.engines.catalog import DuckDBCatalog

    runner = Runner(database)
    runner.catalog = DuckDBCatalog(database)
    return runner


def test_estimated_uniqueness_never_removes_a_join(engine_runner, database):
    from sparkscore.engines.catalog import DuckDBCatalog

    catalog = DuckDBCatalog(database)
    assert catalog.distinct_count("plans_dup", "plan_id") == catalog.row_count("plans_dup")  # the estimate says unique
    plan = engine_runner.plan(DUP_PLANS)
    assert "plans_dup" in plan.sql
    assert_same_rows(engine_runner.rows(plan), engine_runner.rows(engine_runner.plan(DUP_PLANS, disable_rules=("prune_model_inputs",))))


def test_opted_in_exact_check_proves_or_refutes_uniqueness(engine_runner, database):
    sql = DUP_PLANS.replace("plans_dup", "plans_copy")
    database.execute("CREATE OR REPLACE TABLE plans_copy AS SELECT * FROM plans")  # unique, but no constraint
    try:
        assert "plans_copy" in engine_runner.plan(sql).sql
        database.execute("SET VARIABLE sparkscore_verify_unique_keys = true")
        engine_runner.catalog = type(engine_runner.catalog)(database)
        plan = engine_runner.plan(sql)
        assert "plans_copy" not in plan.sql
        assert any("exact check" in d.reason for d in plan.decisions if d.fired)
        assert "plans_dup" in engine_runner.plan(DUP_PLANS).sql  # the check finds the duplicate
    finally:
        database.execute("RESET VARIABLE sparkscore_verify_unique_keys")
        database.execute("DROP TABLE IF EXISTS plans_copy")


@pytest.mark.spark
def test_spark_removes_a_join_only_after_the_opted_in_exact_check(spark_tables):
    pytest.importorskip("pyspark")
    from sparkscore.engines.spark import SparkCatalog
    from sparkscore.optimizer import plan_query
    from tests.optimizer.conftest import resolve

    sql = ("SELECT c.id, PREDICT('ptree', c.age, c.tenure, c.spend, p.price) AS s FROM customers AS c "
           "LEFT JOIN {} AS p ON c.plan_id = p.plan_id")

    def plan(table):
        return plan_query(sql.format(table), dialect="spark", resolve=resolve, catalog=SparkCatalog(spark_tables))

    assert "JOIN" in plan("plans").sql  # Spark declares no keys: nothing is proven by default
    spark_tables.conf.set("spark.sparkscore.verifyUniqueKeys", "true")
    try:
        assert "JOIN" not in plan("plans").sql
        assert "JOIN" in plan("plans_dup").sql
    finally:
        spark_tables.conf.unset("spark.sparkscore.verifyUniqueKeys")


def test_a_strict_input_is_kept_even_when_its_one_hot_coefficients_are_zero():
    """Column.accepts (OneHotEncoder handle_unknown='error'): its unknown values must still fail the
    query, so the input stays in the call although no coefficient reads it."""
    import dataclasses

    from sparkscore.optimizer.prune_model_inputs import used_inputs
    from tests.optimizer.conftest import MODELS

    model = MODELS["dead_region"]
    age, region = model.signature.inputs
    strict = dataclasses.replace(model, signature=dataclasses.replace(
        model.signature, inputs=(age, dataclasses.replace(region, accepts=region.categories))))
    assert used_inputs(model)[0] == [0] and used_inputs(strict)[0] == [0, 1]
