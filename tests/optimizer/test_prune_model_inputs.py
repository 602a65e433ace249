"""prune_model_inputs: smaller signatures and removed joins return the rows of the full plan."""

from __future__ import annotations

import pytest

from tests.optimizer.conftest import assert_same_rows

LEFT_PLANS = "FROM customers AS c LEFT JOIN plans AS p ON c.plan_id = p.plan_id"


@pytest.mark.parametrize("sql", [
    f"SELECT c.id, PREDICT('ptree', c.age, c.tenure, c.spend, p.price) AS s {LEFT_PLANS} ORDER BY c.id",
    f"SELECT COUNT(*), SUM(PREDICT('ptree', c.age, c.tenure, c.spend, p.price)) {LEFT_PLANS}",
    "SELECT id, PREDICT('dead_region', age, region) AS s FROM customers ORDER BY id",
])
@pytest.mark.parametrize("inline", [True, False])
def test_pruned_plan_returns_the_full_rows(runner, sql, inline):
    off = () if inline else ("inline_models",)
    plan = runner.plan(sql, disable_rules=off)
    assert any(d.fired for d in plan.decisions if d.rule == "prune_model_inputs")
    assert "p.price" not in plan.sql and ", region)" not in plan.sql
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=off + ("prune_model_inputs",))))


def test_udf_of_the_pruned_model_takes_only_the_used_inputs(runner):
    plan = runner.plan(f"SELECT PREDICT('ptree', c.age, c.tenure, c.spend, p.price) {LEFT_PLANS}",
                       disable_rules=("inline_models",))
    assert [u.inputs for u in plan.udfs] == [("age", "tenure")]
    assert "JOIN" not in plan.sql


@pytest.mark.parametrize("where, reason", [("WHERE p.price > 10", "still reads it"), ("", None)])
def test_join_is_kept_while_something_reads_it(runner, where, reason):
    plan = runner.plan(f"SELECT PREDICT('ptree', c.age, c.tenure, c.spend, p.price) {LEFT_PLANS} {where}")
    kept = [d.reason for d in plan.decisions if d.rule == "prune_model_inputs" and d.reason.startswith("kept JOIN")]
    assert (reason is None and not kept) or reason in kept[0]
