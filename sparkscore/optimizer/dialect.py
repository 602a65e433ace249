"""Parse PREDICT / PREDICT_PROBA queries (and the DRIFT table function) in the duckdb and spark dialects.

sqlglot's base parser maps ``PREDICT`` to BigQuery ML's ``Predict`` node (re-emitted as
``PREDICT(MODEL ...)``).  We parse with a *private* parser subclass whose ``FUNCTIONS`` table maps
both names to our nodes; no sqlglot class or global dialect registry is modified, so other users
of sqlglot in the same process are unaffected.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError

from sparkscore.errors import QueryError
from sparkscore.optimizer.nodes import ScoreDrift, ScorePredict, ScorePredictArm, ScorePredictProba

DIALECTS = ("duckdb", "spark")


@lru_cache(maxsize=None)
def _parser_class(dialect: str) -> type:
    base = Dialect.get_or_raise(dialect).parser_class
    functions = {**base.FUNCTIONS, "PREDICT": ScorePredict.from_arg_list,
                 "PREDICT_PROBA": ScorePredictProba.from_arg_list, "PREDICT_ARM": ScorePredictArm.from_arg_list,
                 "DRIFT": ScoreDrift.from_arg_list}
    return type(f"Sparkscore{base.__name__}", (base,), {"FUNCTIONS": functions})


def dialect_of(name: str) -> Dialect:
    if name not in DIALECTS:
        raise QueryError(f"unknown SQL dialect {name!r}; use one of {', '.join(DIALECTS)}")
    return Dialect.get_or_raise(name)


def parse(sql: str, dialect: str) -> exp.Expr:
    """One statement, with PREDICT calls as :class:`ScorePredict` nodes."""
    engine = dialect_of(dialect)
    try:
        statements = [s for s in _parser_class(dialect)(dialect=engine).parse(engine.tokenize(sql), sql) if s is not None]
    except (ParseError, TokenError) as exc:
        raise QueryError(f"cannot parse the query ({_syntax_problem(exc)}); check the SQL syntax") from None
    if len(statements) != 1:
        raise QueryError(f"expected exactly one SQL statement, got {len(statements)}; run statements one at a time")
    return statements[0]


def _syntax_problem(exc: Exception) -> str:
    """sqlglot's first error in user terms: "WHERE is incomplete at line 1, column 21", no class names."""
    errors = getattr(exc, "errors", None) or [{"description": (str(exc).splitlines() or [type(exc).__name__])[0]}]
    first = errors[0]
    node = {"ScorePredict": "PREDICT", "ScorePredictProba": "PREDICT_PROBA", "ScorePredictArm": "PREDICT_ARM"}
    text = re.sub(r"Required keyword: '\w+' missing for <class '[\w.]*?(\w+)'>",
                  lambda m: f"{node.get(m.group(1), m.group(1).upper())} is incomplete", str(first.get("description", "")))
    text = re.sub(r"<class '[\w.]*?(\w+)'>", r"\1", text)
    where = f" at line {first['line']}, column {first['col']}" if first.get("line") else ""
    near = f" near {first['highlight']!r}" if first.get("highlight") else ""
    return f"{text[:1].upper()}{text[1:]}{where}{near}" if text else "syntax error"


def generate(expression: exp.Expr, dialect: str, pretty: bool = False) -> str:
    return expression.sql(dialect=dialect_of(dialect), pretty=pretty, normalize_functions=False)
