"""The monitor's engine adapters: run its SQL through ``ss.duckdb.sql`` / ``ss.spark.sql`` (so PREDICT
is planned, inlined or run as a UDF exactly as in any query) and return only aggregates.

* DuckDB: the aggregate query's few rows; the sketch stream as Arrow record batches of the scored
  projection (``to_arrow_reader``), each folded into the sketches and dropped.
* Spark: the aggregate query via ``collect``; the sketches per partition with ``mapInArrow``
  (one serialized state per partition travels to the driver, where they merge).

The model runs once per row.  The sketch stream has to come before the aggregate (without a
reference, the aggregate's histogram edges are the stream's quantiles), so the scored projection
is read twice; it is therefore *materialized* once, PREDICT and all: on DuckDB a parquet file in a
fresh temporary folder written by one streaming ``COPY`` (memory bounded by the row groups in
flight, whatever the batch size, where a temporary table would sit in memory up to
``memory_limit``; removed by ``release``), on Spark a DataFrame persisted ``DISK_ONLY`` (filled
by the first read, unpersisted by ``release``; ``MEMORY_AND_DISK`` ran the driver of a local[2]
session with 4 GiB of heap out of memory at 10M rows x 100 features: the cached blocks sit on the
heap the Python UDF's input queue allocates from).  The alternative, computing the aggregate from the stream in Python, would move the
histograms, moments and AUC ranks out of the engine; the projection holds only the model inputs,
prediction, label and slice keys, narrower than the data.

Data a caller hands over (pandas, Arrow, a DuckDB relation, a parquet/csv path, a Spark DataFrame)
becomes a temporary view; its SELECT is the ``source`` the monitor wraps.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sqlglot import exp

from sparkscore.errors import QueryError
from sparkscore.monitor.compute import Runner
from sparkscore.monitor.profile import MonitorError
from sparkscore.monitor.sketch import SketchState, partition_states, state_of_batches
from sparkscore.optimizer.dialect import generate, parse
from sparkscore.registry.store import ModelVersion

STREAM_BATCH_ROWS = 65_536


class OneModel:
    """A registry of one in-memory model (``ref`` -> ``model``): profiles of a version being registered
    run PREDICT through the engine before the version exists.  DuckDB only (Spark workers load from
    the registry)."""

    def __init__(self, name: str, model) -> None:
        self.name, self.model = name, model
        self.root = None

    def get(self, ref: str) -> ModelVersion:
        return ModelVersion(self.name, 0, self.model.sha256, "", "")

    def load(self, ref: str):
        return self.model


@dataclass
class DuckDBRunner:
    """:class:`~sparkscore.monitor.compute.Runner` over a DuckDB connection."""

    con: Any
    registry: Any
    namespace: Mapping[str, Any]
    dialect: str = "duckdb"
    queries: int = 0  # executed monitoring queries (tests assert the aggregate is one)
    views: list = field(default_factory=list)  # temporary views this runner made (dropped by release)

    def scored(self, query: exp.Expression) -> exp.Table:
        """Plan ``query`` (PREDICT and all) and materialize it once: a parquet file both reads use."""
        from sparkscore.engines import duckdb as engine

        view, table = _view_name(), _view_name()
        engine.sql(self.con, generate(query, "duckdb"), registry=self.registry, namespace=self.namespace).create_view(view)
        self.views.append(("view", view))
        folder = tempfile.mkdtemp(prefix="sparkscore-monitor-")
        self.views.append(("folder", folder))
        path = exp.Literal.string(os.path.join(folder, "scored.parquet"))
        everything = exp.select(exp.Star()).from_(exp.to_table(view, quoted=True))
        copy = exp.Copy(this=exp.Subquery(this=everything), kind=False, files=[path],
                        params=[exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("PARQUET"))])
        self.con.execute(generate(copy, "duckdb"))
        stored = exp.select(exp.Star()).from_(exp.Anonymous(this="read_parquet", expressions=[path.copy()]))
        reread = exp.Create(this=exp.to_table(table, quoted=True), kind="VIEW", expression=stored,
                            properties=exp.Properties(expressions=[exp.TemporaryProperty()]))
        self.con.execute(generate(reread, "duckdb"))
        self.views.append(("view", table))
        return exp.to_table(table, quoted=True)

    def release(self) -> None:
        """Drop what this runner made (the scored views and file first, then registered data)."""
        for kind, view in reversed(self.views):
            if kind == "view":
                self.con.execute(f"DROP VIEW IF EXISTS {exp.to_identifier(view, quoted=True).sql('duckdb')}")
            elif kind == "folder":
                shutil.rmtree(view, ignore_errors=True)
            else:
                self.con.unregister(view)
        self.views.clear()

    def _relation(self, query: exp.Expression):
        self.queries += 1
        return self.con.sql(generate(query, "duckdb"))

    def columns(self, source: exp.Expression) -> list[tuple[str, str]]:
        from sparkscore.engines.duckdb import _CallerScope  # the caller's pandas / Arrow variables resolve by name

        try:
            relation = _CallerScope(self.con, self.namespace).sql(generate(source, "duckdb"))
        except Exception as exc:  # duckdb.Error: the user's query itself
            raise QueryError(f"DuckDB cannot run the monitored query: {' '.join(str(exc).split())[:300]}; "
                             "fix the SQL") from None
        return [(name, str(t)) for name, t in zip(relation.columns, relation.types)]

    def aggregate(self, query: exp.Expression) -> list[tuple]:
        return self._relation(query).fetchall()

    def sketch(self, query: exp.Expression, kinds: Sequence[str], k: int, exact_rows: int,
               groups: Sequence[Sequence[int]] = ()) -> SketchState:
        reader = self._relation(query).to_arrow_reader(STREAM_BATCH_ROWS)
        return state_of_batches(kinds, reader, k, exact_rows, groups)


@dataclass
class SparkRunner:
    """:class:`~sparkscore.monitor.compute.Runner` over a SparkSession."""

    spark: Any
    registry: Any
    dialect: str = "spark"
    queries: int = 0
    views: list = field(default_factory=list)

    persisted: list = field(default_factory=list)  # scored DataFrames persisted by scored() (unpersisted by release)

    def scored(self, query: exp.Expression) -> exp.Table:
        """Plan ``query`` and persist it (DISK_ONLY): the sketch pass fills it, the aggregate reads it."""
        from pyspark import StorageLevel

        from sparkscore.engines import spark as engine

        view = _view_name()
        frame = engine.sql(self.spark, generate(query, "spark"), registry=self.registry)
        frame.persist(StorageLevel.DISK_ONLY)
        self.persisted.append(frame)
        frame.createOrReplaceTempView(view)
        self.views.append(view)
        return exp.to_table(view, quoted=True)

    def release(self) -> None:
        for view in reversed(self.views):
            self.spark.catalog.dropTempView(view)
        self.views.clear()
        for frame in self.persisted:
            frame.unpersist()
        self.persisted.clear()

    def _frame(self, query: exp.Expression):
        self.queries += 1
        return self.spark.sql(generate(query, "spark"))

    def columns(self, source: exp.Expression) -> list[tuple[str, str]]:
        frame = self.spark.sql(generate(source, "spark"))
        return [(f.name, f.dataType.simpleString()) for f in frame.schema]

    def aggregate(self, query: exp.Expression) -> list[tuple]:
        """The aggregate's rows, computed as column chunks that Spark can fuse (:func:`aggregate_chunks`)."""
        keys, chunks = aggregate_chunks(query)
        if len(chunks) <= 1:
            return [tuple(row) for row in self._frame(query).collect()]
        width = len(query.expressions)
        merged: dict = {}
        for chunk in chunks:
            part = exp.Select(expressions=[query.expressions[i].copy() for i in (*keys, *chunk)])
            for arg, value in query.args.items():  # FROM, GROUP BY (grouping sets), ...: all but the SELECT list
                if arg != "expressions" and value is not None:
                    part.set(arg, [v.copy() for v in value] if isinstance(value, list) else
                             value.copy() if isinstance(value, exp.Expression) else value)
            rows = self._frame(part).collect()
            if merged and len(rows) != len(merged):
                raise MonitorError(f"the aggregate's chunks returned {len(rows)} and {len(merged)} groups; report this")
            for row in rows:
                key = tuple(repr(v) for v in row[:len(keys)])  # repr: NULL / NaN keys match across chunks too
                out = merged.get(key)
                if out is None:
                    if len(merged) and chunk is not chunks[0]:
                        raise MonitorError("the aggregate's chunks returned different groups; report this query")
                    out = merged[key] = [None] * width
                    for i, v in zip(keys, row):
                        out[i] = v
                for i, v in zip(chunk, row[len(keys):]):
                    out[i] = v
        return [tuple(r) for r in merged.values()]

    def sketch(self, query: exp.Expression, kinds: Sequence[str], k: int, exact_rows: int,
               groups: Sequence[Sequence[int]] = ()) -> SketchState:
        groups = tuple(tuple(int(i) for i in g) for g in groups)
        from sparkscore.monitor import sketch as sketches

        body = functools.partial(partition_states, tuple(kinds), int(k), int(exact_rows), groups=groups,
                                 max_slices=sketches.MAX_SLICE_SKETCHES)
        rows = self._frame(query).mapInArrow(body, "state binary").collect()
        merged = SketchState(tuple(kinds), k, exact_rows, groups=groups)
        for row in rows:
            merged.merge(SketchState.from_bytes(bytes(row["state"])))
        return merged


#: Spark fuses an operator into whole-stage generated code only while its schema has at most
#: ``spark.sql.codegen.maxFields`` (100) fields.  The monitor's one aggregate has ~18 aggregates (~22 buffer
#: fields) per profiled column, so at 100 features Spark ran it unfused, row by row through
#: TungstenAggregationIterator's generated MutableProjection: ~125 ns of CPU per aggregate per row
#: (jstack + thread CPU time at 1M x 100, bench/results/monitor.md).  Spark therefore runs it as chunks
#: of at most this many buffer fields (each fused; parquet reads only a chunk's columns, and Catalyst
#: prunes PREDICT from chunks that do not use the prediction), joined on the grouping keys.
SPARK_AGG_FIELDS = 80


def _buffer_fields(expression: exp.Expression) -> int:
    """Spark's aggregation-buffer fields for one aggregate expression (AVG: sum + count; VAR_POP: n, avg, m2)."""
    return sum(3 if isinstance(f, exp.VariancePop) else 2 if isinstance(f, exp.Avg) else 1
               for f in expression.find_all(exp.AggFunc))


def aggregate_chunks(query: exp.Select, budget: int | None = None) -> tuple[list[int], list[list[int]]]:
    """(positions of the key expressions, chunks of the other positions) of an aggregate query's SELECT list.

    Keys are the expressions without an aggregate (the slice keys and their ``GROUPING()`` flags): every chunk
    repeats them, so chunk rows join on them.  A chunk holds consecutive aggregates within ``budget`` fields.
    """
    budget = SPARK_AGG_FIELDS if budget is None else budget
    keys, chunks, fields = [], [], budget
    for i, expression in enumerate(query.expressions):
        n = _buffer_fields(expression)
        if n == 0:
            keys.append(i)
            continue
        if fields + n > budget - len(keys) or not chunks:
            chunks.append([])
            fields = 0
        chunks[-1].append(i)
        fields += n
    return keys, chunks


def _engine_kind(engine: Any) -> str:
    module = type(engine).__module__.split(".", 1)[0]
    if module in ("duckdb", "_duckdb"):
        return "duckdb"
    if module == "pyspark":
        return "spark"
    raise MonitorError(f"engine= must be a DuckDB connection or a SparkSession, got {type(engine).__name__}")


def prepare(data: Any, engine: Any = None, registry: Any = None, namespace: Mapping[str, Any] | None = None,
            model=None, name: str | None = None) -> tuple[Runner, exp.Expression]:
    """(runner, SELECT AST of the data) for any data form the monitor takes.

    ``data``: SQL text (run on ``engine``), a pandas DataFrame or Arrow table, a DuckDB relation, a
    parquet / csv path, or a Spark DataFrame.  ``model`` (with ``name``): score that in-memory model
    instead of resolving refs through ``registry`` (DuckDB only).
    """
    kind = type(data).__module__.split(".", 1)[0]
    if kind == "pyspark" and hasattr(data, "createOrReplaceTempView"):
        if model is not None:
            raise MonitorError(f"model {name}: a Spark DataFrame is profiled against a registered version: register "
                               "the model first, then `ss.monitor.profile('NAME/VERSION', df)`")
        view = _view_name()
        data.createOrReplaceTempView(view)
        return SparkRunner(data.sparkSession, registry, views=[view]), _select_all(view)
    if isinstance(data, str) and not _is_path(data):
        if engine is None:
            raise MonitorError("a SQL query needs engine= (a DuckDB connection or a SparkSession); or pass a "
                               "DataFrame, an Arrow table or a parquet path")
        source = parse(data, _engine_kind(engine))
        if not isinstance(source, (exp.Select, exp.Union, exp.Subquery, exp.Query)):
            raise MonitorError("the monitored query must be a SELECT; e.g. 'SELECT * FROM batch'")
        if model is not None:
            registry = OneModel(name, model)
        if _engine_kind(engine) == "spark":
            return SparkRunner(engine, registry), source
        return DuckDBRunner(engine, registry, dict(namespace or {})), source
    if engine is not None and _engine_kind(engine) == "spark":
        raise MonitorError("with a SparkSession pass a Spark DataFrame or a SQL query as data")
    from sparkscore.engines.batch import connect, read_files

    con = engine if engine is not None else connect()
    view = _view_name()
    made = ("view", view)
    if isinstance(data, (str, os.PathLike)):
        read_files(con, os.fspath(data), os.fspath(data)).create_view(view)
    elif kind in ("duckdb", "_duckdb"):
        if engine is None:
            con.register(view, data.to_arrow_table())  # another connection's relation: materialised once
            made = ("registered", view)
        else:
            data.create_view(view)
    elif kind in ("pandas", "pyarrow"):
        con.register(view, data)
        made = ("registered", view)
    else:
        raise MonitorError(f"cannot monitor {type(data).__name__} data; pass a pandas DataFrame, an Arrow table, a "
                           "DuckDB relation, a parquet/csv path, a Spark DataFrame or a SQL query with engine=")
    reg = OneModel(name, model) if model is not None else registry
    return DuckDBRunner(con, reg, dict(namespace or {}), views=[made]), _select_all(view)


def _is_path(text: str) -> bool:
    return "\n" not in text and len(text) < 4096 and Path(text).suffix.lower() in (".parquet", ".pq", ".csv", ".tsv",
                                                                                   ".json") and not text.lstrip().lower().startswith(("select", "with", "from"))


def _view_name() -> str:
    return f"__ss_monitor_{uuid.uuid4().hex[:12]}"


def _select_all(view: str) -> exp.Select:
    return exp.select(exp.Star()).from_(exp.to_table(view, quoted=True))


# ---------------------------------------------------------------------- DRIFT(...) table function
def _drift_calls(tree: exp.Expression) -> list[exp.Table]:
    from sparkscore.optimizer.nodes import ScoreDrift

    return [t for t in tree.find_all(exp.Table) if isinstance(t.this, ScoreDrift)]


def expand_drift(query: str, dialect: str, run_drift: Any) -> str:
    """``query`` with every ``DRIFT(ref, 'current SELECT' [, 'reference SELECT'])`` in FROM replaced by its
    drift rows, written into the SQL as an inline table (:func:`rows_table`).  ``run_drift(ref, current_sql,
    reference_sql)`` computes one call.  Queries without DRIFT come back as given.

    Why inline rows and not a registered view: the rows are a few kilobytes, already in Python, and the
    relation ``sql`` returns is lazy; a view would have to outlive it, and nothing would ever drop it,
    so a notebook session gathered one view per DRIFT query in the connection's catalog.
    """
    if "drift" not in query.lower():
        return query
    tree = parse(query, dialect)
    calls = _drift_calls(tree)
    if not calls:
        return query
    for table in calls:
        node = table.this
        args = [node.this, *node.expressions]
        if not 2 <= len(args) <= 3 or not all(isinstance(a, exp.Literal) and a.is_string for a in args):
            raise QueryError("DRIFT takes 2 or 3 string literals: DRIFT('model_ref', 'SELECT ... current batch' "
                             "[, 'SELECT ... reference batch']); without a reference the training profile is used")
        ref, current, reference = args[0].name, args[1].name, args[2].name if len(args) == 3 else None
        alias = table.args.get("alias")
        table.replace(rows_table(run_drift(ref, current, reference).to_arrow(),
                                 alias.name if alias is not None else "drift"))
    return generate(tree, dialect)


#: Arrow type of a drift column -> the SQL type its inline values are cast to
_SQL_TYPES = {"string": exp.DataType.Type.VARCHAR, "double": exp.DataType.Type.DOUBLE,
              "int64": exp.DataType.Type.BIGINT, "bool": exp.DataType.Type.BOOLEAN}


def rows_table(table: Any, alias: str) -> exp.Subquery:
    """``(SELECT CAST(c0 AS type) AS name, ... FROM (VALUES (...), ...) AS v(c0, ...)) AS alias``: the rows of a
    small Arrow table as SQL, each column cast to its type (doubles as exact binary64 literals, NaN and
    infinities included), valid in DuckDB and Spark.  No rows: one row of NULLs filtered out."""
    from sparkscore.optimizer.nodes import number

    kinds = [str(f.type) for f in table.schema]
    for f, kind in zip(table.schema, kinds):
        if kind not in _SQL_TYPES:
            raise MonitorError(f"DRIFT: column {f.name!r} of type {kind} has no SQL form here; report this")

    def literal(value: Any, kind: str) -> exp.Expression:
        if value is None:
            return exp.Null()
        if kind == "string":
            return exp.Literal.string(str(value))
        if kind == "bool":
            return exp.Boolean(this=bool(value))
        if kind == "int64":
            return exp.Literal.number(str(int(value)))
        return number(float(value))

    records = table.to_pylist()
    names = [f"c{j}" for j in range(len(kinds))]
    rows = [exp.Tuple(expressions=[literal(r[f.name], k) for f, k in zip(table.schema, kinds)]) for r in records]
    if not rows:
        rows = [exp.Tuple(expressions=[exp.Null() for _ in kinds])]
    values = exp.Values(expressions=rows, alias=exp.TableAlias(this=exp.to_identifier("v"),
                                                               columns=[exp.to_identifier(n) for n in names]))
    select = exp.select(*(exp.alias_(exp.cast(exp.column(n), _SQL_TYPES[k]), f.name, quoted=True)
                          for n, k, f in zip(names, kinds, table.schema))).from_(values)
    if not records:
        select = select.where(exp.false())
    return select.subquery(exp.to_identifier(alias, quoted=True))


def expand_drift_duckdb(con: Any, query: str, registry: Any, namespace: Mapping[str, Any]) -> str:
    from sparkscore.monitor.api import drift

    return expand_drift(query, "duckdb", lambda ref, cur, ref_q: drift(
        ref, cur, reference=ref_q, engine=con, registry=registry, namespace=namespace))


def expand_drift_spark(spark: Any, query: str, registry: Any) -> str:
    from sparkscore.monitor.api import drift

    return expand_drift(query, "spark", lambda ref, cur, ref_q: drift(
        ref, cur, reference=ref_q, engine=spark, registry=registry))


_SPARK_DRIFT_SCHEMA = ("feature string, metric string, value double, threshold double, is_anomaly boolean, "
                       "p_value double, n_ref bigint, n_cur bigint, slice_key string, slice_value string, "
                       "role string, method string, error_bound double")


# ---------------------------------------------------------------------- prediction logs on Spark
def read_delta_spark(spark: Any, table: str, what: str = "prediction log"):
    """A Delta table as a Spark DataFrame, the way the batch jobs read Delta (``engines/delta.py``):
    through delta-spark when its JARs are loaded, else the current snapshot's parquet files listed by
    delta-rs (schemas merged: a serving log evolves its schema); a table with no files is empty."""
    from sparkscore.engines import delta
    from sparkscore.monitor.predlog import PredictionLogError

    if delta.has_delta_spark(spark):
        try:
            return spark.read.format("delta").load(table)
        except Exception as exc:  # AnalysisException: not a Delta table
            raise PredictionLogError(f"{what} {table} is not a Delta table ({str(exc).splitlines()[0][:200]}); "
                                     "pass the path given to --log") from None
    if not delta.is_delta_path(table):
        raise PredictionLogError(f"{what} {table} is not a Delta table; pass the path given to --log")
    from deltalake import DeltaTable
    from pyspark.sql.pandas.types import from_arrow_schema

    dt = DeltaTable(table)
    files = dt.file_uris()
    if not files:
        return spark.createDataFrame([], from_arrow_schema(dt.schema().to_arrow()))
    return spark.read.option("mergeSchema", "true").parquet(*files)


def _micros(value: Any) -> int:
    """An aware datetime as microseconds since the Unix epoch (exact integer arithmetic)."""
    from datetime import datetime, timedelta, timezone

    return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def log_windows_spark(spark: Any, table: str, window: str = "1d", start: Any = None, end: Any = None,
                      model: Mapping[str, Any] | None = None, feedback: str | None = None):
    """The log rows (``start <= ts < end``, of ``model``'s name and version when it has one) on Spark, plus
    ``window_start``: the window's start as microseconds since the epoch (BIGINT), buckets aligned to the
    epoch like DuckDB's ``time_bucket(..., TIMESTAMP '1970-01-01')`` in :func:`predlog.windows`; with
    ``feedback`` left-joined to its latest label per ``request_id`` (:func:`predlog.feedback`'s rule).

    Epoch microseconds, not a TIMESTAMP: ``collect`` turns a TIMESTAMP into a naive datetime in the
    *Python process's* zone, so only the integer survives the round trip whatever the session's zone.
    Every term is a Column expression (no SQL text is pasted together).
    """
    from datetime import timedelta

    from pyspark.sql import functions as F

    from sparkscore.monitor import predlog

    amount, unit = predlog.window_interval(window).split()
    width = timedelta(**{unit: int(amount)}) // timedelta(microseconds=1)
    frame = read_delta_spark(spark, table)
    micros = F.unix_micros(F.col("ts"))
    lo, hi = predlog._ts_value(start, "start"), predlog._ts_value(end, "end")
    if lo is not None:
        frame = frame.filter(micros >= F.lit(_micros(lo)))
    if hi is not None:
        frame = frame.filter(micros < F.lit(_micros(hi)))
    if model is not None and model.get("version") is not None:
        frame = frame.filter((F.col("model") == F.lit(str(model["name"])))
                             & (F.col("version") == F.lit(int(model["version"])).cast("bigint")))
    frame = frame.withColumn("window_start", micros - F.pmod(micros, F.lit(width).cast("bigint")))
    if feedback is not None:
        fb = read_delta_spark(spark, feedback, "feedback table")
        missing = [c for c in ("request_id", "ts", "label") if c not in fb.columns]
        if missing:
            raise predlog.PredictionLogError(f"feedback table {feedback} has no column {missing[0]!r}; it needs "
                                             "request_id, ts, label")
        latest = fb.groupBy("request_id").agg(
            F.max_by(F.col("label"), F.struct(F.col("ts"), F.col("label").cast("string"))).alias("label"),
            F.max(F.col("ts")).alias("label_ts"))
        frame = frame.join(latest, "request_id", "left")
    return frame


def write_metrics_spark(spark: Any, table: str, result: Any, computed_at: Any = None) -> int:
    """Store a tracked result in the metrics Delta table from a Spark job, with the project's Delta writers:
    delta-spark when its JARs are loaded (``replaceWhere`` = the same predicate overwrite, one commit, the
    windows stamped in ``userMetadata``), else delta-rs exactly as the embedded path
    (:func:`sparkscore.monitor.tracking.write_metrics`).  The rows are the run's kilobytes of metrics,
    already on the driver."""
    from sparkscore.engines import delta
    from sparkscore.monitor import tracking

    if not delta.has_delta_spark(spark) or not result.windows:
        return tracking.write_metrics(table, result, computed_at)
    data = result.to_arrow(computed_at)
    frame = spark.createDataFrame(data.to_pandas(), schema=_SPARK_METRICS_SCHEMA)
    try:
        (frame.write.format("delta").mode("overwrite")
         .option("replaceWhere", tracking.replace_predicate(result, "spark"))
         .option("userMetadata", json.dumps({tracking.COMMIT_KEY: tracking.commit_stamp(result)})).save(table))
    except Exception as exc:  # AnalysisException: e.g. a table of another schema at that path
        raise MonitorError(f"metrics table {table}: cannot replace the windows of this run "
                           f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}); "
                           "pass a --metrics-table written by `sparkscore monitor --log`") from None
    return data.num_rows


_SPARK_METRICS_SCHEMA = (_SPARK_DRIFT_SCHEMA + ", window_start timestamp, window_end timestamp, window string, "
                         "reference string, model string, version bigint, computed_at timestamp")
