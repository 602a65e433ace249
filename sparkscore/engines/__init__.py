"""Query engines that run PREDICT queries: DuckDB (``engines.duckdb``) and Spark (``engines.spark``).

Each engine module is imported only when used, so DuckDB users never import pyspark and Spark
users never need duckdb.
"""

from __future__ import annotations

from typing import Sequence


def explain(query: str, engine, registry=None, disable_rules: Sequence[str] = ()):
    """The optimizer ``Plan`` of ``query`` on ``engine`` (a DuckDB connection or a SparkSession).

    ``str(plan)`` is the EXPLAIN text: the rewritten SQL and every rule, fired or declined, with why.
    """
    from sparkscore.errors import QueryError

    module = type(engine).__module__.split(".", 1)[0]
    if module in ("duckdb", "_duckdb"):
        from sparkscore.engines import duckdb as engine_module
    elif module == "pyspark":
        from sparkscore.engines import spark as engine_module
    else:
        raise QueryError(f"explain needs a DuckDB connection or a SparkSession as engine=, got {type(engine).__name__}")
    return engine_module.explain(query, engine, registry, disable_rules=disable_rules)
