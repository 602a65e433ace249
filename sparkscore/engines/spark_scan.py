"""Score at the scan: ``predict`` over a plain parquet read becomes a Python data source that reads
the files with pyarrow and appends the scores, so the features never pass through the JVM.

Why this path exists (measured, bench/results/spark_path_parquet.md): in the Arrow UDF and
``mapInArrow`` paths the JVM turns every input value into a row and then into Arrow
(``ColumnarToRow`` + ``ArrowWriter``) before Python sees it: ~150 ns of JVM CPU per value, 7,400 ns
per row at 50 features, more than the scan and the kernel together.  pyspark 4.2's
``spark.sql.execution.arrow.pythonUDF.columnarInput.enabled`` skips that only for Arrow-backed
batches (DataSource V2 connectors), which Spark's own parquet reader does not produce.  Here the
files are decoded by Arrow's C++ reader inside the Python worker, scored in large batches, and the
result reaches the JVM as Arrow-backed columnar batches: columns the query never reads cost a
buffer copy, not a conversion per value.

The path is taken only when it reads exactly what Spark would (:func:`scan_plan`, else the reason):
the DataFrame is a parquet relation (optionally a projection of its columns) with no partition
columns, no reader options but the path, and no filters; every file is a ``file:`` URI; every
column is of a type Arrow and Spark map one to one (numbers, booleans, strings, binary); and every
file's footer holds each column with exactly the Arrow type the DataFrame's schema maps to (no
schema evolution, which Spark would resolve by its own rules).  Rows come out in file and row-group
order, one Spark partition per row group.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.types import (BinaryType, BooleanType, ByteType, DataType, DoubleType, FloatType, IntegerType,
                               LongType, ShortType, StringType, StructType)

FORMAT = "sparkscore_scan"
#: rows per Arrow batch the reader decodes and scores (``spark.sparkscore.batchRows`` overrides): large
#: batches amortise pyarrow's and the kernel's per-call cost, and the kernels block rows for the cache
#: themselves (measured, 1M x 50 columns in row groups of 100k: 65,536 3.59 s, 131,072 3.04 s, 262,144 3.11 s)
DEFAULT_BATCH_ROWS = 131_072

_ARROW_OF = {DoubleType: pa.float64(), FloatType: pa.float32(), LongType: pa.int64(), IntegerType: pa.int32(),
             ShortType: pa.int16(), ByteType: pa.int8(), BooleanType: pa.bool_(), StringType: pa.string(),
             BinaryType: pa.binary()}
#: reader options that change nothing pyarrow could disagree with (Spark adds ``path`` itself)
_NEUTRAL_OPTIONS = {"path", "paths"}


@dataclass(frozen=True)
class ScanPlan:
    """What the scoring scan reads: the row groups of each file, and the columns (Spark's names and order)."""

    partitions: tuple[tuple[str, tuple[int, ...]], ...]   # (local file path, row groups) per Spark partition
    schema: StructType                                    # the DataFrame's columns, read as they are


def _arrow_type(dtype: DataType) -> pa.DataType | None:
    return _ARROW_OF.get(type(dtype))


def _relation(df: DataFrame):
    """The parquet ``LogicalRelation`` under ``df`` (a projection of its attributes at most), or the reason."""
    jdf = getattr(df, "_jdf", None)
    if jdf is None:
        return None, "not a classic Spark DataFrame (Spark Connect)"
    plan = jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() == "Project":
        items = plan.projectList()
        if not all(items.apply(i).getClass().getSimpleName() == "AttributeReference" for i in range(items.size())):
            return None, "the DataFrame computes columns above its scan"
        plan = plan.child()
    if plan.getClass().getSimpleName() != "LogicalRelation" or plan.isStreaming():
        return None, f"the DataFrame is a {plan.nodeName()} plan, not a plain parquet read"
    relation = plan.relation()
    if relation.getClass().getSimpleName() != "HadoopFsRelation" or \
            relation.fileFormat().getClass().getSimpleName() != "ParquetFileFormat":
        return None, "the DataFrame does not read parquet files"
    if relation.partitionSchema().length() > 0:
        return None, "the parquet table has partition columns (read from directory names)"
    options = {k.lower() for k in _scala_map_keys(relation.options())}
    if options - _NEUTRAL_OPTIONS:
        return None, f"the parquet read has options ({', '.join(sorted(options - _NEUTRAL_OPTIONS))})"
    return relation, None


def _scala_map_keys(options) -> list[str]:
    """A Scala ``Map[String, String]``'s keys (py4j exposes no dict view of it)."""
    keys, it = [], options.keysIterator()
    while it.hasNext():
        keys.append(str(it.next()))
    return keys


def scan_plan(df: DataFrame) -> tuple[ScanPlan | None, str]:
    """The scan that reads exactly ``df``'s rows and columns, or None and why it cannot."""
    import pyarrow.parquet as pq

    relation, why = _relation(df)
    if relation is None:
        return None, why
    odd = [f for f in df.schema.fields if _arrow_type(f.dataType) is None]
    if odd:
        return None, f"column {odd[0].name!r} is {odd[0].dataType.simpleString()}, which the scan does not read"
    uris = df.inputFiles()
    if not uris:
        return None, "the parquet read lists no files"
    remote = [u for u in uris if not u.startswith("file:")]
    if remote:
        return None, f"{remote[0]} is not a local file (file: URIs only)"
    from urllib.parse import unquote, urlparse

    partitions = []
    for uri in sorted(uris):
        path = unquote(urlparse(uri).path)
        meta = pq.ParquetFile(path).metadata
        arrow = meta.schema.to_arrow_schema()
        for field in df.schema.fields:
            i = arrow.get_field_index(field.name)
            if i < 0 or arrow.field(i).type != _arrow_type(field.dataType):
                found = "no such column" if i < 0 else f"column type {arrow.field(i).type}"
                return None, (f"{path} has {found} for {field.name!r} where the DataFrame reads "
                              f"{field.dataType.simpleString()}")
        partitions.extend((path, (g,)) for g in range(meta.num_row_groups))
    if not partitions:
        return None, "the parquet files hold no row groups"
    return ScanPlan(tuple(partitions), df.schema), ""


def scored_scan(df: DataFrame, plan: ScanPlan, source, inputs: Sequence[str],
                outputs: Sequence[tuple[str, str, str]], output_fields: Sequence) -> DataFrame:
    """``df``'s rows and columns plus ``outputs`` ((column, kind, SQL type)), scored while the files are read."""
    spark = df.sparkSession
    spark.dataSource.register(ScoringScan)
    from sparkscore.engines.spark import BATCH_ROWS_CONF

    if source.files:  # a derived model's files are bytes: the JSON spec carries registry versions only
        raise ValueError(f"{source.name}: the scoring scan reads registry versions, not a derived model's files")
    carried = {f.name: getattr(source, f.name) for f in fields(source) if f.name != "files"}
    spec = {"source": carried,
            "partitions": [[path, list(groups)] for path, groups in plan.partitions],
            "inputs": list(inputs), "outputs": [list(o) for o in outputs],
            "batch_rows": int(spark.conf.get(BATCH_ROWS_CONF, None) or DEFAULT_BATCH_ROWS)}
    schema = StructType([*plan.schema.fields, *output_fields])
    return spark.read.format(FORMAT).schema(schema).option("spec", json.dumps(spec)).load()


class RowGroups(InputPartition):
    """One Spark partition: row groups of one parquet file."""

    def __init__(self, path: str, groups: Sequence[int]) -> None:
        super().__init__((path, tuple(groups)))
        self.path = path
        self.groups = list(groups)


class ScanReader(DataSourceReader):
    def __init__(self, spec: dict, schema: StructType) -> None:
        self.spec = spec
        self.schema = schema

    def partitions(self) -> list[RowGroups]:
        return [RowGroups(path, groups) for path, groups in self.spec["partitions"]]

    def read(self, partition: RowGroups) -> Iterator[pa.RecordBatch]:
        """The partition's row groups in batches of ``batch_rows``, scored as ``mapInArrow`` scores a batch
        (:class:`~sparkscore.engines.spark.PartitionScorer`: the batch's columns, then the outputs)."""
        import pyarrow.parquet as pq

        from sparkscore.engines.spark import ModelSource, PartitionScorer

        outputs = tuple(tuple(o) for o in self.spec["outputs"])
        columns = [f.name for f in self.schema.fields][:len(self.schema.fields) - len(outputs)]
        batches = pq.ParquetFile(partition.path).iter_batches(
            batch_size=self.spec["batch_rows"], row_groups=partition.groups, columns=columns, use_threads=False)
        scorer = PartitionScorer(ModelSource(**self.spec["source"]), tuple(self.spec["inputs"]), outputs)
        return scorer(batches)


class ScoringScan(DataSource):
    """``spark.read.format("sparkscore_scan")``: built by :func:`scored_scan`, not by hand."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        raise ValueError(f"{FORMAT}: the schema comes from sparkscore.spark.predict; do not read this format directly")

    def reader(self, schema: StructType) -> ScanReader:
        return ScanReader(json.loads(self.options["spec"]), schema)
