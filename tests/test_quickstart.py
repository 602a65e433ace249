"""The quickstart demo: contract schema, determinism, and every sql/quickstart*.sql executed and checked."""

from __future__ import annotations

import re
import shlex
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

import sparkscore as ss
from sparkscore.quickstart import (CHURN_FEATURES, EXPLAINED_QUERY, SPEND_FEATURES, build_demo, example_queries,
                                   run_quickstart)

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("sparkscore.importers.lightgbm", reason="the LightGBM importer is not written yet")
pytest.importorskip("sparkscore.importers.sklearn", reason="the sklearn importer is not written yet")
needs_duckdb_engine = pytest.mark.skipif(find_spec("sparkscore.engines.duckdb") is None,
                                         reason="sparkscore.engines.duckdb (DuckDB engine) is not written yet")

N_CUSTOMERS = 2_000
CUSTOMERS_SCHEMA = [("id", "BIGINT"), ("plan_id", "BIGINT"), ("region", "VARCHAR"), ("age", "DOUBLE"),
                    ("tenure_months", "DOUBLE"), ("monthly_spend", "DOUBLE"), ("support_calls", "DOUBLE")]
PLANS_SCHEMA = [("plan_id", "BIGINT"), ("price", "DOUBLE"), ("data_gb", "DOUBLE"), ("contract_months", "DOUBLE")]
JOINED = "SELECT * FROM customers JOIN plans USING (plan_id) ORDER BY id"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    con = duckdb.connect()
    registry = ss.Registry(tmp_path_factory.mktemp("quickstart-registry"))
    return con, registry, build_demo(con, registry, n_customers=N_CUSTOMERS)


def test_tables_follow_the_contract_schema(demo):
    con, _, info = demo
    for table, schema in (("customers", CUSTOMERS_SCHEMA), ("plans", PLANS_SCHEMA)):
        assert [(name, typ) for name, typ, *_ in con.sql(f"DESCRIBE {table}").fetchall()] == schema
    assert info["tables"] == {"customers": N_CUSTOMERS, "plans": 50}
    assert con.sql("SELECT COUNT(*) FROM customers JOIN plans USING (plan_id)").fetchall() == [(N_CUSTOMERS,)]
    assert con.sql("SELECT COUNT(*) FROM customers WHERE age IS NULL OR monthly_spend IS NULL").fetchall() == [(0,)]
    assert 0.05 < info["churn_rate"] < 0.5


def test_models_are_registered_with_aliases_and_lineage(demo):
    _, registry, info = demo
    assert registry.models() == ["churn", "churn_logit", "spend"]
    expected = {"churn": ("lightgbm", CHURN_FEATURES, True), "churn_logit": ("sklearn", CHURN_FEATURES, True),
                "spend": ("sklearn", SPEND_FEATURES, False)}
    for name, (source, features, classifier) in expected.items():
        model = registry.load(name)
        assert model.metadata["source"] == source and model.metadata["name"] == name
        assert model.signature.names == features and model.is_classifier == classifier
        assert registry.describe(name)["lineage"]["data_fingerprint"].startswith("sha256:")
    assert registry.aliases("churn") == {"prod": 1} and registry.aliases("churn_logit") == {"prod": 1}
    assert registry.aliases("spend") == {}
    assert info["models"]["churn"] == registry.get("churn@prod")


def test_build_is_deterministic_per_seed(demo, tmp_path):
    con, registry, info = demo
    other_con = duckdb.connect()
    again = build_demo(other_con, ss.Registry(tmp_path / "a"), n_customers=N_CUSTOMERS)
    assert {n: mv.sha256 for n, mv in again["models"].items()} == {n: mv.sha256 for n, mv in info["models"].items()}
    assert other_con.sql(JOINED).fetchall() == con.sql(JOINED).fetchall()
    reseeded = build_demo(duckdb.connect(), ss.Registry(tmp_path / "b"), n_customers=N_CUSTOMERS, seed=1)
    lineage = ss.Registry(tmp_path / "b").describe("spend")["lineage"]
    assert lineage["data_fingerprint"] != registry.describe("spend")["lineage"]["data_fingerprint"]
    assert reseeded["models"]["churn"].sha256 != info["models"]["churn"].sha256


def test_example_queries_exist():
    names = [name for name, _ in example_queries()]
    assert names == sorted(names) and len(names) >= 3 and EXPLAINED_QUERY in names


@needs_duckdb_engine
@pytest.mark.parametrize("file_name", [name for name, _ in example_queries()])
def test_every_example_query_runs(demo, file_name):
    con, registry, _ = demo
    relation = ss.duckdb.sql(con, dict(example_queries())[file_name], registry=registry)
    rows = relation.fetchall()
    assert rows and all(value is not None for row in rows for value in row)


@needs_duckdb_engine
def test_top_churn_query_matches_the_models_own_predictions(demo):
    con, registry, _ = demo
    rows = ss.duckdb.sql(con, dict(example_queries())["quickstart_1_top_churn_risk.sql"], registry=registry).fetchall()
    frame = con.sql(JOINED).df()
    p_churn = registry.load("churn@prod").predict_proba(frame)[:, 1]
    order = np.lexsort((frame["id"].to_numpy(), -p_churn))[:len(rows)]
    assert [row[0] for row in rows] == frame["id"].to_numpy()[order].tolist()
    np.testing.assert_allclose([row[3] for row in rows], p_churn[order], rtol=1e-9, atol=1e-12)


@needs_duckdb_engine
def test_spend_query_matches_the_models_own_predictions(demo):
    con, registry, _ = demo
    rows = ss.duckdb.sql(con, dict(example_queries())["quickstart_3_expected_spend.sql"], registry=registry).fetchall()
    frame = con.sql(JOINED).df().set_index("id").loc[[row[0] for row in rows]]
    np.testing.assert_allclose([row[2] for row in rows], registry.load("spend").predict(frame), rtol=1e-9)


@needs_duckdb_engine
def test_run_quickstart_prints_results_and_the_explain(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200)
    run_quickstart(console, ss.Registry(tmp_path), n_customers=300, max_rows=3)
    text = console.export_text()
    for file_name, _ in example_queries():
        assert file_name in text
    assert f"EXPLAIN {EXPLAINED_QUERY}" in text and "bind_models" in text and "registered churn/1" in text


@needs_duckdb_engine
def test_run_quickstart_prints_timings_next_steps_and_saves_a_scoreable_input(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=300)
    registry = ss.Registry(tmp_path / "reg")
    run_quickstart(console, registry, n_customers=300, max_rows=3, data_dir=tmp_path / "data")
    text = console.export_text()
    assert "data, training and registration took" in text and "quickstart finished in" in text
    assert text.count("planned and ran in") == len(example_queries())
    assert "next steps:" in text and "sparkscore describe churn@prod" in text
    saved = tmp_path / "data" / "customers.parquet"
    assert f"wrote {saved}" in text
    con = duckdb.connect()
    assert set(CHURN_FEATURES) <= set(con.read_parquet(str(saved)).columns)
    query = f"SELECT count(*), count(PREDICT('churn@prod', *)) FROM read_parquet('{saved}')"
    assert ss.duckdb.sql(con, query, registry=registry).fetchall() == [(300, 300)]


ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def test_readme_spark_submit_example_creates_its_own_input_and_registry():
    """Issue 12 item 12: the example used to read /tmp/customers.parquet, which only docs/cluster.md wrote."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in _bash_blocks(readme) if "spark-submit" in b and "jobs/score.py" in b)
    words = shlex.split(block.replace("\\\n", " "), comments=True)
    value = {flag: words[i + 1] for i, flag in enumerate(words[:-1]) if flag.startswith("--")}
    assert "quickstart" in words and Path(value["--input"]).parent == Path(value["--save-data"])
    assert Path(value["--input"]).name == "customers.parquet"  # what save_data writes
    assert words.count("--registry") == 2 and len({w for i, w in enumerate(words[1:]) if words[i] == "--registry"}) == 1
    assert '".[models,spark]"' in readme and "Java" in readme


def test_spark_defaults_keep_info_logs_out_of_the_job_output():
    settings = dict(line.split(None, 1) for line in (ROOT / "conf" / "spark-defaults.conf").read_text().splitlines()
                    if line.strip() and not line.startswith("#"))
    assert settings["spark.log.level"].strip() == "WARN"
