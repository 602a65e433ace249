"""pyspark.ml importer: saved-layout decoding, Spark's split semantics, errors, and no-JVM loading.

Parity against Spark's own transform() runs for every zoo case in tests/importers/test_parity.py;
the tests here that need no Spark write saved-model directories by hand (pyarrow + JSON) in
Spark 4.2's layout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from sparkscore.errors import SignatureError, UnsupportedModelError  # noqa: E402
from sparkscore.importers.pyspark_ml import _largest_left, convert_saved, matrix, vector  # noqa: E402
from tests.zoo import params  # noqa: E402
from tests.zoo.pyspark_cases import CASES  # noqa: E402


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": [float(v) for v in values]}


def write_stage(path, cls: str, params: dict, data: list[dict] | None = None, **extra) -> str:
    """A saved stage as Spark writes it: metadata/part-00000 (one JSON line) + data/*.parquet."""
    (path / "metadata").mkdir(parents=True)
    meta = {"class": f"org.apache.spark.ml.{cls}", "sparkVersion": "4.2.0", "uid": path.name.split("_", 1)[-1],
            "paramMap": params, "defaultParamMap": {"threshold": 0.5}, **extra}
    (path / "metadata" / "part-00000").write_text(json.dumps(meta) + "\n")
    (path / "metadata" / "_SUCCESS").write_text("")
    if data is not None:
        (path / "data").mkdir()
        pq.write_table(pa.Table.from_pylist(data), path / "data" / "part-00000.snappy.parquet")
    return str(path)


def binary_lr(path, coef=(1.0, -2.0), intercept=0.5, **params) -> str:
    matrix_struct = {"type": 1, "numRows": 1, "numCols": len(coef), "colPtrs": None, "rowIndices": None,
                     "values": list(coef), "isTransposed": True}
    row = {"numClasses": 2, "numFeatures": len(coef), "interceptVector": dense([intercept]),
           "coefficientMatrix": matrix_struct, "isMultinomial": False}
    return write_stage(path, "classification.LogisticRegressionModel", params, [row])


def single_tree(path, left_categories, num_categories: int) -> str:
    """Root: categorical split on feature 0; left leaf predicts 10, right leaf 20."""
    def node(i, pred, left=-1, right=-1, split=None):
        split = split or {"featureIndex": -1, "leftCategoriesOrThreshold": [], "numCategories": -1}
        return {"id": i, "prediction": pred, "impurity": 0.0, "impurityStats": [1.0, pred, pred * pred],
                "rawCount": 1, "gain": 0.0, "leftChild": left, "rightChild": right, "split": split}

    root_split = {"featureIndex": 0, "leftCategoriesOrThreshold": [float(c) for c in left_categories],
                  "numCategories": num_categories}
    rows = [node(0, 15.0, 1, 2, root_split), node(1, 10.0), node(2, 20.0)]
    return write_stage(path, "regression.DecisionTreeRegressionModel", {}, rows, numFeatures=1)


# ------------------------------------------------------------------------------ linalg structs
@pytest.mark.parametrize("struct, expected", [
    (dense([1, 2, 3]), [1, 2, 3]),
    ({"type": 0, "size": 4, "indices": [1, 3], "values": [5.0, -1.0]}, [0, 5, 0, -1]),
])
def test_vector_decodes_dense_and_sparse(struct, expected):
    np.testing.assert_array_equal(vector(struct), expected)


M = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])


@pytest.mark.parametrize("struct", [
    {"type": 1, "numRows": 2, "numCols": 3, "values": list(M.T.ravel()), "isTransposed": False},
    {"type": 1, "numRows": 2, "numCols": 3, "values": list(M.ravel()), "isTransposed": True},
    {"type": 0, "numRows": 2, "numCols": 3, "colPtrs": [0, 1, 2, 3], "rowIndices": [0, 1, 0],
     "values": [1.0, 3.0, 2.0], "isTransposed": False},  # CSC
    {"type": 0, "numRows": 2, "numCols": 3, "colPtrs": [0, 2, 3], "rowIndices": [0, 2, 1],
     "values": [1.0, 2.0, 3.0], "isTransposed": True},  # CSR
], ids=["dense", "dense-transposed", "csc", "csr"])
def test_matrix_decodes_every_layout(struct):
    np.testing.assert_array_equal(matrix(struct), M)


def test_scaler_fold_finds_the_last_double_that_goes_left():
    """Folding Spark's ``(x - mean) * (1/std) <= t`` into a raw threshold must be exact to the ulp."""
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.normal(size=500) * 1e3, [1e308, -1e308, 0.0, -0.0]])
    shift = np.concatenate([rng.normal(size=500), [0.0, 0.0, 1.5, -2.0]])
    factor = np.concatenate([1 / np.abs(rng.normal(size=500)), [1e10, 1e10, 1.0, 3.0]])
    x = _largest_left(t, shift, factor)
    with np.errstate(over="ignore", invalid="ignore"):
        assert (((x - shift) * factor <= t) | np.isneginf(x)).all()
        after = np.nextafter(x, np.inf)
        assert not (((after - shift) * factor <= t) & np.isfinite(after)).any()


# ------------------------------------------------------------------------------ semantics
def test_binary_logistic_regression_from_saved_files(tmp_path):
    model = convert_saved(binary_lr(tmp_path / "lr"))
    X = np.array([[0.0, 0.0], [1.0, 1.0], [np.nan, 0.0]])
    p = 1.0 / (1.0 + np.exp(-(X @ [1.0, -2.0] + 0.5)))
    np.testing.assert_allclose(model.predict_proba(X, backend="numpy")[:, 1], p, rtol=1e-12)
    assert model.classes == (0.0, 1.0)
    assert model.metadata == {"source": "pyspark.ml", "library_version": "4.2.0",
                              "class": "pyspark.ml.classification.LogisticRegressionModel",
                              "name": "LogisticRegressionModel"}


# Spark tests `v in L` when |L| <= n/2, else `v not in complement(L)`: unseen codes, negatives
# and NaN go right in the first form and left in the second.
X_CODES = np.array([0.0, 1.0, 2.0, 3.0, 5.0, -1.0, -0.5, -0.0, np.inf, np.nan])[:, None]


@pytest.mark.parametrize("left_categories, n, goes_left", [
    ([1], 4, [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
    ([0, 1, 2], 4, [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]),
    ([0, 3], 4, [1, 0, 0, 1, 0, 0, 0, 1, 0, 0]),
], ids=["left-set", "complement-set", "half"])
def test_categorical_split_routes_like_spark(tmp_path, left_categories, n, goes_left):
    model = convert_saved(single_tree(tmp_path / "dt", left_categories, n))
    np.testing.assert_array_equal(model.predict(X_CODES, backend="numpy"), np.where(goes_left, 10.0, 20.0))


# ------------------------------------------------------------------------------ pipelines + errors
def write_pipeline(root, assembler_out="features", lr_features="features", lr_params=None) -> str:
    write_stage(root / "stages" / "0_VectorAssembler_a1", "feature.VectorAssembler",
                {"inputCols": ["age", "spend"], "outputCol": assembler_out})
    binary_lr(root / "stages" / "1_LogisticRegression_b2", featuresCol=lr_features, **(lr_params or {}))
    return write_stage(root, "PipelineModel", {"stageUids": ["VectorAssembler_a1", "LogisticRegression_b2"]})


def test_pipeline_takes_names_from_the_vector_assembler(tmp_path):
    model = convert_saved(write_pipeline(tmp_path / "pipe"))
    assert model.signature.names == ("age", "spend")
    assert convert_saved(write_pipeline(tmp_path / "p2"), ["age", "spend"]).signature.names == ("age", "spend")


@pytest.mark.parametrize("make, error, text", [
    (lambda p: write_pipeline(p, lr_features="other"), UnsupportedModelError, "straight pipelines"),
    (lambda p: write_stage(p, "clustering.KMeansModel", {}), UnsupportedModelError, "KMeansModel"),
    (lambda p: binary_lr(p, threshold=0.3), UnsupportedModelError, "threshold"),
    (lambda p: str(p), UnsupportedModelError, "not a saved pyspark.ml model"),
], ids=["miswired-pipeline", "unsupported-class", "custom-threshold", "not-a-model"])
def test_unsupported_inputs_raise_clear_errors(tmp_path, make, error, text):
    with pytest.raises(error, match=text):
        convert_saved(make(tmp_path / "m"))


def test_feature_names_that_contradict_the_assembler_are_rejected(tmp_path):
    with pytest.raises(SignatureError, match="differ from the names"):
        convert_saved(write_pipeline(tmp_path / "pipe"), ["spend", "age"])


# ------------------------------------------------------------------------------ with Spark
NO_JVM_CASES = [c for c in CASES if c.id in ("pyspark-gbt-binary", "pyspark-pipeline-scaler-lr")]


@pytest.mark.parametrize("case", params(NO_JVM_CASES))
def test_saved_directory_converts_without_pyspark(case, tmp_path):
    """A saved model converts in a fresh interpreter that never imports pyspark, to the same model."""
    fitted = case.fitted()
    path = tmp_path / "model"
    fitted.native.write().save(str(path))
    script = (
        "import json, sys\n"
        "from sparkscore.importers.pyspark_ml import convert_saved\n"
        f"m = convert_saved({str(path)!r})\n"
        "assert not any(k == 'pyspark' or k.startswith('pyspark.') for k in sys.modules), 'pyspark imported'\n"
        "print(m.sha256)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == fitted.model.sha256


@pytest.mark.spark
@pytest.mark.parametrize("case_id, n_feature_maps", [("pyspark-pipeline-scaler-rf-regression", 0),
                                                      ("pyspark-pipeline-scaler-lr", 1)])
def test_scaler_folds_into_trees_and_precedes_glms(case_id, n_feature_maps):
    case = next(c for c in CASES if c.id == case_id)
    assert len(case.fitted().model.features) == n_feature_maps
