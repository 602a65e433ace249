"""Every optimizer fixture planned for Spark and executed on the shared Spark session: same rows as DuckDB.

The query is planned in the spark dialect against the DuckDB test catalog (the same tables and
statistics, so the same rules fire), its UDFs are registered through the Spark engine's
:class:`ModelFunction` (derived models ship as safe-format files), and the tables are read from
parquet written by DuckDB so NaN stays NaN (Spark turns NaN into NULL when building a DataFrame
from pandas / Arrow).
"""

from __future__ import annotations

import pytest

from sparkscore.optimizer import parse, plan_query
from sparkscore.optimizer.dialect import generate
from sparkscore.optimizer.fixtures import read_fixtures
from tests.optimizer.conftest import assert_same_rows, register_spark_udfs, resolve, resolve_route, spark_rows
from tests.optimizer.test_fixtures import FIXTURES

pytestmark = pytest.mark.spark
spark_engine = pytest.importorskip("sparkscore.engines.spark")

#: The first fixture of each rule runs in every Spark test run; the rest (~5 s each on 2 cores) are ``slow``.
#: Fixtures named ``... (duckdb only)`` use DuckDB-only SQL (whole-row references, COLUMNS, the ``main`` schema).
_DUCKDB_ONLY = pytest.mark.skip(reason="DuckDB-only SQL")
CASES = [pytest.param(fx, id=f"{path.stem}:{fx.name}",
                      marks=([pytest.mark.slow] if i else []) + ([_DUCKDB_ONLY] if "(duckdb only)" in fx.name else []))
         for path in sorted(FIXTURES.glob("*.sql")) for i, fx in enumerate(read_fixtures(path))]


@pytest.mark.parametrize("fixture", CASES)
def test_fixture_returns_the_duckdb_rows_on_spark(spark_tables, runner, fixture):
    spark_sql = generate(parse(fixture.sql, "duckdb"), "spark")
    plan = plan_query(spark_sql, dialect="spark", resolve=resolve, catalog=runner.catalog, resolve_route=resolve_route)
    register_spark_udfs(spark_tables, plan)
    got = spark_rows(spark_tables, plan)
    assert_same_rows(got, runner.rows(runner.plan(fixture.sql)))  # fixtures ORDER BY or return one row
