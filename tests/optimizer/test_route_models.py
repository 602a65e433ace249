"""Rule route_models: plans of route refs (the routes of tests/optimizer/conftest.py ROUTES)."""

from __future__ import annotations

import pytest
from sqlglot import exp

from sparkscore.errors import QueryError
from sparkscore.optimizer import RULE_NAMES
from sparkscore.optimizer.route_models import GATE
from tests.optimizer.conftest import assert_same_rows

ALL_OFF = tuple(r for r in RULE_NAMES if r not in ("bind_models", "batch_to_kernels"))


def test_glm_arms_are_never_stacked_into_one_udf(runner):
    query = "SELECT id, PREDICT('score@ab', *) AS p FROM customers ORDER BY id"
    plan = runner.plan(query, disable_rules=("inline_models",))
    assert sorted(u.name for u in plan.udfs) == ["rate_v2", "score_v2"]  # stacked, every row would run both
    assert any("an arm of route score@ab" in d.reason for d in plan.decisions if d.rule == "stack_linear")
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(query, disable_rules=ALL_OFF)))


def test_spark_gates_udf_arms_and_duckdb_does_not(runner):
    from sparkscore.optimizer import plan_query
    from tests.optimizer.conftest import resolve, resolve_route

    query = "SELECT id, PREDICT('glm@ab', *) AS p FROM customers"
    spark = plan_query(query, dialect="spark", resolve=resolve, catalog=runner.catalog, resolve_route=resolve_route)
    assert [(u.name, u.gated) for u in spark.udfs] == [("big_v2_gated", True)]
    assert spark.sql.count("big_v2_gated(CASE WHEN") == 1
    routes = [c for c in spark.expression.find_all(exp.Case) if GATE in c.meta]
    assert len(routes) == 1 and len(routes[0].args["ifs"]) == 2 and routes[0].args.get("default") is None  # every arm a WHEN
    duck = runner.plan(query)
    assert [(u.name, u.gated) for u in duck.udfs] == [("big_v2", False)]


def test_route_expansion_cannot_be_disabled(runner):
    with pytest.raises(QueryError, match="unknown rule 'route_models'"):
        runner.plan("SELECT PREDICT('score@ab', *) FROM customers", disable_rules=("route_models",))


@pytest.mark.parametrize("query, message", [
    ("SELECT PREDICT_ARM('score', *) FROM customers", "is not a route"),
    ("SELECT PREDICT('score@ab', *) FROM plans", "key column 'id' is in no table"),
    ("SELECT PREDICT('score@ab', c.age, c.tenure, c.spend) FROM customers AS c JOIN customers AS d ON c.id = d.id",
     "key column 'id' is in c and d"),
])
def test_refusals_name_the_problem(runner, query, message):
    with pytest.raises(QueryError, match=message):
        runner.plan(query)


def test_predict_proba_on_a_route_returns_the_arms_probabilities(runner):
    query = ("SELECT id, PREDICT_PROBA('glm@ab', *) AS p, PREDICT_ARM('glm@ab', *).arm AS a, "
             "PREDICT_PROBA('glm', *) AS own FROM customers ORDER BY id")
    from tests.optimizer.conftest import ROUTES

    ROUTES["glm@pp"] = {"glm": 100}
    try:
        rows = runner.rows(runner.plan(query.replace("glm@ab", "glm@pp")))
    finally:
        del ROUTES["glm@pp"]
    assert {r[2] for r in rows} == {"glm"}
    assert_same_rows([(r[1],) for r in rows], [(r[3],) for r in rows])
