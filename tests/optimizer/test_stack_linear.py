"""stack_linear: k GLMs over the same arguments run as one product and return the same rows."""

from __future__ import annotations

import pytest

from tests.optimizer.conftest import assert_same_rows

ARGS = "age * 2, tenure, spend"


@pytest.mark.parametrize("sql", [
    f"SELECT id, PREDICT('glm', {ARGS}) AS a, PREDICT('score', {ARGS}) AS b, PREDICT('rate', {ARGS}) AS r "
    "FROM customers ORDER BY id",
    f"SELECT AVG(PREDICT('glm', {ARGS})) AS a, MAX(PREDICT('score', {ARGS})) AS b FROM customers "
    f"WHERE PREDICT('rate', {ARGS}) < 3",
    f"SELECT id, PREDICT_PROBA('glm', {ARGS}) AS pa, PREDICT('glm', {ARGS}) AS a, PREDICT('score', {ARGS}) AS b "
    "FROM customers ORDER BY id",
])
@pytest.mark.parametrize("inline", [True, False])
def test_stacked_plan_returns_the_separate_rows(runner, sql, inline):
    off = () if inline else ("inline_models",)
    plan = runner.plan(sql, disable_rules=off)
    assert any(d.fired for d in plan.decisions if d.rule == "stack_linear")
    assert len(plan.udfs) == 1 and plan.udfs[0].output_type == "DOUBLE[]"
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=off + ("stack_linear",))))


def test_plain_column_glms_are_stacked_only_when_not_inlined(runner):
    sql = "SELECT PREDICT('glm', age, tenure, spend), PREDICT('score', age, tenure, spend) FROM customers"
    assert not any(d.fired for d in runner.plan(sql).decisions if d.rule == "stack_linear")
    plan = runner.plan(sql, disable_rules=("inline_models",))
    assert [d.fired for d in plan.decisions if d.rule == "stack_linear"] == [True]
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=("inline_models", "stack_linear"))))


def test_calls_in_different_selects_are_not_stacked(runner):
    sql = (f"SELECT PREDICT('glm', {ARGS}) AS a, (SELECT MAX(PREDICT('score', {ARGS})) FROM customers) AS b "
           "FROM customers")
    assert not any(d.fired for d in runner.plan(sql).decisions if d.rule == "stack_linear")
