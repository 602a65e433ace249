"""Rule ``prune_model_inputs``: model projection pushdown, and removal of joins that only fed it.

An input is dropped only when no row's result can depend on it:

* trees: no node splits on it (routing never reads it);
* GLMs: every feature built from it is a one-hot ``INDICATOR`` with zero coefficients (an
  indicator is 0 or 1, never NaN).  A zero coefficient on a *passthrough* feature is kept: a NULL
  or infinite input still turns the margin into NaN (``0 * NaN``), so dropping it would change
  those rows -- the decision says so.  A strict input (``Column.accepts``: a OneHotEncoder with
  ``handle_unknown='error'``) is never dropped: its unknown values must still fail the query.

The call then runs a derived model over the smaller signature (``context.add_model``).  A
``LEFT JOIN`` whose columns are no longer referenced anywhere in the SELECT is removed only when
each left row provably matches at most one row, so the join neither adds nor removes rows:

* the join is ``ON a = b AND ...`` (columns placed by qualifier, or by the catalog when
  unqualified) or ``USING (...)``, every equality between the dimension and another source, and
  both sides of each have the same SQL type (a conversion could match several keys to one value);
* the dimension is a catalog table (not a derived table, and not a CTE, which shadows a table of
  the same name), and its key columns are *proven* unique: ``sources.proven_unique`` asks the
  catalog for a declared PRIMARY KEY / UNIQUE constraint or an exact check the user opted into.
  Estimates (DuckDB's ``approx_unique``, ``Catalog.distinct_count``) are never a proof: one
  duplicated key repeats left rows.  NULL keys never match an equality, so UNIQUE (which allows
  several NULLs) is enough.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sqlglot import exp

from sparkscore.ir import INDICATOR, LEAF, Model
from sparkscore.optimizer.context import Context
from sparkscore.optimizer.derive import feature_map, glm, restrict
from sparkscore.optimizer.nodes import ModelCall
from sparkscore.optimizer.sources import (Source, column_source, conjuncts, enclosing_select, inside, proven_unique,
                                          select_sources, star_of)

NAME = "prune_model_inputs"


def prune_model_inputs(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = list(expression.find_all(ModelCall))
    if not calls:
        context.decide(NAME, False, "no model calls")
        return expression
    fed: dict[int, tuple[exp.Select, set[str]]] = {}   # select -> aliases that fed dropped inputs
    for call in calls:
        model = context.model(call.model_key).model
        used, why = used_inputs(model)
        if used is None or len(used) == len(model.signature):
            context.decide(NAME, False, f"{call.model_key} ({call.call_kind}): {why}")
            continue
        dropped = [i for i in range(len(model.signature)) if i not in used]
        derived = drop_inputs(model, used)
        key = context.add_model(derived, context.model(call.model_key).source).key
        names = ", ".join(model.signature.names[i] for i in dropped)
        select = enclosing_select(call)
        if select is not None:
            aliases = fed.setdefault(id(select), (select, set()))[1]
            aliases.update(c.table.lower() for i in dropped for c in call.inputs[i].find_all(exp.Column) if c.table)
        call.replace(ModelCall.build(key, call.call_kind, [call.inputs[i] for i in used]))
        context.decide(NAME, True, f"{call.model_key} ({call.call_kind}): dropped unused inputs {names} "
                                   f"({len(used)} of {len(model.signature)} kept): {why}")
    for select, aliases in fed.values():
        _remove_joins(select, aliases, context)
    return expression


def used_inputs(model: Model) -> tuple[list[int] | None, str]:
    est = model.estimator
    if model.kind == "ensemble":
        return None, "an unfused ensemble keeps every member's inputs"
    if model.kind == "trees":
        if model.features:
            return None, "trees over a feature map keep every input"
        used = sorted({int(f) for f in est.feature[est.feature != LEAF]})
        if not used and len(model.signature):  # a constant model (e.g. one class) still needs a column:
            used = [0]                          # a zero-argument UDF cannot tell how many rows it scores
        return used, "no tree splits on the others"
    fmap = feature_map(model)
    if fmap is None:
        return None, "chained feature maps keep every input"
    live = ~((fmap.kind == INDICATOR) & (est.coef == 0.0).all(axis=1))
    # a strict input (Column.accepts) stays even with zero coefficients: its unknown values fail the query
    used = sorted({int(s) for s in fmap.source[live]} | {i for i, c in enumerate(model.signature.inputs) if c.is_strict})
    zero = [model.signature.names[int(s)] for s in fmap.source[(est.coef == 0.0).all(axis=1) & ~(fmap.kind == INDICATOR)]]
    note = (f"zero coefficients on {', '.join(zero)} kept: a NULL there makes the GLM NaN" if zero
            else "every input feeds a non-zero coefficient")
    if len(used) < len(model.signature):
        note = "their one-hot features have zero coefficients" + (f"; {note}" if zero else "")
    return used, note


def drop_inputs(model: Model, used: list[int]) -> Model:
    columns = [model.signature.inputs[i] for i in used]
    est = model.estimator
    if model.kind == "trees":
        position = np.full(len(model.signature), -1, dtype=np.int32)
        position[used] = np.arange(len(used))
        feature = np.where(est.feature == LEAF, LEAF, position[np.maximum(est.feature, 0)])
        signature = dataclasses.replace(model.signature, inputs=tuple(columns))
        return dataclasses.replace(model, estimator=dataclasses.replace(est, feature=feature, n_features=len(used)),
                                   signature=signature, metadata={**model.metadata, "derived": "prune_model_inputs"})
    fmap = feature_map(model)
    live = [j for j in range(fmap.n_outputs) if int(fmap.source[j]) in used
            and not (fmap.kind[j] == INDICATOR and (est.coef[j] == 0.0).all())]
    return glm(model, columns, restrict(fmap, live, used), est.coef[live], est.intercept, est.link,
               note="prune_model_inputs")


def _remove_joins(select: exp.Select, aliases: set[str], context: Context) -> None:
    sources = select_sources(select, context.dialect)
    star = star_of(select, context.dialect)
    if star is not None:
        if any(source.alias.lower() in aliases for source in sources[1:]):
            context.decide(NAME, False, f"kept every JOIN: {star} reads whatever columns the sources have")
        return
    for source in sources[1:]:
        if source.alias.lower() not in aliases:
            continue
        removable, reason = _removable(select, source, sources, context)
        if removable:
            source.join.pop()
            context.decide(NAME, True, f"removed LEFT JOIN {source.alias}: it only fed dropped inputs and its "
                                       f"join key is unique ({reason})")
        else:
            context.decide(NAME, False, f"kept JOIN {source.alias}: {reason}")


def _removable(select: exp.Select, dim: Source, sources: list[Source], context: Context) -> tuple[bool, str]:
    """(True, the uniqueness proof) or (False, why the join stays)."""
    reason = _kept(select, dim, sources, context)
    if reason is not None:
        return False, reason
    pairs, _ = _key_pairs(dim.join, dim, sources, context)
    keys = tuple(mine.name for mine, _ in pairs)
    proof = proven_unique(context, dim.table, keys)
    if proof is None:
        return False, (f"{dim.alias}({', '.join(keys)}) is not proven unique (no PRIMARY KEY / UNIQUE constraint "
                       f"on it, and no exact check opted into; estimated statistics are never a proof)")
    return True, proof


def _kept(select: exp.Select, dim: Source, sources: list[Source], context: Context) -> str | None:
    join = dim.join
    if (join.side or "").upper() != "LEFT" or join.kind.upper() not in ("", "OUTER"):
        return "not a LEFT JOIN (an inner join can drop or repeat rows)"
    on = join.args.get("on")
    outputs = {p.alias.lower() for p in select.expressions if p.alias}
    for column in select.find_all(exp.Column):
        if inside(column, join) or (not column.table and column.name.lower() in outputs):
            continue
        if column.table.lower() == dim.alias.lower() or (not column.table and column_source(column, sources, context) in (dim, None)):
            return f"{column.sql(dialect=context.dialect)} still reads it"
    pairs, reason = _key_pairs(join, dim, sources, context)
    if reason is not None:
        return reason
    if dim.table is None:
        return "a derived table: uniqueness of its key cannot be proven"
    for mine, other in pairs:
        types = [_column_type(c, sources, context) for c in (mine, other)]
        if None in types or types[0] != types[1]:
            return (f"{mine.sql(dialect=context.dialect)} = {other.sql(dialect=context.dialect)} compares "
                    f"{types[0] or 'unknown'} with {types[1] or 'unknown'}: a conversion could match one row to "
                    f"several keys")
    return None


def _key_pairs(join: exp.Join, dim: Source, sources: list[Source], context: Context):
    """([(dimension column, other column)], None) for ``ON a = b AND ...`` / ``USING (...)``, else
    ([], reason).  Unqualified ON columns are placed by the catalog (``column_source``)."""
    using = join.args.get("using")
    if using:
        if len(sources) != 2:
            return [], "USING over more than two sources: which side each name reads is not known here"
        other = sources[0] if sources[1] is dim else sources[1]
        return [(exp.column(i.name, table=dim.alias), exp.column(i.name, table=other.alias)) for i in using], None
    on = join.args.get("on")
    if on is None:
        return [], "a join without ON / USING"
    pairs = []
    for c in conjuncts(on):
        if not isinstance(c, exp.EQ) or not all(isinstance(s, exp.Column) for s in (c.this, c.expression)):
            return [], "join condition is not an equality of columns"
        owners = [column_source(s, sources, context) for s in (c.this, c.expression)]
        mine = [s for s, o in zip((c.this, c.expression), owners) if o is dim]
        if len(mine) != 1 or None in owners:
            return [], f"{c.sql(dialect=context.dialect)} is not a key equality between {dim.alias} and another source"
        pairs.append((mine[0], c.expression if mine[0] is c.this else c.this))
    return pairs, None


def _column_type(column: exp.Column, sources: list[Source], context: Context) -> str | None:
    source = column_source(column, sources, context)
    columns = context.catalog.columns(source.table) if source is not None and source.table else None
    return next((str(t).upper() for n, t in columns or () if str(n).lower() == column.name.lower()), None)
