"""PREDICT parsing, binding, type checks, ref handling and EXPLAIN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sparkscore.errors import InvalidModelNameError, ModelNotFoundError, QueryError, SignatureError
from sparkscore.optimizer import ModelCall, OptimizerOptions, parse, plan_query
from sparkscore.optimizer.inline_models import float32_split
from sparkscore.optimizer.nodes import ScorePredict, ScorePredictProba, number
from tests.optimizer.conftest import resolve


@pytest.mark.parametrize("dialect", ["duckdb", "spark"])
def test_predict_parses_as_our_nodes_and_leaves_sqlglot_alone(dialect):
    tree = parse("SELECT PREDICT('m', *), predict_proba('m', a, t.*) FROM t", dialect)
    assert [type(n) for n in tree.find_all(ScorePredict)] == [ScorePredict, ScorePredictProba]
    assert isinstance(sqlglot.parse_one("SELECT PREDICT('m', *)", read=dialect).expressions[0], exp.Predict)


@pytest.mark.parametrize("sql, error, words", [
    ("SELECT PREDICT('glm', region, age, spend) FROM customers", SignatureError, ["'age'", "region", "glm/2"]),
    ("SELECT PREDICT('glm', *) FROM plans", SignatureError, ["'age'", "glm/2", "plans"]),
    ("SELECT PREDICT('glm', age) FROM customers", SignatureError, ["3 inputs", "age, tenure, spend"]),
    ("SELECT PREDICT('glm', *) FROM customers AS a JOIN customers AS b ON a.id = b.id", SignatureError, ["a and b", "t.*"]),
    ("SELECT PREDICT('spend_glm', age, spend, age) FROM customers", SignatureError, ["'region'", "categorical"]),
    ("SELECT PREDICT_PROBA('big', *) FROM customers", SignatureError, ["regressor", "PREDICT"]),
    ("SELECT PREDICT(glm, *) FROM customers", InvalidModelNameError, ["string literal"]),
    ("SELECT PREDICT('nope', *) FROM customers", ModelNotFoundError, ["nope"]),
    ("SELECT PREDICT('glm', age, *) FROM customers", QueryError, ["mix of *"]),
    ("SELECT PREDICT('glm', x.*) FROM customers", QueryError, ["x.*"]),
    ("SELECT 1; SELECT 2", QueryError, ["one SQL statement"]),
])
def test_planning_errors_name_the_column_and_model(runner, sql, error, words):
    with pytest.raises(error) as info:
        runner.plan(sql)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_rule_is_rejected(runner):
    with pytest.raises(QueryError, match="factorise"):
        runner.plan("SELECT PREDICT('glm', *) FROM customers", disable_rules=("factorise",))


def test_each_ref_is_resolved_once_and_pinned(runner):
    calls = []

    def counting(ref):
        calls.append(ref)
        return resolve(ref)

    sql = "SELECT PREDICT('glm', *), PREDICT('glm', *) FROM customers WHERE PREDICT('glm', *) > 0.5"
    plan = plan_query(sql, dialect="duckdb", resolve=counting, catalog=runner.catalog)
    assert calls == ["glm"]
    assert [(m.name, m.version) for m in plan.models] == [("glm", 2)]


def test_injection_ref_is_a_clean_error_before_anything_runs(runner):
    def registry_like(ref):  # the engines resolve through Registry.get, which validates names
        raise InvalidModelNameError(f"invalid model ref {ref!r}; use name, name/3 or name@alias")

    sql = "SELECT PREDICT('x''; DROP TABLE customers; --', *) FROM customers"
    with pytest.raises(InvalidModelNameError):
        plan_query(sql, dialect="duckdb", resolve=registry_like, catalog=runner.catalog)
    assert runner.con.execute("SELECT COUNT(*) FROM customers").fetchall()[0][0] > 0


@settings(max_examples=60, deadline=None)
@given(ref=st.text(min_size=1, max_size=40))
def test_any_ref_reaches_the_resolver_verbatim_and_never_the_sql(runner, ref):
    seen = []

    def capture(r):
        seen.append(r)
        return resolve("glm")

    literal = exp.Literal.string(ref).sql(dialect="duckdb")
    try:
        plan = plan_query(f"SELECT PREDICT({literal}, *) AS p FROM customers", dialect="duckdb",
                          resolve=capture, catalog=runner.catalog)
    except QueryError:
        return  # text the tokenizer rejects (e.g. lone surrogates) is a clean error
    assert seen == [ref]
    assert ref == "NaN" or ref not in {lit.name for lit in plan.expression.find_all(exp.Literal) if lit.is_string}


def test_spark_dialect_plans_spark_sql(runner):
    plan = plan_query("SELECT PREDICT_PROBA('glm', *) AS p FROM customers", dialect="spark", resolve=resolve,
                      catalog=runner.catalog)
    assert plan.sql.startswith("SELECT ARRAY(1e0 - (1e0 / (1e0 + EXP(")


@settings(max_examples=40, deadline=None)
@given(name=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20))
def test_odd_column_names_are_quoted_identifiers(runner, name):
    runner.con.execute("CREATE OR REPLACE TEMP TABLE odd AS SELECT 1.0 AS x")
    quoted = exp.to_identifier(name, quoted=True).sql(dialect="duckdb")
    sql = f"SELECT PREDICT('glm', x, x, x) AS {quoted} FROM odd"
    plan = runner.plan(sql)
    assert len(runner.con.execute(plan.sql).fetchall()) == 1


def test_explain_lists_every_rule_in_order_with_reasons(runner):
    plan = runner.plan("SELECT id, PREDICT('glm', *) AS p, PREDICT('big', *) AS s FROM customers",
                       disable_rules=("stack_linear",))
    text = str(plan)
    assert "== rewritten SQL ==" in text and "big_v2(" in text
    positions = [text.index(f"\n{name}:") for name in ("bind_models", "inline_models", "batch_to_kernels")]
    assert positions == sorted(positions)
    assert "GLM with 3 features <= 32" in text
    assert "300 nodes > inline_max_nodes=255" in text


def test_inline_thresholds_come_from_options(runner):
    plan = runner.plan("SELECT PREDICT('big', *) FROM customers", options=OptimizerOptions(inline_max_nodes=300))
    assert not plan.udfs
    assert not list(plan.expression.find_all(ModelCall))


@pytest.mark.parametrize("value", [0.5, 0.1, -0.0, 5e-324, 1.7976931348623157e308, -2.5e-7, 123.0, math.inf, math.nan])
def test_numbers_are_exact_doubles_in_duckdb(runner, value):
    got = runner.con.execute(f"SELECT {number(value).sql(dialect='duckdb')}").fetchall()[0][0]
    assert np.float64(got).tobytes() == np.float64(value).tobytes() or (math.isnan(value) and math.isnan(got))


def _float32_neighbourhood(t: float) -> list[float]:
    with np.errstate(over="ignore"):
        t32 = np.float32(t)
    out = [t, math.nextafter(t, math.inf), math.nextafter(t, -math.inf),
           float(t32), 0.0, -0.0, math.inf, -math.inf, 1e300, -1e300]
    with np.errstate(over="ignore"):
        for other in (np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
            mid = (float(t32) + float(other)) / 2
            out += [mid, math.nextafter(mid, math.inf), math.nextafter(mid, -math.inf), float(other)]
    return [x for x in out if not math.isnan(x)]


@settings(max_examples=300, deadline=None)
@given(t=st.one_of(st.floats(width=32, allow_nan=False), st.floats(allow_nan=False)),  # XGBoost / sklearn
       cmp=st.sampled_from(["<", "<="]))
def test_float32_split_matches_float32_rounding(t, cmp):
    op, bound = float32_split(t, cmp)
    for x in _float32_neighbourhood(t):
        with np.errstate(over="ignore"):
            x32 = float(np.float32(x))
        want = x32 < t if cmp == "<" else x32 <= t
        assert (x < bound if op == "<" else x <= bound) == want, (t, cmp, x)
