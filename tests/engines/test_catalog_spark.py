"""SparkCatalog row counts: factorize_linear fires on Spark where statistics exist, and says why not elsewhere.

Spark only puts ``ANALYZE TABLE`` row counts into plan statistics with the cost-based optimizer on,
and never for file sources; the catalog reads them from the table statistics and the parquet footers.
Each test runs the factorized plan and the rules-off plan on the shared session: same answer.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparkscore.ir import LinearModel, Model, Signature
from sparkscore.optimizer import ResolvedModel, plan_query

pytestmark = pytest.mark.spark
spark_engine = pytest.importorskip("sparkscore.engines.spark")

FACT_ROWS, DIM_ROWS, D_DIM = 3000, 30, 8
INPUTS = ["f0", "f1"] + [f"g{j}" for j in range(D_DIM)]
QUERY = "SELECT SUM(PREDICT('m', *)) AS total FROM {fact} AS s JOIN {dim} AS r ON s.k = r.k"


def _resolve(ref: str) -> ResolvedModel:
    rng = np.random.default_rng(1)
    model = Model(LinearModel(rng.normal(0, 0.3, (len(INPUTS), 1)), np.array([0.2]), "logistic"),
                  Signature.from_names(INPUTS), task="classification", classes=(0, 1), metadata={"name": "m"})
    return ResolvedModel("m", 1, model.sha256, model)


@pytest.fixture(scope="module")
def sources(spark, tmp_path_factory):
    """The same fact / dimension as catalog tables (in a database of their own) and as parquet files."""
    folder = tmp_path_factory.mktemp("spark_catalog")
    fact = spark.range(FACT_ROWS).selectExpr("id", f"id % {DIM_ROWS} AS k", "rand(1) AS f0", "rand(2) AS f1")
    dim = spark.range(DIM_ROWS).selectExpr("id AS k", *[f"rand({10 + j}) AS g{j}" for j in range(D_DIM)])
    paths = {}
    for name, df in (("fact", fact), ("dim", dim)):
        paths[name] = str(folder / f"{name}.parquet")
        df.repartition(2).write.parquet(paths[name])
    spark.sql(f"CREATE DATABASE IF NOT EXISTS ss_catalog_test LOCATION '{folder / 'warehouse'}'")
    for name in ("fact", "dim"):
        spark.read.parquet(paths[name]).write.mode("overwrite").saveAsTable(f"ss_catalog_test.{name}")
        spark.sql(f"ANALYZE TABLE ss_catalog_test.{name} COMPUTE STATISTICS")
    # a JSON table: no footers to count, and no statistics until ANALYZE TABLE
    fact.write.mode("overwrite").format("json").saveAsTable("ss_catalog_test.fact_no_stats")
    yield paths
    spark.sql("DROP DATABASE IF EXISTS ss_catalog_test CASCADE")


def _run(spark, plan) -> float:
    for spec in plan.udfs:
        source = spark_engine._derived_source(spec.model, spec.name, spec.source.version, spark)
        spark.udf.register(spec.name, spark_engine.ModelFunction(spec.name, source, spec.kind, spec.output_type).udf())
    return spark.sql(plan.sql).collect()[0][0]


def _plan(spark, sql, disable_rules=()):
    return plan_query(sql, dialect="spark", resolve=_resolve, catalog=spark_engine.SparkCatalog(spark),
                      disable_rules=disable_rules)


@pytest.mark.parametrize("fact, dim, note", [
    ("ss_catalog_test.fact", "ss_catalog_test.dim", "ANALYZE TABLE"),
    ("SS_CATALOG_TEST.FACT", "ss_catalog_test.DIM", "ANALYZE TABLE"),
    ("parquet.`{fact}`", "parquet.`{dim}`", "parquet footers"),
])
def test_factorization_fires_on_spark_statistics(spark, sources, fact, dim, note):
    sql = QUERY.format(fact=fact.format(**sources), dim=dim.format(**sources))
    plan = _plan(spark, sql)
    decision = next(d for d in plan.decisions if d.rule == "factorize_linear")
    assert decision.fired, decision.reason
    assert f"rows={FACT_ROWS}, |R|={DIM_ROWS}" in decision.reason and note in decision.reason
    assert "ss_partial" in plan.sql
    off = _plan(spark, sql, disable_rules=("factorize_linear",))
    assert np.isclose(_run(spark, plan), _run(spark, off), rtol=1e-12)


def test_catalog_counts_come_from_table_statistics_and_footers(spark, sources):
    catalog = spark_engine.SparkCatalog(spark)
    assert catalog.row_count("ss_catalog_test.fact") == FACT_ROWS
    assert catalog.row_count(f"parquet.{sources['dim']}") == DIM_ROWS   # how catalog_name spells parquet.`path`
    assert "may be stale" in catalog.row_stats("ss_catalog_test.dim").note


def test_table_without_statistics_declines_and_says_how_to_fix_it(spark, sources):
    plan = _plan(spark, QUERY.format(fact="ss_catalog_test.fact_no_stats", dim="ss_catalog_test.dim"))
    decision = next(d for d in plan.decisions if d.rule == "factorize_linear")
    assert not decision.fired
    assert "row count of s unknown" in decision.reason and "ANALYZE TABLE" in decision.reason


def test_plan_statistics_of_the_cost_based_optimizer_are_read_as_python_ints(spark, sources):
    """With the CBO on, py4j hands the plan's rowCount over as a Python int (``.toString()`` on it
    raised an AttributeError that was swallowed as "unknown")."""
    previous = spark.conf.get("spark.sql.cbo.enabled")
    spark.conf.set("spark.sql.cbo.enabled", "true")
    try:
        stats = spark_engine.SparkCatalog(spark).row_stats("ss_catalog_test.fact")
    finally:
        spark.conf.set("spark.sql.cbo.enabled", previous)
    assert stats.rows == FACT_ROWS and "plan statistics" in stats.note
