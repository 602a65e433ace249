"""Spark computes the same profiles and drift as DuckDB (sketches per partition, merged), and runs DRIFT()."""

from __future__ import annotations

import pytest

import sparkscore as ss
from tests.monitor.conftest import frame

pytestmark = pytest.mark.spark


def _values(result) -> dict:
    return {(r.feature, r.metric, r.slice_key, r.slice_value): r for r in result.rows}


def test_spark_and_duckdb_give_the_same_drift(spark, monitored, train):
    batch = frame(1500, 21)
    batch["age"] += 4.0
    ref = train.iloc[:1200]
    spark_batch = spark.createDataFrame(batch).repartition(3)  # three partial sketch states merged on the driver
    spark_ref = spark.createDataFrame(ref)
    on_spark = _values(ss.monitor.drift("churn@prod", spark_batch, reference=spark_ref, registry=monitored, labels="y",
                                        slices=["region"]))
    on_duckdb = _values(ss.monitor.drift("churn@prod", batch, reference=ref, registry=monitored, labels="y",
                                         slices=["region"]))
    assert on_spark.keys() == on_duckdb.keys() and len(on_spark) > 24
    for key, row in on_duckdb.items():
        other = on_spark[key]
        assert other.method == row.method and (other.n_ref, other.n_cur) == (row.n_ref, row.n_cur)
        assert other.value == pytest.approx(row.value, rel=1e-9, abs=1e-12), key
        assert other.p_value == pytest.approx(row.p_value, rel=1e-9, abs=1e-300), key
        assert other.is_anomaly == row.is_anomaly


def test_drift_table_function_on_spark(spark, monitored, train):
    spark.createDataFrame(train.assign(age=train.age + 10)).createOrReplaceTempView("monitor_batch")
    rows = ss.spark.sql(spark, "SELECT feature FROM DRIFT('churn@prod', 'SELECT * FROM monitor_batch') "
                               "WHERE is_anomaly AND metric = 'psi' ORDER BY feature", registry=monitored).collect()
    assert [r.feature for r in rows] == ["age", "prediction"]
