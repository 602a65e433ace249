"""Rule ``route_models``: ``PREDICT('churn@ab', ...)`` over a registry route becomes a per-row choice of arm.

A route (``sparkscore/registry/routes.py``) splits rows by a bucket of their key column.  This rule
runs before ``bind_models`` and rewrites each call on a route ref into::

    CASE WHEN <bucket> < 9000 THEN PREDICT('churn/7', args...)        -- arm prod, pinned
         WHEN <bucket> >= 9000 THEN PREDICT('churn/8', args...)       -- arm challenger, pinned
    END

so every arm is then bound, pruned, factorized and inlined by the later rules exactly as it would
be alone, and the bucket is plain SQL the engine evaluates:

    ``bucket = CASE WHEN text(key) IS NULL THEN 0 ELSE <first 64 bits of md5(salt || ':' || text(key))>
    % 10000 END``: on Spark ``(hi * 7296 + lo) % 10000``, where ``hi`` / ``lo`` are the first two
    32-bit words of the hex digest (``CONV(..., 16, 10)``); on DuckDB the digest's bytes read from
    ``MD5_NUMBER`` with shifts and masks (:func:`_md5_bytes_mod`: no hex text to build and parse).

``text(key)`` follows the key column's SQL type (the canonical text of routes.py): integers and
booleans ``CAST(k AS VARCHAR)``, text as is, floats their integer's text when integral (else NULL),
unknown types ``CAST(k AS VARCHAR)`` (said in EXPLAIN).  Other types (DECIMAL, dates) are refused.

Each row is scored by its own arm only.  DuckDB evaluates a CASE branch on the rows that select it
(tests count the rows each arm's UDF scores); ``batch_to_kernels`` then gives the arms left as UDFs
ONE routed function per route, called with the arm index, so DuckDB's chunks are not split between
two UDF calls (inlined arms keep their WHEN).  Spark lifts Python UDFs out of CASE and would run
every arm on every row, so on Spark an arm left as a UDF is *gated*: ``batch_to_kernels`` passes
the branch's condition as the UDF's first argument and the UDF scores only the rows where it
holds (NULL elsewhere); see :data:`GATE`.

``PREDICT_ARM('churn@ab', ...)`` returns ``{arm, version, route_version}`` of the arm a row goes
to; ``PREDICT_PROBA`` on a route returns the arm's probabilities.  Shadow arms are not computed in
SQL: a shadow arm is scored only where a prediction-log sink is configured, and SQL has no sink
yet (EXPLAIN says so); serving scores them when one is set (``routes.set_shadow_sink``).

Route expansion defines what a route ref means, so it is not an optimisation a user may switch
off: it is in ``RULES`` but not in ``RULE_NAMES`` (``disable_rules``).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from sparkscore.errors import QueryError
from sparkscore.optimizer.bind_models import _enclosing_scope, _scope_columns
from sparkscore.optimizer.context import Context
from sparkscore.optimizer.nodes import ScorePredict, number
from sparkscore.optimizer.sources import TEXT_TYPES

NAME = "route_models"
#: meta key on the ``exp.If`` of each arm: batch_to_kernels gates a Spark UDF left in that branch
GATE = "sparkscore_route_gate"
BUCKETS = 10_000
LOW_FACTOR = (1 << 32) % BUCKETS
FLOAT_KEY_LIMIT = float(2 ** 63)

_INTEGER_TYPES = (*exp.DataType.INTEGER_TYPES,)
_T = exp.DataType.Type
_FLOAT_TYPES = (_T.FLOAT, _T.DOUBLE)


def route_models(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = [c for c in expression.find_all(ScorePredict) if _route_ref(c, context) is not None]
    arm_calls = [c for c in expression.find_all(ScorePredict) if c.kind == "arm" and c not in calls]
    if arm_calls:
        ref = arm_calls[0].this.sql()
        raise QueryError(f"PREDICT_ARM({ref}, ...): {ref} is not a route; PREDICT_ARM names the arm of a route "
                         "ref such as 'churn@ab' (see `sparkscore route show`)")
    if not calls:
        context.decide(NAME, False, "no PREDICT on a route ref")
        return expression
    scopes = {id(scope.expression): scope for scope in traverse_scope(expression)}
    for call in calls:
        resolved = _route_ref(call, context)
        route = resolved.route
        scope = _enclosing_scope(call, scopes)
        key, key_type = _key_column(call, route.key, scope, context)
        text, how = key_text_sql(key, key_type, context.dialect, route.ref)
        bucket = bucket_sql(route.salt, text, context.dialect)
        args = list(call.expressions)
        ranges = _merged(route.ranges)
        ifs: list[exp.If] | exp.Expr = []
        default = None
        for i, arm in enumerate(resolved.arms):
            if call.kind == "arm":
                value = exp.Struct(expressions=[
                    exp.PropertyEQ(this=exp.to_identifier("arm"), expression=exp.Literal.string(arm.label)),
                    exp.PropertyEQ(this=exp.to_identifier("version"), expression=exp.Literal.number(arm.version)),
                    exp.PropertyEQ(this=exp.to_identifier("route_version"),
                                   expression=exp.Literal.number(route.version))])
            else:
                value = type(call)(this=exp.Literal.string(arm.ref), expressions=[a.copy() for a in args])
            if len(resolved.arms) == 1:
                ifs = value
                break
            if i == len(resolved.arms) - 1 and context.dialect != "spark":  # Spark gates every arm (see GATE)
                default = value
                break
            branch = exp.If(this=_condition(bucket, [(s, e) for s, e, label in ranges if label == arm.label]),
                            true=value)
            branch.meta[GATE] = route.ref
            ifs.append(branch)
        replacement = ifs if isinstance(ifs, exp.Expr) else exp.Case(ifs=ifs, default=default)
        replacement.meta[GATE] = route.ref
        if isinstance(call.parent, (exp.Binary, exp.Unary, exp.Dot, exp.Bracket)) and isinstance(replacement, exp.Case):
            replacement = exp.Paren(this=replacement)
        call.replace(replacement)
        shadow = "; shadow arms not scored (SQL has no prediction-log sink yet)" if resolved.shadows else ""
        context.decide(NAME, True, f"{_kind(call)} {resolved.describe()}: bucket = md5(salt || ':' || {how}) "
                                   f"mod {BUCKETS}, NULL key -> bucket 0{shadow}")
    return expression


def route_arm_of(node: exp.Expr) -> str | None:
    """The route whose arm ``node`` (a model call) is, None when it is no arm: rules that merge
    model calls (stack_linear) leave arms apart, so each row is still scored by its own arm only."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Case) and GATE in parent.meta:
            return parent.meta[GATE]
        parent = parent.parent
    return None


def _kind(call: ScorePredict) -> str:
    return call.sql_name()


def _route_ref(call: ScorePredict, context: Context):
    ref = call.this
    if context.resolve_route is None or not (isinstance(ref, exp.Literal) and ref.is_string) or "@" not in ref.name:
        return None
    text = ref.name
    if text not in context.routes:
        context.routes[text] = context.resolve_route(text)
    return context.routes[text]


def _merged(ranges) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for start, end, label in ranges:
        if out and out[-1][2] == label and out[-1][1] == start:
            out[-1] = (out[-1][0], end, label)
        else:
            out.append((start, end, label))
    return out


def _condition(bucket: exp.Expr, ranges: list[tuple[int, int]]) -> exp.Expr:
    parts = []
    for start, end in ranges:
        low = None if start == 0 else exp.GTE(this=bucket.copy(), expression=exp.Literal.number(start))
        high = None if end == BUCKETS else exp.LT(this=bucket.copy(), expression=exp.Literal.number(end))
        both = [p for p in (low, high) if p is not None]
        parts.append(exp.and_(*both) if len(both) > 1 else both[0] if both else exp.true())
    return exp.or_(*parts) if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------------- key and bucket SQL
def _key_column(call: ScorePredict, key: str, scope, context: Context) -> tuple[exp.Expr, str | None]:
    """The route key column as it binds in the call's SELECT, and its SQL type (None when unknown)."""
    if scope is None:
        raise QueryError(f"{call.sql_name()}({call.this.sql()}, ...) needs a FROM clause holding the route key "
                         f"column {key!r}")
    stars = [a for a in call.expressions if isinstance(a, exp.Column) and a.is_star and a.table]
    available = _scope_columns(scope, context)
    if available is None:
        return exp.column(key, quoted=True), None
    found = [c for c in available if c.name.lower() == key.lower()]
    if len(found) > 1:  # t.* picks the source of the model's columns
        tables = {s.table.lower() for s in stars}
        found = [c for c in found if c.source.lower() in tables] or found
    if not found:
        raise QueryError(f"{call.sql_name()}({call.this.sql()}, ...): the route's key column {key!r} is in no table "
                         f"in scope ({', '.join(sorted({c.source for c in available})) or 'none'}); select it or "
                         "change the route key with `sparkscore route set ... --key COLUMN`")
    if len(found) > 1:
        raise QueryError(f"{call.sql_name()}({call.this.sql()}, ...): the route's key column {key!r} is in "
                         f"{' and '.join(c.source for c in found)}; alias the sources and pass t.* for one")
    col = found[0]
    return exp.column(col.name, table=col.qualifier, quoted=True), col.sql_type


def key_text_sql(key: exp.Expr, sql_type: str | None, dialect: str, who: str) -> tuple[exp.Expr, str]:
    """SQL for the canonical text of the key (NULL where it has none) and a short description."""
    varchar = exp.DataType.build("VARCHAR")
    if sql_type is None:
        return exp.cast(key, varchar), f"CAST({key.sql(dialect=dialect)} AS VARCHAR) (key type unknown)"
    try:
        dtype = exp.DataType.build(sql_type, dialect=dialect)
    except Exception:  # noqa: BLE001 - an engine type sqlglot cannot parse: say which
        raise QueryError(f"route {who}: cannot read the key column's type {sql_type!r}; cast the key to BIGINT "
                         "or VARCHAR in a subquery") from None
    if dtype.is_type(*TEXT_TYPES):
        return key, f"{key.sql(dialect=dialect)} (text)"
    if dtype.is_type(*_INTEGER_TYPES, _T.BOOLEAN):
        return exp.cast(key, varchar), f"CAST({key.sql(dialect=dialect)} AS VARCHAR)"
    if dtype.is_type(*_FLOAT_TYPES):
        as_int = exp.cast(key.copy(), exp.DataType.build("BIGINT"))
        integral = exp.EQ(this=exp.cast(as_int.copy(), exp.DataType.build("DOUBLE")), expression=key.copy())
        inner = exp.Case(ifs=[exp.If(this=integral, true=exp.cast(as_int, varchar))])
        bounded = exp.LT(this=exp.Abs(this=key.copy()), expression=number(FLOAT_KEY_LIMIT))
        return (exp.Case(ifs=[exp.If(this=bounded, true=inner)]),
                f"the integer text of {key.sql(dialect=dialect)} (float; non-integral -> NULL)")
    raise QueryError(f"route {who}: key column {key.sql(dialect=dialect)} is {sql_type}; route keys are integers, "
                     "text, booleans or integral floats: cast it to BIGINT or VARCHAR in a subquery")


def _hex_word(digest: exp.Expr, start: int, dialect: str) -> exp.Expr:
    part = exp.Substring(this=digest, start=exp.Literal.number(start), length=exp.Literal.number(8))
    if dialect == "spark":
        parsed = exp.Anonymous(this="CONV", expressions=[part, exp.Literal.number(16), exp.Literal.number(10)])
    else:
        parsed = exp.DPipe(this=exp.Literal.string("0x"), expression=part, safe=True)
    return exp.cast(parsed, exp.DataType.build("BIGINT"))


def _md5_bytes_mod(salted: exp.Expr) -> exp.Expr:
    """DuckDB: the first 8 bytes of md5, read big-endian, mod 10000, without the hex text.

    ``MD5_NUMBER`` is the digest as a little-endian 128-bit integer, so its low 64 bits hold digest
    bytes 0..7 in reverse order; byte ``i`` (``(low >> 8i) & 255``) weighs ``256^(7-i) mod 10000``.
    The same bucket as parsing ``md5()``'s hex (the hash vectors and the 1M-key test check it), at
    about a third of the cost: no 32-character hex string to build and parse (bench/results/routes.md).
    """
    low = exp.cast(exp.BitwiseAnd(this=exp.Anonymous(this="MD5_NUMBER", expressions=[salted]),
                                  expression=exp.Literal.number((1 << 64) - 1)), exp.DataType.build("UBIGINT", dialect="duckdb"))
    terms: list[exp.Expr] = []
    for i in range(8):
        byte = low.copy() if i == 0 else exp.Paren(this=exp.BitwiseRightShift(this=low.copy(),
                                                                             expression=exp.Literal.number(8 * i)))
        byte = exp.Paren(this=exp.BitwiseAnd(this=byte, expression=exp.Literal.number(255)))
        terms.append(exp.Mul(this=byte, expression=exp.Literal.number(pow(256, 7 - i, BUCKETS))))
    total = terms[0]
    for term in terms[1:]:
        total = exp.Add(this=total, expression=term)
    return exp.cast(exp.Mod(this=exp.Paren(this=total), expression=exp.Literal.number(BUCKETS)),
                    exp.DataType.build("BIGINT"))


def bucket_sql(salt: str, text: exp.Expr, dialect: str) -> exp.Expr:
    """SQL of ``routes.bucket_of_text(salt, text)`` (a BIGINT 0..9999, 0 where ``text`` is NULL)."""
    salted = exp.DPipe(this=exp.Literal.string(f"{salt}:"), expression=text.copy(), safe=True)
    if dialect == "spark":
        digest = exp.MD5(this=salted)
        hi, lo = _hex_word(digest, 1, dialect), _hex_word(digest.copy(), 9, dialect)
        mixed = exp.Add(this=exp.Mul(this=hi, expression=exp.Literal.number(LOW_FACTOR)), expression=lo)
        value = exp.Mod(this=exp.Paren(this=mixed), expression=exp.Literal.number(BUCKETS))
    else:  # COALESCE, not CASE: NULL text -> NULL digest -> 0; DuckDB shares the 8 MD5_NUMBER()s only outside a CASE
        return exp.Coalesce(this=_md5_bytes_mod(salted), expressions=[exp.Literal.number(0)])
    return exp.Case(ifs=[exp.If(this=exp.Is(this=text.copy(), expression=exp.Null()), true=exp.Literal.number(0))],
                    default=value)
