"""DuckDB engine: models as typed Arrow UDFs, PREDICT queries through the optimizer, batch scoring.

* ``install(con, registry)`` registers every model version as ``churn_v3(age, ...)`` (and
  ``churn_v3_proba``) so plain DuckDB SQL can call them.
* ``sql(con, query, registry)`` plans a ``PREDICT`` query, registers the functions the plan calls
  (derived models included) and returns the ``DuckDBPyRelation`` of the rewritten SQL.
* ``score_relation(con, relation, ref)`` streams a relation as large Arrow record batches and
  scores each in one call: DuckDB calls Arrow UDFs per ~2,048-row chunk, too small for big
  models and batched kernels.

Every path scores through :class:`ScoringFunction`, so UDFs and batches give identical results.
SQL NULL is the model's missing value (NaN), routed as the native library routes it.
"""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Hashable, Sequence

import duckdb
import numpy as np
import pyarrow as pa
from duckdb import sqltypes

from sparkscore import compiler
from sparkscore.engines.catalog import DuckDBCatalog
from sparkscore.errors import QueryError
from sparkscore.ir.model import Model
from sparkscore.ir.naming import udf_name
from sparkscore.ir.signature import Column

__all__ = ["ScoringFunction", "explain", "install", "output_type", "score_relation", "sql"]

KINDS = ("predict", "proba", "raw")
_DEVICE = "cpu"
_ARROW_TYPES = {"DOUBLE": pa.float64(), "DOUBLE[]": pa.list_(pa.float64()), "VARCHAR": pa.string(), "BIGINT": pa.int64()}
_SQL_TYPES = {"DOUBLE": sqltypes.DOUBLE, "DOUBLE[]": duckdb.list_type(sqltypes.DOUBLE),
              "VARCHAR": sqltypes.VARCHAR, "BIGINT": sqltypes.BIGINT}


def output_type(model: Model, kind: str) -> str:
    """SQL result type of ``kind`` for ``model`` (DESIGN section 4)."""
    if kind == "proba":
        return "DOUBLE[]"
    if kind == "raw" or (kind == "predict" and model.is_classifier and model.n_classes == 2):
        return "DOUBLE"
    if kind != "predict":
        raise QueryError(f"{model.name}: unknown function kind {kind!r}; use one of {', '.join(KINDS)}")
    if not model.is_classifier:
        return "DOUBLE" if model.estimator.n_outputs == 1 else "DOUBLE[]"
    if all(isinstance(c, str) for c in model.classes):
        return "VARCHAR"
    if all(isinstance(c, (int, np.integer)) or float(c).is_integer() for c in model.classes):
        return "BIGINT"
    return "DOUBLE"


def input_type(column: Column) -> str:
    """SQL parameter type of one model input: strings stay VARCHAR, everything else is DOUBLE."""
    categories = column.categories
    return "VARCHAR" if column.dtype == "varchar" or (categories and isinstance(categories[0], str)) else "DOUBLE"


@dataclass(frozen=True, eq=False)
class ScoringFunction:
    """One SQL function: a model (version or derived model) scored for one output ``kind``."""

    name: str            # SQL function name
    kind: str            # "predict" | "proba" | "raw"
    model: Model         # the model as registered / derived; raw runs it without its link
    source: tuple        # (registry name, version) it came from
    output_type: str     # "DOUBLE" | "DOUBLE[]" | "VARCHAR" | "BIGINT"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QueryError(f"{self.model.name}: unknown function kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "proba" and not self.model.is_classifier:
            raise QueryError(f"{self.model.name}: PREDICT_PROBA needs a classifier; this model is a regressor, use PREDICT")
        if self.output_type not in _ARROW_TYPES:
            raise QueryError(f"{self.name}: unsupported output type {self.output_type!r}; use one of {', '.join(_ARROW_TYPES)}")

    @classmethod
    def for_version(cls, name: str, version: int, model: Model, kind: str = "predict") -> "ScoringFunction":
        return cls(udf_name(name, version, kind), kind, model, (name, int(version)), output_type(model, kind))

    @classmethod
    def from_spec(cls, spec) -> "ScoringFunction":
        """From an optimizer ``UdfSpec`` (its model may be derived: pruned, specialised, a GLM part)."""
        inputs = tuple(spec.inputs)
        if inputs != spec.model.signature.names:
            raise QueryError(f"{spec.name}: plan inputs {inputs} differ from the model signature; this is an optimizer bug")
        return cls(spec.name, spec.kind, spec.model, (spec.source.name, int(spec.source.version)), spec.output_type)

    # ------------------------------------------------------------------ scoring
    @property
    def input_types(self) -> tuple[str, ...]:
        return tuple(input_type(c) for c in self.model.signature.inputs)

    @property
    def identity(self) -> Hashable:
        """What makes two registrations of ``name`` interchangeable."""
        return (self.kind, self.output_type, self.input_types, self.model.sha256)

    @cached_property
    def _scored(self) -> tuple[Model, tuple]:
        """The model the compiler runs and its cache key (name, version, sha256, device)."""
        model = _without_link(self.model) if self.kind == "raw" else self.model
        return model, (*self.source, model.sha256, _DEVICE)

    def _scorer(self) -> compiler.Scorer:
        model, key = self._scored
        return compiler.cached(key, load=lambda: model, backend="auto", device=_DEVICE)

    def score(self, data: pa.Table | pa.RecordBatch) -> pa.Array:
        """Scores of the rows of ``data`` (input columns bound by name) as one Arrow array."""
        S = self._scorer().scores(self.model.to_matrix(data))
        return self._to_arrow(S)

    def _to_arrow(self, S: np.ndarray) -> pa.Array:
        """Scores as the SQL result type.  NaN stays NaN: exactly what ``Model.predict`` returns,
        and what the same model inlined as SQL returns (a GLM given NULL yields NaN)."""
        model = self.model
        if self.kind == "raw":
            values = S[:, 0]
        elif self.kind == "proba":
            values = model.outputs_to_proba(S)
        elif model.is_classifier and model.n_classes == 2 and self.output_type == "DOUBLE":
            values = model.outputs_to_proba(S)[:, 1]
        else:
            values = model.outputs_to_predictions(S)
        array = _list_array(values) if values.ndim == 2 else pa.array(values.tolist() if values.dtype == object else values)
        return array.cast(_ARROW_TYPES[self.output_type])

    def udf(self) -> Callable:
        """The DuckDB Arrow UDF: exactly one positional parameter per model input (fixed arity)."""
        names = list(self.model.signature.names)

        def call(*columns):
            return self.score(pa.Table.from_arrays(list(columns), names=names))

        call.__signature__ = inspect.Signature(
            [inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(names))])
        call.__name__ = self.name
        return call


def _without_link(model: Model) -> Model:
    """The model's untransformed margins (``raw``): same estimator with an identity output."""
    est = model.estimator
    field = "link" if model.kind == "linear" else "post_transform"
    return dataclasses.replace(model, estimator=dataclasses.replace(est, **{field: "identity"}))


def _list_array(values: np.ndarray) -> pa.ListArray:
    """Rows of a (n, k) matrix as one DOUBLE[] value each."""
    n, k = values.shape
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=pa.float64()))


# ---------------------------------------------------------------------- registration
#: per connection: SQL function name -> ScoringFunction.identity of what is registered under it
_INSTALLED: "weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, dict[str, Hashable]]" = weakref.WeakKeyDictionary()


def register_function(con: duckdb.DuckDBPyConnection, fn: ScoringFunction) -> None:
    """Create (or replace, when it changed) the Arrow UDF ``fn.name`` on ``con``."""
    installed = _INSTALLED.setdefault(con, {})
    if installed.get(fn.name) == fn.identity:
        return
    try:
        con.remove_function(fn.name)
    except duckdb.InvalidInputException:  # not registered yet
        pass
    installed.pop(fn.name, None)
    con.create_function(fn.name, fn.udf(), [_SQL_TYPES[t] for t in fn.input_types], _SQL_TYPES[fn.output_type],
                        type="arrow", null_handling="special", side_effects=False)
    installed[fn.name] = fn.identity


def install(con: duckdb.DuckDBPyConnection, registry=None) -> list[str]:
    """Register every model version of ``registry`` as typed SQL functions; returns their names.

    Idempotent: installing again replaces functions whose model changed and keeps the rest.
    """
    reg = _registry(registry)
    names = []
    for model_name in reg.models():
        for mv in reg.versions(model_name):
            model = reg.load(f"{mv.name}/{mv.version}")
            kinds = ("predict", "proba") if model.is_classifier else ("predict",)
            for kind in kinds:
                fn = ScoringFunction.for_version(mv.name, mv.version, model, kind)
                register_function(con, fn)
                names.append(fn.name)
    return names


# ---------------------------------------------------------------------- queries
def explain(query: str, con: duckdb.DuckDBPyConnection, registry=None, disable_rules: Sequence[str] = ()):
    """The optimizer's ``Plan`` of a PREDICT query on ``con`` (``str(plan)`` is the EXPLAIN text)."""
    from sparkscore.optimizer import plan_query

    return plan_query(query, dialect="duckdb", resolve=_resolver(_registry(registry)),
                      catalog=DuckDBCatalog(con), disable_rules=tuple(disable_rules))


def sql(con: duckdb.DuckDBPyConnection, query: str, registry=None,
        disable_rules: Sequence[str] = ()) -> duckdb.DuckDBPyRelation:
    """Run a PREDICT query: plan it, register the functions the plan calls, return the relation."""
    plan = explain(query, con, registry, disable_rules)
    for spec in plan.udfs:
        register_function(con, ScoringFunction.from_spec(spec))
    return con.sql(plan.sql)


def score_relation(con: duckdb.DuckDBPyConnection, relation_or_query, model_ref: str, registry=None, *,
                   batch_rows: int = 1_000_000, output: str = "prediction", kind: str = "predict",
                   view: str | None = None):
    """Score a relation in large Arrow batches: its columns plus ``output``.

    The input streams through an Arrow reader of ``batch_rows`` rows (bounded memory: one input
    batch at a time); each batch is scored in one call.  Returns a ``pyarrow.Table``, or with
    ``view`` registers that table on ``con`` under that name and returns its relation.
    """
    if batch_rows < 1:
        raise QueryError(f"batch_rows must be a positive row count, got {batch_rows}")
    relation = con.sql(relation_or_query) if isinstance(relation_or_query, str) else relation_or_query
    if output in relation.columns:
        raise QueryError(f"{model_ref}: the input already has a column {output!r}; pass another output= name")
    mv, model = _load(_registry(registry), model_ref)
    fn = ScoringFunction.for_version(mv.name, mv.version, model, kind)
    reader = relation.to_arrow_reader(batch_rows)
    schema = reader.schema.append(pa.field(output, _ARROW_TYPES[fn.output_type]))
    batches = [pa.RecordBatch.from_arrays([*batch.columns, fn.score(batch)], schema=schema) for batch in reader]
    table = pa.Table.from_batches(batches, schema=schema)
    if view is None:
        return table
    con.register(view, table)
    return con.view(view)


# ---------------------------------------------------------------------- helpers
def _registry(registry):
    from sparkscore.registry import Registry

    return Registry() if registry is None else registry


def _load(reg, ref: str):
    """(ModelVersion, verified Model) of ``ref``."""
    mv = reg.get(ref)
    return mv, reg.load(f"{mv.name}/{mv.version}")


def _resolver(reg) -> Callable[[str], object]:
    """ref -> optimizer ``ResolvedModel``, loading each model version once per query."""
    from sparkscore.optimizer import ResolvedModel

    loaded: dict[tuple[str, int], ResolvedModel] = {}

    def resolve(ref: str) -> ResolvedModel:
        mv = reg.get(ref)
        if (mv.name, mv.version) not in loaded:
            model = reg.load(f"{mv.name}/{mv.version}")
            loaded[mv.name, mv.version] = ResolvedModel(mv.name, mv.version, mv.sha256, model)
        return loaded[mv.name, mv.version]

    return resolve
