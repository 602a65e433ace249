"""Every optimizer fixture planned for Spark and executed on the shared Spark session: same rows as DuckDB.

The query is planned in the spark dialect against the DuckDB test catalog (the same tables and
statistics, so the same rules fire), its UDFs are registered through the Spark engine's
:class:`ModelFunction` (derived models ship as safe-format files), and the tables are read from
parquet written by DuckDB so NaN stays NaN (Spark turns NaN into NULL when building a DataFrame
from pandas / Arrow).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from sparkscore.optimizer import parse, plan_query
from sparkscore.optimizer.dialect import generate
from sparkscore.optimizer.fixtures import read_fixtures
from tests.optimizer.conftest import assert_same_rows, resolve
from tests.optimizer.test_fixtures import FIXTURES

pytestmark = pytest.mark.spark
spark_engine = pytest.importorskip("sparkscore.engines.spark")

#: The first fixture of each rule runs in every Spark test run; the rest (~5 s each on 2 cores) are ``slow``.
#: Fixtures named ``... (duckdb only)`` use DuckDB-only SQL (whole-row references, COLUMNS, the ``main`` schema).
_DUCKDB_ONLY = pytest.mark.skip(reason="DuckDB-only SQL")
CASES = [pytest.param(fx, id=f"{path.stem}:{fx.name}",
                      marks=([pytest.mark.slow] if i else []) + ([_DUCKDB_ONLY] if "(duckdb only)" in fx.name else []))
         for path in sorted(FIXTURES.glob("*.sql")) for i, fx in enumerate(read_fixtures(path))]
TABLES = ("customers", "plans", "regions", "plan_regions", "plans_dup", "plan_prices", "customers_dec", "customers_ss",
          "regions_ss")


@pytest.fixture(scope="module")
def spark_tables(spark, database, tmp_path_factory):
    folder = tmp_path_factory.mktemp("optimizer_tables")
    for table in TABLES:
        path = str(folder / f"{table}.parquet")
        database.table(table).write_parquet(path)
        spark.read.parquet(path).createOrReplaceTempView(table)
    return spark


def _register(spark, plan) -> None:
    for spec in plan.udfs:
        with tempfile.TemporaryDirectory(prefix="sparkscore-test-") as tmp:
            spec.model.save(tmp)
            files = tuple(sorted((p.name, p.read_bytes()) for p in Path(tmp).iterdir()))
        source = spark_engine.ModelSource("", spec.name, spec.source.version, spec.model.sha256, files)
        spark.udf.register(spec.name, spark_engine.ModelFunction(spec.name, source, spec.kind, spec.output_type).udf())


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("fixture", CASES)
def test_fixture_returns_the_duckdb_rows_on_spark(spark_tables, runner, fixture):
    spark_sql = generate(parse(fixture.sql, "duckdb"), "spark")
    plan = plan_query(spark_sql, dialect="spark", resolve=resolve, catalog=runner.catalog)
    _register(spark_tables, plan)
    got = [tuple(_plain(list(row))) for row in spark_tables.sql(plan.sql).collect()]
    assert_same_rows(got, runner.rows(runner.plan(fixture.sql)))  # fixtures ORDER BY or return one row
