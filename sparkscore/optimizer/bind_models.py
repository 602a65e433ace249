"""Rule ``bind_models``: resolve model refs, pin versions, bind and type-check arguments.

Every ``PREDICT`` / ``PREDICT_PROBA`` becomes a :class:`ModelCall` whose inputs are in signature
order.  ``*`` and ``t.*`` bind *by name* against the columns of the query scope's sources (engine
catalog for tables, files and table functions such as ``read_parquet(...)``; projections for CTEs
and subqueries); other arguments bind by position.  Bound columns are qualified with their source's
alias, except those of an unaliased file or table function, which have no name SQL can write.
Each distinct ref string is resolved once per query, so one query never mixes versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from sparkscore.errors import InvalidModelNameError, QueryError, SignatureError
from sparkscore.ir import Column
from sparkscore.ir.inputs import NAME_RULES
from sparkscore.optimizer.context import BoundModel, Context, ResolvedModel
from sparkscore.optimizer.nodes import ModelCall, ScorePredict
from sparkscore.optimizer.sources import TEXT_TYPES, catalog_name, qualifier

NAME = "bind_models"

_NUMERIC_DTYPES = ("double", "float", "bigint", "integer", "boolean")


@dataclass(frozen=True)
class SourceColumn:
    source: str              # alias of the FROM/JOIN source in the calling scope
    name: str                # column name as the source spells it
    sql_type: str | None
    qualifier: str | None    # sources.qualifier: None for unaliased files / table functions


def bind_models(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = list(expression.find_all(ScorePredict))
    if not calls:
        context.decide(NAME, False, "no PREDICT / PREDICT_PROBA calls in the query")
        return expression
    scopes = {id(scope.expression): scope for scope in traverse_scope(expression)}
    for call in calls:
        bound = _resolve(call, context)
        scope = _enclosing_scope(call, scopes)
        inputs, how = _bind_arguments(call, bound, scope, context)
        call.replace(ModelCall.build(bound.key, call.kind, inputs))
        context.decide(NAME, True, f"{call.kind} {bound.key} (sha256 {bound.source.sha256[:12]}): "
                                   f"{len(inputs)} inputs bound {how}")
    return expression


# ---------------------------------------------------------------------------- refs
def _resolve(call: ScorePredict, context: Context) -> BoundModel:
    ref = call.this
    fn = call.sql_name()
    if not (isinstance(ref, exp.Literal) and ref.is_string):
        raise InvalidModelNameError(
            f"{fn}: the model ref must be a string literal such as 'churn@prod', got {ref.sql()}; quote the model name"
        )
    text = ref.name
    if call.kind == "arm":
        raise QueryError(f"PREDICT_ARM('{text}', ...): '{text}' is not a route; PREDICT_ARM names a route's arm")
    resolved = context.resolved.get(text)
    if resolved is None:
        resolved = context.resolve(text)
        if not isinstance(resolved, ResolvedModel):
            raise QueryError(f"{fn}: resolving {text!r} returned {type(resolved).__name__}, not a ResolvedModel; fix the engine's resolver")
        context.resolved[text] = resolved
    if call.kind == "proba" and not resolved.model.is_classifier:
        raise SignatureError(f"PREDICT_PROBA: model '{resolved.ref}' is a regressor; use PREDICT for it")
    if resolved.model.kind == "ensemble":
        return _bind_ensemble(resolved, context)
    return context.add_model(resolved.model, resolved)


def _bind_ensemble(resolved: ResolvedModel, context: Context) -> BoundModel:
    """An ensemble binds as its fused GLM / tree ensemble where fusing is exact, so the later rules
    (pruning, factorizing, stacking, inlining) treat it as that one model; otherwise as itself, one
    UDF whose kernel runs every member on the same batch.  EXPLAIN says which and why."""
    from sparkscore.ir.ensemble import fuse

    ens = resolved.model.estimator
    fused, why = fuse(resolved.model)
    members = ", ".join(r.ref for r in ens.refs)
    if fused is not None:
        bound = context.add_model(fused, resolved)
        context.decide(NAME, True, f"ensemble {resolved.ref} ({ens.combiner} of {members}): fused: {why}")
        return bound
    context.decide(NAME, False, f"ensemble {resolved.ref} ({ens.combiner} of {members}): not fused ({why}); "
                                "its members run in one batched kernel call")
    return context.add_model(resolved.model, resolved)


# ---------------------------------------------------------------------------- scopes
def _enclosing_scope(node: exp.Expr, scopes: dict[int, Scope]) -> Scope | None:
    parent = node.parent
    while parent is not None:
        scope = scopes.get(id(parent))
        if scope is not None:
            return scope
        parent = parent.parent
    return None


def source_columns(source, context: Context) -> list[tuple[str, str | None]] | None:
    """(name, SQL type or None) of a table or derived source, or None when unknown."""
    if isinstance(source, exp.Table):
        name = catalog_name(source, context.dialect)
        cols = None if name is None else context.catalog.columns(name)
        return None if cols is None else [(str(n), str(t) if t is not None else None) for n, t in cols]
    if isinstance(source, Scope):
        # a UNION / INTERSECT / EXCEPT has the columns of its first branch: read them in that
        # branch's own scope (the set operation's scope has no FROM sources of its own)
        while isinstance(source.expression, exp.SetOperation):
            if not source.set_operation_scopes:
                return None
            source = source.set_operation_scopes[0]
        query = source.expression
        if not isinstance(query, exp.Select):
            return None
        out: list[tuple[str, str | None]] = []
        for projection in query.expressions:
            if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and projection.is_star):
                table = projection.table if isinstance(projection, exp.Column) else ""
                expanded = _scope_columns(source, context, only=table or None)
                if expanded is None:
                    return None
                out.extend((c.name, c.sql_type) for c in expanded)
            else:
                name = projection.alias_or_name
                if not name:
                    return None
                inner = projection.unalias()
                out.append((name, _expression_type(inner, source, context)))
        return out
    return None


def _scope_columns(scope: Scope, context: Context, only: str | None = None) -> list[SourceColumn] | None:
    """Columns ``*`` (or ``only.*``) expands to in ``scope``; None if any source is unknown."""
    out: list[SourceColumn] = []
    sources = scope.selected_sources
    if only is not None:
        key = next((k for k in sources if k.lower() == only.lower()), None)
        if key is None:
            raise QueryError(f"{only}.* refers to no table in this SELECT; use one of {', '.join(sources) or 'its FROM tables'}")
        sources = {key: sources[key]}
    for alias, (node, source) in sources.items():
        cols = source_columns(source, context)
        if cols is None:
            return None
        label = alias or catalog_name(node, context.dialect) or "subquery"  # a bare table function has no alias
        out.extend(SourceColumn(label, name, sql_type, qualifier(node, alias)) for name, sql_type in cols)
    return out


def _expression_type(node: exp.Expr, scope: Scope | None, context: Context) -> str | None:
    if isinstance(node, exp.Cast):
        return node.to.sql(dialect=context.dialect)
    if isinstance(node, exp.Literal):
        return "VARCHAR" if node.is_string else "DOUBLE"
    if isinstance(node, exp.Column) and scope is not None and not node.is_star:
        candidates = _scope_columns(scope, context, only=node.table or None) if _has_source(scope, node.table) else None
        if candidates is None:
            return None
        matches = [c for c in candidates if c.name.lower() == node.name.lower()]
        return matches[0].sql_type if len(matches) == 1 else None
    return None


def _has_source(scope: Scope, table: str) -> bool:
    return not table or any(k.lower() == table.lower() for k in scope.selected_sources)


# ---------------------------------------------------------------------------- arguments
def _bind_arguments(call: ScorePredict, bound: BoundModel, scope: Scope | None,
                    context: Context) -> tuple[list[exp.Expr], str]:
    args = list(call.expressions)
    stars = [a for a in args if isinstance(a, exp.Star) or (isinstance(a, exp.Column) and a.is_star)]
    signature = bound.model.signature
    fn = call.sql_name()
    if stars and len(stars) != len(args):
        raise QueryError(f"{fn}('{bound.source.ref}', ...): mix of * and positional arguments; pass either t.* or every column in order")
    if stars:
        return _bind_by_name(stars, bound, scope, context, fn)
    if len(args) != len(signature):
        raise SignatureError(
            f"{fn}: model '{bound.source.ref}' takes {len(signature)} inputs "
            f"({_names(signature.names)}), got {len(args)} arguments; pass them in this order or use *"
        )
    for col, arg in zip(signature.inputs, args):
        _check_type(col, arg, _expression_type(arg, scope, context), bound, fn, context.dialect)
    return args, "by position"


def _bind_by_name(stars: list[exp.Expr], bound: BoundModel, scope: Scope | None, context: Context,
                  fn: str) -> tuple[list[exp.Expr], str]:
    if scope is None:
        raise QueryError(f"{fn}('{bound.source.ref}', *) needs a FROM clause to bind columns by name")
    available: list[SourceColumn] | None = []
    for star in stars:
        table = star.table if isinstance(star, exp.Column) else None
        cols = _scope_columns(scope, context, only=table or None)
        available = None if cols is None or available is None else available + cols
    if available is None:
        # The engine does not know a source's columns: bind unqualified names and let it check.
        return [exp.column(c.name) for c in bound.model.signature.inputs], "by name (unchecked: unknown source schema)"
    by_name: dict[str, list[SourceColumn]] = {}
    for c in available:
        by_name.setdefault(c.name.lower(), []).append(c)
    rule = NAME_RULES.get(bound.model.metadata.get("feature_name_rule"))
    renamed: dict[str, list[SourceColumn]] = {}
    for c in available if rule else ():  # e.g. LightGBM fitted `mean radius` as `mean_radius`
        renamed.setdefault(rule(c.name).lower(), []).append(c)
    inputs: list[exp.Expr] = []
    for col in bound.model.signature.inputs:
        found = {(c.source, c.name): c for c in by_name.get(col.name.lower(), []) or renamed.get(col.name.lower(), [])}
        if not found:
            raise SignatureError(
                f"{fn}: model '{bound.source.ref}' needs column '{col.name}', which no table in scope "
                f"({', '.join(sorted({c.source for c in available})) or 'none'}) has; add or alias that column"
            )
        if len(found) > 1 and col.name.lower() in _using_columns(scope):
            # JOIN ... USING (col): one merged column, referenced unqualified like the user would
            inputs.append(exp.column(next(iter(found.values())).name))
            continue
        if len(found) > 1:
            raise SignatureError(
                f"{fn}: column '{col.name}' for model '{bound.source.ref}' is in "
                f"{' and '.join(s for s, _ in found)}; alias the sources and use t.* for one, or pass columns by position"
            )
        source_col = next(iter(found.values()))
        bound_column = exp.column(source_col.name, table=source_col.qualifier)
        _check_type(col, exp.column(source_col.name, table=source_col.qualifier, quoted=True), source_col.sql_type,
                    bound, fn, context.dialect)
        # unaliased files / table functions: unqualified, which binds since no other source has the name
        inputs.append(bound_column)
    sources = sorted({c.source for c in available})
    return inputs, f"by name from {', '.join(sources)}"


def _using_columns(scope: Scope) -> set[str]:
    """Lower-cased names merged by ``JOIN ... USING (...)`` in this SELECT."""
    names: set[str] = set()
    for join in scope.expression.args.get("joins") or ():
        for ident in join.args.get("using") or ():
            names.add(ident.name.lower())
    return names


def _check_type(col: Column, arg: exp.Expr, sql_type: str | None, bound: BoundModel, fn: str, dialect) -> None:
    check_column_type(col, arg, sql_type, bound.source.ref, fn, dialect)


def check_column_type(col: Column, arg: exp.Expr | str, sql_type: str | None, ref: str, fn: str,
                      dialect="duckdb") -> None:
    """Refuse an argument whose SQL type cannot feed ``col``; the one rule of ``sql`` and ``score``.

    Text never binds to a numeric input (no implicit parsing of numeric strings).  ``arg`` is the
    argument expression, or a column name (quoted here); the suggested fix is generated by sqlglot,
    so it is valid SQL for ``dialect`` whatever the name holds (``CAST("mean radius" AS DOUBLE)``).
    """
    if sql_type is None:
        return
    dtype = _data_type(sql_type)
    if dtype is None:  # an engine type sqlglot cannot parse: the engine will check it
        return
    node = exp.column(arg, quoted=True) if isinstance(arg, str) else arg
    arg_sql = node.sql(dialect=dialect)
    wants_text = bool(col.categories) and isinstance(col.categories[0], str)
    numeric = dtype.is_type(*exp.DataType.NUMERIC_TYPES, exp.DataType.Type.BOOLEAN)
    text = dtype.is_type(*TEXT_TYPES)
    if wants_text and not text:
        raise SignatureError(
            f"{fn}: model '{ref}' input '{col.name}' is categorical text, but {arg_sql} is {sql_type}; "
            f"pass a VARCHAR (or ENUM) column"
        )
    if not wants_text and col.dtype in _NUMERIC_DTYPES and not numeric:
        fix = exp.cast(node.copy(), exp.DataType.build("DOUBLE")).sql(dialect=dialect)
        raise SignatureError(
            f"{fn}: model '{ref}' input '{col.name}' must be numeric ({col.dtype}), but {arg_sql} is "
            f"{sql_type}; cast it, e.g. {fix}"
        )


@lru_cache(maxsize=256)
def _data_type(sql_type: str) -> exp.DataType | None:
    """Parsed once per type string: parsing dominated planning of wide models."""
    try:
        return exp.DataType.build(sql_type)
    except (SqlglotError, ValueError):  # an engine type sqlglot cannot parse (anything else is a bug: let it raise)
        return None


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
