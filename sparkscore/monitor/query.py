"""The monitoring SQL, built as sqlglot ASTs for the engine's dialect (never string concatenation).

Two queries over the user's data:

* :func:`scored_query` -- the profiled columns in a fixed order: every model input (numeric ones
  as DOUBLE), the model's own ``PREDICT(ref, *)`` output (so the prediction comes from the engine in
  the same scan, inlined or as a UDF by the optimizer) and the label.  Columns are aliased
  ``c0, c1, ...`` so no user name needs to be a valid alias.
* :func:`aggregate_query` -- ONE aggregate over that projection (which the engine plans once, PREDICT
  included, as a view that the sketch stream and the aggregate both read): row count, per numeric column the
  NULL / NaN / ±inf / finite counts, min / max / mean / population variance of the finite values
  and the cumulative histogram ``COUNT(x < e_i)`` on the stored edges; per categorical column the
  count of each stored category.  Slices become ``GROUP BY`` keys of the same query.

Comparisons are chosen so NaN and NULL never land in a bin in either engine: both order NaN above
every number, so ``x < e`` is false for NaN, and a NULL comparison is not true.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from sqlglot import exp

from sparkscore.optimizer.nodes import ScorePredict, number

SOURCE = "__ss_batch"
SCORED = "__ss_scored"


@dataclass(frozen=True)
class AggColumn:
    """One profiled column as the aggregate sees it: its alias in the scored query and what to count."""

    alias: str
    kind: str                          # numeric | categorical
    edges: tuple[float, ...] = ()      # interior histogram edges (numeric)
    categories: tuple[Any, ...] = ()   # stored categories (categorical)


def scored_query(source: exp.Expression, ref: str, inputs: Sequence[tuple[str, str]], label: str | None,
                 slices: Sequence[exp.Expression] = ()) -> exp.Select:
    """``SELECT <inputs as c0..>, PREDICT(ref, *) AS cN [, label AS cL] [, slice keys s0..] FROM (source)``.

    ``inputs``: (column name, kind) in signature order; numeric inputs are cast to DOUBLE.
    """
    projections: list[exp.Expression] = []
    for i, (name, kind) in enumerate(inputs):
        column = exp.column(name, table=SOURCE, quoted=True)
        value = exp.cast(column, exp.DataType.Type.DOUBLE) if kind == "numeric" else column
        projections.append(exp.alias_(value, f"c{i}"))
    projections.append(exp.alias_(ScorePredict(this=exp.Literal.string(ref), expressions=[exp.Star()]),
                                  f"c{len(inputs)}"))
    if label is not None:
        projections.append(exp.alias_(exp.column(label, table=SOURCE, quoted=True), f"c{len(inputs) + 1}"))
    for i, key in enumerate(slices):
        projections.append(exp.alias_(key, f"s{i}"))
    return exp.select(*projections).from_(exp.Subquery(this=source, alias=exp.TableAlias(this=exp.to_identifier(SOURCE))))


def stream_query(scored: exp.Expression, n_columns: int) -> exp.Select:
    """The scored columns only (what the sketches read), in order."""
    return exp.select(*[exp.column(f"c{i}", table=SCORED) for i in range(n_columns)]).from_(_scored_source(scored))


def _scored_source(scored: exp.Expression) -> exp.Expression:
    """The scored projection as ``__ss_scored``: a view the engine planned once (a table), or the SELECT itself."""
    if isinstance(scored, exp.Table):
        return exp.Table(this=scored.this.copy(), alias=exp.TableAlias(this=exp.to_identifier(SCORED)))
    return exp.Subquery(this=scored, alias=exp.TableAlias(this=exp.to_identifier(SCORED)))


def _count_if(condition: exp.Expression) -> exp.Expression:
    """``SUM(CASE WHEN cond THEN 1 ELSE 0 END)``: portable across DuckDB and Spark (NULL -> 0)."""
    return exp.Sum(this=exp.Case(ifs=[exp.If(this=condition, true=exp.Literal.number(1))],
                                 default=exp.Literal.number(0)))


def _literal(value: Any) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return number(float(value))
    return exp.Literal.string(str(value))


def aggregate_query(scored: exp.Expression, columns: Sequence[AggColumn], n_slices: int = 0) -> tuple[exp.Select, list[str]]:
    """The ONE aggregate query and the names of its result columns, in order."""
    names: list[str] = []
    select: list[exp.Expression] = []

    def add(name: str, expression: exp.Expression) -> None:
        names.append(name)
        select.append(exp.alias_(expression, f"a{len(names) - 1}"))

    for i in range(n_slices):
        add(f"slice:{i}", exp.column(f"s{i}", table=SCORED))
    add("rows", exp.Count(this=exp.Star()))
    inf, ninf = number(math.inf), number(-math.inf)
    for col in columns:
        x = exp.column(col.alias, table=SCORED)
        add(f"{col.alias}:nonnull", exp.Count(this=x.copy()))
        if col.kind == "numeric":
            finite = exp.and_(exp.GT(this=x.copy(), expression=ninf.copy()), exp.LT(this=x.copy(), expression=inf.copy()))
            only_finite = exp.Case(ifs=[exp.If(this=finite, true=x.copy())])
            add(f"{col.alias}:nans", _count_if(exp.IsNan(this=x.copy())))
            add(f"{col.alias}:pos_inf", _count_if(exp.EQ(this=x.copy(), expression=inf.copy())))
            add(f"{col.alias}:neg_inf", _count_if(exp.EQ(this=x.copy(), expression=ninf.copy())))
            add(f"{col.alias}:finite", exp.Count(this=only_finite.copy()))
            add(f"{col.alias}:min", exp.Min(this=only_finite.copy()))
            add(f"{col.alias}:max", exp.Max(this=only_finite.copy()))
            add(f"{col.alias}:mean", exp.Avg(this=only_finite.copy()))
            add(f"{col.alias}:var", exp.VariancePop(this=only_finite.copy()))
            for j, edge in enumerate(col.edges):
                add(f"{col.alias}:below:{j}", _count_if(exp.LT(this=x.copy(), expression=number(edge))))
        else:
            for j, value in enumerate(col.categories):
                add(f"{col.alias}:cat:{j}", _count_if(exp.EQ(this=x.copy(), expression=_literal(value))))
    query = exp.select(*select).from_(_scored_source(scored))
    if n_slices:
        query = query.group_by(*[exp.column(f"s{i}", table=SCORED) for i in range(n_slices)])
    return query, names
