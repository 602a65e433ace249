"""Rule ``batch_to_kernels``: every model call still in the query becomes a vectorised UDF call.

The engine registers one function per :class:`UdfSpec` (``churn_v3``, ``churn_v3_proba``, or a
derived model's ``churn_v3_<sha8>``) that scores large Arrow batches on the compiler's kernels.
"""

from __future__ import annotations

from sqlglot import exp

from sparkscore.ir import Model
from sparkscore.ir.naming import udf_name
from sparkscore.optimizer.context import BoundModel, Context
from sparkscore.optimizer.nodes import ModelCall
from sparkscore.optimizer.plan import UdfSpec
from sparkscore.optimizer.route_models import GATE

NAME = "batch_to_kernels"


def batch_to_kernels(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = list(expression.find_all(ModelCall))
    if not calls:
        context.decide(NAME, False, "no model calls left to run as UDFs")
        return expression
    for call in calls:
        gate = _route_gate(call, context)
        spec = udf_spec(context.model(call.model_key), call.call_kind, gated=gate is not None)
        context.udfs.setdefault(spec.name, spec)
        call.replace(exp.Anonymous(this=spec.name, expressions=call.inputs if gate is None else [gate, *call.inputs]))
        gated = f", only on rows of route {gate.meta[GATE]}'s arm (gated)" if gate is not None else ""
        context.decide(NAME, True, f"{call.model_key} -> {spec.name}({len(spec.inputs)} args) -> {spec.output_type}: "
                                   f"{_size(spec.model)}, scored in Arrow batches{gated}")
    return expression


def _route_gate(call: ModelCall, context: Context) -> exp.Expr | None:
    """The route branch condition of a UDF call that is one arm of a route, on Spark (None elsewhere).

    Spark evaluates Python UDFs before (outside) the CASE that holds them: without the gate every
    arm would score every row.  DuckDB evaluates CASE branches on their rows only.
    """
    branch = call.parent
    if context.dialect != "spark" or not isinstance(branch, exp.If) or GATE not in branch.meta \
            or branch.args.get("true") is not call:
        return None
    gate = branch.this.copy()
    gate.meta[GATE] = branch.meta[GATE]
    return gate


def udf_spec(bound: BoundModel, kind: str, gated: bool = False) -> UdfSpec:
    """The UDF that runs ``bound``'s model for ``kind``; equal inputs give equal specs (and names)."""
    src = bound.source
    name = udf_name(src.name, src.version, kind)
    if bound.derived:
        name = f"{name}_{bound.key.rsplit('#', 1)[1]}"
    if gated:
        name = f"{name}_gated"
    model = bound.model
    return UdfSpec(name=name, kind=kind, model=model, source=src, inputs=model.signature.names,
                   output_type=output_type(model, kind), gated=gated)


def output_type(model: Model, kind: str) -> str:
    """SQL type of PREDICT / PREDICT_PROBA / raw for ``model`` (DESIGN section 4)."""
    if kind == "proba":
        return "DOUBLE[]"
    if kind == "predict" and not model.is_classifier and model.estimator.n_outputs > 1:
        return "DOUBLE[]"  # multi-output regression, e.g. stack_linear's stacked margins
    if kind == "raw" or not model.is_classifier or model.n_classes == 2:
        return "DOUBLE"
    first = model.classes[0]
    if isinstance(first, str):
        return "VARCHAR"
    if isinstance(first, (bool, int)):
        return "BIGINT"
    return "DOUBLE"


def _size(model: Model) -> str:
    est = model.estimator
    if model.kind == "ensemble":
        return f"ensemble: {est.combiner} of {est.n_members} members"
    if model.kind == "trees":
        return f"{est.n_trees} trees / {est.n_nodes} nodes"
    return f"GLM {est.n_features}x{est.n_outputs}"
