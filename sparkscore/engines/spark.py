"""Spark engine: registry models as named Arrow UDFs, the PREDICT front end, ``predict`` and a Transformer.

Each model version runs in an *iterator* Arrow UDF.  Its closure carries only a
:class:`ModelSource` (registry URI, name, pinned version, sha256): every Python worker loads and
compiles the model once through :func:`sparkscore.compiler.cached` and reuses it for every batch
of every task, so tasks never ship or unpickle model objects.  Models the optimizer derives
(pruned or specialised, not in the registry) travel as the safe on-disk format's bytes instead.

Session settings (``spark.conf`` / ``spark-defaults.conf``):

* ``spark.sparkscore.batchRows`` -> rows per Arrow batch handed to a model (sets
  ``spark.sql.execution.arrow.maxRecordsPerBatch``).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import pyarrow as pa
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import arrow_udf

from sparkscore import compiler
from sparkscore.engines.catalog import SparkCatalog  # noqa: F401 (the optimizer's view of a session)
from sparkscore.engines.functions import (ScoringFunction, check_input_types, output_type, registry_or_default,
                                         resolver, route_resolver)
from sparkscore.errors import IntegrityError, QueryError, SignatureError
from sparkscore.ir.model import Model
from sparkscore.ir.naming import udf_name

BATCH_ROWS_CONF = "spark.sparkscore.batchRows"
_DEVICE = "cpu"
#: When set (in the workers' environment), every model load appends "pid name/version sha256" to
#: this file: how tests and operators check that a worker loads a model once, not once per batch.
LOAD_LOG_ENV = "SPARKSCORE_LOAD_LOG"

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

    def scorer(self) -> compiler.Scorer:
        """This process's compiled model (loaded and compiled on the first batch only)."""
        return compiler.cached((self.name, self.version, self.sha256, _DEVICE), load=self._load,
                               backend="auto", device=_DEVICE)

    def _load(self) -> Model:
        log = os.environ.get(LOAD_LOG_ENV)
        if log:
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()} {self.name}/{self.version} {self.sha256}\n")
        if self.files:
            with tempfile.TemporaryDirectory(prefix="sparkscore-model-") as tmp:
                for fname, data in self.files:
                    Path(tmp, fname).write_bytes(data)
                model = Model.load(tmp)
        else:
            from sparkscore.registry import Registry

            model = Registry(self.registry_uri).load(f"{self.name}/{self.version}")
        if model.sha256 != self.sha256:
            raise IntegrityError(f"{self.name}/{self.version}: stored model has sha256 {model.sha256[:12]}..., the query "
                                 f"pinned {self.sha256[:12]}...; re-run the query so it pins the current version")
        return model


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
                fn = ScoringFunction(self.name, self.kind, model, (self.source.name, self.source.version),
                                     self.output_type)
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


# ---------------------------------------------------------------------------------------- driver side
def _registry_uri(registry) -> str:
    return str(getattr(registry, "uri", None) or registry.root)


def _apply_conf(spark: SparkSession) -> None:
    """Map ``spark.sparkscore.batchRows`` onto the Arrow batch size of Python UDFs."""
    rows = spark.conf.get(BATCH_ROWS_CONF, None)
    if rows:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(rows)))


def _source(registry, name: str, version: int, sha256: str, spark: SparkSession) -> ModelSource:
    _apply_conf(spark)
    return ModelSource(_registry_uri(registry), name, int(version), sha256)


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


def predict(df: DataFrame, model_ref: str, output_col: str = "prediction", registry=None,
            proba: bool = False) -> DataFrame:
    """``df`` plus one column scored by the model (inputs bound by column name)."""
    reg = registry_or_default(registry)
    mv = reg.get(model_ref)
    model = reg.load(f"{mv.name}/{mv.version}")
    bound = model.bind_columns(df.columns)
    missing = [c for c, b in zip(model.signature.names, bound) if b is None]
    if missing:
        raise SignatureError(f"{mv.name}/{mv.version}: input DataFrame has no column {missing[0]!r}; "
                             f"the model needs {', '.join(model.signature.names)}")
    check_input_types(model, f"{mv.name}/{mv.version}", [(f.name, f.dataType.simpleString()) for f in df.schema],
                      dialect="spark", fn="predict")
    kind = "proba" if proba else "predict"
    fn = ModelFunction(udf_name(mv.name, mv.version, kind), _source(reg, mv.name, mv.version, mv.sha256, df.sparkSession),
                       kind, output_type(model, kind))
    return df.withColumn(output_col, fn.udf()(*[df[c] for c in bound]))


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
    return spark.sql(the_plan.sql)


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
