"""What planning hands to an engine: the rewritten query, the UDFs it calls, and why."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sparkscore.ir import Model
from sparkscore.optimizer.context import Decision, ResolvedModel
from sparkscore.optimizer.explain import explain_text

OUTPUT_TYPES = ("DOUBLE", "DOUBLE[]", "VARCHAR", "BIGINT")


@dataclass(frozen=True, eq=False)
class UdfSpec:
    """One engine function the rewritten SQL calls; the engine registers it before running."""

    name: str
    kind: str
    model: Model
    source: ResolvedModel
    inputs: tuple[str, ...]
    output_type: str
    #: the SQL call passes a BOOLEAN before the inputs and the function scores only the rows where
    #: it is TRUE (NULL elsewhere): a route arm on Spark, which evaluates UDFs outside CASE
    gated: bool = False


@dataclass(frozen=True, eq=False)
class RoutedUdfSpec:
    """One engine function for the arms of a route that are left as UDFs (DuckDB).

    DuckDB hands an Arrow UDF one ~2,048-row chunk at a time; a CASE that splits each chunk between
    two arm UDFs pays the per-call cost twice on half a chunk each (bench/results/routes.md).  This
    function is called once per chunk instead: its first argument is the arm index (0-based into
    ``arms``; NULL for rows that go to no UDF arm -> NULL), the rest are the union of the arms'
    inputs.  It splits the chunk by arm and runs each arm's kernel on its own rows only, so each
    row is still scored by its own arm alone (the arms' own functions count the rows they score).
    """

    name: str
    route: str                                 # the route ref, e.g. 'churn@ab'
    kind: str
    arms: tuple[UdfSpec, ...]                  # each arm's function, as it would be called alone
    positions: tuple[tuple[int, ...], ...]     # per arm: which of the shared inputs are its model inputs, in order
    input_types: tuple[str, ...]               # SQL type of each shared input ("DOUBLE" | "VARCHAR")
    inputs: tuple[str, ...]                    # for EXPLAIN: "arm", then one name per shared input
    output_type: str


@dataclass(frozen=True, eq=False)
class Plan:
    expression: exp.Expr
    sql: str
    udfs: tuple[UdfSpec | RoutedUdfSpec, ...]
    decisions: tuple[Decision, ...]
    models: tuple[ResolvedModel, ...]
    dialect: str = "duckdb"

    def __str__(self) -> str:
        return explain_text(self)
