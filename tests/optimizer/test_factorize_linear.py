"""factorize_linear: star-join factorization returns the rows of the unfactorized plan; the cost rule."""

from __future__ import annotations

import pytest

from sparkscore.optimizer import OptimizerOptions
from tests.optimizer.conftest import assert_same_rows

ALWAYS = OptimizerOptions(factorize_min_speedup=0.0)
STAR_JOIN = "FROM customers AS c {join} JOIN regions AS r ON c.region = r.region"


@pytest.mark.parametrize("select", [
    "SELECT c.id, PREDICT('star_tier', *) AS label, PREDICT_PROBA('star_tier', *) AS p {from} ORDER BY c.id",
    "SELECT c.id, PREDICT('star', *) AS p {from} WHERE PREDICT('star', *) > 0.3 ORDER BY c.id",
    "SELECT c.id, PREDICT('star_pipe', *) AS p {from} ORDER BY c.id",
])
@pytest.mark.parametrize("join", ["", "LEFT"])
@pytest.mark.parametrize("inline", [True, False])
def test_factorized_plan_returns_the_unfactorized_rows(runner, select, join, inline):
    sql = select.format(**{"from": STAR_JOIN.format(join=join)})
    off = () if inline else ("inline_models",)
    plan = runner.plan(sql, disable_rules=off, options=ALWAYS)
    fired = [d.fired for d in plan.decisions if d.rule == "factorize_linear"]
    assert all(fired) == (join == "" or "star_pipe" not in sql)
    baseline = runner.plan(sql, disable_rules=off + ("factorize_linear",))
    assert_same_rows(runner.rows(plan), runner.rows(baseline))


def test_two_dimensions_each_get_a_partial(runner):
    sql = ("SELECT c.id, PREDICT('deal', c.age, c.spend, d.discount, d.churn_rate, r.gdp, r.risk) AS p "
           "FROM customers AS c JOIN plan_regions AS d ON c.plan_id = d.plan_id AND c.region = d.region "
           "LEFT JOIN regions AS r ON r.region = c.region ORDER BY c.id")
    plan = runner.plan(sql, disable_rules=("inline_models",), options=ALWAYS)
    assert "AS ss_partial_0 FROM" in plan.sql and "AS ss_partial_1 FROM" in plan.sql  # one name per partial in the query
    assert_same_rows(runner.rows(plan), runner.rows(runner.plan(sql, disable_rules=("factorize_linear",))))


@pytest.mark.parametrize("sql, reason", [
    ("SELECT * , PREDICT('star', *) AS p FROM customers AS c JOIN regions AS r USING (region)", "SELECT *"),
    ("SELECT PREDICT('star', *) FROM customers AS c RIGHT JOIN regions AS r ON c.region = r.region", "RIGHT JOIN"),
    ("SELECT PREDICT('star', *) FROM customers AS c JOIN regions AS r ON c.region <> r.region", "equality"),
    ("SELECT PREDICT('star', *) FROM customers AS c JOIN (SELECT * FROM regions) AS r ON c.region = r.region",
     "not a catalog table"),
    ("SELECT PREDICT('star', c.age + 1, c.tenure, r.gdp, r.growth, r.risk) FROM customers AS c JOIN regions AS r "
     "ON c.region = r.region", "not a plain column"),
    ("SELECT PREDICT('lgbm', *) FROM customers AS c JOIN plans AS p ON c.plan_id = p.plan_id", "not a GLM"),
    ("SELECT PREDICT('glm', *) FROM customers", "no join"),
])
def test_declines_with_its_reason(runner, sql, reason):
    plan = runner.plan(sql, options=ALWAYS)
    decisions = [d for d in plan.decisions if d.rule == "factorize_linear"]
    assert decisions and not any(d.fired for d in decisions)
    assert reason in decisions[0].reason
    assert "ss_partial" not in plan.sql


def test_explain_shows_the_estimates(runner):
    text = str(runner.plan(f"SELECT PREDICT('star', *) {STAR_JOIN.format(join='')}"))
    assert "factorize_linear:" in text and "TR=80" in text and "FR=1.5" in text

