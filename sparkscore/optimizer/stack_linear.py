"""Rule ``stack_linear``: k GLMs over the same input rows become one matrix product.

Calls in one SELECT whose argument lists are identical (same SQL, same signature, same
preprocessing) and whose models are single-output GLMs (identity, logistic, one-vs-rest or exp link;
one feature-map layer) are
replaced by element accesses into *one* derived multi-output GLM call ``X·[w1 … wk] + b`` returning
the k margins as ``DOUBLE[]``, with each model's link applied in SQL (``1/(1+EXP(-m))``, ``EXP(m)``)
and ``PREDICT_PROBA`` as ``[1 - p, p]``.  The engine evaluates the repeated stacked call once per
row (DuckDB and Spark eliminate the common subexpression).  Counted on DuckDB 2.0 (rows through the
UDF): once per row for calls in one expression, in several aggregates, in ORDER BY / GROUP BY, CASE
and COALESCE; a copy in WHERE runs in the filter and again for the rows that pass, as separate calls
would.  Selecting the margins once in a subquery measured no faster.  What stacking saves is the
UDF's per-chunk cost, paid once instead of k times: DuckDB's Arrow hand-over of every input column,
then encoding and scoring (in process, 0.32 ms per 2,048-row chunk for one 10-input GLM, 0.44 ms for
8 stacked); ratios in ``bench/results/optimizer_duckdb.md``.

Preprocessing must be identical: a block-diagonal product would add ``0 * x`` terms for the other
models' features, turning a NaN / inf the model itself never reads into a NaN margin.

Declined: fewer than two distinct stackable GLMs over one argument list, multiclass / multi-output
models, trees, and groups that ``inline_models`` will turn into SQL arithmetic anyway (stacking
would force them back into a UDF).

Known difference: engines return a ``DOUBLE[]`` row as NULL when any element is NaN, so where one
stacked model's margin is NaN and another's is not (only possible with ±inf inputs meeting a zero
coefficient or cancelling each other; NULL inputs make every margin NaN) the finite one becomes
NULL as well.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from sparkscore.ir import FeatureMap
from sparkscore.optimizer.context import Context
from sparkscore.optimizer.derive import feature_map, glm
from sparkscore.optimizer.inline_models import link_sql, subtract_sql, will_inline
from sparkscore.optimizer.nodes import ModelCall, number
from sparkscore.optimizer.route_models import route_arm_of
from sparkscore.optimizer.sources import enclosing_select

NAME = "stack_linear"
_LINKS = {"identity": "identity", "logistic": "logistic", "ovr_logistic": "logistic", "exp": "exp"}


def stack_linear(expression: exp.Expr, context: Context) -> exp.Expr:
    candidates: dict[tuple, list[ModelCall]] = defaultdict(list)
    for call in expression.find_all(ModelCall):
        reason = _unstackable(call, context)
        if reason:
            context.decide(NAME, False, f"{call.model_key} ({call.call_kind}): {reason}")
            continue
        model = context.model(call.model_key).model
        candidates[(id(enclosing_select(call)), model.signature, _fingerprint(feature_map(model)))].append(call)
    if not candidates:
        context.decide(NAME, False, "no single-output GLM calls to stack")
    groups: dict[tuple, list[ModelCall]] = defaultdict(list)
    for key, calls in candidates.items():
        for call in calls:  # argument SQL only where two candidates could share it (it costs planning time)
            args = tuple(arg.sql(dialect=context.dialect) for arg in call.inputs) if len(calls) > 1 else ()
            groups[(key, args)].append(call)
    for calls in groups.values():
        keys = list(dict.fromkeys(call.model_key for call in calls))
        if len(keys) < 2:
            context.decide(NAME, False, f"{keys[0]}: no other GLM over the same arguments in this SELECT")
            continue
        models = [context.model(key).model for key in keys]
        if all(will_inline(call, context) for call in calls):
            context.decide(NAME, False, f"{', '.join(keys)}: inline_models evaluates each as SQL arithmetic; "
                                        f"no UDF to share")
            continue
        _stack(calls, keys, context)
        context.decide(NAME, True, f"{', '.join(keys)}: {len(keys)} GLMs over {len(calls[0].inputs)} "
                                   f"inputs as one {models[0].estimator.n_features}x{len(keys)} product")
    return expression


def _fingerprint(fmap: FeatureMap) -> tuple:
    """Equal for equal preprocessing: only then is each stacked margin computed from the same features."""
    return (fmap.n_inputs, *(getattr(fmap, name).tobytes() for name in ("kind", "source", "fill", "center", "scale",
                                                                       "category")))


def _unstackable(call: ModelCall, context: Context) -> str | None:
    model = context.model(call.model_key).model
    if model.kind != "linear":
        return f"not a GLM ({model.kind})"
    if model.estimator.n_outputs != 1 or model.estimator.link not in _LINKS:
        return f"{model.estimator.n_outputs}-output {model.estimator.link} GLM"
    if model.estimator.dtype != "float64":
        return "float32 GLM (its margins are rounded to float32)"
    if model.is_classifier and model.n_classes != 2:
        return f"{model.n_classes}-class classifier (PREDICT is its label)"
    if feature_map(model) is None:
        return "chained feature maps"
    if call.call_kind == "raw":
        return "raw margins are already a partial product"
    route = route_arm_of(call)
    if route is not None:
        return f"an arm of route {route}: each row is scored by its own arm only"
    if enclosing_select(call) is None:
        return "not inside a SELECT"
    return None


def _stack(calls: list[ModelCall], keys: list[str], context: Context) -> None:
    bound = [context.model(key) for key in keys]
    models = [b.model for b in bound]
    coef = np.hstack([m.estimator.coef for m in models])
    intercept = np.array([m.estimator.intercept[0] for m in models])
    stacked = glm(models[0], models[0].signature.inputs, feature_map(models[0]), coef, intercept, "identity",
                  regression=True, note=f"stack_linear: {', '.join(keys)}")
    key = context.add_model(stacked, bound[0].source).key
    offset = Dialect.get_or_raise(context.dialect).INDEX_OFFSET
    for call in calls:
        i = keys.index(call.model_key)
        margin = exp.Bracket(this=ModelCall.build(key, "predict", [a.copy() for a in call.inputs]),
                             expressions=[exp.Literal.number(i + offset)], offset=offset)
        value = link_sql(_LINKS[models[i].estimator.link], margin)
        if call.call_kind == "proba":
            value = exp.Array(expressions=[subtract_sql(number(1.0), value), value.copy()])
        call.replace(value)
