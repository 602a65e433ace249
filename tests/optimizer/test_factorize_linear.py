"""factorize_linear: star-join factorization returns the rows of the unfactorized plan; the cost rule."""

from __future__ import annotations

import pytest

from sparkscore.optimizer import OptimizerOptions
from sparkscore.optimizer.cost import FactorizeEstimate
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


# ---------------------------------------------------------------------------- cost rule
def _estimate(tr: float, fr: float, d_fact: int = 4, outputs: int = 1, udf: bool = True) -> FactorizeEstimate:
    dim_rows, options = 100_000, OptimizerOptions()
    return FactorizeEstimate(rows=int(tr * dim_rows), dim_rows=dim_rows, d_fact=d_fact, d_dim=int(fr * d_fact),
                             outputs=outputs, row_overhead=options.factorize_udf_overhead if udf else 0.0,
                             carry=options.factorize_carry)


def test_cost_rule_reports_tuple_and_feature_ratio():
    est = _estimate(20, 3)
    assert (est.tuple_ratio, est.feature_ratio) == (20, 3)
    assert "TR=20, FR=3" in est.describe()


@pytest.mark.parametrize("tr, fr, udf, pays", [
    (20, 3, True, True), (50, 4, True, True), (1, 3, True, False), (1, 0.25, True, False), (50, 0.25, True, False),
    (1, 3, False, True), (1, 0.25, False, False), (20, 1, False, True),  # inlined: carrying columns dominates
])
def test_cost_rule_decision(tr, fr, udf, pays):
    assert _estimate(tr, fr, udf=udf).pays(OptimizerOptions().factorize_min_speedup) is pays


def test_speedup_grows_with_tuple_and_feature_ratio():
    assert _estimate(2, 3).speedup < _estimate(20, 3).speedup < _estimate(50, 3).speedup
    assert _estimate(20, 0.5).speedup < _estimate(20, 1).speedup < _estimate(20, 4).speedup


def test_never_pays_when_partials_are_as_wide_as_the_dimension():
    assert _estimate(1000, 0.75, outputs=3).speedup < 1.0
