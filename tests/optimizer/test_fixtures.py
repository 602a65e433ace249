"""Fixture files: generated SQL matches, and the rewritten query returns the same rows on DuckDB."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot

from sparkscore.optimizer import RULE_NAMES, RULES
from sparkscore.optimizer.fixtures import read_fixtures
from tests.optimizer.conftest import assert_same_rows

FIXTURES = Path(__file__).parents[1] / "fixtures" / "optimizer"
CASES = [pytest.param(path.stem, fx, id=f"{path.stem}:{fx.name}")
         for path in sorted(FIXTURES.glob("*.sql")) for fx in read_fixtures(path)]
#: The plan every fixture is checked against: no optional rule, models run as UDFs.
KERNELS_ONLY = tuple(name for name in RULE_NAMES if name not in ("bind_models", "batch_to_kernels"))


def test_every_rule_in_rules_has_fixtures():
    assert {path.stem for path in FIXTURES.glob("*.sql")} == {name for name, _ in RULES}


@pytest.mark.parametrize("rule, fixture", CASES)
def test_generated_sql(runner, rule, fixture):
    got = runner.plan(fixture.sql).sql
    assert got == sqlglot.transpile(fixture.expected, read="duckdb", write="duckdb", normalize_functions=False)[0]


@pytest.mark.parametrize("rule, fixture", CASES)
def test_rewrite_returns_the_same_rows(runner, rule, fixture):
    rewritten = runner.rows(runner.plan(fixture.sql))
    baseline = runner.rows(runner.plan(fixture.sql, disable_rules=KERNELS_ONLY))
    assert_same_rows(rewritten, baseline)
    if rule in RULE_NAMES and rule not in ("bind_models", "batch_to_kernels"):  # the rule alone switched off
        assert_same_rows(rewritten, runner.rows(runner.plan(fixture.sql, disable_rules=(rule,))))
