"""prune_by_predicates: specialised models return exactly the full model's rows under the predicates.

The data is adversarial for both the trees and the predicates: every split threshold, its float64
and float32 neighbours and midpoints, every predicate literal and its neighbours, NaN (which DuckDB
orders above every number, so ``x > c`` keeps it), NULL, ±0, ±inf and LightGBM's zero band.  Plans
run the models as UDFs over the numpy reference evaluator (the oracle), so any branch removed that
a row could still take shows up as a different leaf.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from tests.optimizer.conftest import MODELS, adversarial_values, assert_same_rows

RULE = "prune_by_predicates"
TREES = ("lgbm", "xgb", "forest", "region_tree")
GLMS = ("glm", "spend_glm")
LITERALS = (30.1, 30.0, 40.0, 12.0, 55.0, 0.1, -0.5, 1e-35, 1e-36, 1e-40)
PREDICATES = [
    "age < 30.1", "age <= 30.1", "age > 30.1", "age >= 30.1", "30.1 >= age", "age > 40", "age < 30",
    "age = 30.1", "age BETWEEN 30 AND 30.1", "age IN (12, 30.1, 55)", "age > 40.000000000000000001",
    "age >= 3.009999942779541e1", "age < 3.0099999427795414e1", "age > 40 AND age <= 55",
    "tenure > 12 AND age < 40", "tenure = 12", "tenure BETWEEN -0.5 AND 12", "tenure < -1e-35",
    "tenure > -1e-40 AND tenure < 1e-40", "tenure >= 1e-36",
    "spend <= 0.1", "spend > 0.1", "spend IN (0.1)", "spend < 1e-36 AND spend > -1e-36",
    "region = 'EU'", "region IN ('US', 'LATAM')", "region = 'EU' AND age > 40", "region = 'LATAM'",
    "region IN ('EU', 'APAC') AND tenure = 12",
]


def _values() -> list[float]:
    out = []
    for name in TREES:
        out += adversarial_values(MODELS[name])
    for x in LITERALS:
        for v in (x, -x):
            x32 = float(np.float32(v))
            out += [v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf), x32,
                    math.nextafter(x32, math.inf), math.nextafter(x32, -math.inf)]
    return sorted(set(out), key=lambda v: (math.isnan(v), v))


@pytest.fixture(scope="module")
def adversarial(database):
    values = np.array(_values())
    rng = np.random.default_rng(7)
    n = 4 * len(values)
    cols = {"id": pa.array(np.arange(n, dtype=np.int64))}
    for j, name in enumerate(("age", "tenure", "spend")):
        column = np.concatenate([np.roll(values, 17 * j), rng.choice(values, n - len(values))])
        cols[name] = pa.array(column, mask=rng.random(n) < 0.05)
    regions = np.array(["EU", "US", "APAC", "LATAM"], dtype=object)[rng.integers(0, 4, n)]
    cols["region"] = pa.array(regions, mask=rng.random(n) < 0.1)
    database.register("adversarial_arrow", pa.table(cols))
    database.execute("CREATE OR REPLACE TABLE adversarial AS SELECT * FROM adversarial_arrow")
    ints = [29, 30, 31, 39, 40, 41, 55, 56, -1, 0, 2 ** 53 + 1, -(2 ** 62)]
    database.execute("CREATE OR REPLACE TABLE int_ages AS SELECT i AS id, CAST(a AS BIGINT) AS age, "
                     "CAST(a AS DOUBLE) / 3 AS tenure, 0.05e0 AS spend FROM unnest(?) WITH ORDINALITY AS t(a, i)",
                     [ints + [None]])
    return "adversarial"


def _same_under_rule(runner, sql: str, rtol: float):
    off = ("inline_models",)
    plan = runner.plan(sql, disable_rules=off)
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=off + (RULE,))), rtol=rtol)
    return [d for d in plan.decisions if d.rule == RULE]


@pytest.mark.parametrize("model", TREES + GLMS)
def test_specialised_models_return_the_full_rows(runner, adversarial, model):
    fired = 0
    for predicate in PREDICATES:
        if "region" in predicate and "region" not in MODELS[model].signature.names:
            continue
        sql = f"SELECT id, PREDICT('{model}', *) AS s FROM {adversarial} WHERE {predicate} ORDER BY id"
        decisions = _same_under_rule(runner, sql, rtol=0.0 if model in TREES else 1e-9)
        fired += decisions[0].fired
    assert fired >= 3  # the rule is exercised, not just declined


@pytest.mark.parametrize("model", ("lgbm", "xgb", "forest"))
@pytest.mark.parametrize("predicate", ["age > 30.1", "age <= 40", "age = 30", "age < 40.5", "age >= 55"])
def test_integer_columns_bound_by_their_double_value(runner, adversarial, model, predicate):
    _same_under_rule(runner, f"SELECT id, PREDICT('{model}', *) FROM int_ages WHERE {predicate} ORDER BY id", 0.0)


@pytest.mark.parametrize("sql, before, after", [
    # NaN goes left at age <= 30.1 and NaN > 30.1 is TRUE in DuckDB: the left branch stays live
    ("SELECT PREDICT('lgbm', *) FROM customers WHERE age > 30.1", None, None),
    # < excludes NaN: only the left subtree is live; tenure > 12 (NaN right) fixes tree 1
    ("SELECT PREDICT('lgbm', *) FROM customers WHERE age < 30.1 AND tenure > 12", 10, 4),
    # float32 rounding: x < 30.1 includes values that round to float32(30.1), which go right
    ("SELECT PREDICT('xgb', *) FROM customers WHERE age < 30.1", None, None),
    ("SELECT PREDICT('xgb', *) FROM customers WHERE age < 30", 10, 6),
    ("SELECT PREDICT('region_tree', *) FROM customers WHERE region = 'US' AND age BETWEEN 60 AND 70", 10, 4),
    # region outside the categories is the model's missing code: NULL / unknown go right
    ("SELECT PREDICT('region_tree', *) FROM customers WHERE region IN ('US', 'LATAM')", 10, 6),
    ("SELECT c.id, PREDICT('lgbm', c.age, c.tenure, c.spend) FROM customers AS c JOIN plans AS p "
     "ON c.plan_id = p.plan_id AND c.age < 30 ORDER BY c.id", 10, 6),
])
def test_nodes_removed(runner, sql, before, after):
    decision, = [d for d in runner.plan(sql).decisions if d.rule == RULE]
    assert decision.fired == (before is not None)
    if before is not None:
        assert f"{before} -> {after} nodes" in decision.reason


@pytest.mark.parametrize("sql, folded", [
    ("SELECT id, PREDICT('glm', *) FROM customers WHERE tenure = 12 ORDER BY id", "tenure"),
    ("SELECT id, PREDICT('spend_glm', *) FROM customers WHERE region = 'APAC' ORDER BY id", "region"),
    ("SELECT c.id, PREDICT('planned', c.age, c.plan_id, p.price) FROM customers AS c JOIN plans AS p "
     "ON c.plan_id = p.plan_id AND p.price = 19 ORDER BY c.id", "price"),
])
def test_fixed_glm_inputs_fold_into_the_intercept(runner, sql, folded):
    plan = runner.plan(sql, disable_rules=("inline_models",))
    decision, = [d for d in plan.decisions if d.rule == RULE]
    assert decision.fired and f"of {folded} into the intercept" in decision.reason
    assert folded not in plan.udfs[0].inputs
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=("inline_models", RULE))))


@pytest.mark.parametrize("sql, reason", [
    ("SELECT PREDICT('glm', *) FROM customers WHERE age > 3 OR tenure = 12", "no WHERE"),
    ("SELECT PREDICT('glm', *) FROM customers WHERE age IN (1, 2)", "no input is fixed"),
    ("SELECT c.id FROM customers AS c LEFT JOIN plans AS p ON c.plan_id = p.plan_id AND c.age < 30 "
     "WHERE PREDICT('lgbm', c.age, c.tenure, c.spend) > 0.5", "no WHERE"),
    ("SELECT PREDICT('lgbm', *) FROM customers WHERE PREDICT('lgbm', *) > 0.5 OR age < -1e9", "no WHERE"),
    ("SELECT PREDICT('lgbm', age * 2, tenure, spend) FROM customers WHERE age < 0", "no WHERE"),
    ("SELECT age + 1 AS age, PREDICT('lgbm', customers.age, tenure, spend) FROM customers WHERE age < 0", "no WHERE"),
])
def test_predicates_that_do_not_bound_every_scored_row_are_ignored(runner, sql, reason):
    decisions = [d for d in runner.plan(sql).decisions if d.rule == RULE]
    assert decisions and all(not d.fired and reason in d.reason for d in decisions)


def test_a_call_in_one_where_conjunct_is_bounded_by_the_others(runner):
    # rows failing age < 30 fail the AND whatever the call returns there
    sql = "SELECT id, PREDICT('lgbm', *) FROM customers WHERE PREDICT('lgbm', *) > 0.5 AND age < 30 ORDER BY id"
    assert [d.fired for d in runner.plan(sql).decisions if d.rule == RULE] == [True, True]
    assert_same_rows(runner.rows(runner.plan(sql)), runner.rows(runner.plan(sql, disable_rules=(RULE,))))


def test_reading_predicates_leaves_the_query_tree_intact(runner):
    plan = runner.plan("SELECT id, PREDICT('lgbm', *) FROM customers WHERE tenure BETWEEN 13 AND 20 AND age IN (1, 2) "
                       "AND 30 > spend ORDER BY id")
    assert all(child.parent is node for node in plan.expression.walk() for child in node.iter_expressions())
