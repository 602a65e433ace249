"""Spark engine: installed functions, predict, the pyspark.ml Transformer, the per-worker model cache."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from sparkscore import Model
from sparkscore.errors import SignatureError
from sparkscore.ir import LinearModel, Signature

pytestmark = pytest.mark.spark

ss_spark = pytest.importorskip("sparkscore.engines.spark")


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"rid": np.arange(n), "b": rng.normal(size=n), "a": rng.normal(size=n),
                       "extra": ["x"] * n})
    df.loc[3, "a"] = np.nan  # becomes NULL in Spark: a missing value for the model
    return df


@pytest.fixture
def models(registry):
    coef = np.array([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7]])
    registry.register("glm", Model(LinearModel(coef[:, 0], [0.1], "logistic"), Signature.from_names(["a", "b"]),
                                   task="classification", classes=(0, 1)))
    registry.register("reg", Model(LinearModel(coef[:, 1], [2.0]), Signature.from_names(["a", "b"])))
    registry.register("multi", Model(LinearModel(coef, [0.0, 0.1, -0.1], "softmax"), Signature.from_names(["a", "b"]),
                                     task="classification", classes=("lo", "mid", "hi")))
    return registry


def _expected(registry, ref: str, pdf: pd.DataFrame, proba: bool = False):
    model = registry.load(ref)
    if proba:
        return model.predict_proba(pdf)
    if model.is_classifier and model.n_classes == 2:
        return model.predict_proba(pdf)[:, 1]
    return model.predict(pdf)


def _as_float(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_install_registers_every_version_callable_from_plain_sql(spark, models):
    names = ss_spark.install(spark, models)
    assert sorted(names) == ["glm_v1", "glm_v1_proba", "multi_v1", "multi_v1_proba", "reg_v1"]
    pdf = _frame()
    spark.createDataFrame(pdf).createOrReplaceTempView("spark_install_t")
    rows = spark.sql("SELECT rid, glm_v1(a, b) AS p, glm_v1_proba(a, b) AS pp, reg_v1(a, b) AS r, "
                     "multi_v1(a, b) AS m FROM spark_install_t ORDER BY rid").toPandas()
    np.testing.assert_allclose(_as_float(rows.p), _expected(models, "glm", pdf), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(_as_float(rows.r), _expected(models, "reg", pdf), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(np.stack(rows.pp), _expected(models, "glm", pdf, proba=True), rtol=1e-12,
                               equal_nan=True)  # NULL input -> missing -> NaN for a GLM
    assert list(rows.m.drop(3)) == list(np.delete(_expected(models, "multi", pdf), 3))


def test_install_skips_a_damaged_entry_and_installs_the_rest(spark, models):
    (models.model_path("reg", 1) / "version.json").write_text("{")
    with pytest.warns(UserWarning, match=r"reg/1.*version\.json.*sparkscore delete reg/1 --force"):
        names = ss_spark.install(spark, models)
    assert sorted(names) == ["glm_v1", "glm_v1_proba", "multi_v1", "multi_v1_proba"]


def test_predict_binds_columns_by_name(spark, models):
    pdf = _frame()
    out = ss_spark.predict(spark.createDataFrame(pdf), "reg", output_col="score", registry=models).toPandas()
    assert list(out.columns) == ["rid", "b", "a", "extra", "score"]
    np.testing.assert_allclose(_as_float(out.sort_values("rid").score), _expected(models, "reg", pdf),
                               rtol=1e-12, equal_nan=True)
    proba = ss_spark.predict(spark.createDataFrame(pdf), "multi/1", registry=models, proba=True).toPandas()
    assert len(proba.prediction[0]) == 3


def test_predict_names_the_missing_column(spark, models):
    df = spark.createDataFrame(_frame().drop(columns=["b"]))
    with pytest.raises(SignatureError, match="'b'") as err:
        ss_spark.predict(df, "glm", registry=models)
    assert "glm/1" in str(err.value)


def test_predict_refuses_a_text_column_bound_to_a_numeric_input(spark, models):
    """One rule with ``sql``/``score`` (issue 12 item 8): numeric strings are never parsed silently."""
    df = spark.createDataFrame(_frame(4).assign(a=lambda f: f.a.astype(str)))
    fix = r"glm/1.*'a'.*must be numeric.*string; cast it, e\.g\. CAST\(`a` AS DOUBLE\)"
    with pytest.raises(SignatureError, match=fix):
        ss_spark.predict(df, "glm", registry=models)


def test_model_transformer_in_a_pipeline_round_trips(spark, models, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    pdf = _frame()
    df = spark.createDataFrame(pdf)
    stage = ss_spark.ModelTransformer("glm", output_col="p_glm", registry_uri=str(models.root))
    fitted = Pipeline(stages=[stage]).fit(df)
    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    reloaded = PipelineModel.load(str(tmp_path / "pipeline"))
    for pipeline in (fitted, reloaded):
        out = pipeline.transform(df).orderBy("rid").toPandas()
        np.testing.assert_allclose(_as_float(out.p_glm), _expected(models, "glm", pdf), rtol=1e-12, equal_nan=True)


def test_udf_closure_carries_a_reference_not_the_model(models):
    from pyspark import cloudpickle

    big = Model(LinearModel(np.linspace(-1, 1, 5000), [0.0]), Signature.from_names([f"x{i}" for i in range(5000)]))
    mv = models.register("big", big)
    source = ss_spark.ModelSource(str(models.root), "big", mv.version, mv.sha256)
    fn = ss_spark.ModelFunction("big_v1", source, "predict", "DOUBLE")
    assert len(cloudpickle.dumps(fn.udf().func)) < 5000 * 8 / 4  # far smaller than the 40 kB of weights


def test_each_worker_loads_a_model_once_across_batches_and_queries(spark, models, tmp_path):
    log = tmp_path / "loads.log"
    env = spark.sparkContext.environment
    previous_rows = spark.conf.get(ss_spark.BATCH_ROWS_CONF, None)
    env[ss_spark.LOAD_LOG_ENV] = str(log)  # new UDFs carry it: their Python workers log every load
    spark.conf.set(ss_spark.BATCH_ROWS_CONF, "25")
    try:
        ss_spark.install(spark, models)
        df = spark.createDataFrame(_frame(3000)).repartition(4)
        df.createOrReplaceTempView("spark_cache_t")
        for _ in range(2):
            assert len(spark.sql("SELECT reg_v1(a, b) AS p FROM spark_cache_t").collect()) == 3000
    finally:
        del env[ss_spark.LOAD_LOG_ENV]
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
        if previous_rows is None:
            spark.conf.unset(ss_spark.BATCH_ROWS_CONF)
    loads = Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
    assert loads and set(loads.values()) == {1}, loads          # 240 batches, 8 tasks: one load per worker
    assert {model for _, model in loads} == {"reg/1"}


@pytest.mark.parametrize("source", ["temp view", "catalog table", "parquet path"])
def test_sql_binds_star_over_views_tables_and_parquet_paths(spark, models, tmp_path, source):
    pdf = _frame(seed=3)
    df = spark.createDataFrame(pdf)
    if source == "temp view":
        df.createOrReplaceTempView("spark_sql_src")
        table = "spark_sql_src"
    elif source == "catalog table":
        spark.sql(f"CREATE DATABASE IF NOT EXISTS ss_test LOCATION '{tmp_path / 'db'}'")
        df.write.mode("overwrite").saveAsTable("ss_test.spark_sql_src")
        table = "ss_test.spark_sql_src"
    else:
        df.write.parquet(str(tmp_path / "src.parquet"))
        table = f"parquet.`{tmp_path / 'src.parquet'}`"
    rows = ss_spark.sql(spark, f"SELECT rid, PREDICT('reg', *) AS r FROM {table} ORDER BY rid", models).toPandas()
    np.testing.assert_allclose(_as_float(rows.r), _expected(models, "reg", pdf), rtol=1e-12, equal_nan=True)


def test_sql_fuses_predict_and_proba_of_one_model_into_one_pass(spark, models, tmp_path):
    """PREDICT and PREDICT_PROBA of one model in one SELECT: one struct UDF, evaluated once per row
    (one Python worker, one transfer, one kernel call), the same values as each function alone."""
    from sparkscore.engines.functions import SCORE_LOG_ENV

    log = tmp_path / "scored.log"
    env = spark.sparkContext.environment
    env[SCORE_LOG_ENV] = str(log)  # new UDFs carry it: their workers log every scored batch
    pdf = _frame(300)
    spark.createDataFrame(pdf).createOrReplaceTempView("spark_fused_t")
    try:
        out = ss_spark.sql(spark, "SELECT rid, PREDICT('glm', *) AS p, PREDICT_PROBA('glm', *) AS pp, "
                                  "PREDICT('multi', *) AS m FROM spark_fused_t", models,
                           disable_rules=("inline_models",))  # no ORDER BY: its sampling job scores rows again
        plan = out._jdf.queryExecution().executedPlan().toString()
        rows = out.toPandas().sort_values("rid").reset_index(drop=True)
    finally:
        del env[SCORE_LOG_ENV]
    np.testing.assert_allclose(_as_float(rows.p), _expected(models, "glm", pdf), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(np.stack(rows.pp.to_numpy()), _expected(models, "glm", pdf, proba=True), rtol=1e-12)
    assert list(rows.m) == list(_expected(models, "multi", pdf))
    scored: Counter = Counter()
    for line in log.read_text().splitlines():
        name, n = line.split()
        scored[name.split("_fused_")[0] + ("_fused" if "_fused_" in name else "")] += int(n)
    assert scored == Counter({"glm_v1_fused": 300, "multi_v1": 300}), scored
    assert plan.count("ArrowEvalPython") == 2, plan


def test_predict_udf_path_scores_both_outputs_in_one_pass(spark, models, tmp_path):
    from sparkscore.engines.functions import SCORE_LOG_ENV

    log = tmp_path / "scored.log"
    env = spark.sparkContext.environment
    env[SCORE_LOG_ENV] = str(log)
    pdf = _frame(200)
    try:
        out = ss_spark.predict(spark.createDataFrame(pdf), "multi", "label", registry=models, proba_col="pp",
                               path="udf")
        plan = out._jdf.queryExecution().executedPlan().toString()
        rows = out.toPandas().sort_values("rid").reset_index(drop=True)
    finally:
        del env[SCORE_LOG_ENV]
    assert out.columns == [*pdf.columns, "label", "pp"]
    assert list(rows.label) == list(_expected(models, "multi", pdf))
    np.testing.assert_allclose(np.stack(rows.pp.to_numpy()), _expected(models, "multi", pdf, proba=True), rtol=1e-12)
    assert plan.count("ArrowEvalPython") == 1, plan
    assert sum(int(line.split()[1]) for line in log.read_text().splitlines()) == 200
