"""Rule ``inline_models``: small GLMs and tree ensembles become plain SQL expressions.

The engine then evaluates the model natively, with no UDF round-trip.  It fires only when the SQL
reproduces the reference evaluator (``compiler/reference.py``) exactly:

* SQL NULL means "missing", which the model sees as NaN.  The SQL stays short by letting NULL
  propagate where it means the same as NaN, instead of normalising every input at every use:

  - each input is read as ``x`` when the catalog says it is DOUBLE, else ``CAST(x AS DOUBLE)``;
  - a GLM's margin is ``COALESCE(w·x + b, NaN)``: a NULL passthrough input makes the sum NULL
    exactly where a NaN makes it NaN; only imputed inputs (``fill``) read ``COALESCE(x, NaN)``,
    and numeric one-hot tests ``x = c`` are false (ELSE 0) for NULL and NaN alike;
  - a tree split relies on the engines' NaN order (DuckDB and Spark sort NaN above every number,
    so ``NaN <= t`` and ``NaN < t`` are FALSE for every threshold): a node whose missing values go
    right is ``CASE WHEN x <= t THEN left ELSE right`` (NULL and NaN both fall to ELSE), one whose
    missing values go left is ``CASE WHEN x > t AND NOT ISNAN(x) THEN right ELSE left`` (NULL
    makes the test NULL, NaN makes it FALSE: both take ELSE);

* float32-comparison trees (sklearn, XGBoost) compare the float64 input against the float64
  *midpoint* that float32 rounding splits at (``float32(x) <= t  <=>  x < m`` or ``x <= m``), which
  is exact for every double, with no SQL float cast that could overflow;
* NaN / NULL go to the node's default side (``MISSING_NAN``), or are compared as 0
  (``MISSING_AS_ZERO``), or join ``|x| <= 1e-35`` (``MISSING_ZERO``) -- tested explicitly;
* XGBoost's float32 accumulation is ``CAST(acc + leaf AS FLOAT)`` after every tree, in tree order;
* numbers are exact binary64 literals (:func:`nodes.number`).

GLM sums follow the matrix product up to summation order (last-bit differences, as between BLAS
builds).  Declined: multiclass label outputs, multi-output trees, categorical splits, string
categorical passthrough, inputs that are not plain columns or constants (duplicating them would
re-evaluate them), and models over the size thresholds in :class:`OptimizerOptions`.
"""

from __future__ import annotations

import math

import numpy as np
from sqlglot import exp

from sparkscore.errors import unknown_category_message
from sparkscore.ir import INDICATOR, LEAF, MISSING_AS_ZERO, MISSING_ZERO, FeatureMap, Model, TreeEnsemble
from sparkscore.ir.trees import ZERO_THRESHOLD
from sparkscore.optimizer.context import Context, OptimizerOptions
from sparkscore.optimizer.nodes import ModelCall, nan, number
from sparkscore.optimizer.sources import column_source, enclosing_select, select_sources

NAME = "inline_models"

_DOUBLE = exp.DataType.Type.DOUBLE
_FLOAT = exp.DataType.Type.FLOAT
_PLAIN_INPUTS = (exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Cast, exp.DataType, exp.Neg, exp.Paren)


class Decline(Exception):
    """The model cannot be inlined exactly (or should not be): the message is the reason."""


def inline_models(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = list(expression.find_all(ModelCall))
    if not calls:
        context.decide(NAME, False, "no model calls to inline")
        return expression
    for call in calls:
        bound = context.model(call.model_key)
        try:
            sql, how = inline_call(bound.model, call.call_kind, call.inputs, context.options,
                                   double_inputs(call, context))
        except Decline as reason:
            context.decide(NAME, False, f"{call.model_key} ({call.call_kind}): {reason}")
            continue
        sql = strict_guard(bound.model, call.inputs, sql, bound.source.ref, context.dialect)
        if isinstance(call.parent, (exp.Binary, exp.Unary)) and isinstance(sql, (exp.Binary, exp.Unary)):
            sql = exp.Paren(this=sql)  # `x - PREDICT(...)` must subtract the whole model
        call.replace(sql)
        context.decide(NAME, True, f"{call.model_key} ({call.call_kind}): {how}")
    return expression


def strict_guard(model: Model, inputs: list[exp.Expr], sql: exp.Expr, label: str, dialect: str) -> exp.Expr:
    """``sql`` behind a check of the model's strict inputs (``Column.accepts``): a row holding a
    value outside them fails the query with the line the UDF path raises
    (:func:`sparkscore.errors.unknown_category_message`), through DuckDB's ``error()`` or Spark's
    ``raise_error()`` in a CASE branch, which both engines evaluate only for the rows taking it.
    The message carries the row's value, so neither engine can fold the call into a constant."""
    branches = []
    for col, arg in zip(model.signature.inputs, inputs):
        if col.is_strict:
            bad, shown = _unknown_value(col, arg)
            before, after = unknown_category_message(label, col.name, "\x00").split("\x00")
            message = exp.func("CONCAT", exp.Literal.string(before), shown, exp.Literal.string(after))
            fail = exp.Anonymous(this="RAISE_ERROR" if dialect == "spark" else "ERROR", expressions=[message])
            branches.append((bad, fail))
    if not branches:
        return sql
    case = exp.case()
    for bad, fail in branches:
        case = case.when(bad, fail)
    return case.else_(sql)


def _unknown_value(col, arg: exp.Expr) -> tuple[exp.Expr, exp.Expr]:
    """(TRUE where ``arg`` is outside ``col.accepts``, the value as the message shows it)."""
    text = bool(col.categories) and isinstance(col.categories[0], str)
    value = arg.copy() if text else exp.cast(arg.copy(), _DOUBLE)
    values = col.accepted_values
    known = (exp.In(this=value.copy(), expressions=[exp.Literal.string(str(v)) if text else number(float(v))
                                                     for v in values]) if values else exp.false())
    null = exp.Is(this=value.copy(), expression=exp.Null())
    if not text:
        null = exp.or_(null, exp.IsNan(this=value.copy()))
    if col.accepts_null:
        bad = exp.and_(exp.not_(exp.paren(null, copy=False)), exp.not_(known))
    else:
        bad = exp.or_(null, exp.not_(known))
    quoted = (exp.func("CONCAT", exp.Literal.string("'"), value.copy(), exp.Literal.string("'")) if text
              else exp.cast(value.copy(), exp.DataType.Type.VARCHAR))
    shown = exp.case().when(null.copy(), exp.Literal.string("NULL")).else_(quoted)
    return bad, shown


def will_inline(call: ModelCall, context: Context) -> bool:
    """Whether inline_models (if enabled) will turn this call into SQL; earlier rules ask so they
    do not force an inlinable model back into a UDF."""
    if NAME in context.disabled:
        return False
    try:
        inline_call(context.model(call.model_key).model, call.call_kind, call.inputs, context.options)
    except Decline:
        return False
    return True


def double_inputs(call: ModelCall, context: Context) -> list[bool]:
    """Per input: whether it is a column the catalog knows to be DOUBLE (no CAST needed)."""
    select = enclosing_select(call)
    sources = select_sources(select, context.dialect) if select is not None else []
    out = []
    for arg in call.inputs:
        source = column_source(arg, sources, context) if sources else None
        columns = context.catalog.columns(source.table) if source is not None and source.table else None
        sql_type = next((t for n, t in columns or () if n.lower() == arg.name.lower()), None)
        out.append(str(sql_type).upper() in ("DOUBLE", "FLOAT8", "DOUBLE PRECISION"))
    return out


def inline_call(model: Model, kind: str, inputs: list[exp.Expr], options: OptimizerOptions,
                doubles: list[bool] | None = None) -> tuple[exp.Expr, str]:
    """(SQL expression, description) for one model call, or :class:`Decline`.

    ``doubles[i]``: input ``i`` is already a DOUBLE column (read without a CAST).
    """
    for arg in inputs:
        if not all(isinstance(node, _PLAIN_INPUTS) for node in arg.walk()):
            raise Decline(f"input {arg.sql()} is not a plain column or constant")
    if model.is_classifier and model.n_classes != 2:
        raise Decline(f"{'multiclass' if model.n_classes > 2 else 'one-class'} ({model.n_classes} classes) "
                      f"outputs stay in kernels")
    est = model.estimator
    if model.kind == "ensemble":
        raise Decline("an unfused ensemble runs its members in one kernel call")
    if model.kind == "linear":
        if est.n_features > options.inline_max_features:
            raise Decline(f"GLM has {est.n_features} features > inline_max_features={options.inline_max_features}")
        if est.n_outputs != 1:
            raise Decline(f"GLM has {est.n_outputs} outputs; only single-output GLMs are inlined")
        if est.dtype != "float64":
            raise Decline("float32 GLM: SQL arithmetic in DOUBLE would not round its margins to float32")
        features = _features(model, inputs, doubles)
        raw = exp.func("COALESCE", _glm(est.coef[:, 0], float(est.intercept[0]), features), nan())
        link = "logistic" if est.link == "ovr_logistic" else est.link
        how = f"GLM with {est.n_features} features <= {options.inline_max_features} as SQL arithmetic ({est.link} link)"
    else:
        _check_trees(est, options)
        if kind != "raw" and est.accumulate_dtype == "float32" and est.post_transform in (
                "sigmoid", "softmax", "exp", "exp_double", "onnx_logistic", "onnx_softmax", "onnx_softmax_zero"):
            raise Decline(f"float32 {est.post_transform} (on libm's expf, as XGBoost and ONNX Runtime compute it) "
                          "has no exact SQL form: SQL's EXP is double")
        features = _features(model, inputs, doubles)
        if est.has_missing_value:
            features = [mark_missing_sql(v, float(est.missing_value[0])) for v in features]
        raw = _trees(est, features)
        link = "logistic" if est.post_transform == "sigmoid" else est.post_transform
        how = (f"{est.n_trees} trees / {est.n_nodes} nodes <= {options.inline_max_nodes} as nested CASE "
               f"({est.threshold_dtype} '{est.cmp}' splits, {est.accumulate_dtype} sums)")
    if kind == "raw":
        return raw, how
    value = link_sql(link, raw)
    if kind == "proba":
        if not model.is_classifier:
            raise Decline("PREDICT_PROBA of a regressor")
        if getattr(est, "accumulate_dtype", "float64") == "float32" and link == "identity":
            raise Decline("1 - p of a float32 score is a float32 subtraction (kept in kernels)")
        return exp.Array(expressions=[subtract_sql(number(1.0), value), value.copy()]), how
    return value, how


# ---------------------------------------------------------------------------- features
def _features(model: Model, inputs: list[exp.Expr], doubles: list[bool] | None) -> list:
    """Per feature: a DOUBLE expression (NULL or NaN when missing), or ("text", column, input Column)."""
    values: list = []
    for i, (col, arg) in enumerate(zip(model.signature.inputs, inputs)):
        if col.categories and isinstance(col.categories[0], str):
            values.append(("text", arg, col))
        else:
            values.append(arg.copy() if doubles and doubles[i] else exp.cast(arg.copy(), _DOUBLE, copy=False))
    for fmap in model.features:
        values = [_feature(fmap, j, values) for j in range(fmap.n_outputs)]
    for v in values:
        if isinstance(v, tuple):
            raise Decline(f"text input {v[2].name!r} is used as a number")
    return values


def _feature(fmap: FeatureMap, j: int, values: list):
    v = values[int(fmap.source[j])]
    if fmap.kind[j] == INDICATOR:
        category = float(fmap.category[j])
        if isinstance(v, tuple):
            _, column, col = v
            if not (category.is_integer() and 0 <= category < len(col.categories)):
                return number(0.0)
            test = exp.EQ(this=column.copy(), expression=exp.Literal.string(str(col.categories[int(category)])))
        else:
            test = exp.EQ(this=v.copy(), expression=number(category))
            if not math.isnan(fmap.fill[j]) and float(fmap.fill[j]) == category:
                # imputed (SimpleImputer in front): NULL / NaN become ``fill``, which is this category
                test = exp.or_(test, exp.Is(this=v.copy(), expression=exp.Null()), exp.IsNan(this=v.copy()))
        return exp.case().when(test, number(1.0)).else_(number(0.0))
    if isinstance(v, tuple):
        return v
    out = v.copy()
    if not math.isnan(fmap.fill[j]):  # NULL must be imputed too: normalise it to NaN here only
        value = exp.func("COALESCE", out, nan())
        out = exp.case().when(exp.IsNan(this=value), number(fmap.fill[j])).else_(value.copy())
    if fmap.center[j] != 0.0:  # (x - 0) / 1 == x bit for bit: skip the no-ops
        out = subtract_sql(out, number(fmap.center[j]))
    if fmap.scale[j] != 1.0:
        out = exp.Div(this=_paren(out), expression=number(fmap.scale[j]))
    return out


def _never_nan(feature: exp.Expr) -> bool:
    """Indicator features (CASE ... THEN 1 ELSE 0) can be neither NaN nor infinite."""
    return (isinstance(feature, exp.Case) and isinstance(feature.args.get("default"), exp.Literal)
            and all(isinstance(i.args["true"], exp.Literal) for i in feature.args["ifs"]))


# ---------------------------------------------------------------------------- GLM
def _glm(coef: np.ndarray, intercept: float, features: list[exp.Expr]) -> exp.Expr:
    total = None
    for w, f in zip(coef, features):
        if w == 0.0 and _never_nan(f):  # 0 * indicator is 0: drop; 0 * x keeps NaN/inf semantics
            continue
        term = exp.Mul(this=number(float(w)), expression=_paren(f))
        total = term if total is None else exp.Add(this=total, expression=term)
    return number(intercept) if total is None else exp.Add(this=total, expression=number(intercept))


def link_sql(link: str, z: exp.Expr) -> exp.Expr:
    if link == "identity":
        return z
    if link == "logistic":
        return exp.Div(this=number(1.0), expression=exp.Paren(this=exp.Add(
            this=number(1.0), expression=exp.Exp(this=exp.Neg(this=_paren(z))))))
    if link == "exp":
        return exp.Exp(this=z)
    if link == "hinge":  # XGBoost binary:hinge: 1.0 if z > 0 else 0.0 (NaN sorts above 0 in SQL)
        positive = exp.and_(exp.GT(this=z.copy(), expression=number(0.0)), exp.not_(exp.IsNan(this=z.copy())))
        return exp.case().when(positive, number(1.0)).else_(number(0.0))
    raise Decline(f"{link} link needs several outputs")


# ---------------------------------------------------------------------------- trees
def _check_trees(est: TreeEnsemble, options: OptimizerOptions) -> None:
    if est.n_nodes > options.inline_max_nodes:
        raise Decline(f"{est.n_trees} trees / {est.n_nodes} nodes > inline_max_nodes={options.inline_max_nodes}")
    if est.n_outputs != 1 or est.value.shape[1] != 1:
        raise Decline(f"tree ensemble has {est.n_outputs} outputs; only single-output ensembles are inlined")
    if est.is_categorical.any():
        raise Decline("categorical splits stay in kernels")
    if est.threshold_dtype == "float32" and (est.missing == MISSING_ZERO).any():
        raise Decline("zero-as-missing splits on float32 thresholds stay in kernels")
    if est.accumulate_dtype == "float32" and est.aggregation == "mean":
        raise Decline("float32 mean aggregation stays in kernels")


def _trees(est: TreeEnsemble, features: list[exp.Expr]) -> exp.Expr:
    base = float(est.base_score[0])
    if est.accumulate_dtype == "float32":
        acc: exp.Expr = number(float(np.float32(base)))
        for root in est.roots:
            acc = exp.cast(exp.Add(this=acc, expression=_tree(est, int(root), features, np.float32)), _FLOAT)
        return exp.cast(acc, _DOUBLE)
    total = None
    for root in est.roots:
        tree = _tree(est, int(root), features, np.float64)
        total = tree if total is None else exp.Add(this=total, expression=tree)
    if est.aggregation == "mean":
        total = exp.Div(this=_paren(total), expression=number(float(est.n_trees)))
    return exp.Add(this=number(base), expression=_paren(total))


def _tree(est: TreeEnsemble, node: int, features: list[exp.Expr], leaf_dtype) -> exp.Expr:
    if est.feature[node] == LEAF:
        return number(float(leaf_dtype(est.value[node, 0])))
    left = _tree(est, int(est.left[node]), features, leaf_dtype)
    right = _tree(est, int(est.right[node]), features, leaf_dtype)
    test, missing_left = _split(est, node, features[int(est.feature[node])])
    if missing_left:  # test says "goes right"
        return exp.case().when(test, right).else_(left)
    return exp.case().when(test, left).else_(right)


def _split(est: TreeEnsemble, node: int, v: exp.Expr) -> tuple[exp.Expr, bool]:
    """(test, missing_left): the test is TRUE exactly for non-missing values going right when
    missing values go left, else exactly for non-missing values going left.

    NULL makes every test NULL and NaN makes ``x <= t`` / ``x < t`` FALSE (NaN sorts last), so
    both fall to the ELSE branch, the missing values' side.
    """
    threshold = float(est.threshold[node])
    if est.threshold_dtype == "float32":
        op, bound = float32_split(threshold, est.cmp)
    else:
        op, bound = est.cmp, threshold
    default_left = bool(est.default_left[node])
    if est.missing[node] == MISSING_AS_ZERO:
        default_left = (0.0 < threshold) if est.cmp == "<" else (0.0 <= threshold)
    zero_band = None
    if est.missing[node] == MISSING_ZERO:
        zero_band = exp.not_(exp.LTE(this=exp.Abs(this=v.copy()), expression=number(ZERO_THRESHOLD)), copy=False)
    if default_left:
        goes_right = (exp.GTE if op == "<" else exp.GT)(this=v.copy(), expression=number(bound))
        test = exp.and_(goes_right, exp.not_(exp.IsNan(this=v.copy()), copy=False), *([zero_band] if zero_band else []),
                        copy=False)
        return test, True
    goes_left = (exp.LT if op == "<" else exp.LTE)(this=v.copy(), expression=number(bound))
    return (exp.and_(goes_left, zero_band, copy=False) if zero_band is not None else goes_left), False


def mark_missing_sql(v: exp.Expr, missing: float) -> exp.Expr:
    """``v``, or NaN where ``float32(v) == float32(missing)`` (XGBoost's ``missing=``, ``TreeEnsemble.missing_value``).

    ``float32(x) == M`` is ``float32(x) <= M and not float32(x) < M``; both sides become double
    comparisons by :func:`float32_split`.  NULL and NaN fail every comparison and stay as they are.
    """
    with np.errstate(over="ignore"):
        m32 = float(np.float32(missing))
    le_op, le_bound = float32_split(m32, "<=")
    lt_op, lt_bound = float32_split(m32, "<")
    ops = {"<": exp.LT, "<=": exp.LTE}
    hit = exp.and_(ops[le_op](this=v.copy(), expression=number(le_bound)),
                   exp.not_(ops[lt_op](this=v.copy(), expression=number(lt_bound))), copy=False)
    return exp.case().when(hit, nan()).else_(v.copy())


def float32_split(threshold: float, cmp: str) -> tuple[str, float]:
    """(op, m) with ``float32(x) cmp threshold  <=>  x op m`` for every non-NaN double ``x``.

    ``threshold`` is any double (XGBoost's are float32 values, sklearn's are float64 midpoints).
    ``float32(x)`` is a float32, so ``float32(x) <= t`` is ``float32(x) <= T`` with ``T`` the
    largest float32 ``<= t``, and ``float32(x) < t`` is ``float32(x) <= T`` with ``T`` the largest
    float32 ``< t``.  ``float32(x) <= T`` holds below the midpoint ``m`` of ``T`` and the next
    float32 up (the next one above FLT_MAX being 2**128, where rounding overflows to inf), and at
    ``m`` itself iff round-half-to-even rounds ``m`` down to ``T``.
    """
    if cmp == "<" and threshold == -math.inf:
        return "<", -math.inf  # nothing is below -inf
    with np.errstate(over="ignore"):
        t32 = np.float32(threshold)
        if float(t32) > threshold or (cmp == "<" and float(t32) == threshold):
            t32 = np.nextafter(t32, np.float32(-np.inf))  # round down / step below t
        if np.isposinf(t32):
            return "<=", math.inf
        up = float(np.nextafter(t32, np.float32(np.inf)))
        up = 2.0 ** 128 if math.isinf(up) else up
        lo = -(2.0 ** 128) if np.isneginf(t32) else float(t32)
        mid = (lo + up) / 2.0  # exact: both ends are float32 values within a factor of two
        return ("<=" if np.float32(mid) == t32 else "<"), mid


# ---------------------------------------------------------------------------- SQL helpers
def _paren(e: exp.Expr) -> exp.Expr:
    return exp.Paren(this=e) if isinstance(e, (exp.Binary, exp.Neg)) else e


def subtract_sql(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    return exp.Sub(this=_paren(a), expression=_paren(b))

