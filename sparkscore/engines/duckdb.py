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

Python variables: ``duckdb.sql("... FROM df")`` finds a pandas / Arrow object ``df`` by looking in
the *calling* frame (DuckDB's replacement scan).  Planning and running happen inside sparkscore's
own frames, so ``sql`` and ``explain`` take the caller's variables (or ``namespace=``, which the
notebook magic passes) and issue every query of the plan from a frame that holds them: the same
names resolve, by DuckDB's own rules, as they would in ``duckdb.sql``.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import warnings
import weakref
from typing import Any, Callable, Hashable, Mapping, Sequence

import duckdb
import pyarrow as pa
from duckdb import sqltypes

from sparkscore.engines.catalog import DuckDBCatalog
from sparkscore.errors import QueryError
from sparkscore.engines.functions import (ARROW_TYPES, RoutedFunction, ScoringFunction, load_ref, output_type,
                                          registry_or_default, resolver, route_resolver)

__all__ = ["ScoringFunction", "explain", "install", "output_type", "score_relation", "sql"]

_SQL_TYPES = {"DOUBLE": sqltypes.DOUBLE, "DOUBLE[]": duckdb.list_type(sqltypes.DOUBLE),
              "VARCHAR": sqltypes.VARCHAR, "BIGINT": sqltypes.BIGINT}


def arrow_udf(fn: ScoringFunction | RoutedFunction) -> Callable:
    """The DuckDB Arrow UDF of ``fn``: exactly one positional parameter per input (fixed arity)."""
    if isinstance(fn, RoutedFunction):
        arity = len(fn.input_types)

        def call(index, *columns):
            return fn.score(index, list(columns))
    else:
        names = list(fn.model.signature.names)
        arity = len(names)

        def call(*columns):
            return fn.score(pa.Table.from_arrays(list(columns), names=names))

    call.__signature__ = inspect.Signature(
        [inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(arity)])
    call.__name__ = fn.name
    return call


# ---------------------------------------------------------------------- registration
#: per connection: SQL function name -> ScoringFunction.identity of what is registered under it
_INSTALLED: "weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, dict[str, Hashable]]" = weakref.WeakKeyDictionary()


def register_function(con: duckdb.DuckDBPyConnection, fn: ScoringFunction | RoutedFunction) -> None:
    """Create (or replace, when it changed) the Arrow UDF ``fn.name`` on ``con``."""
    installed = _INSTALLED.setdefault(con, {})
    if installed.get(fn.name) == fn.identity:
        return
    try:
        con.remove_function(fn.name)
    except duckdb.InvalidInputException:  # not registered yet
        pass
    installed.pop(fn.name, None)
    con.create_function(fn.name, arrow_udf(fn), [_SQL_TYPES[t] for t in fn.input_types], _SQL_TYPES[fn.output_type],
                        type="arrow", null_handling="special", side_effects=False)
    installed[fn.name] = fn.identity


def install(con: duckdb.DuckDBPyConnection, registry=None) -> list[str]:
    """Register every model version of ``registry`` as typed SQL functions; returns their names.

    Idempotent: installing again replaces functions whose model changed and keeps the rest.
    A damaged registry entry (unreadable version record, alias or model files) is skipped with a
    warning naming its path and the fix; everything healthy is installed.
    """
    reg = registry_or_default(registry)
    loaded, damaged = reg.load_all()
    names = []
    for mv, model in loaded:
        kinds = ("predict", "proba") if model.is_classifier else ("predict",)
        for kind in kinds:
            fn = ScoringFunction.for_version(mv.name, mv.version, model, kind)
            register_function(con, fn)
            names.append(fn.name)
    for damage in damaged:
        warnings.warn(f"sparkscore: skipped damaged registry entry {damage}", stacklevel=2)
    return names


# ---------------------------------------------------------------------- queries
class _CallerScope:
    """``con`` whose ``sql`` / ``execute`` run in a frame holding ``namespace`` (DuckDB's replacement
    scan reads the calling frame's locals and globals), every other attribute delegated."""

    def __init__(self, con: duckdb.DuckDBPyConnection, namespace: Mapping[str, Any]) -> None:
        self._con = con
        self._namespace = namespace

    def sql(self, *args: Any, **kwargs: Any):
        return self._call(self._con.sql, args, kwargs)

    def execute(self, *args: Any, **kwargs: Any):
        return self._call(self._con.execute, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def _call(self, method, args: tuple, kwargs: dict):
        scope = {**self._namespace, "_sparkscore_call": (method, args, kwargs)}
        # a fixed expression (no user text): the frame eval creates has ``scope`` as its locals
        return eval("_sparkscore_call[0](*_sparkscore_call[1], **_sparkscore_call[2])", {}, scope)  # noqa: S307


def caller_namespace() -> dict[str, Any]:
    """Globals and locals of the first frame outside sparkscore: the variables a user's
    ``duckdb.sql`` call at that spot would see."""
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).partition(".")[0] == "sparkscore":
        frame = frame.f_back
    return {} if frame is None else {**frame.f_globals, **frame.f_locals}


def explain(query: str, con: duckdb.DuckDBPyConnection, registry=None, disable_rules: Sequence[str] = (),
            namespace: Mapping[str, Any] | None = None):
    """The optimizer's ``Plan`` of a PREDICT query on ``con`` (``str(plan)`` is the EXPLAIN text).

    pandas / Arrow variables of ``namespace`` (default: the caller's) are visible by name, as to
    ``duckdb.sql``.
    """
    from sparkscore.optimizer import plan_query

    scoped = _CallerScope(con, caller_namespace() if namespace is None else namespace)
    reg = registry_or_default(registry)
    return plan_query(query, dialect="duckdb", resolve=resolver(reg), resolve_route=route_resolver(reg),
                      catalog=DuckDBCatalog(scoped), disable_rules=tuple(disable_rules))


def sql(con: duckdb.DuckDBPyConnection, query: str, registry=None, disable_rules: Sequence[str] = (),
        namespace: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyRelation:
    """Run a PREDICT query: plan it, register the functions the plan calls, return the relation.

    pandas / Arrow variables of ``namespace`` (default: the caller's) are visible by name, as to
    ``duckdb.sql``.  DuckDB's refusals become one-line ``QueryError`` s.
    """
    namespace = caller_namespace() if namespace is None else namespace
    from sparkscore.engines.monitoring import expand_drift_duckdb  # DRIFT(...) in FROM: its rows, computed first

    query = expand_drift_duckdb(con, query, registry, namespace)
    plan = explain(query, con, registry, disable_rules, namespace=namespace)
    from sparkscore.optimizer.plan import RoutedUdfSpec  # the optimizer (sqlglot) loads only when a query is planned

    for spec in plan.udfs:  # a route's UDF arms share one function (batch_to_kernels)
        register_function(con, (RoutedFunction if isinstance(spec, RoutedUdfSpec) else ScoringFunction).from_spec(spec))
    try:
        return _CallerScope(con, namespace).sql(plan.sql)
    except duckdb.Error as exc:
        raise QueryError(_duckdb_refusal(plan, exc)) from exc


_OUR_FUNCTIONS = ("PREDICT", "PREDICT_PROBA")


def _duckdb_refusal(plan, exc: duckdb.Error) -> str:
    """DuckDB's error as one line; a near miss of PREDICT (``PREDICTT``) is named as the cause."""
    from sqlglot import exp

    for node in plan.expression.find_all(exp.Anonymous):
        name = str(node.name).upper()
        close = difflib.get_close_matches(name, _OUR_FUNCTIONS, n=1, cutoff=0.8)
        if close and name not in _OUR_FUNCTIONS:
            return (f"unknown function {node.name}(): did you mean {close[0]}(model_ref, ...)? "
                    f"sparkscore provides {' and '.join(_OUR_FUNCTIONS)}")
    text = " ".join(str(exc).split())
    return f"DuckDB cannot run the query: {text[:300]}; fix the SQL"


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
    mv, model = load_ref(registry_or_default(registry), model_ref)
    fn = ScoringFunction.for_version(mv.name, mv.version, model, kind)
    reader = relation.to_arrow_reader(batch_rows)
    schema = reader.schema.append(pa.field(output, ARROW_TYPES[fn.output_type]))
    batches = [pa.RecordBatch.from_arrays([*batch.columns, fn.score(batch)], schema=schema) for batch in reader]
    table = pa.Table.from_batches(batches, schema=schema)
    if view is None:
        return table
    con.register(view, table)
    return con.view(view)
