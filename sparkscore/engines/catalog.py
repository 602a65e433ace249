"""Schema and cheap statistics of what one DuckDB connection or Spark session can see, for the optimizer.

Both classes implement ``sparkscore.optimizer.Catalog``.  Every statistic comes from metadata the
engine already keeps (DuckDB's planner cardinalities and ``duckdb_tables().estimated_size``, column
``stats()``, parquet footers; Spark's table statistics from ``ANALYZE TABLE``, plan statistics,
parquet footers), never from a scan, so planning a query stays cheap however big its tables are.

Row counts steer cost only (``factorize_linear``'s rule), never correctness: table statistics are
not maintained by DELETE / UPDATE on either engine, and a stale count is fine for a cost estimate.
``row_stats`` therefore says where each count came from (or why there is none), and EXPLAIN shows
it: an unknown answer is ``None`` *with its reason*, never a swallowed error.
"""

from __future__ import annotations

import json
import re

import duckdb
import sqlglot
from sqlglot import exp

from sparkscore.optimizer.cost import RowCount

_DIALECT = "duckdb"
#: DuckDB plan operators whose estimated cardinality is the source's size: a table's statistics
#: (which DELETE does not lower) and in-memory frames.
_STATS_SCANS = {"SEQ_SCAN": "from the statistics of {}, may be stale", "PANDAS_SCAN": "from the DataFrame's length",
                "ARROW_SCAN": "from the Arrow object's length", "ARROW_SCAN_DUMB": "from the Arrow object's length"}


class DuckDBCatalog:
    """Tables, views (incl. registered pandas / Arrow objects), parquet files and table functions
    (``read_parquet(...)``, described without reading rows) of ``con``."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._memo: dict[tuple, object] = {}

    def columns(self, table: str) -> list[tuple[str, str]] | None:
        return self._cached(("columns", table), lambda: self._columns(table))

    def row_count(self, table: str) -> int | None:
        return self.row_stats(table).rows

    def row_stats(self, table: str) -> RowCount:
        """The row count with where it came from (or why it is unknown), for EXPLAIN."""
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

    def _row_count(self, table: str) -> RowCount:
        relation = self._relation(table)
        if relation is None:
            return RowCount(None, f"{table} does not bind on this connection")
        paths = _parquet_paths(table, relation)
        if paths is not None:  # the footers are exact, for every file of a list or glob
            try:
                (count,), = self._con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)", [paths]).fetchall()
            except duckdb.Error as error:
                return RowCount(None, f"parquet footers of {table} unreadable: {_one_line(error)}")
            if count is not None:
                return RowCount(int(count), f"from the parquet footers of {len(paths)} path(s)")
        # DuckDB binds the name itself (any case, schema, search path, views, registered frames):
        # the estimated cardinality of the scan it plans is the statistic it keeps for the source.
        query = exp.select("*").from_(relation.copy()).sql(_DIALECT)
        try:
            (_, text), = self._con.execute(f"EXPLAIN (FORMAT JSON) {query}").fetchall()
            root = json.loads(text)[0]
            rows = int(root["extra_info"]["Estimated Cardinality"])
        except (duckdb.Error, ValueError, KeyError, IndexError, TypeError) as error:
            return RowCount(None, f"DuckDB's plan of {table} gives no estimated cardinality ({_one_line(error)})")
        name = root.get("name", "")
        if name in _STATS_SCANS and not root.get("children") and "Filters" not in root["extra_info"]:
            return RowCount(rows, _STATS_SCANS[name].format(root["extra_info"].get("Table", table)))
        return RowCount(rows, f"DuckDB's planner estimate for {table} ({name})")

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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


# ---------------------------------------------------------------------------------------- Spark
_FILE_FORMATS = ("parquet", "delta", "orc", "json", "csv", "avro")
_STATISTICS = re.compile(r"([0-9]+) rows")
#: Footers read per source at most: more files than this and the count stays unknown (planning must stay cheap).
MAX_FOOTERS = 1000


class SparkCatalog:
    """Schema and statistics of temp views, catalog tables and ``parquet.`path``` for the optimizer.

    Row counts, in order: Spark's plan statistics when they have one (the cost-based optimizer is
    on); a catalog table's statistics (``ANALYZE TABLE t COMPUTE STATISTICS``, which Spark only
    puts into plans when ``spark.sql.cbo.enabled``); the footers of a bare parquet scan's files.
    """

    def __init__(self, spark) -> None:
        self._spark = spark
        self._memo: dict[tuple, object] = {}

    def _frame(self, table: str):
        from pyspark.errors import AnalysisException, ParseException

        fmt, _, path = table.partition(".")
        try:
            if fmt.lower() in _FILE_FORMATS and "/" in path:  # parquet.`/data/x.parquet` arrives as parquet./data/...
                source = exp.Table(this=exp.to_identifier(path, quoted=True), db=exp.to_identifier(fmt))
            else:
                source = exp.to_table(table, dialect="spark")
            return self._spark.sql(exp.select("*").from_(source).sql(dialect="spark"))
        except (AnalysisException, ParseException, sqlglot.errors.SqlglotError):
            return None

    def columns(self, table: str) -> list[tuple[str, str]] | None:
        df = self._frame(table)
        if df is None:
            return None
        return [(f.name, f.dataType.simpleString().upper()) for f in df.schema.fields]

    def row_count(self, table: str) -> int | None:
        return self.row_stats(table).rows

    def row_stats(self, table: str) -> RowCount:
        key = ("rows", table)
        if key not in self._memo:
            self._memo[key] = self._row_stats(table)
        return self._memo[key]

    def distinct_count(self, table: str, column: str) -> int | None:
        return None

    def proven_unique(self, table: str, columns: tuple[str, ...]) -> str | None:
        """Spark tables declare no enforced keys, so uniqueness is proven only by an exact check the
        user opts into with ``spark.sparkscore.verifyUniqueKeys=true`` (a scan at planning time);
        otherwise None, and the optimizer keeps every join that relies on it."""
        if self._spark.conf.get("spark.sparkscore.verifyUniqueKeys", "false").strip().lower() != "true":
            return None
        df = self._frame(table)
        if df is None or not columns:
            return None
        from pyspark.sql import functions as F

        keys = [F.col("`" + c.replace("`", "``") + "`") for c in columns]  # a quoted name, never parsed as SQL
        present = df
        for key in keys:
            present = present.where(key.isNotNull())
        duplicated = present.groupBy(*keys).count().where(F.col("count") > 1).limit(1).count()
        return None if duplicated else f"exact check: no duplicated ({', '.join(columns)}) (spark.sparkscore.verifyUniqueKeys)"

    def _row_stats(self, table: str) -> RowCount:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException

        df = self._frame(table)
        if df is None:
            return RowCount(None, f"{table} does not resolve in this Spark session")
        try:
            plan = df._jdf.queryExecution().optimizedPlan()
            count = plan.stats().rowCount()
            if count.isDefined():  # py4j hands a Scala BigInt over as a Python int
                return RowCount(int(str(count.get())), "from Spark's plan statistics (may be stale)")
            relation = plan.getClass().getSimpleName()
        except (Py4JError, PySparkException) as error:
            return RowCount(None, f"Spark's plan statistics of {table} failed: {_one_line(error)}")
        reasons: list[str] = []
        fmt, _, path = table.partition(".")
        is_file = fmt.lower() in _FILE_FORMATS and "/" in path
        rows = None if is_file else self._table_statistics(table, reasons)
        if rows is not None:
            return RowCount(rows, "from the table statistics of ANALYZE TABLE (may be stale)")
        if relation == "LogicalRelation":
            rows = _parquet_footer_rows(df, reasons)
            if rows is not None:
                return RowCount(rows[0], f"from the parquet footers of {rows[1]} file(s)")
        else:
            reasons.append(f"not a bare file scan ({relation})")
        return RowCount(None, "; ".join(reasons) or "no statistics")

    def _table_statistics(self, table: str, reasons: list[str]) -> int | None:
        """``rows`` of the ``Statistics`` line of ``DESCRIBE TABLE EXTENDED`` (set by ANALYZE TABLE)."""
        from pyspark.errors import PySparkException

        try:
            name = exp.to_table(table, dialect="spark")
            described = self._spark.sql(f"DESCRIBE TABLE EXTENDED {name.sql(dialect='spark')}").collect()
        except (PySparkException, sqlglot.errors.SqlglotError) as error:
            reasons.append(f"no table statistics ({_one_line(error)[:80]})")
            return None
        line = next((r[1] for r in described if r[0] == "Statistics"), None)
        match = _STATISTICS.search(line or "")
        if match is None:
            reasons.append(f"no row count in the {'table statistics' if line else 'catalog'}: "
                           f"ANALYZE TABLE {table} COMPUTE STATISTICS records one for a catalog table")
            return None
        return int(match.group(1))


def _parquet_footer_rows(df, reasons: list[str]) -> tuple[int, int] | None:
    """(rows, files) summed over the parquet footers of a bare file scan, read on the driver."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    files = df.inputFiles()
    if not files or not all(f.lower().endswith(".parquet") for f in files):
        reasons.append("not a parquet scan")
        return None
    if len(files) > MAX_FOOTERS:
        reasons.append(f"{len(files)} parquet files: more footers than the {MAX_FOOTERS} planning reads")
        return None
    total = 0
    try:
        for uri in files:
            filesystem, path = fs.FileSystem.from_uri(uri)
            with filesystem.open_input_file(path) as handle:
                total += pq.read_metadata(handle).num_rows
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        reasons.append(f"parquet footers unreadable: {_one_line(error)[:120]}")
        return None
    return total, len(files)
