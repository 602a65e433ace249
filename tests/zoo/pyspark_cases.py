"""pyspark.ml zoo cases: small models fitted on the shared local Spark session.

Expected outputs are Spark's own ``transform()`` (``prediction``, ``probability``) on adversarial
rows.  Feature 3 holds integer codes 0..4; the ``categorical`` cases declare it nominal in the
features column's ML attributes, so Spark learns categorical (set) splits on it.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import numpy as np
import pandas as pd
import pytest

from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix

N_ROWS = 300
N_CATEGORIES = 5
NAMES = ("f0", "f1", "f2", "f3")
#: codes Spark never saw in training next to the seen ones; non-integral codes are left out on
#: purpose (Spark tests exact set membership, the IR truncates, as Spark's training binning does)
CATEGORY_PROBES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 31.0, 32.0, -1.0, -0.5, 1000.0)


def spark_session():
    """The one local[2] session of a test run (tests/conftest.py's ``spark`` fixture uses it too).

    Spark's Python workers must run this interpreter, else pandas UDFs fail to import pandas.
    """
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return (
        SparkSession.builder.master("local[2]")
        .appName("sparkscore-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )


def training_data(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features (3 continuous + 1 integer code column) and binary / multiclass / regression labels."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=(N_ROWS, 3)), rng.integers(0, N_CATEGORIES, N_ROWS)]).astype(float)
    X[:, 1] = np.round(X[:, 1], 1)  # few distinct values: Spark splits at midpoints between them
    cat_effect = np.array([0.0, 1.5, -1.0, 0.5, -1.5])[X[:, 3].astype(int)]
    noise = rng.normal(scale=0.3, size=N_ROWS)
    margin = X[:, 0] + X[:, 1] + cat_effect + noise
    labels = {
        "binary": (margin > 0).astype(float),
        "multiclass": np.digitize(margin, [-0.7, 0.7]).astype(float),
        "regression": X[:, :3] @ [1.0, 2.0, -1.0] + cat_effect + noise,
    }
    return X, labels


def _vector_frame(spark, X: np.ndarray, y: np.ndarray | None = None, categorical: bool = False):
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import functions as F

    rows = [(i, Vectors.dense([float(v) for v in x])) + (() if y is None else (float(y[i]),))
            for i, x in enumerate(X)]
    df = spark.createDataFrame(rows, ["id", "features"] + ([] if y is None else ["label"]))
    if categorical:
        attrs = {"numeric": [{"idx": i, "name": NAMES[i]} for i in range(3)],
                 "nominal": [{"idx": 3, "name": NAMES[3], "vals": [str(c) for c in range(N_CATEGORIES)]}]}
        df = df.withColumn("features", F.col("features").alias(
            "features", metadata={"ml_attr": {"attrs": attrs, "num_attrs": len(NAMES)}}))
    return df


def _column_frame(spark, X: np.ndarray, y: np.ndarray | None = None):
    rows = [(i, *(float(v) for v in x)) + (() if y is None else (float(y[i]),)) for i, x in enumerate(X)]
    return spark.createDataFrame(rows, ["id", *NAMES] + ([] if y is None else ["label"]))


def _spark_outputs(native, frame, classifier: bool):
    out = native.transform(frame).orderBy("id").collect()
    predict = np.array([r["prediction"] for r in out], dtype=np.float64)
    proba = np.array([r["probability"].toArray() for r in out]) if classifier else None
    return predict, proba


def adversarial_rows(model, X_train: np.ndarray, categorical: bool, allow_inf: bool = True) -> np.ndarray:
    rows = adversarial_matrix(model, X_train, allow_inf=allow_inf)
    if categorical:
        probes = X_train[np.arange(len(CATEGORY_PROBES)) % len(X_train)].copy()
        probes[:, 3] = CATEGORY_PROBES
        rows = np.concatenate([rows, probes])
    return rows


def build_predictor(make_estimator, task: str, categorical: bool = False, allow_inf: bool = True) -> Fitted:
    """Fit a bare pyspark.ml predictor on a features vector column and score adversarial rows."""
    import sparkscore as ss

    spark = spark_session()
    X, labels = training_data()
    native = make_estimator().fit(_vector_frame(spark, X, labels[task], categorical))
    model = ss.convert(native)
    rows = adversarial_rows(model, X, categorical, allow_inf)
    predict, proba = _spark_outputs(native, _vector_frame(spark, rows), task != "regression")
    return Fitted(native, model, pd.DataFrame(rows, columns=list(NAMES)), predict, proba,
                  notes="labels are Spark's prediction doubles 0.0..k-1")


def build_pipeline(make_estimator, task: str, scaler: bool) -> Fitted:
    """VectorAssembler [+ StandardScaler] + predictor over named double columns."""
    import sparkscore as ss
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    spark = spark_session()
    X, labels = training_data(seed=1)
    stages = [VectorAssembler(inputCols=list(NAMES), outputCol="raw", handleInvalid="keep")]
    if scaler:
        stages.append(StandardScaler(inputCol="raw", outputCol="features", withMean=True))
    else:
        stages[0].setOutputCol("features")
    native = Pipeline(stages=stages + [make_estimator()]).fit(_column_frame(spark, X, labels[task]))
    model = ss.convert(native)
    rows = adversarial_rows(model, X, categorical=False)
    predict, proba = _spark_outputs(native, _column_frame(spark, rows), task != "regression")
    return Fitted(native, model, pd.DataFrame(rows, columns=list(NAMES)), predict, proba,
                  notes="VectorAssembler(handleInvalid='keep') passes NaN to the model")


def _estimator(name: str, **params):
    import pyspark.ml.classification as classification
    import pyspark.ml.regression as regression

    cls = getattr(classification, name, None) or getattr(regression, name)
    return cls(**params)


def _case(case_id: str, kind: str, task: str, build) -> Case:
    return Case(case_id, build, library="pyspark", kind=kind, task=task, marks=(pytest.mark.spark,))


_TREE = {"maxDepth": 4, "seed": 7}
CASES: list[Case] = [
    _case("pyspark-lr-binary", "linear", "binary", partial(
        build_predictor, partial(_estimator, "LogisticRegression", regParam=0.01, maxIter=30), "binary")),
    # +inf margins: Spark's softmax special-cases them, the IR's gives NaN, so no inf rows here
    _case("pyspark-lr-multiclass", "linear", "multiclass", partial(
        build_predictor, partial(_estimator, "LogisticRegression", regParam=0.01, maxIter=30), "multiclass",
        allow_inf=False)),
    _case("pyspark-linreg", "linear", "regression", partial(
        build_predictor, partial(_estimator, "LinearRegression", regParam=0.01), "regression")),
    _case("pyspark-dt-multiclass-categorical", "trees", "multiclass", partial(
        build_predictor, partial(_estimator, "DecisionTreeClassifier", **_TREE), "multiclass", categorical=True)),
    _case("pyspark-dt-regression", "trees", "regression", partial(
        build_predictor, partial(_estimator, "DecisionTreeRegressor", **_TREE), "regression")),
    _case("pyspark-rf-multiclass-categorical", "trees", "multiclass", partial(
        build_predictor, partial(_estimator, "RandomForestClassifier", numTrees=6, **_TREE), "multiclass",
        categorical=True)),
    _case("pyspark-rf-regression", "trees", "regression", partial(
        build_predictor, partial(_estimator, "RandomForestRegressor", numTrees=6, **_TREE), "regression")),
    _case("pyspark-gbt-binary", "trees", "binary", partial(
        build_predictor, partial(_estimator, "GBTClassifier", maxIter=5, **_TREE), "binary", categorical=True)),
    _case("pyspark-gbt-regression", "trees", "regression", partial(
        build_predictor, partial(_estimator, "GBTRegressor", maxIter=5, **_TREE), "regression",
        categorical=True)),
    _case("pyspark-pipeline-scaler-lr", "linear", "binary", partial(
        build_pipeline, partial(_estimator, "LogisticRegression", regParam=0.01, maxIter=30), "binary", scaler=True)),
    _case("pyspark-pipeline-gbt-binary", "trees", "binary", partial(
        build_pipeline, partial(_estimator, "GBTClassifier", maxIter=4, **_TREE), "binary", scaler=False)),
    _case("pyspark-pipeline-scaler-rf-regression", "trees", "regression", partial(
        build_pipeline, partial(_estimator, "RandomForestRegressor", numTrees=3, **_TREE), "regression",
        scaler=True)),
]
