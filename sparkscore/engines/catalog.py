"""Schema and cheap statistics of what one DuckDB connection can see, for the optimizer.

Implements ``sparkscore.optimizer.Catalog``.  Every statistic comes from metadata DuckDB already
keeps (``duckdb_tables().estimated_size``, column ``stats()``, parquet footers), never from a scan,
so planning a query stays cheap however big its tables are.  Unknown answers are ``None``.
"""

from __future__ import annotations

import duckdb
import sqlglot
from sqlglot import exp

_DIALECT = "duckdb"


class DuckDBCatalog:
    """Tables, views (incl. registered pandas / Arrow objects), parquet files and table functions
    (``read_parquet(...)``, described without reading rows) of ``con``."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._memo: dict[tuple, object] = {}

    def columns(self, table: str) -> list[tuple[str, str]] | None:
        return self._cached(("columns", table), lambda: self._columns(table))

    def row_count(self, table: str) -> int | None:
        return self._cached(("rows", table), lambda: self._row_count(table))

    def distinct_count(self, table: str, column: str) -> int | None:
        return self._cached(("distinct", table, column), lambda: self._distinct_count(table, column))

    def proven_unique(self, table: str, columns: tuple[str, ...]) -> str | None:
        """How ``columns`` are proven unique in ``table`` (NULL keys aside), or None: a declared
        PRIMARY KEY / UNIQUE constraint on a subset of them, or -- only after
        ``SET VARIABLE sparkscore_verify_unique_keys = true`` -- an exact GROUP BY check (a scan,
        run at planning time).  ``approx_unique`` is never a proof (optimizer rules rely on this)."""
        return self._cached(("unique", table, tuple(columns)), lambda: self._proven_unique(table, tuple(columns)))

    # ------------------------------------------------------------------ internals
    def _proven_unique(self, table: str, columns: tuple[str, ...]) -> str | None:
        relation = self._relation(table)
        if relation is None or not columns:
            return None
        # the one relation of that name in scope (a temp table or view could shadow main.<name>)
        found = self._con.execute(
            "SELECT database_name, schema_name FROM (SELECT database_name, schema_name, table_name FROM duckdb_tables() "
            "UNION ALL SELECT database_name, schema_name, view_name FROM duckdb_views()) "
            "WHERE lower(table_name) = lower(?) AND lower(schema_name) = lower(coalesce(?, schema_name)) "
            "AND lower(database_name) = lower(coalesce(?, database_name))",
            [relation.name, relation.db or None, relation.catalog or None]).fetchall()
        if len(found) != 1:
            return None
        (database, schema), = found
        wanted = {c.lower() for c in columns}
        for kind, names in self._con.execute(
                "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() WHERE database_name = ? "
                "AND schema_name = ? AND lower(table_name) = lower(?) AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
                [database, schema, relation.name]).fetchall():
            if names and {n.lower() for n in names} <= wanted:
                return f"{kind} ({', '.join(names)})"
        try:
            (verify,), = self._con.execute("SELECT getvariable('sparkscore_verify_unique_keys')").fetchall()
        except duckdb.Error:
            verify = None
        if verify is not True:
            return None
        keys = [exp.column(c, quoted=True) for c in columns]
        duplicated = (exp.select(*keys).from_(relation.copy()).where(exp.and_(*[k.copy().is_(exp.null()).not_() for k in keys]))
                      .group_by(*[k.copy() for k in keys]).having("COUNT(*) > 1").limit(1))
        try:
            rows = self._con.sql(duplicated.sql(_DIALECT)).fetchall()
        except duckdb.Error:
            return None
        return None if rows else f"exact check: no duplicated ({', '.join(columns)}) (sparkscore_verify_unique_keys)"

    def _cached(self, key: tuple, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _relation(self, table: str) -> exp.Table | None:
        """The first spelling of ``table`` DuckDB can bind: a (qualified) name, then a file path."""
        return self._cached(("relation", table), lambda: self._find_relation(table))

    def _find_relation(self, table: str) -> exp.Table | None:
        candidates = []
        try:
            candidates.append(exp.to_table(table, dialect=_DIALECT))
        except sqlglot.errors.ParseError:
            pass
        candidates.append(exp.Table(this=exp.to_identifier(table, quoted=True)))  # e.g. 'data/x.parquet'
        for candidate in candidates:
            try:
                self._con.sql(exp.select("*").from_(candidate.copy()).limit(0).sql(_DIALECT))
            except duckdb.Error:
                continue
            return candidate
        return None

    def _columns(self, table: str) -> list[tuple[str, str]] | None:
        relation = self._relation(table)
        if relation is None:
            return None
        rel = self._con.sql(exp.select("*").from_(relation.copy()).limit(0).sql(_DIALECT))
        return [(name, str(dtype)) for name, dtype in zip(rel.columns, rel.types)]

    def _row_count(self, table: str) -> int | None:
        relation = self._relation(table)
        if relation is None:
            return None
        schema = relation.db or None
        rows = self._con.execute(
            "SELECT estimated_size FROM duckdb_tables() WHERE table_name = ? AND schema_name = coalesce(?, schema_name)",
            [relation.name, schema],
        ).fetchall()
        if len(rows) == 1:
            return int(rows[0][0])
        paths = _parquet_paths(table, relation)
        if paths is None:
            return None
        try:
            (count,), = self._con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)", [paths]).fetchall()
        except duckdb.Error:
            return None
        return None if count is None else int(count)

    def _distinct_count(self, table: str, column: str) -> int | None:
        relation = self._relation(table)
        if relation is None:
            return None
        query = exp.select(exp.func("stats", exp.column(column, quoted=True))).from_(relation.copy()).limit(1)
        try:
            rows = self._con.sql(query.sql(_DIALECT)).fetchall()
        except duckdb.Error:
            return None
        stats = rows[0][0] if rows else None
        unique = stats.get("approx_unique") if isinstance(stats, dict) else None
        return None if unique is None else int(unique)


def _parquet_paths(table: str, relation: exp.Table) -> list[str] | None:
    """The files (or globs) of ``'x.parquet'`` / ``read_parquet('x.parquet' | [...], ...)``: their
    footers hold the row counts."""
    source = relation.this
    if isinstance(source, exp.Identifier):
        return [table] if table.lower().endswith(".parquet") else None
    if not isinstance(source, exp.ReadParquet) or not source.expressions:
        return None
    first = source.expressions[0]
    literals = first.expressions if isinstance(first, exp.Array) else [first]
    if not literals or not all(isinstance(v, exp.Literal) and v.is_string for v in literals):
        return None
    return [v.name for v in literals]
