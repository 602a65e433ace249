"""DuckDB engine, query layer: PREDICT / PREDICT_PROBA through the optimizer, anywhere in a query."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import sparkscore as ss
from sparkscore.engines import duckdb as engine
from sparkscore.errors import QueryError, SignatureError
from tests.engines.duckdb_models import MODELS, frame
from tests.engines.test_duckdb import _assert_native, _zoo_table
from tests.zoo import params

#: every way the plan may run a model: default rules, and forced through UDFs (no inlining)
RULE_SETS = [pytest.param((), id="default"), pytest.param(("inline_models",), id="udf-only")]


@pytest.fixture
def models(con, registry):
    for name, build in MODELS.items():
        registry.register(name, build())
    con.register("frame_view", frame())
    con.sql("CREATE TABLE t AS SELECT * FROM frame_view")
    con.unregister("frame_view")
    return registry


def rows(con, query, registry, disable_rules=()):
    return engine.sql(con, query, registry, disable_rules=disable_rules).fetchall()


def same_rows(left: list[tuple], right: list[tuple]) -> bool:
    """Row lists equal, NaN equal to NaN."""
    def key(row):
        return tuple("NaN" if isinstance(v, float) and np.isnan(v) else v for v in row)
    return [key(r) for r in left] == [key(r) for r in right]


def model_predict(registry, name: str, data: pd.DataFrame) -> np.ndarray:
    """PREDICT semantics computed by the model itself (binary -> P(positive), NaN -> None)."""
    model = registry.load(name)
    X = data[list(model.signature.names)]
    values = model.predict_proba(X)[:, 1] if model.is_classifier and model.n_classes == 2 else model.predict(X)
    return values


@pytest.mark.parametrize("case", params())
def test_zoo_predict_matches_native(case, con, registry):
    """Default rules (models may be inlined as SQL); the UDF path is checked in test_duckdb.py."""
    fitted = case.fitted()
    registry.register("zoo", fitted.model)
    _zoo_table(con, fitted)
    proba_sql = ", PREDICT_PROBA('zoo', *) AS proba" if fitted.model.is_classifier else ""
    result = rows(con, f"SELECT PREDICT('zoo', *) AS p{proba_sql} FROM t ORDER BY row_id", registry)
    predict = [r[0] for r in result]
    proba = [r[1] for r in result] if fitted.model.is_classifier else None
    _assert_native(fitted, predict, proba, f"{case.id} through ss.duckdb.sql")


@pytest.mark.parametrize("disable_rules", RULE_SETS)
def test_several_predicts_in_one_select(con, models, disable_rules):
    got = rows(con, "SELECT PREDICT('glm', *), PREDICT('logit', a, b), PREDICT('trees', *), PREDICT('multi', a, s) "
                    "FROM t WHERE a IS NOT NULL AND b IS NOT NULL ORDER BY row_id", models, disable_rules)
    data = frame().dropna(subset=["a", "b"])
    np.testing.assert_allclose([r[0] for r in got], model_predict(models, "glm", data), rtol=1e-12)
    np.testing.assert_allclose([r[1] for r in got], model_predict(models, "logit", data), rtol=1e-12)
    assert [r[2] for r in got] == model_predict(models, "trees", data).tolist()
    assert [r[3] for r in got] == model_predict(models, "multi", data).tolist()


@pytest.mark.parametrize("disable_rules", RULE_SETS)
def test_predict_in_where_order_by_and_group_by(con, models, disable_rules):
    where = rows(con, "SELECT row_id FROM t WHERE PREDICT('logit', *) > 0.5 ORDER BY row_id", models, disable_rules)
    plain = con.sql("SELECT row_id FROM t ORDER BY row_id").fetchall()
    p = model_predict(models, "logit", frame())
    # DuckDB orders NaN above every number, so rows with a NULL input (score NaN) pass "> 0.5"
    assert [r[0] for r in where] == [r[0] for r, v in zip(plain, p) if v > 0.5 or np.isnan(v)]
    ordered = rows(con, "SELECT row_id FROM t WHERE a IS NOT NULL AND b IS NOT NULL "
                        "ORDER BY PREDICT('glm', *) DESC LIMIT 5", models, disable_rules)
    data = frame().dropna(subset=["a", "b"])
    assert [r[0] for r in ordered] == data.row_id.to_numpy()[np.argsort(-model_predict(models, "glm", data))][:5].tolist()
    grouped = rows(con, "SELECT PREDICT('trees', *) AS label, count(*) AS n FROM t GROUP BY PREDICT('trees', *) "
                        "ORDER BY label", models, disable_rules)
    labels, counts = np.unique(model_predict(models, "trees", frame()), return_counts=True)
    assert grouped == list(zip(labels.tolist(), counts.tolist()))


@pytest.mark.parametrize("disable_rules", RULE_SETS)
def test_predict_in_cte_subquery_and_join(con, models, disable_rules):
    con.sql("CREATE TABLE extra AS SELECT row_id, row_id % 3 AS grp FROM t")
    expected = rows(con, "SELECT row_id, PREDICT('glm', *) FROM t ORDER BY row_id", models, disable_rules)
    cte = rows(con, "WITH scored AS (SELECT row_id, PREDICT('glm', *) AS p FROM t) "
                    "SELECT row_id, p FROM scored ORDER BY row_id", models, disable_rules)
    subquery = rows(con, "SELECT row_id, p FROM (SELECT row_id, PREDICT('glm', a, b) AS p FROM t) AS s "
                         "ORDER BY row_id", models, disable_rules)
    over_subquery = rows(con, "SELECT row_id, PREDICT('glm', *) FROM (SELECT row_id, a, b FROM t) AS s "
                              "ORDER BY row_id", models, disable_rules)
    joined = rows(con, "SELECT t.row_id, PREDICT('glm', t.*) FROM t JOIN extra e ON t.row_id = e.row_id "
                       "ORDER BY t.row_id", models, disable_rules)
    assert same_rows(cte, expected) and same_rows(subquery, expected)
    assert same_rows(over_subquery, expected) and same_rows(joined, expected)


def test_parquet_pandas_and_arrow_inputs(con, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    con.sql("COPY t TO 't.parquet' (FORMAT parquet)")
    con.register("pandas_t", frame())
    con.register("arrow_t", pa.Table.from_pandas(frame()))
    expected = rows(con, "SELECT row_id, PREDICT('trees', *) FROM t ORDER BY row_id", models)
    for source in ("'t.parquet' AS p", "pandas_t", "arrow_t"):
        assert rows(con, f"SELECT row_id, PREDICT('trees', *) FROM {source} ORDER BY row_id", models) == expected, source
    positional = rows(con, "SELECT row_id, PREDICT('trees', a, b) FROM read_parquet('t.parquet') ORDER BY row_id", models)
    assert positional == expected


def test_missing_column_is_a_clean_error(con, models):
    con.sql("CREATE TABLE narrow AS SELECT a FROM t")
    with pytest.raises(SignatureError, match="'b'"):
        engine.sql(con, "SELECT PREDICT('glm', *) FROM narrow", models)


def test_unknown_model_and_rule_are_clean_errors(con, models):
    with pytest.raises(ss.errors.ModelNotFoundError):
        engine.sql(con, "SELECT PREDICT('nope', *) FROM t", models)
    with pytest.raises(QueryError, match="no_such_rule"):
        engine.sql(con, "SELECT PREDICT('glm', *) FROM t", models, disable_rules=("no_such_rule",))


def test_explain_returns_the_plan_and_dispatches_on_the_engine(con, models):
    query = "SELECT PREDICT('glm', *) AS p FROM t"
    plan = ss.explain(query, engine=con, registry=models)
    assert plan.sql == engine.explain(query, con, models).sql
    assert [m.name for m in plan.models] == ["glm"]
    assert "bind_models" in str(plan)
    with pytest.raises(QueryError, match="DuckDB connection or a SparkSession"):
        ss.explain(query, engine=object(), registry=models)


def test_query_pins_versions_and_registers_derived_names_once(con, models):
    models.register("glm", MODELS["logit"]())  # 'glm' latest is now version 2, a classifier
    got = rows(con, "SELECT PREDICT('glm/1', 1.0, 2.0), PREDICT('glm', 1.0, 2.0)", models, ("inline_models",))
    expected_v1 = model_predict(models, "glm/1", pd.DataFrame({"a": [1.0], "b": [2.0]}))
    expected_v2 = model_predict(models, "glm/2", pd.DataFrame({"a": [1.0], "b": [2.0]}))
    np.testing.assert_allclose(got[0], [expected_v1[0], expected_v2[0]], rtol=1e-12)
