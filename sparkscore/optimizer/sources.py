"""Which FROM / JOIN source of a SELECT a column comes from, for the model-aware rewrite rules.

``prune_model_inputs``, ``prune_by_predicates``, ``factorize_linear`` and ``stack_linear`` all ask
the same questions of the SELECT a model call sits in: what its sources are (alias -> table), which
source an argument column reads, and what the WHERE / inner-join predicates say.  Unknown answers
are ``None`` so that a rule declines instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sparkscore.optimizer.context import Context


#: Characters that make an unaliased FROM name a file path (DuckDB's replacement scans, Spark's
#: ``parquet.`/x```) rather than a table name columns could be qualified with.
_PATH_CHARS = frozenset("./\\*:")


#: SQL types a text categorical input accepts: DuckDB's ENUM (what a pandas categorical becomes)
#: compares with string literals and converts to a VARCHAR function parameter as its text.
TEXT_TYPES = (*exp.DataType.TEXT_TYPES, exp.DataType.Type.ENUM)


@dataclass(frozen=True)
class Source:
    alias: str                 # sqlglot's name for it (alias, else table name; '' for a bare table function)
    node: exp.Expr             # the exp.Table / exp.Subquery in the FROM or JOIN clause
    join: exp.Join | None      # None for the FROM source
    table: str | None          # catalog_name(node): what the engine's catalog knows it by

    @property
    def qualifier(self) -> str | None:
        return qualifier(self.node, self.alias)


def catalog_name(node: exp.Expr, dialect: str) -> str | None:
    """What the engine's catalog knows a FROM / JOIN source by, None for subqueries.

    ``db.name`` of a table or a file path (``'t.parquet'``), the SQL of a table function
    (``read_parquet('t.parquet')``; the catalog describes its result).
    """
    if not isinstance(node, exp.Table):
        return None
    if isinstance(node.this, exp.Identifier):
        return ".".join(part.name for part in node.parts)
    if isinstance(node.this, exp.Func):
        return node.this.sql(dialect=dialect)
    return None


def qualifier(node: exp.Expr, name: str) -> str | None:
    """The name a column reference may be qualified with for a FROM / JOIN source, or None.

    ``name`` is the source's alias, else its table name.  An unaliased file path or table function
    has none we can write: the engine names it itself (DuckDB calls ``'t.parquet'`` ``t`` and
    ``read_parquet(...)`` ``read_parquet``; ``"t.parquet".a`` does not bind), so its columns are
    referenced unqualified.
    """
    if isinstance(node, exp.Table) and not node.alias and not (
            isinstance(node.this, exp.Identifier) and not _PATH_CHARS & set(node.name)):
        return None
    return name or None


def enclosing_select(node: exp.Expr) -> exp.Select | None:
    parent = node.parent
    while parent is not None and not isinstance(parent, exp.Select):
        if isinstance(parent, (exp.Subquery, exp.Query)) and not isinstance(parent, exp.Select):
            return None
        parent = parent.parent
    return parent


def select_sources(select: exp.Select, dialect: str) -> list[Source]:
    from_ = select.args.get("from_")
    if from_ is None:
        return []
    pairs = [(from_.this, None)] + [(join.this, join) for join in select.args.get("joins") or ()]
    ctes = visible_ctes(select)
    return [Source(node.alias_or_name, node, join,
                   None if isinstance(node, exp.Table) and not node.db and node.name.lower() in ctes
                   else catalog_name(node, dialect)) for node, join in pairs]


def visible_ctes(node: exp.Expr) -> set[str]:
    """Lower-cased names of the CTEs a FROM name in ``node`` may refer to: a CTE shadows the catalog
    table of the same name (``WITH t AS (SELECT * FROM t UNION ALL ...)``), so its rows, columns,
    keys and statistics are not the table's."""
    names: set[str] = set()
    while node is not None:
        with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
        if with_ is not None:
            names.update(cte.alias_or_name.lower() for cte in with_.expressions)
        node = node.parent
    return names


def column_source(column: exp.Expr, sources: list[Source], context: Context) -> Source | None:
    """The source ``column`` reads (qualified by alias, or the one catalog table that has it)."""
    if not isinstance(column, exp.Column) or column.is_star:
        return None
    if column.table:
        return next((s for s in sources if s.alias.lower() == column.table.lower()), None)
    owners = []
    for source in sources:
        columns = context.catalog.columns(source.table) if source.table else None
        if columns is None:
            return None
        if any(name.lower() == column.name.lower() for name, _ in columns):
            owners.append(source)
    return owners[0] if len(owners) == 1 else None


def column_key(column: exp.Expr, sources: list[Source], context: Context) -> tuple[str, str] | None:
    """(source alias, lower-case column name): equal keys read the same value in one row."""
    source = column_source(column, sources, context)
    return None if source is None else (source.alias.lower(), column.name.lower())


def conjuncts(condition: exp.Expr | None) -> list[exp.Expr]:
    if condition is None:
        return []
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        return conjuncts(condition.this) + conjuncts(condition.expression)
    return [condition]


def row_predicates(select: exp.Select) -> list[exp.Expr]:
    """Predicates every row of ``select`` satisfies: top-level WHERE and INNER JOIN ON conjuncts."""
    where = select.args.get("where")
    out = conjuncts(where.this if where is not None else None)
    for join in select.args.get("joins") or ():
        if not join.side and join.kind in ("", "INNER"):
            out += conjuncts(join.args.get("on"))
    return out


def star_of(select: exp.Select, dialect: str) -> str | None:
    """SQL of a ``*`` / ``t.*`` / ``COLUMNS(...)`` of ``select`` itself (not of its FROM / JOIN
    sources, CTEs or nested queries, whose own stars see their own FROM), other than ``COUNT(*)``:
    something whose columns depend on what the sources provide, so a rule that adds or removes
    source columns must leave such a SELECT alone.  None when there is none."""
    sources = [s.node for s in select_sources(select, dialect)]
    for node in select.find_all(exp.Star, exp.Column, exp.Columns):
        if isinstance(node, exp.Column) and not node.is_star:
            continue
        if isinstance(node, exp.Star) and isinstance(node.parent, (exp.Count, exp.Column, exp.Columns)):
            continue
        if any(inside(node, n) for n in sources) or node.find_ancestor(exp.Select) is not select:
            continue
        if any(node is p for p in select.expressions):
            return f"SELECT {node.sql(dialect=dialect)}"
        return (node.parent if isinstance(node.parent, exp.Func) and not isinstance(node, exp.Columns)
                else node).sql(dialect=dialect)
    return None


def proven_unique(context: Context, table: str | None, columns: tuple[str, ...]) -> str | None:
    """How the engine proves ``columns`` unique (among rows with no NULL key) in ``table``, or None.

    Only a proof counts: a declared PRIMARY KEY / UNIQUE constraint, or an exact check the user
    opted into (the catalog's ``proven_unique``).  Estimated statistics (DuckDB's ``approx_unique``,
    ``Catalog.distinct_count``) may steer cost but never a rewrite's correctness.  A catalog without
    ``proven_unique`` proves nothing.
    """
    check = getattr(context.catalog, "proven_unique", None)
    if check is None or table is None or not columns:
        return None
    return check(table, tuple(columns))


def inside(node: exp.Expr, ancestor: exp.Expr) -> bool:
    """Whether ``node`` is ``ancestor`` or below it."""
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False
