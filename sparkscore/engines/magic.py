"""IPython ``%%sparkscore`` cell magic: run a PREDICT query on DuckDB from a notebook cell.

    %load_ext sparkscore.engines.magic

    %%sparkscore con --registry reg
    SELECT id, PREDICT('churn@prod', *) AS p FROM customers

``con`` names a DuckDB connection in the notebook namespace (default: DuckDB's module-level
connection, the one ``duckdb.sql`` uses); ``--registry`` names a ``Registry`` variable or gives a
registry path/URI (default: ``$SPARKSCORE_HOME``).  The cell's value is the result as a pandas
DataFrame, so the notebook displays it; ``--out NAME`` also stores it in the namespace and
``--explain`` shows the plan instead of running the query.
"""

from __future__ import annotations

import duckdb
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from sparkscore.engines import duckdb as duckdb_engine
from sparkscore.errors import QueryError


@magics_class
class SparkscoreMagics(Magics):
    @magic_arguments()
    @argument("connection", nargs="?", default=None, help="name of a DuckDB connection variable")
    @argument("--registry", default=None, help="name of a Registry variable, or a registry path / URI")
    @argument("--disable-rules", default="", help="comma-separated optimizer rules to skip")
    @argument("--out", default=None, help="also store the result DataFrame in this variable")
    @argument("--explain", action="store_true", help="show the plan (rewritten SQL and rules) instead")
    @cell_magic
    def sparkscore(self, line: str, cell: str):
        """Run the cell's PREDICT query on DuckDB and return the result as a pandas DataFrame."""
        args = parse_argstring(self.sparkscore, line)
        con = self._connection(args.connection)
        registry = self._registry(args.registry)
        disable_rules = tuple(r.strip() for r in args.disable_rules.split(",") if r.strip())
        if args.explain:
            return duckdb_engine.explain(cell, con, registry, disable_rules=disable_rules)
        result = duckdb_engine.sql(con, cell, registry, disable_rules=disable_rules).df()
        if args.out:
            self.shell.user_ns[args.out] = result
        return result

    def _connection(self, name: str | None) -> duckdb.DuckDBPyConnection:
        if name is None:
            return duckdb.default_connection()
        con = self.shell.user_ns.get(name)
        if not isinstance(con, duckdb.DuckDBPyConnection):
            raise QueryError(f"%%sparkscore: {name!r} is not a DuckDB connection in this notebook; "
                             f"create it with {name} = duckdb.connect()")
        return con

    def _registry(self, spec: str | None):
        from sparkscore.registry import Registry

        if spec is None:
            return None
        value = self.shell.user_ns.get(spec)
        return value if isinstance(value, Registry) else Registry(spec)


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(SparkscoreMagics)
