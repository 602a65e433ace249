"""Rule ``batch_to_kernels``: every model call still in the query becomes a vectorised UDF call.

The engine registers one function per :class:`UdfSpec` (``churn_v3``, ``churn_v3_proba``, or a
derived model's ``churn_v3_<sha8>``) that scores large Arrow batches on the compiler's kernels.

On DuckDB the arms of a route that are still UDFs become ONE :class:`RoutedUdfSpec` call per
route (``gbm_ab_route_<sha8>(arm index, inputs...)``): DuckDB calls an Arrow UDF per ~2,048-row
chunk, and a CASE over two arm UDFs would call each on half a chunk (1.33x one model for a plain
``CASE WHEN id % 2``, bench/results/routes.md).  Arms that inlined stay SQL in the CASE.
"""

from __future__ import annotations

import hashlib

from sqlglot import exp

from sparkscore.ir import Model
from sparkscore.ir.naming import identifier, input_type, udf_name
from sparkscore.optimizer.context import BoundModel, Context
from sparkscore.optimizer.nodes import ModelCall
from sparkscore.optimizer.plan import RoutedUdfSpec, UdfSpec
from sparkscore.optimizer.route_models import GATE

NAME = "batch_to_kernels"


def batch_to_kernels(expression: exp.Expr, context: Context) -> exp.Expr:
    calls = list(expression.find_all(ModelCall))
    if not calls:
        context.decide(NAME, False, "no model calls left to run as UDFs")
        return expression
    if context.dialect != "spark":  # Spark: every arm gated in its own UDF (see _route_gate)
        for case in [c for c in expression.find_all(exp.Case) if GATE in c.meta]:
            _route_udf(case, context)
        calls = list(expression.find_all(ModelCall))
    for call in calls:
        gate = _route_gate(call, context)
        spec = udf_spec(context.model(call.model_key), call.call_kind, gated=gate is not None)
        context.udfs.setdefault(spec.name, spec)
        call.replace(exp.Anonymous(this=spec.name, expressions=call.inputs if gate is None else [gate, *call.inputs]))
        gated = f", only on rows of route {gate.meta[GATE]}'s arm (gated)" if gate is not None else ""
        context.decide(NAME, True, f"{call.model_key} -> {spec.name}({len(spec.inputs)} args) -> {spec.output_type}: "
                                   f"{_size(spec.model)}, scored in Arrow batches{gated}")
    return expression


def _route_udf(case: exp.Case, context: Context) -> None:
    """Replace the UDF arms of one route CASE (DuckDB form: every arm a WHEN but the last, the ELSE)
    by one routed UDF call; arms that are SQL (inlined) keep their WHEN."""
    ifs = list(case.args.get("ifs") or [])
    default = case.args.get("default")
    udf_ifs = [b for b in ifs if isinstance(b.args.get("true"), ModelCall)]
    default_call = default if isinstance(default, ModelCall) else None
    arm_calls = [b.args["true"] for b in udf_ifs] + ([default_call] if default_call is not None else [])
    if len(arm_calls) < 2:
        return  # at most one UDF arm: it already gets every row of its arm in one call per chunk
    route = case.meta[GATE]
    specs = tuple(udf_spec(context.model(c.model_key), c.call_kind) for c in arm_calls)
    if len({s.output_type for s in specs}) > 1 or len({s.kind for s in specs}) > 1:
        context.decide(NAME, False, f"route {route}: arms return {', '.join(sorted({s.output_type for s in specs}))}: "
                                    "each arm stays its own UDF")
        return
    shared: dict[tuple[str, str], int] = {}
    inputs: list[exp.Expr] = []
    names: list[str] = []
    types: list[str] = []
    positions = []
    for call, spec in zip(arm_calls, specs):
        mine = []
        for arg, column in zip(call.inputs, spec.model.signature.inputs):
            key = (arg.sql(dialect=context.dialect), input_type(column))
            if key not in shared:
                shared[key] = len(inputs)
                inputs.append(arg)
                names.append(column.name if column.name not in names else f"{column.name}_{len(inputs)}")
                types.append(key[1])
            mine.append(shared[key])
        positions.append(tuple(mine))
    digest = hashlib.sha256(repr([(s.name, s.model.sha256, p) for s, p in zip(specs, positions)]).encode()).hexdigest()
    spec = RoutedUdfSpec(name=f"{identifier(route)}_route_{digest[:8]}", route=route,
                         kind=specs[0].kind, arms=specs, positions=tuple(positions), input_types=tuple(types),
                         inputs=("arm", *names), output_type=specs[0].output_type)
    context.udfs.setdefault(spec.name, spec)
    index = exp.Case(ifs=[exp.If(this=b.this.copy(), true=exp.Literal.number(i)) for i, b in enumerate(udf_ifs)],
                     default=exp.Literal.number(len(udf_ifs)) if default_call is not None else None)
    routed = exp.Anonymous(this=spec.name, expressions=[index, *inputs])
    rest = [b for b in ifs if not any(b is u for u in udf_ifs)]
    if default_call is not None:  # the rows no SQL arm takes: all the routed function's
        replacement: exp.Expr = exp.Case(ifs=rest, default=routed) if rest else routed
    else:  # the ELSE is an inlined arm: the routed function gets the UDF arms' conditions
        replacement = exp.Case(ifs=[*rest, exp.If(this=exp.or_(*(b.this.copy() for b in udf_ifs)), true=routed)],
                               default=default)
    replacement.meta[GATE] = route
    case.replace(replacement)
    arms = ", ".join(f"{s.name}" for s in specs)
    context.decide(NAME, True, f"route {route}: arms {arms} -> one {spec.name}(arm, {len(inputs)} args) -> "
                               f"{spec.output_type}: each chunk split by arm, each arm scored on its own rows in one call")


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
