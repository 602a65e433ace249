"""The scoring parquet scan (``sparkscore/engines/spark_scan.py``): taken only where it reads exactly
what Spark would, one partition per row group, and the reader's batches in-process.

Its values against the native library and, bit for bit, against the Arrow UDF path are in
``test_spark_path.py::test_every_path_matches_native`` (the ``scan`` cases)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkscore import Model
from sparkscore.errors import QueryError
from sparkscore.ir import LinearModel, Signature
from tests.engines.test_spark_path import write_parquet

pytestmark = pytest.mark.spark
ss_spark = pytest.importorskip("sparkscore.engines.spark")
from sparkscore.engines import spark_scan  # noqa: E402 (needs pyspark, checked above)


def _glm(names) -> Model:
    """Wide enough not to inline; its sums agree with the in-process ones to the last bits (BLAS order)."""
    return Model(LinearModel(np.linspace(-1, 1, len(names)), [0.5], "identity"), Signature.from_names(names))


#: too many inputs to inline (inline_max_features = 32), so ``auto`` reaches the scan rule
NAMES = [f"x{i}" for i in range(40)]


def _frame(rows: int = 12) -> pd.DataFrame:
    values = np.random.default_rng(0).normal(size=(rows, len(NAMES)))
    values[1, 0], values[2, 1], values[3, 2] = np.nan, np.inf, -0.0
    return pd.DataFrame(values, columns=NAMES).assign(id=np.arange(rows), tag=[f"t{i}" for i in range(rows)])


@pytest.fixture
def wide(registry):
    registry.register("wide", _glm(NAMES))
    return registry


def test_one_partition_per_row_group_of_every_file_in_order(spark, tmp_path):
    folder = write_parquet(_frame(12), tmp_path / "d", row_group_size=2, files=2)
    plan, why = spark_scan.scan_plan(spark.read.parquet(folder))
    assert why == ""
    files = sorted({path for path, _ in plan.partitions})
    assert [p.rsplit("/", 1)[1] for p in files] == ["part-0.parquet", "part-1.parquet"]
    assert [(path.rsplit("/", 1)[1], groups) for path, groups in plan.partitions] == [
        (f"part-{f}.parquet", (g,)) for f in range(2) for g in range(3)]


def test_a_projection_of_columns_is_scanned_and_keeps_its_order(spark, wide, tmp_path):
    df = spark.read.parquet(write_parquet(_frame(), tmp_path / "d")).select("tag", *reversed(NAMES), "id")
    assert ss_spark.predict_path(df, wide.load("wide")).path == "scan"
    out = ss_spark.predict(df, "wide", registry=wide)
    assert out.columns == [*df.columns, "prediction"]
    got = out.orderBy("id").toPandas()
    np.testing.assert_allclose(got.prediction, wide.load("wide").predict(_frame()[NAMES]), rtol=1e-12)


@pytest.mark.parametrize("model_columns, other_columns, takes_scan", [
    (50, 12, True), (24, 0, True), (50, 50, True), (8, 0, False), (16, 0, False), (16, 16, False), (24, 25, False)])
def test_auto_tries_the_scan_for_the_measured_shapes(model_columns, other_columns, takes_scan):
    """The rule's boundary (SCAN_MIN_MODEL_COLUMNS, SCAN_MAX_EXTRA_RATIO) where bench/results/spark_path_scan.md
    measured it (GLMs this narrow would inline first, so the rule is checked alone); a refusal says why."""
    why = ss_spark._scan_too_narrow(model_columns, other_columns)
    assert (why is None) == takes_scan, why
    if why is not None:
        assert str(model_columns) in why


def test_an_output_named_like_an_input_replaces_it_in_place(spark, wide, tmp_path):
    df = spark.read.parquet(write_parquet(_frame().assign(prediction=7.0), tmp_path / "d"))
    out = ss_spark.predict(df, "wide", registry=wide, path="scan")
    assert out.columns == df.columns
    np.testing.assert_allclose(out.orderBy("id").toPandas().prediction, wide.load("wide").predict(_frame()[NAMES]),
                               rtol=1e-12)


def test_required_columns_come_back_nullable_as_spark_declares_them(spark, wide, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    table = pa.Table.from_pandas(_frame().fillna(0.0), preserve_index=False)
    table = table.cast(pa.schema([pa.field(f.name, f.type, nullable=False) for f in table.schema]))
    pq.write_table(table, folder / "a.parquet")
    df = spark.read.parquet(str(folder))
    out = ss_spark.predict(df, "wide", registry=wide, path="scan").orderBy("id").toPandas()
    np.testing.assert_allclose(out.prediction, wide.load("wide").predict(_frame().fillna(0.0)[NAMES]), rtol=1e-12)


def _partitioned(spark, tmp_path):
    for k in (1, 2):
        write_parquet(_frame(), tmp_path / "p" / f"k={k}")
    return spark.read.parquet(str(tmp_path / "p"))


def _evolved(spark, tmp_path):
    folder = tmp_path / "e"
    folder.mkdir()
    frame = _frame()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "a.parquet")
    pq.write_table(pa.Table.from_pandas(frame.astype({"id": "int32"}), preserve_index=False), folder / "b.parquet")
    return spark.read.parquet(str(folder))


#: frames the scan could read differently from Spark: (builder, what the reason says)
REFUSED = {
    "filter": (lambda spark, p: spark.read.parquet(p).where("x0 > 0"), "Filter plan"),
    "computed": (lambda spark, p: spark.read.parquet(p).selectExpr("x0 + 1 AS x0", *NAMES[1:]), "computes columns"),
    "options": (lambda spark, p: spark.read.option("mergeSchema", "true").parquet(p), "options (mergeschema)"),
    "timestamp": (lambda spark, p: spark.read.parquet(p).selectExpr("*", "current_timestamp() AS ts"),
                  "computes columns"),
    "not parquet": (lambda spark, p: spark.createDataFrame(_frame()), "not a plain parquet read"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_where_it_could_read_differently(case, spark, wide, tmp_path):
    build, reason = REFUSED[case]
    df = build(spark, write_parquet(_frame(), tmp_path / "d"))
    _assert_refused(df, wide, reason)


@pytest.mark.parametrize("build, reason", [(_partitioned, "partition columns"),
                                           (_evolved, "column type int32 for 'id' where the DataFrame reads bigint")],
                         ids=["partitioned", "schema-evolution"])
def test_refused_for_tables_spark_reads_by_its_own_rules(build, reason, spark, wide, tmp_path):
    _assert_refused(build(spark, tmp_path), wide, reason)


def test_refused_for_types_arrow_and_spark_map_differently(spark, wide, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    table = pa.Table.from_pandas(_frame(), preserve_index=False)
    table = table.append_column("when", pa.array(pd.date_range("2026-01-01", periods=12, freq="h").astype("datetime64[us]")))
    pq.write_table(table, folder / "a.parquet")
    _assert_refused(spark.read.parquet(str(folder)), wide, "column 'when' is timestamp")


def _assert_refused(df, reg, reason: str) -> None:
    plan, why = spark_scan.scan_plan(df)
    assert plan is None and reason in why, why
    choice = ss_spark.predict_path(df, reg.load("wide"))
    assert choice.path != "scan" and reason in choice.reason, choice.reason
    with pytest.raises(QueryError, match="cannot score at the scan"):
        ss_spark.predict_path(df, reg.load("wide"), path="scan")


def test_reader_scores_batches_of_batch_rows_in_process(wide, tmp_path):
    """The reader itself, outside Spark: batches of ``batch_rows``, passthrough columns untouched."""
    frame = _frame(23)
    folder = write_parquet(frame, tmp_path / "d", row_group_size=10)
    mv = wide.get("wide")
    spec = {"source": {"registry_uri": str(wide.root), "name": "wide", "version": mv.version, "sha256": mv.sha256,
                       "backend": "auto"},
            "partitions": [[f"{folder}/part-0.parquet", [1, 2]]], "inputs": NAMES,
            "outputs": [["p", "predict", "DOUBLE"]], "batch_rows": 4}
    columns = [*NAMES, "id", "tag"]
    schema = ss_spark.StructType([*(ss_spark.StructField(c, ss_spark.DoubleType()) for c in NAMES),
                                  ss_spark.StructField("id", ss_spark.LongType()),
                                  ss_spark.StructField("tag", ss_spark.StringType()),
                                  ss_spark.StructField("p", ss_spark.DoubleType())])
    reader = spark_scan.ScanReader(spec, schema)
    (partition,) = reader.partitions()
    batches = list(reader.read(partition))
    assert sum(b.num_rows for b in batches) == 13 and max(b.num_rows for b in batches) == 4  # rows 10-22
    assert all(b.schema.names == [*columns, "p"] for b in batches)
    got = pa.Table.from_batches(batches).to_pandas()
    np.testing.assert_array_equal(got.id, np.arange(10, 23))
    np.testing.assert_allclose(got.p, wide.load("wide").predict(frame[NAMES].iloc[10:]), rtol=1e-12)
