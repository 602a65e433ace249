"""Rule route_models: plans of route refs (the routes of tests/optimizer/conftest.py ROUTES)."""

from __future__ import annotations

import pytest
from sqlglot import exp

from sparkscore.errors import QueryError
from sparkscore.optimizer import RULE_NAMES, OptimizerOptions
from sparkscore.optimizer.plan import RoutedUdfSpec
from sparkscore.optimizer.route_models import GATE
from tests.optimizer.conftest import ROUTES, assert_same_rows

ALL_OFF = tuple(r for r in RULE_NAMES if r not in ("bind_models", "batch_to_kernels"))


def test_glm_arms_are_never_stacked_into_one_udf(runner):
    query = "SELECT id, PREDICT('score@ab', *) AS p FROM customers ORDER BY id"
    plan = runner.plan(query, disable_rules=("inline_models",))
    assert sorted(a.name for u in plan.udfs for a in u.arms) == ["rate_v2", "score_v2"]  # stacked, every row would run both
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
    both = plan_query(query, dialect="spark", resolve=resolve, catalog=runner.catalog, resolve_route=resolve_route,
                      disable_rules=("inline_models",))  # Spark keeps one gated UDF per arm
    assert [(u.name, u.gated) for u in both.udfs] == [("glm_v2_gated", True), ("big_v2_gated", True)]


#: arms as UDFs (inline_max_nodes=5: the trees stay UDFs, the GLM ``score`` still inlines), in both
#: orders: the inlined arm first (the UDF arms end in the CASE's ELSE) and last (the ELSE is SQL)
SMALL_INLINE = OptimizerOptions(inline_max_nodes=5)
ROUTED = {
    "all arms UDFs": ("glm@ab", ("inline_models",), OptimizerOptions(), ["glm_v2", "big_v2"]),
    "inlined arm first": ("mix@ab", (), SMALL_INLINE, ["big_v2", "region_tree_v2"]),
    "inlined arm last": ("mix@ba", (), SMALL_INLINE, ["big_v2", "region_tree_v2"]),
}


@pytest.fixture
def mix_routes():
    ROUTES.update({"mix@ab": {"score": 40, "big": 30, "region_tree": 30},
                   "mix@ba": {"big": 30, "region_tree": 30, "score": 40}})
    yield
    del ROUTES["mix@ab"], ROUTES["mix@ba"]


@pytest.mark.parametrize("case", list(ROUTED), ids=list(ROUTED))
def test_duckdb_scores_a_routes_udf_arms_in_one_function(runner, mix_routes, case):
    """DuckDB calls an Arrow UDF per ~2,048-row chunk: the UDF arms of a route share ONE function
    (arm index first) so no chunk is split between two calls; each row still gets its own arm's
    value (equal to that arm's own PREDICT), and inlined arms stay SQL."""
    route, disable, options, arms = ROUTED[case]
    own = ["score", "big", "region_tree"] if route.startswith("mix") else ["glm", "big"]
    query = (f"SELECT id, PREDICT('{route}', *) AS p, PREDICT_ARM('{route}', *).arm AS a, "
             + ", ".join(f"PREDICT('{m}', *) AS own_{m}" for m in own) + " FROM customers ORDER BY id")
    plan = runner.plan(query, disable_rules=disable, options=options)
    routed = [u for u in plan.udfs if isinstance(u, RoutedUdfSpec)]
    assert len(routed) == 1 and [a.name for a in routed[0].arms] == arms and routed[0].route == route
    assert plan.sql.count(f"{routed[0].name}(CASE WHEN") == 1
    route_sql = plan.sql.split(" AS p,")[0]
    assert not any(f"{a}(" in route_sql for a in arms)  # no arm UDF of its own in the route's CASE
    if route.startswith("mix"):  # big (age, tenure, spend) and region_tree (age, region, tenure) share age, tenure
        assert routed[0].input_types == ("DOUBLE", "DOUBLE", "DOUBLE", "VARCHAR")
        assert routed[0].positions == ((0, 1, 2), (0, 3, 1)) and "1.5e0 * customers.age" in route_sql
    rows = runner.rows(plan)
    assert {r[2] for r in rows} == set(own)
    assert_same_rows([(r[1],) for r in rows], [(r[3 + own.index(r[2])],) for r in rows], rtol=0)


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
