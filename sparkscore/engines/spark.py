"""Spark engine: registry models as named Arrow UDFs, the PREDICT front end, ``predict`` and a Transformer.

Each model version runs in an *iterator* Arrow UDF.  Its closure carries only a
:class:`ModelSource` (registry URI, name, pinned version, sha256): every Python worker loads and
compiles the model once through :func:`sparkscore.compiler.cached` and reuses it for every batch
of every task, so tasks never ship or unpickle model objects.  Models the optimizer derives
(pruned or specialised, not in the registry) travel as the safe on-disk format's bytes instead.

Session settings (``spark.conf`` / ``spark-defaults.conf``):

* ``spark.sparkscore.batchRows`` -> rows per Arrow batch handed to a model (sets
  ``spark.sql.execution.arrow.maxRecordsPerBatch``).
* ``spark.sparkscore.path`` -> how :func:`predict` scores: ``auto`` (default), ``inline``,
  ``scan``, ``arrow`` or ``udf`` (see :func:`predict_path`).

Four paths score a DataFrame in :func:`predict` (:func:`predict_path` says which one runs and why):

* ``inline``: models the optimizer's ``inline_models`` rule turns into exact SQL (GLMs up to
  ``inline_max_features`` inputs, tree ensembles up to ``inline_max_nodes`` nodes) become Catalyst
  expressions: whole-stage code generation evaluates them in the JVM, nothing travels to Python.
* ``scan``: a plain parquet read (``spark.read.parquet(...)``, perhaps a projection of its columns)
  is replaced by a Python data source that reads the same row groups with pyarrow inside the worker
  and appends the scores (:mod:`sparkscore.engines.spark_scan`): the features never become JVM rows
  or cross to Python, which in the other two paths costs ~150 ns of JVM CPU per value.
* ``arrow``: whole partitions through ``DataFrame.mapInArrow``: the batch's columns arrive as one
  Arrow record batch, the passthrough columns go back untouched (zero-copy in Python) next to the
  scores, and several outputs (``proba_col``) come from one pass over one input matrix.  ``auto``
  takes it for several outputs; one output is faster through the UDF (below), because every
  passthrough column must also be converted back from Arrow into the JVM's rows.
* ``udf``: an iterator Arrow UDF over only the model's columns (the JVM keeps the other columns
  and zips the score back); ``auto``'s choice for one output, for frames with many more non-model
  columns than model ones, or with a column that does not travel through Arrow (ML vectors);
  also what ``install`` registers for plain ``spark.sql``.  Several outputs of one model (a
  ``proba_col``; ``PREDICT`` and ``PREDICT_PROBA`` side by side in one SELECT of ``sql``) are one
  struct UDF (:class:`FusedFunction`): Spark gives every iterator UDF a Python worker and a
  transfer of its own, so two functions would cost two of each and two kernel calls.

Why ``sql`` does not route PREDICT through ``mapInArrow``: for one output the Arrow UDF it uses
is the faster path (above), and for several the fused UDF sends back only the outputs where
``mapInArrow`` sends back every column; a SQL text would also have to be split around the call
(FROM / WHERE / joins into a DataFrame, the rest of the SELECT after it), which no plan shape
needs now that the UDF path is both the faster and the one-pass one.  The same split is why the
``scan`` path serves :func:`predict` (and the jobs built on it) but not yet ``sql``.

In a Python worker the compiled kernels use ``OMP_NUM_THREADS`` threads, which Spark sets to
``spark.task.cpus`` (:func:`sparkscore.compiler.numba_trees.default_threads`), so kernel threads
times concurrent tasks stay within the executor's cores.

A route ref (``'churn@ab'``, also time-pinned ``'churn@ab#2026-11-01T00:00:00Z'``) scores each row
on its arm, the arm Spark SQL's ``PREDICT`` picks (the same bucket SQL, computed once per row);
each path above applies per arm (:func:`_predict_route`).

The per-executor model cache.  An executor runs *several* Python workers at once: Spark never
chains iterator UDFs (pyspark's worker takes one ``SCALAR_ARROW_ITER`` UDF per evaluation), so
two models in one query (or outputs the fused UDF does not cover) are several ``ArrowEvalPython``
nodes in one task, each with its own worker process, and an executor keeps them for later tasks.  A per-process cache
alone would read the registry (perhaps an object store) once per worker.  So the first worker
of an executor to need a version reads it from the registry, verifies it, and saves it under
the executor's own local directory (``SPARK_LOCAL_DIRS``, which Spark sets per executor and
deletes with it; ``$SPARKSCORE_EXECUTOR_CACHE`` overrides, ``off`` disables), keyed by sha256,
written to a temporary name and renamed into place; a lock file serialises workers of the same
executor, so the registry is read exactly once per executor and version.  Other workers load
the local copy, whose sha256 is checked again on every read (the safe format: no pickle); a
damaged copy is replaced from the registry.  The compiled kernels themselves are numba's
``cache=True`` on-disk cache, so a fresh worker compiles nothing (the load log records its
numba cache misses).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import pyarrow as pa
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import arrow_udf
from pyspark.sql.types import (ArrayType, AtomicType, DataType, DoubleType, LongType, StringType, StructField,
                               StructType)

from sparkscore import compiler
from sparkscore.engines.catalog import SparkCatalog  # noqa: F401 (the optimizer's view of a session)
from sparkscore.engines.functions import (ARROW_TYPES, SCORE_LOG_ENV, ScoringFunction, check_input_types, output_type,
                                         registry_or_default, resolver, route_resolver, score_many)
from sparkscore.engines.spark_scan import ScanPlan, scan_plan, scored_scan
from sparkscore.errors import IntegrityError, QueryError, SignatureError, SparkscoreError
from sparkscore.ir.model import Model
from sparkscore.ir.naming import udf_name

BATCH_ROWS_CONF = "spark.sparkscore.batchRows"
PATH_CONF = "spark.sparkscore.path"
PATHS = ("auto", "inline", "scan", "arrow", "udf")
#: ``auto`` keeps the UDF path when the frame has more than this many non-model columns per model
#: column: in ``mapInArrow`` they cross to Python and back, in a UDF they stay in the JVM (a bound
#: set from that cost, not yet swept: bench_spark_path.py's ``extras`` section measures it).
ARROW_MAX_EXTRA_RATIO = 1.0
#: ``auto`` tries the scoring scan (a plain parquet read) for models of at least this many columns, and
#: frames with at most this many other columns per model column: measured on local[2], LightGBM 100
#: trees, 1M rows, with the all-nodes tree kernel (bench/results/spark_path_scan.md), vs the Arrow UDF:
#: 0.74x at 8 columns, 0.86x at 16, 1.34x at 24, 1.78x at 32, 2.11x at 50; other columns all pass
#: through Python (50 + 12 others: 1.94x; 50 + 50: 1.46x; 16 + 16: 0.81x).  Session 5's sweep, with a
#: kernel 2-4x slower, put the boundary at 32 and 0.25: the faster the kernel, the more the JVM's row
#: -> Arrow step the scan skips weighs.
SCAN_MIN_MODEL_COLUMNS = 24
SCAN_MAX_EXTRA_RATIO = 1.0
_DEVICE = "cpu"
#: When set (in the workers' environment), every model load appends one line to this file:
#: ``pid name/version sha256 source numba_misses compile_s cache_dir`` where ``source`` is
#: ``registry`` (read from the registry), ``executor-cache`` (another worker of this executor had
#: read it) or ``closure`` (a derived model shipped with the query): how tests and operators check
#: that a worker loads a model once, not once per batch, and an executor reads the registry once.
LOAD_LOG_ENV = "SPARKSCORE_LOAD_LOG"
#: Where an executor's workers share verified model versions (default: the first of the executor's
#: ``SPARK_LOCAL_DIRS``; ``off`` disables the shared copy, so each worker reads the registry).
EXECUTOR_CACHE_ENV = "SPARKSCORE_EXECUTOR_CACHE"
EXECUTOR_CACHE_DIR = "sparkscore-models"
_SHA256 = re.compile(r"[0-9a-f]{64}")

_SPARK_TYPES = {"DOUBLE": "double", "DOUBLE[]": "array<double>", "VARCHAR": "string", "BIGINT": "bigint"}


# ---------------------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class ModelSource:
    """Everything a UDF closure carries to find its model: never the model object itself."""

    registry_uri: str
    name: str
    version: int
    sha256: str
    files: tuple[tuple[str, bytes], ...] = ()   # safe-format files of a derived (non-registry) model
    backend: str = "auto"                       # compiler backend on the workers

    def scorer(self) -> compiler.Scorer:
        """This process's compiled model (loaded and compiled on the first batch only)."""
        loaded: list[str] = []

        def load() -> Model:
            model, where = self._load()
            loaded.append(where)
            return model

        started = time.perf_counter()
        scorer = compiler.cached((self.name, self.version, self.sha256, _DEVICE), load=load,
                                 backend=self.backend, device=_DEVICE)
        if loaded:
            _log_load(self, loaded[0], time.perf_counter() - started)
        return scorer

    def function(self, name: str, model: Model, kind: str, sql_type: str) -> ScoringFunction:
        """The shared scoring code for ``kind`` of this source's ``model``, on this source's backend."""
        return ScoringFunction(name, kind, model, (self.name, self.version), sql_type, self.backend)

    def _load(self) -> tuple[Model, str]:
        """The verified model and where it came from (``registry``, ``executor-cache`` or ``closure``)."""
        if self.files:
            with tempfile.TemporaryDirectory(prefix="sparkscore-model-") as tmp:
                for fname, data in self.files:
                    Path(tmp, fname).write_bytes(data)
                return self._checked(Model.load(tmp)), "closure"
        root = executor_cache_root()
        if root is None or not _SHA256.fullmatch(self.sha256):  # the digest names a directory: hex only
            return self._from_registry(), "registry"
        entry = root / self.sha256
        with _locked(root / f"{self.sha256}.lock"):
            model = _read_cached(entry, self.sha256)
            if model is not None:
                return model, "executor-cache"
            model = self._from_registry()
            _write_cached(model, entry)
        return model, "registry"

    def _from_registry(self) -> Model:
        from sparkscore.registry import Registry

        return self._checked(Registry(self.registry_uri).load(f"{self.name}/{self.version}"))

    def _checked(self, model: Model) -> Model:
        if model.sha256 != self.sha256:
            raise IntegrityError(f"{self.name}/{self.version}: stored model has sha256 {model.sha256[:12]}..., the query "
                                 f"pinned {self.sha256[:12]}...; re-run the query so it pins the current version")
        return model


def executor_cache_root() -> Path | None:
    """This executor's shared model directory (created on first use), or None when there is none.

    ``SPARK_LOCAL_DIRS`` is what Spark hands every Python worker of an executor: the executor's
    block-manager directories, private to that executor JVM and removed with it.  Outside a Spark
    worker (the driver, DuckDB) it is unset and nothing is shared on disk.
    """
    configured = os.environ.get(EXECUTOR_CACHE_ENV)
    if configured is not None and configured.strip().lower() in ("", "off", "0", "false"):
        return None
    base = configured or next((d for d in os.environ.get("SPARK_LOCAL_DIRS", "").split(",") if d), None)
    if base is None:
        return None
    root = Path(base) / EXECUTOR_CACHE_DIR if not configured else Path(base)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # unwritable: every worker reads the registry, as without the cache
    return root


@contextmanager
def _locked(path: Path):
    """An exclusive lock between the worker processes of one executor (a no-op where flock is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no daemon workers; at worst two workers both read the registry
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_cached(entry: Path, sha256: str) -> Model | None:
    """The executor's copy of a version, verified again (None: absent or damaged, then removed)."""
    if not entry.is_dir():
        return None
    try:
        model = Model.load(entry)
        if model.sha256 == sha256:
            return model
    except (SparkscoreError, OSError):
        pass
    shutil.rmtree(entry, ignore_errors=True)  # damaged: the caller reads the registry and writes it again
    return None


def _write_cached(model: Model, entry: Path) -> None:
    """Save ``model`` as ``entry`` atomically (a temporary name, then rename); failures only cost speed."""
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        os.rename(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _numba_cache_misses() -> int:
    """How many numba kernels this process compiled instead of loading from numba's disk cache."""
    if "numba" not in sys.modules:
        return 0
    from numba.core.dispatcher import Dispatcher

    misses = 0
    for module in ("sparkscore.compiler.numba_trees", "sparkscore.compiler.numba_linear"):
        for obj in vars(sys.modules.get(module) or object()).values():
            if isinstance(obj, Dispatcher):
                misses += sum(obj.stats.cache_misses.values())
    return misses


def _log_load(source: ModelSource, where: str, seconds: float) -> None:
    log = os.environ.get(LOAD_LOG_ENV)
    if log:
        root = executor_cache_root() if where != "closure" else None
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {source.name}/{source.version} {source.sha256} {where} "
                     f"{_numba_cache_misses()} {seconds:.3f} {root or '-'}\n")


@dataclass(frozen=True)
class ModelFunction:
    """One SQL function: a model source, what it returns (kind) and its SQL output type.

    Output semantics are :class:`sparkscore.engines.functions.ScoringFunction` (same code, so both engines
    return identical values); this class only adds how a Spark worker finds the model.
    """

    name: str
    source: ModelSource
    kind: str            # "predict" | "proba" | "raw"
    output_type: str     # "DOUBLE" | "DOUBLE[]" | "VARCHAR" | "BIGINT"
    gated: bool = False  # first argument: a BOOLEAN gate; only rows where it is TRUE are scored (route arms)

    def __call__(self, batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        fn = None
        for batch in batches:
            if fn is None:
                model = self.source.scorer().model
                names = list(model.signature.names)
                fn = self.source.function(self.name, model, self.kind, self.output_type)
            columns = [batch] if isinstance(batch, pa.Array) else list(batch)
            if self.gated:
                yield fn.score_gated(columns[0], pa.Table.from_arrays(columns[1:], names=names))
            else:
                yield fn.score(pa.Table.from_arrays(columns, names=names))

    def udf(self):
        """The pyspark Arrow iterator UDF (named by ``spark.udf.register``)."""

        def score(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
            return self(batches)

        return arrow_udf(score, _SPARK_TYPES[self.output_type])


@dataclass(frozen=True)
class FusedFunction:
    """Several outputs of one model over the same arguments from one Python pass: one struct UDF.

    ``ss.spark.sql`` rewrites ``m_v1(a, b)`` and ``m_v1_proba(a, b)`` in one SELECT into
    ``<fused>(a, b).predict`` and ``<fused>(a, b).proba``.  Spark runs each iterator Arrow UDF in a
    Python worker of its own and sends it the inputs again, so two functions cost two transfers, two
    input matrices and two kernel calls; Catalyst evaluates one deterministic UDF call that appears
    twice once, so the fused one costs one of each (:func:`score_many`: the values of each function's
    own ``score``).
    """

    name: str
    source: ModelSource
    outputs: tuple[tuple[str, str], ...]   # (kind, SQL type); the kind is also the struct field's name

    def __call__(self, batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        fns = names = None
        log = os.environ.get(SCORE_LOG_ENV)
        for batch in batches:
            if fns is None:
                model = self.source.scorer().model
                names = list(model.signature.names)
                fns = [self.source.function(udf_name(self.source.name, self.source.version, kind), model, kind,
                                            sql_type) for kind, sql_type in self.outputs]
            columns = [batch] if isinstance(batch, pa.Array) else list(batch)
            scored = score_many(fns, pa.Table.from_arrays(columns, names=names))
            if log:
                with open(log, "a") as fh:
                    fh.write(f"{self.name} {len(columns[0])}\n")
            yield pa.StructArray.from_arrays(scored, names=[kind for kind, _ in self.outputs])

    def udf(self):
        fields = [StructField(kind, _SPARK_DATA_TYPES[sql_type], True) for kind, sql_type in self.outputs]

        def score(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
            return self(batches)

        return arrow_udf(score, StructType(fields))


@dataclass(frozen=True)
class PartitionScorer:
    """The ``mapInArrow`` function: scores each record batch of a partition in one pass.

    ``inputs`` are the batch's columns bound to the model's inputs (signature order);
    ``outputs`` are (column, kind, SQL type) appended after the batch's own columns, all computed
    from one input matrix (:func:`sparkscore.engines.functions.score_many`).  Carries only the
    :class:`ModelSource`, as :class:`ModelFunction` does.
    """

    source: ModelSource
    inputs: tuple[str, ...]
    outputs: tuple[tuple[str, str, str], ...]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fns = names = None
        for batch in batches:
            if fns is None:
                model = self.source.scorer().model
                names = list(model.signature.names)
                fns = [self.source.function(f"{self.source.name}_v{self.source.version}_{kind}", model, kind,
                                            sql_type) for _, kind, sql_type in self.outputs]
            data = pa.Table.from_arrays([batch.column(c) for c in self.inputs], names=names)
            scored = score_many(fns, data)
            yield pa.RecordBatch.from_arrays([*batch.columns, *scored],
                                             names=[*batch.schema.names, *(c for c, _, _ in self.outputs)])


@dataclass(frozen=True)
class PredictPath:
    """Which path :func:`predict` takes for one frame and model, and why (the measured rule)."""

    path: str        # "inline" | "scan" | "arrow" | "udf"
    reason: str
    scan: ScanPlan | None = field(default=None, repr=False)  # what the scan path reads (path "scan" only)


# ---------------------------------------------------------------------------------------- driver side
def _registry_uri(registry) -> str:
    return str(getattr(registry, "uri", None) or registry.root)


def _apply_conf(spark: SparkSession) -> None:
    """Map ``spark.sparkscore.batchRows`` onto the Arrow batch size of Python UDFs."""
    rows = spark.conf.get(BATCH_ROWS_CONF, None)
    if rows:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(rows)))


def _source(registry, name: str, version: int, sha256: str, spark: SparkSession,
            backend: str = "auto") -> ModelSource:
    _apply_conf(spark)
    return ModelSource(_registry_uri(registry), name, int(version), sha256, backend=backend)


def _derived_source(model: Model, name: str, version: int, spark: SparkSession) -> ModelSource:
    """A model the optimizer built (no registry entry): ship its safe-format files in the closure."""
    _apply_conf(spark)
    with tempfile.TemporaryDirectory(prefix="sparkscore-derived-") as tmp:
        model.save(tmp)
        files = tuple(sorted((p.name, p.read_bytes()) for p in Path(tmp).iterdir()))
    return ModelSource("", name, int(version), model.sha256, files)


def install(spark: SparkSession, registry=None) -> list[str]:
    """Register every model version as ``name_vN(...)`` (+ ``name_vN_proba``) for plain ``spark.sql``.

    As ``ss.duckdb.install``: a damaged registry entry is skipped with a warning naming its path and
    the fix; everything healthy is installed.
    """
    reg = registry_or_default(registry)
    loaded, damaged = reg.load_all()
    names: list[str] = []
    for mv, model in loaded:
        source = _source(reg, mv.name, mv.version, mv.sha256, spark)
        for kind in ("predict", "proba") if model.is_classifier else ("predict",):
            fname = udf_name(mv.name, mv.version, kind)
            spark.udf.register(fname, ModelFunction(fname, source, kind, output_type(model, kind)).udf())
            names.append(fname)
    for damage in damaged:
        warnings.warn(f"sparkscore: skipped damaged registry entry {damage}", stacklevel=2)
    return names


_SPARK_DATA_TYPES = {"DOUBLE": DoubleType(), "DOUBLE[]": ArrayType(DoubleType()), "VARCHAR": StringType(),
                     "BIGINT": LongType()}


def _bind(df: DataFrame, model: Model, ref: str) -> list[str]:
    bound = model.bind_columns(df.columns)
    missing = [c for c, b in zip(model.signature.names, bound) if b is None]
    if missing:
        raise SignatureError(f"{ref}: input DataFrame has no column {missing[0]!r}; "
                             f"the model needs {', '.join(model.signature.names)}")
    check_input_types(model, ref, [(f.name, f.dataType.simpleString()) for f in df.schema], dialect="spark",
                      fn="predict")
    return bound


def _arrow_safe(dtype: DataType) -> bool:
    """Whether a passthrough column's type crosses to Python and back through Arrow unchanged."""
    if isinstance(dtype, ArrayType):
        return _arrow_safe(dtype.elementType)
    if isinstance(dtype, StructType):
        return all(_arrow_safe(f.dataType) for f in dtype.fields)
    return isinstance(dtype, AtomicType)


def _inline_sql(model: Model, kinds: Sequence[str], bound: Sequence[str], df: DataFrame):
    """The model as Spark SQL expressions (one per kind), or the reason it is not inlined."""
    from sqlglot import exp

    from sparkscore.optimizer.context import OptimizerOptions
    from sparkscore.optimizer.dialect import generate
    from sparkscore.optimizer.inline_models import Decline, inline_call

    types = {f.name: f.dataType for f in df.schema}
    doubles = [isinstance(types[c], DoubleType) for c in bound]
    inputs = [exp.column(c, quoted=True) for c in bound]
    try:
        sqls = [inline_call(model, kind, [i.copy() for i in inputs], OptimizerOptions(), doubles) for kind in kinds]
    except Decline as reason:
        return None, str(reason)
    return [generate(sql, "spark") for sql, _ in sqls], sqls[0][1]


def predict_path(df: DataFrame, model: Model, kinds: Sequence[str] = ("predict",), bound: Sequence[str] | None = None,
                 path: str | None = None) -> PredictPath:
    """The path :func:`predict` takes (``path`` or ``spark.sparkscore.path``; ``auto`` measures out as:

    1. ``inline`` when ``inline_models`` can write every requested output as exact SQL (its own
       size limits: ``OptimizerOptions.inline_max_features`` / ``inline_max_nodes``; measured on
       Spark, bench/results/spark_path_rules.md: GLMs inlined 1.9-2.7x faster than mapInArrow, trees
       1.6x at 116 nodes but 0.46x at 464, so the 255-node limit sits inside the boundary);
    2. else ``scan`` when ``df`` is a plain parquet read that pyarrow reads exactly as Spark does
       (:func:`sparkscore.engines.spark_scan.scan_plan` says why not otherwise), for models of at least
       :data:`SCAN_MIN_MODEL_COLUMNS` columns with at most :data:`SCAN_MAX_EXTRA_RATIO` other columns
       per model column (measured: bench/results/spark_path_scan.md, spark_path_parquet.md);
    3. else ``arrow`` (``mapInArrow``) when several outputs are asked for (``proba_col``: one pass
       instead of one UDF per output), every column travels through Arrow and the frame has at most
       :data:`ARROW_MAX_EXTRA_RATIO` non-model columns per model column;
    4. else ``udf``: for one output the Arrow UDF measured faster than ``mapInArrow``
       (bench/results/spark_path.md: LightGBM 100 trees, 8 features, 1M rows: 23.8 s vs 29.2 s,
       both ahead of the pandas UDF's 50.0 s), because ``mapInArrow`` must send every passthrough
       column back from Python to the JVM, where the UDF returns only the score.

    A forced path that cannot run (``inline`` on a model that does not inline, ``scan`` over a frame
    that is not a plain parquet read, ``arrow`` over a column Arrow cannot carry) is refused with the reason.
    """
    path = (path or df.sparkSession.conf.get(PATH_CONF, "auto") or "auto").lower()
    if path not in PATHS:
        raise QueryError(f"{model.name}: unknown scoring path {path!r} ({PATH_CONF}); use one of {', '.join(PATHS)}")
    bound = list(bound if bound is not None else model.bind_columns(df.columns))
    if path in ("auto", "inline"):
        sqls, why = _inline_sql(model, kinds, bound, df)
        if sqls is not None:
            return PredictPath("inline", f"inlined as Catalyst expressions: {why}")
        if path == "inline":
            raise QueryError(f"{model.name}: cannot be inlined into Spark SQL ({why}); use {PATH_CONF}=auto")
        not_inlined = f"not inlined ({why})"
    else:
        not_inlined = f"{PATH_CONF}={path}"
    extra = len(df.columns) - len(set(bound))
    narrow = _scan_too_narrow(len(set(bound)), extra) if path == "auto" else None
    if path == "scan" or (path == "auto" and narrow is None):
        plan, why = scan_plan(df)
        if plan is not None:
            return PredictPath("scan", f"{not_inlined}; a plain parquet read: scored while pyarrow reads its "
                                       f"{len(plan.partitions)} row groups (no JVM row -> Arrow step)", plan)
        if path == "scan":
            raise QueryError(f"{model.name}: cannot score at the scan ({why}); use {PATH_CONF}=auto")
        not_inlined = f"{not_inlined}; not scored at the scan ({why})"
    elif path == "auto":
        not_inlined = f"{not_inlined}; not scored at the scan ({narrow})"
    if path == "udf":
        return PredictPath("udf", f"{not_inlined}: Arrow UDF over the {len(set(bound))} model columns")
    odd = [f.name for f in df.schema if not _arrow_safe(f.dataType)]
    if odd:
        if path == "arrow":
            raise QueryError(f"{model.name}: column {odd[0]!r} has a type mapInArrow cannot carry; drop it or use "
                             f"{PATH_CONF}=udf")
        return PredictPath("udf", f"{not_inlined}; column {odd[0]!r} does not travel through Arrow: Arrow UDF")
    if path == "auto" and extra > ARROW_MAX_EXTRA_RATIO * len(set(bound)):
        return PredictPath("udf", f"{not_inlined}; {extra} non-model columns > {ARROW_MAX_EXTRA_RATIO:g} x "
                                  f"{len(set(bound))} model columns would cross twice: Arrow UDF")
    if path == "auto" and len(kinds) == 1:
        return PredictPath("udf", f"{not_inlined}; one output: the Arrow UDF sends back 1 column where mapInArrow "
                                  f"sends back all {len(df.columns) + 1} (measured faster: bench/results/spark_path.md)")
    return PredictPath("arrow", f"{not_inlined}: mapInArrow over whole partitions ({len(set(bound))} model + "
                                f"{extra} passthrough columns)")


def _scan_too_narrow(model_columns: int, extra: int) -> str | None:
    """Why ``auto`` does not try the scan for this frame's shape (None: it does).  The scan saves the JVM's
    row -> Arrow step for the model's columns but sends every column back through Python, so it pays
    only for wide models with few other columns (bench/results/spark_path_scan.md)."""
    if model_columns < SCAN_MIN_MODEL_COLUMNS:
        return f"{model_columns} model columns < {SCAN_MIN_MODEL_COLUMNS}: the Arrow UDF measured as fast"
    if extra > SCAN_MAX_EXTRA_RATIO * model_columns:
        return (f"{extra} non-model columns > {SCAN_MAX_EXTRA_RATIO:g} x {model_columns} model columns would "
                f"all pass through Python")
    return None


def predict(df: DataFrame, model_ref: str, output_col: str = "prediction", registry=None,
            proba: bool = False, proba_col: str | None = None, path: str | None = None,
            backend: str = "auto") -> DataFrame:
    """``df`` plus one column scored by the model (inputs bound by column name).

    ``proba_col`` (classifiers) adds the class probabilities as a second column computed in the
    same pass.  ``path`` (default ``spark.sparkscore.path``, else ``auto``): see :func:`predict_path`.
    ``backend``: the compiler backend on the workers (``compiler.row_stable_backend()`` where a
    row's value must not depend on its batch: a job's prediction log).
    """
    from sparkscore.registry.routes import resolve_route

    reg = registry_or_default(registry)
    routed = resolve_route(reg, model_ref)
    if routed is not None:
        return _predict_route(df, reg, routed, output_col, proba, proba_col, path, backend)
    mv = reg.get(model_ref)
    model = reg.load(f"{mv.name}/{mv.version}")
    ref = f"{mv.name}/{mv.version}"
    bound = _bind(df, model, ref)
    outputs = _outputs(ref, [model], output_col, proba, proba_col)
    kinds = [kind for _, kind in outputs]
    choice = predict_path(df, model, kinds, bound, path)
    # scores land in fresh columns; an output named like an input column replaces it in place (as withColumn)
    temp = _temp_columns(outputs)
    if choice.path == "inline":
        sqls, _ = _inline_sql(model, kinds, bound, df)
        scored = df.select("*", *[F.expr(sql).alias(t) for t, sql in zip(temp, sqls)])
    else:
        source = _source(reg, mv.name, mv.version, mv.sha256, df.sparkSession, backend)
        typed = [(t, kind, output_type(model, kind)) for t, (_, kind) in zip(temp, outputs)]
        if choice.path == "udf" and len({kind for _, kind, _ in typed}) > 1:  # one struct UDF: one pass for all
            kinds = list(dict.fromkeys(kind for _, kind, _ in typed))
            types = {kind: sql_type for _, kind, sql_type in typed}
            fused = FusedFunction(f"{udf_name(mv.name, mv.version, 'predict')}_fused", source,
                                  tuple((k, types[k]) for k in kinds))
            both = "__sparkscore_fused"
            scored = df.withColumn(both, fused.udf()(*[df[c] for c in bound]))
            scored = scored.select("*", *[F.col(both)[kind].alias(t) for t, kind, _ in typed]).drop(both)
        elif choice.path == "udf":
            scored = df
            for t, kind, sql_type in typed:
                fn = ModelFunction(udf_name(mv.name, mv.version, kind), source, kind, sql_type)
                scored = scored.withColumn(t, fn.udf()(*[df[c] for c in bound]))
        else:  # scan and arrow: whole batches, the outputs appended to the batch's columns
            fields = [StructField(t, _SPARK_DATA_TYPES[sql_type], True) for t, _, sql_type in typed]
            if choice.path == "scan":
                scored = scored_scan(df, choice.scan, source, bound, typed, fields)
            else:
                scored = df.mapInArrow(PartitionScorer(source, tuple(bound), tuple(typed)),
                                       StructType([*df.schema.fields, *fields]))
    return _with_outputs(df, scored, outputs, temp)


def _outputs(ref: str, models: Sequence[Model], output_col: str, proba: bool,
             proba_col: str | None) -> list[tuple[str, str]]:
    """(column, kind) of every requested output, checked against the model(s)."""
    outputs = [(output_col, "proba" if proba else "predict")]
    if proba_col is not None:
        if not all(m.is_classifier for m in models):
            raise QueryError(f"{ref}: proba_col needs a classifier; this model is a regressor")
        outputs.append((proba_col, "proba"))
    if len({c for c, _ in outputs}) < len(outputs):
        raise QueryError(f"{ref}: output_col and proba_col are both {output_col!r}; give them different names")
    return outputs


def _temp_columns(outputs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"__sparkscore_{i}_{column}" for i, (column, _) in enumerate(outputs)]


def _with_outputs(df: DataFrame, scored: DataFrame, outputs: Sequence[tuple[str, str]],
                  temp: Sequence[str]) -> DataFrame:
    """``df``'s columns (an output named like one replaces it in place, as withColumn) + the new outputs."""
    renamed = dict(zip((c for c, _ in outputs), temp))
    return scored.select(*[F.col(_quote(renamed[c])).alias(c) if c in renamed else F.col(_quote(c)) for c in df.columns],
                         *[F.col(_quote(t)).alias(c) for (c, _), t in zip(outputs, temp) if c not in df.columns])


# ---------------------------------------------------------------------------------------- routes
#: the column :func:`predict` adds (and drops) holding each row's route bucket
BUCKET_COL = "__sparkscore_bucket"


@dataclass(frozen=True)
class RoutedPartitionScorer:
    """The ``mapInArrow`` function of a route: each record batch's rows go to their arm by the
    bucket column (computed in Spark SQL), each arm scores only its rows in one pass, and the
    outputs come back in row order.  Carries only each arm's :class:`ModelSource`."""

    arms: tuple[tuple[ModelSource, tuple[str, ...]], ...]   # (source, bound input columns) per arm
    owner: bytes                                             # int32 arm index of every bucket 0..9999
    outputs: tuple[tuple[str, str, str], ...]                # (column, kind, SQL type)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np

        owner = np.frombuffer(self.owner, dtype=np.int32)
        fns: list | None = None
        for batch in batches:
            if fns is None:
                fns = []
                for source, _ in self.arms:
                    model = source.scorer().model
                    fns.append([source.function(f"{source.name}_v{source.version}_{kind}", model, kind, sql_type)
                                for _, kind, sql_type in self.outputs])
            arm = owner[batch.column(BUCKET_COL).to_numpy(zero_copy_only=False).astype(np.int64)]
            pieces: list[list[pa.Array]] = [[] for _ in self.outputs]
            order = []
            for i, ((source, inputs), arm_fns) in enumerate(zip(self.arms, fns)):
                rows = np.flatnonzero(arm == i)
                if rows.size == 0:
                    continue
                names = list(arm_fns[0].model.signature.names)
                data = pa.Table.from_arrays([batch.column(c) for c in inputs], names=names).take(pa.array(rows))
                for j, scored in enumerate(score_many(arm_fns, data)):
                    pieces[j].append(scored)
                order.append(rows)
            back = pa.array(np.argsort(np.concatenate(order), kind="stable")) if order else None
            columns = [(pa.concat_arrays(p).take(back) if p else pa.nulls(0, ARROW_TYPES[t]))
                       for p, (_, _, t) in zip(pieces, self.outputs)]
            yield pa.RecordBatch.from_arrays([*batch.columns, *columns],
                                             names=[*batch.schema.names, *(c for c, _, _ in self.outputs)])


def _predict_route(df: DataFrame, reg, routed, output_col: str, proba: bool, proba_col: str | None,
                   path: str | None, backend: str = "auto") -> DataFrame:
    """:func:`predict` of a route ref: each row scored by its arm, as Spark SQL's ``PREDICT`` does.

    The bucket is the same SQL expression ``route_models`` writes (``bucket_sql`` over the key's
    canonical text, NULL -> bucket 0), computed once per row into :data:`BUCKET_COL`.  Paths:
    ``inline`` every arm as Catalyst expressions in one ``CASE`` on the bucket; ``udf`` every arm
    as a *gated* Arrow UDF (it scores only its own rows: Spark lifts UDFs out of ``CASE``);
    ``arrow`` one ``mapInArrow`` pass in which each arm scores its rows; ``auto`` inlines each arm
    that :func:`predict_path` would inline alone and gates the others, or takes ``arrow`` when an
    arm alone would.
    """
    from sqlglot import exp

    from sparkscore.optimizer.dialect import generate
    from sparkscore.optimizer.route_models import _condition, _merged, bucket_sql, key_text_sql
    from sparkscore.registry.routes import BUCKETS

    route = routed.route
    ref = f"{route.ref} v{route.version}"
    models = [reg.load(f"{a.name}/{a.version}") for a in routed.arms]
    outputs = _outputs(ref, models, output_col, proba, proba_col)
    kinds = [kind for _, kind in outputs]
    types = [{output_type(m, kind) for m in models} for kind in kinds]
    mixed = next(((k, t) for k, t in zip(kinds, types) if len(t) > 1), None)
    if mixed is not None:
        raise QueryError(f"route {ref}: its arms return different types for {mixed[0]} ({', '.join(sorted(mixed[1]))}); "
                         "give the arms models of one task and label type")
    keys = [c for c in df.columns if c.lower() == route.key.lower()]
    keys = [c for c in keys if c == route.key] or keys
    if len(keys) != 1:
        raise SignatureError(f"route {ref}: input DataFrame has {'no' if not keys else 'more than one'} key column "
                             f"{route.key!r}; the route picks each row's arm by it")
    key_type = df.schema[keys[0]].dataType.simpleString()
    text, _ = key_text_sql(exp.column(keys[0], quoted=True), key_type, "spark", route.ref)
    with_bucket = df.withColumn(BUCKET_COL, F.expr(generate(bucket_sql(route.salt, text, "spark"), "spark")))
    bounds = [_bind(df, m, f"{a.name}/{a.version}") for a, m in zip(routed.arms, models)]
    choices = [predict_path(df, m, kinds, b, path) for m, b in zip(models, bounds)]
    temp = _temp_columns(outputs)
    sources = [_source(reg, a.name, a.version, a.sha256, df.sparkSession, backend) for a in routed.arms]
    typed = [(t, kind, sql_type.pop()) for t, kind, sql_type in zip(temp, kinds, types)]
    if any(c.path == "arrow" for c in choices):
        import numpy as np

        labels = [a.label for a in routed.arms]
        owner = np.zeros(BUCKETS, dtype=np.int32)
        for start, end, label in route.ranges:  # only arms with traffic own buckets
            owner[start:end] = labels.index(label)
        fields = [StructField(t, _SPARK_DATA_TYPES[sql_type], True) for t, _, sql_type in typed]
        scorer = RoutedPartitionScorer(tuple((src, tuple(b)) for src, b in zip(sources, bounds)), owner.tobytes(),
                                       tuple(typed))
        scored = with_bucket.mapInArrow(scorer, StructType([*with_bucket.schema.fields, *fields]))
        return _with_outputs(df, scored, outputs, temp)
    bucket = exp.column(BUCKET_COL, quoted=True)
    ranges = _merged(route.ranges)
    columns = {t: None for t in temp}
    for arm, model, bound, choice, source in zip(routed.arms, models, bounds, choices, sources):
        gate = F.expr(generate(_condition(bucket, [(s, e) for s, e, label in ranges if label == arm.label]), "spark"))
        if choice.path == "inline":
            values = [F.expr(sql) for sql in _inline_sql(model, kinds, bound, df)[0]]
        else:
            values = [ModelFunction(udf_name(arm.name, arm.version, kind), source, kind, sql_type, gated=True).udf()(
                gate, *[with_bucket[c] for c in bound]) for _, kind, sql_type in typed]
        for t, value in zip(temp, values):
            columns[t] = F.when(gate, value) if columns[t] is None else columns[t].when(gate, value)
    scored = with_bucket.select("*", *[columns[t].alias(t) for t in temp])
    return _with_outputs(df, scored, outputs, temp)


def _quote(name: str) -> str:
    """A column name as ``F.col`` reads it literally (dots and backticks included)."""
    return "`" + name.replace("`", "``") + "`"


def explain(query: str, spark: SparkSession, registry=None, disable_rules: Sequence[str] = ()):
    """The optimizer's plan of a PREDICT query against this session (what ``ss.explain`` shows)."""
    from sparkscore.optimizer import plan_query

    reg = registry_or_default(registry)
    return plan_query(query, dialect="spark", resolve=resolver(reg), resolve_route=route_resolver(reg),
                      catalog=SparkCatalog(spark), disable_rules=tuple(disable_rules))


def sql(spark: SparkSession, query: str, registry=None, disable_rules: Sequence[str] = ()) -> DataFrame:
    """Run a PREDICT query: plan it, register the functions the plan calls, run the rewritten SQL."""
    reg = registry_or_default(registry)
    from sparkscore.engines.monitoring import expand_drift_spark  # DRIFT(...) in FROM: its rows, computed first

    query = expand_drift_spark(spark, query, reg)
    the_plan = explain(query, spark, reg, disable_rules)
    for spec in the_plan.udfs:
        if spec.output_type not in _SPARK_TYPES:
            raise QueryError(f"{spec.source.name}: the Spark engine cannot return {spec.output_type}; "
                             f"disable the rule that produced {spec.name}")
        if spec.model is spec.source.model or spec.model.sha256 == spec.source.sha256:
            source = _source(reg, spec.source.name, spec.source.version, spec.source.sha256, spark)
        else:
            source = _derived_source(spec.model, spec.name, spec.source.version, spark)
        spark.udf.register(spec.name, ModelFunction(spec.name, source, spec.kind, spec.output_type, spec.gated).udf())
    return spark.sql(_fuse_outputs(the_plan, spark, reg))


def _fuse_outputs(the_plan, spark: SparkSession, reg) -> str:
    """The plan's SQL with the calls of one model over the same arguments in one SELECT fused into one UDF.

    ``PREDICT`` and ``PREDICT_PROBA`` of a model side by side become field reads of one struct UDF
    (:class:`FusedFunction`): one Python worker, one transfer, one kernel call instead of two.
    Route arms (gated calls) and a lone call are left as they are.
    """
    import hashlib

    from sqlglot import exp

    from sparkscore.optimizer.dialect import generate

    specs = {s.name: s for s in the_plan.udfs if not s.gated}
    expression = the_plan.expression.copy()
    groups: dict[tuple, list] = {}
    for call in expression.find_all(exp.Anonymous):
        spec = specs.get(call.name)
        if spec is not None:
            select = call.find_ancestor(exp.Select)
            key = (id(select), spec.source.name, spec.source.version, spec.model.sha256,
                   tuple(arg.sql() for arg in call.expressions))
            groups.setdefault(key, []).append((call, spec))
    fused_any = False
    for key, calls in groups.items():
        kinds = list(dict.fromkeys(spec.kind for _, spec in calls))
        if len(kinds) < 2:
            continue
        spec = calls[0][1]
        types = {s.kind: s.output_type for _, s in calls}
        digest = hashlib.sha256(repr((spec.model.sha256, kinds, key[4])).encode()).hexdigest()[:10]
        name = f"{udf_name(spec.source.name, spec.source.version, 'predict')}_fused_{digest}"
        if spec.model is spec.source.model or spec.model.sha256 == spec.source.sha256:
            source = _source(reg, spec.source.name, spec.source.version, spec.source.sha256, spark)
        else:
            source = _derived_source(spec.model, name, spec.source.version, spark)
        spark.udf.register(name, FusedFunction(name, source, tuple((k, types[k]) for k in kinds)).udf())
        for call, s in calls:
            call.replace(exp.Dot(this=exp.Anonymous(this=name, expressions=[a.copy() for a in call.expressions]),
                                 expression=exp.to_identifier(s.kind)))
        fused_any = True
    return generate(expression, "spark") if fused_any else the_plan.sql


class ModelTransformer(Transformer, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """A pyspark.ml stage that appends a registry model's predictions (usable in a ``Pipeline``)."""

    modelRef = Param(Params._dummy(), "modelRef", "registry model ref: name, name/3 or name@alias",
                     typeConverter=TypeConverters.toString)
    registryUri = Param(Params._dummy(), "registryUri", "registry location (default $SPARKSCORE_HOME)",
                        typeConverter=TypeConverters.toString)
    proba = Param(Params._dummy(), "proba", "output class probabilities (array<double>)",
                  typeConverter=TypeConverters.toBoolean)

    def __init__(self, model_ref: str | None = None, output_col: str = "prediction",
                 registry_uri: str | None = None, proba: bool = False):
        super().__init__()
        self._setDefault(outputCol="prediction", proba=False)
        self._set(outputCol=output_col, proba=proba)
        if model_ref is not None:
            self._set(modelRef=model_ref)
        if registry_uri is not None:
            self._set(registryUri=str(registry_uri))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from sparkscore.registry import Registry

        uri = self.getOrDefault(self.registryUri) if self.isDefined(self.registryUri) else None
        return predict(dataset, self.getOrDefault(self.modelRef), self.getOutputCol(), Registry(uri),
                       proba=self.getOrDefault(self.proba))
