"""DuckDB engine, registration layer: typed Arrow UDFs and the large-batch path vs the model / native."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import sparkscore as ss
from sparkscore.engines import duckdb as engine
from sparkscore.errors import QueryError, SignatureError
from sparkscore.ir import LinearModel, Model, Signature
from tests.engines.duckdb_models import MODELS, call_sql, frame
from tests.zoo import ALL_CASES, params


@pytest.fixture
def demo(con, registry):
    """Every hand-built model registered and installed, plus table ``t`` from :func:`frame`."""
    for name, build in MODELS.items():
        registry.register(name, build())
    engine.install(con, registry)
    con.register("frame_view", frame())
    con.sql("CREATE TABLE t AS SELECT * FROM frame_view")
    return registry


def column_values(relation: duckdb.DuckDBPyRelation) -> list:
    return [row[0] for row in relation.fetchall()]


def as_float(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# ---------------------------------------------------------------------- zoo parity
def _zoo_table(con, fitted) -> None:
    """Table ``t``: the case's rows (NaN -> NULL on the way in) plus ``row_id``.

    pandas categoricals would arrive as DuckDB ENUMs; they go in as VARCHAR, as text data does.
    """
    data = fitted.X.reset_index(drop=True).assign(row_id=np.arange(len(fitted.X)))
    for name in data.columns:
        if isinstance(data[name].dtype, pd.CategoricalDtype):
            data[name] = data[name].astype(object)
    con.register("zoo_frame", data)
    con.sql("CREATE TABLE t AS SELECT * FROM zoo_frame")
    con.unregister("zoo_frame")


def _assert_native(fitted, predict, proba, what: str) -> None:
    """PREDICT semantics (regression value, binary P(positive), multiclass label) vs the native model.

    Classifier labels must be identical: PREDICT's for multiclass, argmax of PREDICT_PROBA's for all.
    """
    model = fitted.model
    tol = dict(rtol=fitted.rtol, atol=fitted.atol, err_msg=what)
    expected_labels = np.asarray(fitted.expected_predict, dtype=object)
    if not model.is_classifier:
        np.testing.assert_allclose(as_float(predict), np.asarray(fitted.expected_predict, dtype=float), **tol)
        return
    proba = np.array(proba, dtype=float)
    labels = np.asarray(model.classes, dtype=object)[np.argmax(proba, axis=1)]
    if fitted.expected_proba is not None:
        np.testing.assert_allclose(proba, fitted.expected_proba, **tol)
    if model.n_classes == 2:
        np.testing.assert_allclose(as_float(predict), proba[:, 1], **tol)
        if model.labels_from_margins:  # P == 0.5 exactly: the label is the margin's sign, not in the output
            keep = proba[:, 1] != 0.5
            labels, expected_labels = labels[keep], expected_labels[keep]
    else:
        labels = np.asarray(predict, dtype=object)
    mismatches = int(np.sum(labels != expected_labels))
    assert mismatches == 0, f"{what}: {mismatches} label mismatches of {len(labels)}"


@pytest.mark.parametrize("case", params())
def test_zoo_udfs_match_native(case, con, registry):
    fitted = case.fitted()
    mv = registry.register("zoo", fitted.model)
    engine.install(con, registry)
    _zoo_table(con, fitted)
    names = fitted.model.signature.names
    predict = column_values(con.sql(call_sql(f"zoo_v{mv.version}", names)))
    proba = (column_values(con.sql(call_sql(f"zoo_v{mv.version}_proba", names)))
             if fitted.model.is_classifier else None)
    _assert_native(fitted, predict, proba, f"{case.id} through DuckDB UDFs")


#: one zoo case per (library, task): the batch path shares ScoringFunction.score with the UDFs
REPRESENTATIVES = list({(c.library, c.task): c for c in reversed(ALL_CASES)}.values())


@pytest.mark.parametrize("case", params(REPRESENTATIVES))
def test_zoo_batch_path_matches_native(case, con, registry):
    fitted = case.fitted()
    registry.register("zoo", fitted.model)
    _zoo_table(con, fitted)
    ordered = con.sql("SELECT * FROM t ORDER BY row_id")
    predict = engine.score_relation(con, ordered, "zoo", registry, batch_rows=512).column("prediction").to_pylist()
    proba = None
    if fitted.model.is_classifier:
        ordered = con.sql("SELECT * FROM t ORDER BY row_id")
        proba = engine.score_relation(con, ordered, "zoo", registry, kind="proba").column("prediction").to_pylist()
    _assert_native(fitted, predict, proba, f"{case.id} through score_relation")


# ---------------------------------------------------------------------- hand-built models
def test_install_registers_typed_functions(con, demo):
    rel = con.sql("SELECT glm_v1(a, b) AS glm, logit_v1(a, b) AS logit, logit_v1_proba(a, b) AS logit_proba, "
                  "multi_v1(a, s) AS multi, trees_v1(a, b) AS trees FROM t")
    assert dict(zip(rel.columns, map(str, rel.types))) == {
        "glm": "DOUBLE", "logit": "DOUBLE", "logit_proba": "DOUBLE[]", "multi": "VARCHAR", "trees": "BIGINT"}
    functions = dict(con.execute(
        "SELECT function_name, parameter_types FROM duckdb_functions() WHERE function_name LIKE 'multi_v1%'").fetchall())
    assert functions == {"multi_v1": ["DOUBLE", "VARCHAR"], "multi_v1_proba": ["DOUBLE", "VARCHAR"]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_udf_equals_model_with_null_as_missing(con, demo, name):
    """NULL goes in as NaN; the result is what ``Model.predict`` gives (a GLM given NaN: NaN)."""
    model = demo.load(name)
    names = list(model.signature.names)
    got = column_values(con.sql(call_sql(f"{name}_v1", names)))
    X = frame()[names]
    expected = model.predict_proba(X)[:, 1] if model.is_classifier and model.n_classes == 2 else model.predict(X)
    assert np.isnan(model.to_matrix(X)).any()
    if np.asarray(expected).dtype.kind == "f":
        np.testing.assert_allclose(np.asarray(got, dtype=float), expected, rtol=1e-12)
    else:
        assert got == list(expected)


def test_tree_routes_null_by_default_direction(con, demo):
    model = demo.load("trees")
    rows = con.sql("SELECT trees_v1_proba(NULL, NULL), trees_v1_proba(NULL, 5.0), trees_v1_proba(0.0, NULL)").fetchall()
    expected = model.predict_proba(np.array([[np.nan, np.nan], [np.nan, 5.0], [0.0, np.nan]]))
    np.testing.assert_allclose(np.array(rows[0], dtype=float), expected, rtol=1e-12)


def test_raw_function_returns_the_untransformed_margin(con, registry):
    model = MODELS["logit"]()
    fn = engine.ScoringFunction("logit_part", "raw", model, ("logit", 1), "DOUBLE")
    engine.register_function(con, fn)
    (margin,), = con.sql("SELECT logit_part(2.0, 1.0)").fetchall()
    assert margin == pytest.approx(0.7 * 2.0 - 1.1 * 1.0 + 0.1, rel=1e-12)


def test_predict_proba_rows_sum_to_one(con, demo):
    sums = column_values(con.sql("SELECT list_sum(multi_v1_proba(a, s)) FROM t WHERE a IS NOT NULL AND s IN ('x', 'y', 'z')"))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)


def test_install_is_idempotent_and_picks_up_new_versions(con, demo):
    before = column_values(con.sql(call_sql("glm_v1", ["a", "b"])))
    assert "glm_v1" in engine.install(con, demo)
    demo.register("glm", MODELS["logit"]())  # version 2 of 'glm' is a classifier
    names = engine.install(con, demo)
    assert {"glm_v1", "glm_v2", "glm_v2_proba"} <= set(names)
    np.testing.assert_array_equal(column_values(con.sql(call_sql("glm_v1", ["a", "b"]))), before)


def test_install_replaces_a_function_whose_model_changed(con, demo, tmp_path):
    other = ss.Registry(tmp_path / "other")
    other.register("glm", Model(LinearModel(np.array([[1.0], [1.0]]), np.array([0.0])), Signature.from_names(["a", "b"])))
    engine.install(con, other)
    assert con.sql("SELECT glm_v1(2.0, 3.0)").fetchall() == [(5.0,)]


def test_arrow_and_parquet_inputs(con, demo, tmp_path):
    path = tmp_path / "t.parquet"
    con.sql("SELECT * FROM t").write_parquet(str(path))
    arrow_table = con.sql("SELECT * FROM t").to_arrow_table()
    con.register("arrow_t", arrow_table)
    expected = column_values(con.sql(call_sql("logit_v1", ["a", "b"])))
    from_arrow = column_values(con.sql(call_sql("logit_v1", ["a", "b"], "arrow_t")))
    from_parquet = column_values(con.execute(
        "SELECT logit_v1(a, b) FROM read_parquet(?) ORDER BY row_id", [str(path)]))
    np.testing.assert_array_equal(from_arrow, expected)
    np.testing.assert_array_equal(from_parquet, expected)


def test_proba_of_a_regressor_is_a_clean_error(con, registry):
    registry.register("glm", MODELS["glm"]())
    with pytest.raises(QueryError, match="PREDICT_PROBA needs a classifier"):
        engine.score_relation(con, "SELECT 1.0 AS a, 2.0 AS b", "glm", registry, kind="proba")


# ---------------------------------------------------------------------- batch path
def test_score_relation_batches_equal_udfs(con, demo):
    udf = column_values(con.sql(call_sql("multi_v1", ["a", "s"])))
    ordered = "SELECT * FROM t ORDER BY row_id"
    small = engine.score_relation(con, ordered, "multi", demo, batch_rows=7, output="label")
    big = engine.score_relation(con, ordered, "multi", demo)
    assert small.column("label").to_pylist() == udf
    assert big.column("prediction").to_pylist() == udf
    assert small.column_names == ["row_id", "a", "b", "s", "label"]


def test_score_relation_registers_a_view(con, demo):
    rel = engine.score_relation(con, con.table("t"), "logit/1", demo, view="scored")
    assert isinstance(rel, duckdb.DuckDBPyRelation)
    (n, n_nan), = con.sql("SELECT count(*), count(*) FILTER (isnan(prediction)) FROM scored").fetchall()
    assert n == 50 and 0 < n_nan < n


def test_score_relation_missing_column_names_it(con, demo):
    with pytest.raises(SignatureError, match="'s'"):
        engine.score_relation(con, "SELECT a, b FROM t", "multi", demo)


def test_score_relation_output_name_clash(con, demo):
    with pytest.raises(QueryError, match="already has a column 'a'"):
        engine.score_relation(con, "SELECT a, b FROM t", "glm", demo, output="a")


def test_score_relation_accepts_pandas_frames(con, demo):
    data = pd.DataFrame({"a": [1.0, np.nan], "b": [2.0, 3.0]})
    con.register("pdf", data)
    table = engine.score_relation(con, "SELECT * FROM pdf", "glm", demo)
    assert isinstance(table, pa.Table)
    np.testing.assert_array_equal(table.column("prediction").to_numpy(), [1.5 - 4.0 + 0.25, np.nan])
