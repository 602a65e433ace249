"""``ss.spark.predict``'s four paths (inline Catalyst expressions, the scoring parquet scan, mapInArrow,
Arrow UDF): the same values as the native library on zoo models' adversarial rows, the measured rule
that picks one, and several outputs from one pass."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from sparkscore import Model
from sparkscore.errors import QueryError
from sparkscore.ir import LinearModel, Signature
from tests.zoo import ALL_CASES

pytestmark = pytest.mark.spark
ss_spark = pytest.importorskip("sparkscore.engines.spark")
from sparkscore.engines import spark_scan  # noqa: E402 (needs pyspark, checked above)

ROW_ID = "sparkscore_row"
#: inlinable GLM, float64 LightGBM, float32 XGBoost, names LightGBM rewrote, a multiclass label model
CASE_IDS = ("sklearn-logreg-binary", "lightgbm-binary", "xgboost-binary-float32", "lightgbm-spaced-names",
            "lightgbm-multiclass")
CASES = [c for c in ALL_CASES if c.id in CASE_IDS]


def _frame(case):
    fitted = case.fitted()
    data = fitted.X.reset_index(drop=True).assign(**{ROW_ID: np.arange(len(fitted.X))})
    return fitted, data.astype({c: object for c, t in data.dtypes.items() if isinstance(t, pd.CategoricalDtype)})


def _plan(df) -> str:
    return df._jdf.queryExecution().executedPlan().toString()


def write_parquet(frame: pd.DataFrame, folder, row_group_size: int | None = None, files: int = 1) -> str:
    """``frame`` as parquet files, NaN kept as NaN in float columns (NULL only where the frame has None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    arrays = [pa.array(frame[c].to_numpy(), from_pandas=frame[c].dtype == object) for c in frame.columns]
    table = pa.Table.from_arrays(arrays, names=list(frame.columns))
    for i, part in enumerate(np.array_split(np.arange(len(frame)), files)):
        pq.write_table(table.take(part), folder / f"part-{i}.parquet", row_group_size=row_group_size)
    return str(folder)


def assert_same_frames(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal column by column, value by value: floats to the bit (NaN where NaN), list cells element-wise."""
    assert list(got.columns) == list(want.columns)
    for c in got.columns:
        for a, b in zip(got[c], want[c]):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype.kind == "f" or b.dtype.kind == "f":
                assert np.array_equal(a.astype(float), b.astype(float), equal_nan=True), (c, a, b)
            else:
                assert np.array_equal(a, b), (c, a, b)


#: every case through the scan, mapInArrow and the Arrow UDF; ``auto`` where it picks something else (inline)
PARAMS = [pytest.param(c, path, id=f"{c.id}-{path}") for c in CASES for path in ("scan", "arrow", "udf")] + [
    pytest.param(c, "auto", id=f"{c.id}-auto") for c in CASES if c.kind == "linear"]


@pytest.mark.parametrize("case, path", PARAMS)
def test_every_path_matches_native(case, path, spark, registry, tmp_path):
    fitted, data = _frame(case)
    model = fitted.model
    name = re.sub(r"[^A-Za-z0-9_]", "_", case.id)
    registry.register(name, model)
    if path == "scan":  # several files and row groups: each row group is a partition
        df = spark.read.parquet(write_parquet(data, tmp_path / "data", row_group_size=max(1, len(data) // 3), files=2))
    else:
        df = spark.createDataFrame(data)
    proba_col = "pp" if model.is_classifier else None
    out = ss_spark.predict(df, name, "p", registry=registry, proba_col=proba_col, path=path)
    assert out.columns == [*df.columns, "p", *([proba_col] if proba_col else [])]
    got = out.orderBy(ROW_ID).toPandas()
    if model.is_classifier and model.n_classes == 2:
        np.testing.assert_allclose(got.p.astype(float), fitted.expected_proba[:, 1], rtol=fitted.rtol, atol=fitted.atol)
    elif model.is_classifier:
        assert list(got.p) == [v.item() if isinstance(v, np.generic) else v for v in fitted.expected_predict]
    else:
        np.testing.assert_allclose(got.p.astype(float), fitted.expected_predict, rtol=fitted.rtol, atol=fitted.atol)
    if proba_col:
        np.testing.assert_allclose(np.stack(got.pp), fitted.expected_proba, rtol=fitted.rtol, atol=fitted.atol)
    plan = _plan(out)
    chosen = ss_spark.predict_path(df, model, path=path).path
    if chosen == "scan":
        assert spark_scan.FORMAT in plan and "ArrowEvalPython" not in plan and "MapInArrow" not in plan, plan
        udf = ss_spark.predict(df, name, "p", registry=registry, proba_col=proba_col, path="udf")
        assert out.schema == udf.schema
        assert_same_frames(got, udf.orderBy(ROW_ID).toPandas())  # bit for bit, NaN where NaN, every column
    elif chosen == "arrow":
        assert plan.count("MapInArrow") == 1 and "ArrowEvalPython" not in plan, plan  # both outputs, one pass
    elif chosen == "udf":
        assert "ArrowEvalPython" in plan and "MapInArrow" not in plan, plan
    else:
        assert "ArrowEvalPython" not in plan and "MapInArrow" not in plan, plan


def _glm(n: int, classifier: bool = False) -> Model:
    names = [f"x{i}" for i in range(n)]
    est = LinearModel(np.linspace(-1, 1, n), [0.25], "logistic" if classifier else "identity")
    kwargs = {"task": "classification", "classes": (0, 1)} if classifier else {}
    return Model(est, Signature.from_names(names), **kwargs)


def test_auto_rule_inlines_small_models_and_streams_the_rest(spark):
    small, wide = _glm(4), _glm(40)   # inline_max_features = 32
    df = spark.createDataFrame(pd.DataFrame(np.ones((2, 40)), columns=[f"x{i}" for i in range(40)]))
    assert ss_spark.predict_path(df.select("x0", "x1", "x2", "x3"), small).path == "inline"
    assert ss_spark.predict_path(df, small).path == "inline"         # inlined: extra columns never leave the JVM
    choice = ss_spark.predict_path(df, wide)  # one output: the UDF returns 1 column, mapInArrow all 41
    assert choice.path == "udf" and "40 features > inline_max_features=32" in choice.reason
    both = ss_spark.predict_path(df, _glm(40, classifier=True), kinds=("predict", "proba"))
    assert both.path == "arrow", both.reason                              # two outputs: one pass
    assert ss_spark.predict_path(df, small, path="arrow").path == "arrow"
    assert ss_spark.predict_path(df, wide, path="udf").path == "udf"


def test_auto_keeps_the_udf_when_extra_columns_outnumber_the_model_ones(spark, registry):
    model = _glm(40, classifier=True)
    frame = pd.DataFrame(np.ones((2, 90)), columns=[f"x{i}" for i in range(40)] + [f"e{i}" for i in range(50)])
    choice = ss_spark.predict_path(spark.createDataFrame(frame), model, kinds=("predict", "proba"))
    assert choice.path == "udf" and "50 non-model columns" in choice.reason


def test_forced_paths_that_cannot_run_are_refused(spark, registry):
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame(pd.DataFrame(np.ones((2, 40)), columns=[f"x{i}" for i in range(40)]))
    with pytest.raises(QueryError, match=r"cannot be inlined.*40 features > inline_max_features=32"):
        ss_spark.predict_path(df, _glm(40), path="inline")
    with pytest.raises(QueryError, match="unknown scoring path 'fast'"):
        ss_spark.predict_path(df, _glm(40), path="fast")
    with_vector = spark.createDataFrame([(1.0, Vectors.dense([1.0]))], ["x0", "v"])
    with pytest.raises(QueryError, match="'v' has a type mapInArrow cannot carry"):
        ss_spark.predict_path(with_vector, _glm(1), path="arrow")
    assert ss_spark.predict_path(with_vector, _glm(1)).path == "inline"


def test_path_conf_and_in_place_output_column(spark, registry):
    registry.register("wide", _glm(40))
    frame = pd.DataFrame(np.arange(80.0).reshape(2, 40), columns=[f"x{i}" for i in range(40)])
    df = spark.createDataFrame(frame.assign(prediction=[7.0, 8.0]))
    want = registry.load("wide").predict(frame)
    spark.conf.set(ss_spark.PATH_CONF, "udf")
    try:
        assert ss_spark.predict_path(df, registry.load("wide")).path == "udf"
        out = ss_spark.predict(df, "wide", registry=registry)
        assert "ArrowEvalPython" in _plan(out)
    finally:
        spark.conf.unset(ss_spark.PATH_CONF)
    for path in ("arrow", "udf"):  # an output named like an input column replaces it where it stands
        out = ss_spark.predict(df, "wide", registry=registry, path=path)
        assert out.columns == df.columns
        np.testing.assert_allclose(out.toPandas().prediction, want, rtol=1e-12)
