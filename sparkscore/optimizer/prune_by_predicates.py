"""Rule ``prune_by_predicates``: predicates that fix or bound a model input specialise the model.

Every row a SELECT's projections see satisfies its WHERE conjuncts and the ON conjuncts of its
inner joins (only AND-ed conjuncts; ON conjuncts only when no RIGHT / FULL join could bring rows
back without them).  A conjunct ``x = c``, ``x > c`` / ``>=`` / ``<`` / ``<=`` (either side),
``x BETWEEN a AND b`` or ``x IN (c, ...)`` on a column the model reads therefore bounds that input
for every row the call scores, and the call runs a derived model (``context.add_model``):

* trees: a branch no row satisfying the predicates can take is removed (the node is replaced by
  its one live child).  Trees are never removed -- a collapsed tree is a single leaf -- so sums,
  XGBoost's float32 accumulation order and forests' means stay bit for bit; inputs no split reads
  any more are dropped from the signature;
* GLMs: ``x = c`` makes every feature built from ``x`` constant; ``coef * feature`` is folded
  into the intercept and the input dropped (GLM sums change order only, like stacking).

Routing is decided exactly as ``compiler/reference.py`` routes (``sparkscore/ir/trees.py``): the
input is cast to ``threshold_dtype`` (float32 rounding is monotone, so a bound ``lo <= x <= hi``
becomes ``f32(lo) <= f32(x) <= f32(hi)``), ``<`` vs ``<=``, NaN by ``missing`` (default side, or
compared as 0), LightGBM's zero band, categorical bitsets for ``=`` / ``IN`` values.  A branch is
dead only when *no* value allowed by the predicates can take it.

Engine semantics the bounds rely on (DuckDB and Spark agree):

* a comparison with NULL is NULL, so every predicate above excludes NULL (the model's "missing");
* NaN is *not* NULL: both engines order NaN above every number (``NaN > 5`` and ``NaN >= 5`` are
  TRUE, ``NaN = NaN`` is TRUE), so ``x > c`` / ``x >= c`` keep NaN (and +inf) possible and only
  ``=``, ``<``, ``<=``, ``BETWEEN`` and ``IN`` of numbers exclude it;
* DOUBLE columns compare with the literal's exact binary64 value (scientific-notation literals are
  DOUBLE; decimal literals of up to 15 digits convert exactly); longer decimals are widened by one
  ulp each way.  Integer columns compare exactly and convert to DOUBLE monotonically, so their
  bounds are used closed.  ``DECIMAL(p, s)`` columns (TPC-H's prices and quantities) with
  ``p <= 15`` likewise, after rounding each literal outwards to the column's scale
  (``_decimal_bound``: their conversion to DOUBLE is correctly rounded; wider decimals may round
  twice and are ignored).  ``x BETWEEN c AND c`` (or ``x >= c AND x <= c``) fixes ``x`` like
  ``x = c``.  Other column types (and columns of unknown type) are ignored;
* text categorical inputs (VARCHAR, or a DuckDB ENUM, which compares as its text) use ``=`` / ``IN``
  only: the value's code is its index in the column's categories, a value outside them is the
  model's missing (NaN) code.

Declined (with the reason in EXPLAIN): calls inside a JOIN's ON, inputs that are not plain columns,
trees over feature maps or GLMs with chained maps, and calls whose predicates leave every branch
live / fix no GLM input.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from dataclasses import dataclass

import numpy as np
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sparkscore.ir import LEAF, MISSING_AS_ZERO, MISSING_NAN, MISSING_ZERO, Column, Model, TreeEnsemble
from sparkscore.ir.trees import ZERO_THRESHOLD
from sparkscore.optimizer.context import Context
from sparkscore.optimizer.derive import feature_map, glm, restrict
from sparkscore.optimizer.nodes import ModelCall
from sparkscore.optimizer.prune_model_inputs import drop_inputs, used_inputs
from sparkscore.optimizer.sources import (TEXT_TYPES, Source, column_key, column_source, conjuncts, enclosing_select,
                                          inside, select_sources)

NAME = "prune_by_predicates"

_FLIP = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}
_EXACT_DIGITS = 15


@dataclass(frozen=True)
class Bound:
    """Values one input can take on every row: ``lo <= d <= hi`` (binary64), NaN or not, or points.

    ``points`` (when not None) is the finite set of possible values (NaN included as ``nan``);
    NULL is never possible: every predicate we read excludes it.
    """

    lo: float = -math.inf
    hi: float = math.inf
    nan: bool = True
    points: frozenset | None = None

    def __and__(self, other: "Bound") -> "Bound":
        lo, hi, nan = max(self.lo, other.lo), min(self.hi, other.hi), self.nan and other.nan
        if self.points is None and other.points is None:
            return Bound(lo, hi, nan)
        points = self.points if other.points is None else (other.points if self.points is None
                                                           else self.points & other.points)
        return Bound(lo, hi, nan, frozenset(p for p in points if lo <= p <= hi))

    def constant(self) -> float | None:
        """The single value every row has, if the predicates fix it (``x = c``, ``x IN (c)``,
        ``x BETWEEN c AND c``, ``x >= c AND x <= c``; ``-0.0`` and ``0.0`` count as one value, as
        every model compares them equal)."""
        if self.points is not None and len(self.points) + self.nan == 1:
            return next(iter(self.points)) if self.points else math.nan
        if self.points is None and not self.nan and self.lo == self.hi:
            return self.lo
        return None


def prune_by_predicates(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = list(expression.find_all(ModelCall))
    if not calls:
        context.decide(NAME, False, "no model calls")
        return expression
    for call in calls:
        label = f"{call.model_key} ({call.call_kind})"
        bounds, notes = _input_bounds(call, context)
        if not bounds:
            context.decide(NAME, False, f"{label}: {notes or 'no WHERE / inner-join predicate bounds its inputs'}")
            continue
        bound = context.model(call.model_key)
        model = bound.model
        if model.kind == "ensemble":
            context.decide(NAME, False, f"{label}: an unfused ensemble is not specialised (its members stay pinned)")
            continue
        try:
            derived, kept, how = (_specialise_trees if model.kind == "trees" else _fold_glm)(model, bounds)
        except _Decline as reason:
            context.decide(NAME, False, f"{label}: {reason} (predicates: {_describe(bounds, model)})")
            continue
        key = context.add_model(derived, bound.source).key
        call.replace(ModelCall.build(key, call.call_kind, [call.inputs[i] for i in kept]))
        context.decide(NAME, True, f"{label} -> {key}: {how} under {_describe(bounds, model)}")
    return expression


class _Decline(Exception):
    """The call is left alone: the message is the reason."""


# ---------------------------------------------------------------------------- predicates
def _input_bounds(call: ModelCall, context: Context) -> tuple[dict[int, Bound], str]:
    """{input index: Bound} from the predicates every row the call scores satisfies."""
    select = enclosing_select(call)
    if select is None:
        return {}, "not inside a SELECT"
    joins = select.args.get("joins") or ()
    if any(inside(call, join) for join in joins):
        return {}, "call inside a JOIN condition"
    where = select.args.get("where")
    predicates = [c for c in conjuncts(where.this if where is not None else None) if not inside(call, c)]
    if not any((join.side or "").upper() in ("RIGHT", "FULL") for join in joins):
        for join in joins:
            if not join.side and (join.kind or "").upper() in ("", "INNER"):
                predicates += conjuncts(join.args.get("on"))
    sources = select_sources(select, context.dialect)
    aliases = {p.alias.lower() for p in select.expressions if p.alias}
    model = context.model(call.model_key).model
    bounds: dict[int, Bound] = {}
    for predicate in predicates:
        found = _predicate_bound(predicate, model.signature.inputs, call.inputs, sources, aliases, context)
        if found is not None:
            i, b = found
            bounds[i] = bounds[i] & b if i in bounds else b
    return bounds, ""


def _predicate_bound(predicate: exp.Expr, columns: tuple[Column, ...], inputs: list[exp.Expr], sources: list[Source],
                     aliases: set[str], context: Context) -> tuple[int, Bound] | None:
    if isinstance(predicate, exp.Between) and not predicate.args.get("symmetric"):
        low = _bound(predicate.this, exp.GTE, [predicate.args["low"]], columns, inputs, sources, aliases, context)
        high = _bound(predicate.this, exp.LTE, [predicate.args["high"]], columns, inputs, sources, aliases, context)
        return None if low is None or high is None else (low[0], low[1] & high[1])
    if isinstance(predicate, exp.In) and not predicate.args.get("query") and not predicate.args.get("unnest"):
        return _bound(predicate.this, exp.EQ, list(predicate.expressions), columns, inputs, sources, aliases, context)
    if type(predicate) in _FLIP:
        column, value, op = predicate.this, predicate.expression, type(predicate)
        if not isinstance(column, exp.Column):
            column, value, op = value, column, _FLIP[op]
        return _bound(column, op, [value], columns, inputs, sources, aliases, context)
    return None


def _bound(column: exp.Expr, op: type, values: list[exp.Expr], columns: tuple[Column, ...], inputs: list[exp.Expr],
           sources: list[Source], aliases: set[str], context: Context) -> tuple[int, Bound] | None:
    """(input index, Bound) for ``column op value`` (``op`` EQ with several values: IN)."""
    i = _input_index(column, inputs, sources, aliases, context)
    if i is None:
        return None
    sql_type = _column_type(column, sources, context)
    if columns[i].categories is not None:
        categories = columns[i].categories
        if op is not exp.EQ or not isinstance(categories[0], str) or sql_type is None or not sql_type.is_type(
                *TEXT_TYPES):
            return None
        texts = [v.name if isinstance(v, exp.Literal) and v.is_string else None for v in values]
        if None in texts:
            return None
        codes = {float(categories.index(t)) if t in categories else math.nan for t in texts}
        return i, Bound(nan=any(math.isnan(c) for c in codes), points=frozenset(c for c in codes if not math.isnan(c)))
    if sql_type is not None and sql_type.is_type(exp.DataType.Type.DECIMAL):
        return _decimal_bound(i, op, values, sql_type)
    if sql_type is None or not sql_type.is_type(exp.DataType.Type.DOUBLE, *exp.DataType.INTEGER_TYPES):
        return None
    exact = sql_type.is_type(exp.DataType.Type.DOUBLE)   # strict bounds only where the column *is* the double
    numbers = [_number(v) for v in values]
    if None in numbers:
        return None
    if op is exp.EQ:
        if all(lo == hi for lo, hi in numbers):
            return i, Bound(nan=False, points=frozenset(lo for lo, _ in numbers))
        return i, Bound(min(lo for lo, _ in numbers), max(hi for _, hi in numbers), False)
    (lo, hi), = numbers
    if op is exp.GT:
        return i, Bound(lo=math.nextafter(hi, math.inf) if exact and lo == hi else lo)
    if op is exp.GTE:
        return i, Bound(lo=lo)
    if op is exp.LT:
        return i, Bound(hi=math.nextafter(lo, -math.inf) if exact and lo == hi else hi, nan=False)
    return i, Bound(hi=hi, nan=False)


def _decimal_bound(i: int, op: type, values: list[exp.Expr], sql_type: exp.DataType) -> tuple[int, Bound] | None:
    """Bound of ``CAST(x AS DOUBLE)`` -- what the model reads -- for ``x op value`` on ``DECIMAL(p, s)``.

    The engine compares in DECIMAL (exactly) or, against a DOUBLE literal, in DOUBLE; it may also
    round a literal to the column's scale.  Each bound is therefore the outermost of: the literal
    rounded to the scale outwards (floor for a lower bound, ceiling for an upper one) and the
    binary64 values the literal may read as (``_number``), used closed (``x < c`` still allows a
    double equal to ``double(c)``).  The bound then holds for the model's input because
    DECIMAL -> DOUBLE is monotone *and* correctly rounded, which is proven only for ``p <= 15``:
    the unscaled integer is below 2**53 and 10**s is exact, so ``int / 10**s`` (DuckDB's and
    Spark's conversion) is one correctly rounded division and equals Python's ``float(Decimal)``.
    Wider decimals (DuckDB's default ``DECIMAL(18,3)``, ``HUGEINT``-backed ones) round twice, can
    differ by an ulp, and are ignored.
    """
    params = [p.this for p in sql_type.expressions]
    try:
        precision, scale = (int(params[0].name), int(params[1].name) if len(params) > 1 else 0)
    except (IndexError, ValueError, AttributeError):
        return None
    if precision > _EXACT_DIGITS or scale > precision:
        return None
    ranges = []
    for value in values:
        text = value.this.this if isinstance(value, exp.Neg) and isinstance(value.this, exp.Literal) else (
            value.this if isinstance(value, exp.Literal) else None)
        number = _number(value)
        if number is None or not isinstance(text, str):
            return None
        try:
            exact = Decimal(text) * (-1 if isinstance(value, exp.Neg) else 1)
        except ArithmeticError:
            return None
        step = Decimal(1).scaleb(-scale)
        try:
            down, up = (float(exact.quantize(step, rounding=r)) for r in (ROUND_FLOOR, ROUND_CEILING))
        except ArithmeticError:  # more digits than Decimal's context holds: far outside DECIMAL(15, s)
            return None
        ranges.append((min(down, number[0]), max(up, number[1]), down == up == number[0] == number[1]))
    if op is exp.EQ:
        if all(on_grid for _, _, on_grid in ranges):
            return i, Bound(nan=False, points=frozenset(lo for lo, _, _ in ranges))
        return i, Bound(min(lo for lo, _, _ in ranges), max(hi for _, hi, _ in ranges), False)
    (lo, hi, _), = ranges
    if op in (exp.GT, exp.GTE):
        return i, Bound(lo=lo, nan=False)
    return i, Bound(hi=hi, nan=False)


def _number(value: exp.Expr) -> tuple[float, float] | None:
    """(lo, hi) binary64 values the engine may read the numeric literal as (lo == hi when exact)."""
    negative = isinstance(value, exp.Neg)
    if negative:
        value = value.this
    if not (isinstance(value, exp.Literal) and value.is_number):
        return None
    text = value.this
    try:
        x = float(text)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    x = -x if negative else x
    digits = text.lower().split("e")[0].replace(".", "").replace("-", "").lstrip("0")
    if "e" in text.lower() or len(digits) <= _EXACT_DIGITS:
        return x, x
    return math.nextafter(x, -math.inf), math.nextafter(x, math.inf)


def _input_index(column: exp.Expr, inputs: list[exp.Expr], sources: list[Source], aliases: set[str],
                 context: Context) -> int | None:
    if not isinstance(column, exp.Column) or column.is_star:
        return None
    if not column.table and column.name.lower() in aliases:
        return None  # DuckDB lets WHERE name a SELECT alias: not provably the input column
    key = column_key(column, sources, context)
    for i, arg in enumerate(inputs):
        if not isinstance(arg, exp.Column):
            continue
        other = column_key(arg, sources, context)
        if key is not None and other is not None:
            if key == other:
                return i
        elif (len(sources) == 1 and column.name.lower() == arg.name.lower()
              and {column.table.lower(), arg.table.lower()} <= {"", sources[0].alias.lower()}):
            return i
    return None


def _column_type(column: exp.Column, sources: list[Source], context: Context) -> exp.DataType | None:
    source = column_source(column, sources, context)
    if source is None and len(sources) == 1:
        source = sources[0]
    columns = context.catalog.columns(source.table) if source is not None and source.table else None
    sql_type = next((t for n, t in columns or () if n.lower() == column.name.lower()), None)
    try:
        return exp.DataType.build(sql_type) if sql_type else None
    except (SqlglotError, ValueError):  # an engine type sqlglot cannot parse: ignore the predicate
        return None


# ---------------------------------------------------------------------------- GLMs
def _fold_glm(model: Model, bounds: dict[int, Bound]) -> tuple[Model, list[int], str]:
    fmap = feature_map(model)
    if fmap is None:
        raise _Decline(f"{len(model.features)} chained feature maps")
    if model.estimator.dtype != "float64":
        raise _Decline("float32 GLM: a folded intercept would not round like its float32 dot product")
    fixed = {i: b.constant() for i, b in bounds.items()
             if b.constant() is not None and _accepted(model.signature.inputs[i], b.constant())}
    kept = [i for i in range(len(model.signature)) if i not in fixed]
    if not fixed:
        raise _Decline("no input is fixed to one value (GLMs fold only x = c)")
    if not kept:
        raise _Decline("every input is fixed: nothing left to score per row")
    row = np.zeros((1, len(model.signature)))
    for i, value in fixed.items():
        row[0, i] = value
    values = fmap.apply(row)[0]
    folded = np.isin(fmap.source, list(fixed))
    est = model.estimator
    intercept = est.intercept + values[folded] @ est.coef[folded]
    live = np.flatnonzero(~folded)
    derived = glm(model, [model.signature.inputs[i] for i in kept], restrict(fmap, live, kept), est.coef[live],
                  intercept, est.link, note=f"{NAME}: folded {', '.join(model.signature.names[i] for i in fixed)}")
    names = ", ".join(f"{model.signature.names[i]}" for i in fixed)
    return derived, kept, f"folded {int(folded.sum())} features of {names} into the intercept"


def _accepted(column: Column, value: float) -> bool:
    """Whether folding ``column = value`` away keeps the query's answer: a strict input
    (``Column.accepts``) fixed to a value outside it must stay, so its rows still fail the query."""
    if not column.is_strict:
        return True
    if math.isnan(value):
        return False
    return column.categories is not None or value in column.accepted_values


# ---------------------------------------------------------------------------- trees
def _specialise_trees(model: Model, bounds: dict[int, Bound]) -> tuple[Model, list[int], str]:
    if model.features:
        raise _Decline("trees over a feature map")
    est = model.estimator
    if est.has_missing_value:  # a row in the predicate's range may still hold the missing value
        raise _Decline(f"trees with missing value {float(est.missing_value[0])!r} (XGBoost missing=)")
    order: list[int] = []        # kept old node ids, pre-order per tree
    roots: list[int] = []
    for root in est.roots:
        roots.append(len(order))
        stack = [int(root)]
        while stack:
            node = _live(est, stack.pop(), bounds)
            order.append(node)
            if est.feature[node] != LEAF:
                stack += [int(est.right[node]), int(est.left[node])]
    if len(order) == est.n_nodes:
        raise _Decline(f"every branch stays live ({est.n_nodes} nodes)")
    position = {old: new for new, old in enumerate(order)}
    nodes = np.asarray(order)
    left, right = ([-1 if est.feature[n] == LEAF else position[_live(est, int(side[n]), bounds)] for n in order]
                   for side in (est.left, est.right))
    pruned = dataclasses.replace(
        est, feature=est.feature[nodes], threshold=est.threshold[nodes], left=left, right=right,
        default_left=est.default_left[nodes], missing=est.missing[nodes], is_categorical=est.is_categorical[nodes],
        cat_index=est.cat_index[nodes], value=est.value[nodes], roots=np.asarray(roots))
    derived = dataclasses.replace(model, estimator=pruned)
    kept = used_inputs(derived)[0] or [0]  # every tree a leaf: keep one argument so the call still has one
    if len(kept) < len(model.signature):
        derived = drop_inputs(derived, kept)
    derived = dataclasses.replace(derived, metadata={**model.metadata, "derived": NAME})
    dropped = [model.signature.names[i] for i in range(len(model.signature)) if i not in kept]
    return derived, kept, (f"{est.n_nodes} -> {pruned.n_nodes} nodes ({est.n_trees} trees)"
                           + (f", dropped inputs {', '.join(dropped)}" if dropped else ""))


def _live(est: TreeEnsemble, node: int, bounds: dict[int, Bound]) -> int:
    """``node``, or the node a row reaches by skipping splits whose other side is dead."""
    while est.feature[node] != LEAF:
        bound = bounds.get(int(est.feature[node]))
        if bound is None:
            return node
        left, right = _sides(est, node, bound)
        if left == right:  # both live (or, for contradictory predicates, neither: keep the split)
            return node
        node = int(est.left[node] if left else est.right[node])
    return node


def _sides(est: TreeEnsemble, node: int, bound: Bound) -> tuple[bool, bool]:
    """(some row may go left, some row may go right) at ``node`` under ``bound``."""
    f32 = est.threshold_dtype == "float32"
    if bound.points is not None:
        values = list(bound.points) + ([math.nan] if bound.nan else [])
        sides = {_goes_left(est, node, _comparison_value(v, f32)) for v in values}
        return True in sides, False in sides
    left = right = False
    missing = int(est.missing[node])
    if bound.nan and missing in (MISSING_NAN, MISSING_ZERO):
        left, right = bool(est.default_left[node]), not bool(est.default_left[node])
    pieces = [(_comparison_value(bound.lo, f32), _comparison_value(bound.hi, f32))] if bound.lo <= bound.hi else []
    if bound.nan and missing == MISSING_AS_ZERO:
        pieces.append((0.0, 0.0))
    if est.is_categorical[node]:
        return (True, True) if pieces else (left, right)
    t = float(est.threshold[node])
    for a, b in pieces:
        if missing == MISSING_ZERO and max(a, -ZERO_THRESHOLD) <= min(b, ZERO_THRESHOLD):
            left, right = left or bool(est.default_left[node]), right or not bool(est.default_left[node])
            if -ZERO_THRESHOLD <= a and b <= ZERO_THRESHOLD:
                continue  # the whole piece is LightGBM's zero band: it never compares
        left = left or (a < t if est.cmp == "<" else a <= t)
        right = right or (b >= t if est.cmp == "<" else b > t)
    return left, right


def _comparison_value(x: float, f32: bool) -> float:
    """``x`` as the model compares it (reference.comparison_input): float32-rounded when f32."""
    if not f32:
        return x
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _goes_left(est: TreeEnsemble, node: int, v: float) -> bool:
    """reference.go_left for one comparison-ready value (the compiler layer is off limits here)."""
    missing = int(est.missing[node])
    if math.isnan(v):
        if missing != MISSING_AS_ZERO:
            return bool(est.default_left[node])
        v = 0.0
    if missing == MISSING_ZERO and abs(v) <= ZERO_THRESHOLD:
        return bool(est.default_left[node])
    if est.is_categorical[node]:
        words = est.cat_words[int(est.cat_index[node])]
        c = math.trunc(v) if math.isfinite(v) else (-1 if v < 0 else len(words) * 32)
        if (v < 0 if est.cat_negative_before_trunc else c < 0) or c >= len(words) * 32:
            return False
        return bool((int(words[c // 32]) >> (c % 32)) & 1)
    t = float(est.threshold[node])
    return v < t if est.cmp == "<" else v <= t


def _describe(bounds: dict[int, Bound], model: Model) -> str:
    out = []
    for i, b in sorted(bounds.items()):
        col = model.signature.inputs[i]
        if b.points is not None:
            values = sorted(b.points)
            shown = [repr(col.categories[int(v)]) if col.categories else repr(float(v)) for v in values]
            out.append(f"{col.name} in {{{', '.join(shown + (['<unknown>'] if b.nan else []))}}}")
        else:
            out.append(f"{col.name} in [{float(b.lo)!r}, {float(b.hi)!r}]{' or NaN' if b.nan else ''}")
    return ", ".join(out)
