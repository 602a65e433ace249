"""IPython ``%%sparkscore`` cell magic: run a PREDICT query on DuckDB from a notebook cell.

    %load_ext sparkscore.engines.magic

    %%sparkscore con --registry reg
    SELECT id, PREDICT('churn@prod', *) AS p FROM customers

``con`` names a DuckDB connection in the notebook namespace (default: DuckDB's module-level
connection, the one ``duckdb.sql`` uses); ``--registry`` names a ``Registry`` variable or gives a
registry path/URI (default: ``$SPARKSCORE_HOME``).  The cell's value is the result as a pandas
DataFrame, so the notebook displays it; ``--out NAME`` also stores it in the namespace and
``--explain`` prints the EXPLAIN text (rewritten SQL and every rule with its reason) instead of
running the query.  pandas / Arrow variables of the notebook are visible by name, as they are to
``duckdb.sql``.  ``%sparkscore -h`` (or ``%%sparkscore -h``) prints the options.

A user error (unknown model, bad SQL, missing column, bad option) is shown as one line, the way
IPython shows its own usage errors, not as a traceback.
"""

from __future__ import annotations

import duckdb
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from sparkscore.engines import duckdb as duckdb_engine
from sparkscore.errors import QueryError, SparkscoreError


@magics_class
class SparkscoreMagics(Magics):
    @magic_arguments()
    @argument("connection", nargs="?", default=None, help="name of a DuckDB connection variable")
    @argument("--registry", default=None, help="name of a Registry variable, or a registry path / URI")
    @argument("--disable-rules", default="", help="comma-separated optimizer rules to skip")
    @argument("--out", default=None, help="also store the result DataFrame in this variable")
    @argument("--explain", action="store_true", help="print the plan (rewritten SQL and rules) instead")
    @argument("-h", "--help", action="store_true", help="show this help")
    @line_cell_magic
    def sparkscore(self, line: str, cell: str | None = None):
        """Run the cell's PREDICT query on DuckDB and return the result as a pandas DataFrame."""
        args = parse_argstring(self.sparkscore, line)  # bad options: IPython's one-line UsageError
        if args.help:  # IPython's magic parsers have no -h of their own
            print(self.sparkscore.parser.format_help())
            return None
        if cell is None or not cell.strip():
            raise UsageError("%%sparkscore runs the query in the cell body: put it on the lines below "
                             "'%%sparkscore [connection] [--registry ...]' (see %sparkscore -h)")
        try:
            return self._run(args, cell)
        except (SparkscoreError, duckdb.Error) as exc:
            raise UsageError(" ".join(str(exc).split())) from None

    def _run(self, args, cell: str):
        con = self._connection(args.connection)
        registry = self._registry(args.registry)
        disable_rules = tuple(r.strip() for r in args.disable_rules.split(",") if r.strip())
        namespace = self.shell.user_ns
        if args.explain:
            print(duckdb_engine.explain(cell, con, registry, disable_rules=disable_rules, namespace=namespace))
            return None
        result = duckdb_engine.sql(con, cell, registry, disable_rules=disable_rules, namespace=namespace).df()
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
