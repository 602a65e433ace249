"""Every user-facing query under ``sql/`` runs on the quickstart demo, and its optimized plan
returns the same rows as the plain plan (every model a UDF, no rewrites)."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest

import sparkscore as ss
from sparkscore.optimizer import RULE_NAMES

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
SQL_FILES = sorted(SQL_DIR.glob("**/*.sql"))
#: the plan with no optional rewrite: bind the models, run each as one UDF
PLAIN = tuple(r for r in RULE_NAMES if r not in ("bind_models", "batch_to_kernels"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The quickstart tables and models (small), plus the tables as parquet files in one folder."""
    from sparkscore.quickstart import build_demo

    root = tmp_path_factory.mktemp("sql_examples")
    registry = ss.Registry(root / "registry")
    con = duckdb.connect()
    build_demo(con, registry, n_customers=2_000, n_plans=20)
    for table in ("customers", "plans"):
        con.table(table).write_parquet(str(root / f"{table}.parquet"))
    yield con, registry, root
    con.close()


def test_there_are_examples():
    assert len(SQL_FILES) >= 5


def _same(left, right) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
    return left == right


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.relative_to(SQL_DIR).as_posix())
def test_example_runs_and_matches_the_plain_plan(path, demo, monkeypatch):
    con, registry, root = demo
    monkeypatch.chdir(root)  # parquet examples read files relative to the working directory
    query = path.read_text()
    optimized = ss.duckdb.sql(con, query, registry).fetchall()
    plain = ss.duckdb.sql(con, query, registry, disable_rules=PLAIN).fetchall()
    assert optimized, f"{path.name} returned no rows on the demo data"
    assert _same(optimized, plain), f"{path.name}: optimized plan differs from the plain plan"
