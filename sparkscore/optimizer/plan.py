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
class Plan:
    expression: exp.Expr
    sql: str
    udfs: tuple[UdfSpec, ...]
    decisions: tuple[Decision, ...]
    models: tuple[ResolvedModel, ...]
    dialect: str = "duckdb"

    def __str__(self) -> str:
        return explain_text(self)
