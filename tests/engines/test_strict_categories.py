"""PREDICT over a OneHotEncoder(handle_unknown='error') pipeline: an unknown category fails the query
with the line the Python path raises, whether the model is inlined as SQL (DuckDB ``error()``,
Spark ``raise_error()`` in a CASE branch) or runs as a UDF, and whatever the optimizer derived
(a ``WHERE region = 'mars'`` must not fold the check away).  Known rows score as sklearn does.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("sklearn")
duckdb = pytest.importorskip("duckdb")

import sparkscore as ss  # noqa: E402
from tests.importers.test_unknown_categories import known_rows, pipeline  # noqa: E402

PATHS = {"inline": (), "udf": ("inline_models",)}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(registry holding shop/1, the native pipeline, its rows with one unknown region at row 7)."""
    native = pipeline("error")
    reg = ss.Registry(tmp_path_factory.mktemp("strict") / "registry")
    reg.register("shop", native)
    rows = known_rows()
    return reg, native, rows


def _con(rows):
    con = duckdb.connect()
    con.register("src", rows)
    con.execute("CREATE TABLE t AS SELECT row_number() OVER () - 1 AS id, * FROM src")
    con.unregister("src")
    return con


def _message(column: str, shown: str) -> str:
    return re.escape(f"shop/1: column {column!r} has value {shown}, a category its encoder did not see")


@pytest.mark.parametrize("path", PATHS)
def test_duckdb_known_rows_score_as_sklearn_and_unknown_ones_fail(shop, path):
    reg, native, rows = shop
    con = _con(rows)
    query = "SELECT id, PREDICT('shop', region, tier, x) AS p FROM t ORDER BY id"
    plan = ss.duckdb.explain(query, con, reg, disable_rules=PATHS[path])
    assert (len(plan.udfs) == 0) is (path == "inline")
    got = np.array([p for _, p in ss.duckdb.sql(con, query, reg, disable_rules=PATHS[path]).fetchall()])
    np.testing.assert_allclose(got, native.predict_proba(rows)[:, 1], rtol=1e-6, atol=1e-6)
    for column, value, shown in (("region", "'mars'", "'mars'"), ("tier", "7", "7.0"), ("region", "NULL", "NULL")):
        con.execute(f"CREATE OR REPLACE TABLE u AS SELECT * REPLACE ({value} AS {column}) FROM t WHERE id = 7 "
                    "UNION ALL SELECT * FROM t WHERE id <> 7")
        with pytest.raises(Exception, match=_message(column, shown)):
            ss.duckdb.sql(con, query.replace("FROM t", "FROM u"), reg, disable_rules=PATHS[path]).fetchall()


def test_duckdb_a_predicate_on_an_unknown_value_keeps_the_check(shop):
    """prune_by_predicates folds ``region = 'eu'`` into the intercept (every row is known), but not
    ``region = 'mars'``: those rows still fail, as sklearn fails on them."""
    reg, native, rows = shop
    con = _con(rows)
    con.execute("UPDATE t SET region = 'mars' WHERE id = 3")
    query = "SELECT id, PREDICT('shop', region, tier, x) AS p FROM t WHERE region = '{}' ORDER BY id"
    plan = ss.duckdb.explain(query.format("eu"), con, reg)
    assert any(d.rule == "prune_by_predicates" and d.fired for d in plan.decisions)
    got = ss.duckdb.sql(con, query.format("eu"), reg).fetchall()
    eu = rows[rows.region == "eu"]
    np.testing.assert_allclose([p for _, p in got], native.predict_proba(eu)[:, 1], rtol=1e-6, atol=1e-6)
    for rules in PATHS.values():
        with pytest.raises(Exception, match=_message("region", "'mars'")):
            ss.duckdb.sql(con, query.format("mars"), reg, disable_rules=rules).fetchall()


@pytest.mark.spark
def test_spark_inline_and_udf_paths_fail_with_the_same_line(shop, spark):
    """(Known rows on Spark: the zoo's strict-encoder-free cases and the DuckDB test above cover the
    arithmetic; this checks the refusal, raise_error() inlined and the UDF's exception.)"""
    reg, native, rows = shop
    bad = rows.iloc[:8].assign(id=np.arange(8))
    bad.loc[7, "region"] = "mars"
    spark.createDataFrame(bad).createOrReplaceTempView("strict_shop")
    query = "SELECT id, PREDICT('shop', region, tier, x) AS p FROM strict_shop"
    assert "RAISE_ERROR" in ss.spark.explain(query, spark, reg).sql
    for rules in PATHS.values():
        with pytest.raises(Exception, match=_message("region", "'mars'")):
            ss.spark.sql(spark, query, reg, disable_rules=rules).collect()


@pytest.mark.parametrize("handle_unknown", ["error", "ignore"])
@pytest.mark.parametrize("path", PATHS)
def test_duckdb_null_imputed_to_a_known_category_scores_and_an_unknown_value_still_fails(path, handle_unknown,
                                                                                        tmp_path):
    """SimpleImputer -> OneHotEncoder: NULL scores as the imputed category (inlined, the indicator of
    that category tests ``x = c OR x IS NULL OR ISNAN(x)``; it used to read 0 there, for either option)."""
    from sklearn.impute import SimpleImputer

    native = pipeline(handle_unknown, tier_steps=(SimpleImputer(strategy="most_frequent"),))
    reg = ss.Registry(tmp_path / "registry")
    reg.register("shop", native)
    rows = known_rows()
    rows.loc[4, "tier"] = np.nan
    con = _con(rows)
    query = "SELECT id, PREDICT('shop', region, tier, x) AS p FROM t ORDER BY id"
    got = [p for _, p in ss.duckdb.sql(con, query, reg, disable_rules=PATHS[path]).fetchall()]
    np.testing.assert_allclose(got, native.predict_proba(rows)[:, 1], rtol=1e-6, atol=1e-6)
    con.execute("UPDATE t SET tier = 5 WHERE id = 9")
    rows.loc[9, "tier"] = 5.0
    if handle_unknown == "ignore":  # the all-zero one-hot row, as sklearn scores it
        got = [p for _, p in ss.duckdb.sql(con, query, reg, disable_rules=PATHS[path]).fetchall()]
        np.testing.assert_allclose(got, native.predict_proba(rows)[:, 1], rtol=1e-6, atol=1e-6)
        return
    with pytest.raises(Exception, match=_message("tier", "5.0")):
        ss.duckdb.sql(con, query, reg, disable_rules=PATHS[path]).fetchall()
