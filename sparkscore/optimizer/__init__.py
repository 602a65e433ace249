"""SQL front end and rule-based optimizer for PREDICT queries (DESIGN sections 4 and 5).

``plan_query`` parses the query (PREDICT / PREDICT_PROBA as our own nodes), then runs the rules
in ``RULES`` order.  Each rule is a pure function ``rule(expression, context) -> expression`` in its
own module; it records one :class:`Decision` per model call it considered (fired or declined,
with the estimates it used), which ``str(plan)`` shows as the EXPLAIN text.
"""

from __future__ import annotations

from typing import Callable, Sequence

from sparkscore.errors import QueryError
from sparkscore.optimizer.batch_to_kernels import batch_to_kernels
from sparkscore.optimizer.bind_models import bind_models
from sparkscore.optimizer.context import (BoundModel, Catalog, Context, Decision, OptimizerOptions,
                                          ResolvedModel)
from sparkscore.optimizer.dialect import generate, parse
from sparkscore.optimizer.factorize_linear import factorize_linear
from sparkscore.optimizer.inline_models import inline_models
from sparkscore.optimizer.names import NameGenerator
from sparkscore.optimizer.nodes import ModelCall, ScorePredict
from sparkscore.optimizer.plan import Plan, UdfSpec
from sparkscore.optimizer.prune_by_predicates import prune_by_predicates
from sparkscore.optimizer.prune_model_inputs import prune_model_inputs
from sparkscore.optimizer.route_models import route_models
from sparkscore.optimizer.stack_linear import stack_linear

#: Every rule name users may pass to ``disable_rules`` (DESIGN section 5), in plan order.
RULE_NAMES = ("bind_models", "prune_model_inputs", "prune_by_predicates", "factorize_linear",
              "stack_linear", "inline_models", "batch_to_kernels")

#: The rules this build runs, in order: (name, function).  A new rule is one module exposing
#: ``NAME`` and ``rule(expression, context)``, inserted here at its RULE_NAMES position.
#: ``route_models`` (routes -> per-row arm choice) defines what a route ref means, so it always runs
#: and is not in RULE_NAMES.
RULES: tuple[tuple[str, Callable], ...] = (
    ("route_models", route_models),
    ("bind_models", bind_models),
    ("prune_model_inputs", prune_model_inputs),
    ("prune_by_predicates", prune_by_predicates),
    ("factorize_linear", factorize_linear),
    ("stack_linear", stack_linear),
    ("inline_models", inline_models),
    ("batch_to_kernels", batch_to_kernels),
)

__all__ = ["BoundModel", "Catalog", "Context", "Decision", "ModelCall", "OptimizerOptions", "Plan",
           "RULES", "RULE_NAMES", "ResolvedModel", "UdfSpec", "parse", "plan_query"]


def plan_query(sql: str, *, dialect: str, resolve: Callable[[str], ResolvedModel], catalog: Catalog,
               disable_rules: Sequence[str] = (), options: OptimizerOptions = OptimizerOptions(),
               resolve_route: Callable[[str], object] | None = None) -> Plan:
    """Parse ``sql``, run the enabled rules, and return the rewritten query with its UDFs.

    ``resolve_route`` maps a ``'name@route'`` ref to the registry's ``ResolvedRoute`` (None when it
    is not a route); without it no ref is taken for a route."""
    if isinstance(disable_rules, str):
        disable_rules = (disable_rules,)
    unknown = [r for r in disable_rules if r not in RULE_NAMES]
    if unknown:
        raise QueryError(f"unknown rule {unknown[0]!r} in disable_rules; use names from {', '.join(RULE_NAMES)}")
    expression = parse(sql, dialect)
    context = Context(dialect=dialect, catalog=catalog, options=options, resolve=resolve,
                      disabled=tuple(disable_rules), names=NameGenerator.for_query(expression, catalog, dialect),
                      resolve_route=resolve_route)
    for name, rule in RULES:
        if name in disable_rules:
            context.decide(name, False, "disabled by disable_rules")
            continue
        expression = rule(expression, context)
    leftover = next(iter(expression.find_all(ModelCall, ScorePredict)), None)
    if leftover is not None:
        raise QueryError(
            f"model calls remain after planning ({leftover.sql(dialect=dialect)[:80]}); "
            f"do not disable bind_models or batch_to_kernels for queries whose models are not inlined"
        )
    models = tuple({id(r): r for r in context.resolved.values()}.values())
    return Plan(expression=expression, sql=generate(expression, dialect), udfs=tuple(context.udfs.values()),
                decisions=tuple(context.decisions), models=models, dialect=dialect)
