"""Rule ``inline_models``: small GLMs and tree ensembles become plain SQL expressions.

The engine then evaluates the model natively, with no UDF round-trip.  It fires only when the SQL
reproduces the reference evaluator (``compiler/reference.py``) exactly:

* inputs are NaN-normalised (``COALESCE(CAST(x AS DOUBLE), NaN)``): SQL NULL means "missing",
  which the model sees as NaN, and a GLM over a missing input returns NaN just like the UDF;
* float32-comparison trees (sklearn, XGBoost) compare the float64 input against the float64
  *midpoint* that float32 rounding splits at (``float32(x) <= t  <=>  x < m`` or ``x <= m``), which
  is exact for every double, with no SQL float cast that could overflow;
* NaN / NULL go to the node's default side (``MISSING_NAN``), or are compared as 0
  (``MISSING_AS_ZERO``), or join ``|x| <= 1e-35`` (``MISSING_ZERO``) -- tested explicitly, since
  SQL engines order NaN above every number;
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

from sparkscore.ir import INDICATOR, LEAF, MISSING_AS_ZERO, MISSING_ZERO, FeatureMap, Model, TreeEnsemble
from sparkscore.ir.trees import ZERO_THRESHOLD
from sparkscore.optimizer.context import Context, OptimizerOptions
from sparkscore.optimizer.nodes import ModelCall, nan, number

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
            sql, how = inline_call(bound.model, call.call_kind, call.inputs, context.options)
        except Decline as reason:
            context.decide(NAME, False, f"{call.model_key} ({call.call_kind}): {reason}")
            continue
        call.replace(sql)
        context.decide(NAME, True, f"{call.model_key} ({call.call_kind}): {how}")
    return expression


def inline_call(model: Model, kind: str, inputs: list[exp.Expr], options: OptimizerOptions) -> tuple[exp.Expr, str]:
    """(SQL expression, description) for one model call, or :class:`Decline`."""
    for arg in inputs:
        if not all(isinstance(node, _PLAIN_INPUTS) for node in arg.walk()):
            raise Decline(f"input {arg.sql()} is not a plain column or constant")
    if model.is_classifier and model.n_classes > 2:
        raise Decline(f"multiclass ({model.n_classes} classes) outputs stay in kernels")
    est = model.estimator
    if model.kind == "linear":
        if est.n_features > options.inline_max_features:
            raise Decline(f"GLM has {est.n_features} features > inline_max_features={options.inline_max_features}")
        if est.n_outputs != 1:
            raise Decline(f"GLM has {est.n_outputs} outputs; only single-output GLMs are inlined")
        features = _features(model, inputs)
        raw = _glm(est.coef[:, 0], float(est.intercept[0]), features)
        link = "logistic" if est.link == "ovr_logistic" else est.link
        how = f"GLM with {est.n_features} features <= {options.inline_max_features} as SQL arithmetic ({est.link} link)"
    else:
        _check_trees(est, options)
        features = _features(model, inputs)
        raw = _trees(est, features)
        link = "logistic" if est.post_transform == "sigmoid" else est.post_transform
        how = (f"{est.n_trees} trees / {est.n_nodes} nodes <= {options.inline_max_nodes} as nested CASE "
               f"({est.threshold_dtype} '{est.cmp}' splits, {est.accumulate_dtype} sums)")
    if kind == "raw":
        return raw, how
    value = _link(link, raw)
    if kind == "proba":
        if not model.is_classifier:
            raise Decline("PREDICT_PROBA of a regressor")
        return exp.Array(expressions=[_sub(number(1.0), value), value.copy()]), how
    return value, how


# ---------------------------------------------------------------------------- features
def _features(model: Model, inputs: list[exp.Expr]) -> list:
    """Per feature: a NaN-normalised DOUBLE expression, or ("text", column, input Column)."""
    values: list = []
    for col, arg in zip(model.signature.inputs, inputs):
        if col.categories and isinstance(col.categories[0], str):
            values.append(("text", arg, col))
        else:
            values.append(exp.func("COALESCE", exp.cast(arg.copy(), _DOUBLE), nan()))
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
        return exp.case().when(test, number(1.0)).else_(number(0.0))
    if isinstance(v, tuple):
        return v
    out = v.copy()
    if not math.isnan(fmap.fill[j]):
        out = exp.case().when(exp.IsNan(this=out), number(fmap.fill[j])).else_(out.copy())
    if fmap.center[j] != 0.0:  # (x - 0) / 1 == x bit for bit: skip the no-ops
        out = _sub(out, number(fmap.center[j]))
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


def _link(link: str, z: exp.Expr) -> exp.Expr:
    if link == "identity":
        return z
    if link == "logistic":
        return exp.Div(this=number(1.0), expression=exp.Paren(this=exp.Add(
            this=number(1.0), expression=exp.Exp(this=exp.Neg(this=_paren(z))))))
    if link == "exp":
        return exp.Exp(this=z)
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
    return (exp.case()
            .when(_goes_left(est, node, features[int(est.feature[node])]),
                  _tree(est, int(est.left[node]), features, leaf_dtype))
            .else_(_tree(est, int(est.right[node]), features, leaf_dtype)))


def _goes_left(est: TreeEnsemble, node: int, v: exp.Expr) -> exp.Expr:
    threshold = float(est.threshold[node])
    if est.threshold_dtype == "float32":
        op, bound = float32_split(threshold, est.cmp)
    else:
        op, bound = est.cmp, threshold
    compare = (exp.LT if op == "<" else exp.LTE)(this=v.copy(), expression=number(bound))
    missing: exp.Expr = exp.IsNan(this=v.copy())
    default_left = bool(est.default_left[node])
    if est.missing[node] == MISSING_AS_ZERO:
        default_left = (0.0 < threshold) if est.cmp == "<" else (0.0 <= threshold)
    elif est.missing[node] == MISSING_ZERO:
        missing = exp.or_(missing, exp.LTE(this=exp.Abs(this=v.copy()), expression=number(ZERO_THRESHOLD)))
    if default_left:
        return exp.or_(missing, compare)
    return exp.and_(exp.not_(missing), compare)


def float32_split(threshold: float, cmp: str) -> tuple[str, float]:
    """(op, m) with ``float32(x) cmp threshold  <=>  x op m`` for every non-NaN double ``x``.

    ``threshold`` is float32-representable.  ``float32(x) < t`` is ``float32(x) <= prev32(t)``;
    ``float32(x) <= t`` holds below the midpoint ``m`` of ``t`` and the next float32 up (the next
    one above FLT_MAX being 2**128, where rounding overflows to inf), and at ``m`` itself iff
    round-half-to-even rounds ``m`` down to ``t``.
    """
    t32 = np.float32(threshold)
    if cmp == "<" and np.isneginf(t32):
        return "<", -math.inf  # nothing is below -inf
    with np.errstate(over="ignore"):
        if cmp == "<":
            t32 = np.nextafter(t32, np.float32(-np.inf))
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


def _sub(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    return exp.Sub(this=_paren(a), expression=_paren(b))

