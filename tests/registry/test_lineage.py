"""Lineage recorded at registration: code, data, configuration, environment, optional fields, all hashed."""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkscore.errors import IntegrityError, ModelNotFoundError, RegistryError
from sparkscore.registry.lineage import data_fingerprint
from tests.registry.models import tiny_model

X = np.random.default_rng(0).normal(size=(64, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def _git(repo, *args) -> bytes:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with one commit, as the working directory."""
    path = tmp_path / "project"
    path.mkdir()
    _git(path, "init", "-q")
    (path / "train.py").write_text("print('v1')\n")
    _git(path, "add", "train.py")
    _git(path, "commit", "-qm", "v1")
    monkeypatch.chdir(path)
    return path


def test_code_is_the_callers_git_commit_plus_a_hash_of_uncommitted_changes(registry, repo, tmp_path, monkeypatch):
    head = _git(repo, "rev-parse", "HEAD").decode().strip()
    clean = registry.describe(registry.register("m", tiny_model(1.0)).ref)["code"]
    assert clean == {"source": "git", "repository": str(repo), "commit": head, "dirty": False, "diff_sha256": None,
                     "untracked": 0}
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "new.py").write_text("")
    dirty = registry.describe(registry.register("m", tiny_model(2.0)).ref)["code"]
    assert dirty["commit"] == head and dirty["dirty"] and dirty["untracked"] == 1
    assert dirty["diff_sha256"] == hashlib.sha256(_git(repo, "diff", "HEAD", "--binary")).hexdigest()
    given = registry.describe(registry.register("m", tiny_model(3.0), code={"git": "abc123"}).ref)["code"]
    assert given == {"source": "argument", "value": {"git": "abc123"}}
    monkeypatch.chdir(tmp_path)
    assert registry.describe(registry.register("m", tiny_model(4.0)).ref)["code"] == {"source": "none"}


def test_in_memory_data_fingerprint_has_schema_rows_and_a_content_hash_that_sees_one_ulp(registry):
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    mv = registry.register("m", tiny_model(), training_data=frame)
    data = registry.describe(mv.ref)["data"]
    assert data["kind"] == "pandas" and data["rows"] == 64
    assert data["schema"] == [["a", "double"], ["b", "double"], ["c", "double"]]
    assert data["sha256"] == data_fingerprint(frame.copy(), "m")["sha256"]
    nudged = frame.copy()
    nudged.iloc[5, 1] = np.nextafter(nudged.iloc[5, 1], np.inf)
    assert data_fingerprint(nudged, "m")["sha256"] != data["sha256"]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = data_fingerprint(table, "m")
    assert arrow["kind"] == "arrow" and arrow["rows"] == 64
    assert data_fingerprint(table.to_batches()[0], "m")["sha256"] == arrow["sha256"]
    assert data_fingerprint(X, "m")["shape"] == [64, 3]
    with pytest.raises(RegistryError, match="training_data of m cannot be fingerprinted"):
        data_fingerprint({"a": 1}, "m")


def test_file_data_fingerprint_has_path_size_mtime_and_sha256(registry, tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "train.parquet"
    pq.write_table(pa.table({"a": X[:, 0]}), path)
    data = registry.describe(registry.register("m", tiny_model(), training_data=path).ref)["data"]
    (entry,) = data["files"]
    assert entry["path"] == str(path) and entry["size"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["mtime"].endswith("+00:00")
    folder = data_fingerprint(tmp_path / "data", "m")
    assert [f["sha256"] for f in folder["files"]] == [entry["sha256"]]
    with pytest.raises(RegistryError, match="does not exist"):
        data_fingerprint(tmp_path / "missing.parquet", "m")


def _fitted(library: str):
    if library == "sklearn":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=0.5).fit(X, Y)
    if library == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMClassifier(n_estimators=2, num_leaves=5, verbose=-1).fit(X, Y)
    import xgboost as xgb

    return xgb.XGBClassifier(n_estimators=2, max_depth=2).fit(X, Y)


@pytest.mark.parametrize("library, check", [
    ("sklearn", lambda c: c["params"]["C"] == 0.5 and c["class"] == "LogisticRegression"),
    ("lightgbm", lambda c: c["params"]["num_leaves"] == "5"),
    ("xgboost", lambda c: '"max_depth": "2"' in json.dumps(c["config"])),
])
def test_configuration_holds_the_native_hyper_parameters_feature_names_and_importer(registry, library, check):
    mv = registry.register("m", _fitted(library), feature_names=["a", "b", "c"])
    info = registry.describe(mv.ref)
    assert info["configuration"]["native"]["library"] == library and check(info["configuration"]["native"])
    assert info["configuration"]["feature_names"] == ["a", "b", "c"]
    assert info["importer"] == {"name": f"sparkscore.importers.{library}", "options": {"feature_names": ["a", "b", "c"]}}
    env = info["environment"]
    assert {"numpy", "pandas", "pyarrow", "duckdb", "sparkscore"} <= set(env["packages"])
    dists = {"sklearn": {"scikit-learn"}, "xgboost": {"xgboost", "xgboost-cpu"}}.get(library, {library})
    assert dists & set(env["packages"])
    assert len(env["distributions_sha256"]) == 64


def test_optional_metrics_tags_description_and_parent(registry):
    first = registry.register("m", tiny_model(1.0))
    second = registry.register("m", tiny_model(2.0), metrics={"auc": 0.91}, tags={"team": "risk"},
                               description="retrained on November", parent="m/1")
    info = registry.describe(second.ref)
    assert (info["metrics"], info["tags"], info["description"]) == ({"auc": 0.91}, {"team": "risk"},
                                                                     "retrained on November")
    assert info["parent"] == {"ref": "m/1", "sha256": first.sha256}
    assert registry.describe(first.ref)["parent"] is None
    with pytest.raises(ModelNotFoundError):
        registry.register("m", tiny_model(3.0), parent="m/9")
    for bad in ({"metrics": {"auc": float("nan")}}, {"tags": {"n": 1}}, {"description": 3}, {"code": object()}):
        with pytest.raises(RegistryError):
            registry.register("m", tiny_model(3.0), **bad)
    assert [mv.version for mv in registry.versions("m")] == [1, 2]


def test_lineage_is_covered_by_the_record_hash(registry, tmp_path):
    mv = registry.register("m", tiny_model(), training_data=pd.DataFrame(X), code="v1")
    record = registry.model_path("m", 1) / "version.json"
    record.write_text(record.read_text().replace('"value": "v1"', '"value": "v2"'))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        registry.get(mv.ref)


def test_lineage_reads_back_every_section(registry):
    mv = registry.register("m", _fitted("sklearn"), feature_names=["a", "b", "c"], metrics={"auc": 0.5},
                           training_data=pd.DataFrame(X, columns=["a", "b", "c"]))
    doc = registry.lineage("m")
    assert doc["ref"] == mv.ref and doc["sha256"] == mv.sha256 and doc["task"] == "classification"
    assert [c["name"] for c in doc["signature"]["inputs"]] == ["a", "b", "c"]
    assert doc["configuration"]["native"]["params"]["C"] == 0.5 and doc["data"]["rows"] == 64
    assert doc["metrics"] == {"auc": 0.5} and doc["environment"]["packages"]["scikit-learn"]
    assert {"code", "importer", "source", "tags", "description", "parent", "lineage"} <= set(doc)


def test_diff_names_changed_parameters_signature_data_and_prediction_drift(registry):
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    registry.register("m", LogisticRegression(C=0.5).fit(X, Y), feature_names=["a", "b", "c"], training_data=frame)
    registry.register("m", LogisticRegression(C=0.001).fit(X[:40], Y[:40]), feature_names=["a", "b", "c"],
                      training_data=frame.iloc[:40])
    doc = registry.diff("m/1", "m/2", data=frame)
    assert doc["a"] == "m/1" and doc["b"] == "m/2" and not doc["same_model"]
    assert doc["parameters"]["native.params.C"] == [0.5, 0.001]
    assert doc["signature"] == {} and doc["environment"] == {}
    assert doc["data"]["rows"] == [64, 40] and "sha256" in doc["data"]
    first, second = registry.load("m/1"), registry.load("m/2")
    labels = int(np.count_nonzero(first.predict(frame) != second.predict(frame)))
    delta = np.abs(first.predict_proba(frame) - second.predict_proba(frame))
    pred = doc["predictions"]
    assert pred["rows"] == 64 and pred["compared"] == "probabilities" and pred["changed_labels"] == labels
    assert pred["changed_label_share"] == labels / 64 and 0 < pred["max_abs_diff"] == delta.max()
    np.testing.assert_allclose(pred["mean_abs_diff"], delta.mean(), rtol=1e-12)
    same = registry.diff("m/1", "m/1", data=pa.Table.from_pandas(frame))
    assert same["same_model"] and same["parameters"] == {} and same["predictions"]["max_abs_diff"] == 0.0
    assert same["predictions"]["changed_labels"] == 0


def test_diff_of_regressors_and_of_changed_signatures(registry):
    registry.register("r", tiny_model(0.0, names=("age", "income")))
    registry.register("r", tiny_model(1.0, names=("age", "salary")))
    frame = pd.DataFrame({"age": [1.0, np.nan], "income": [2.0, 3.0], "salary": [2.0, 3.0]})
    doc = registry.diff("r/1", "r/2", data=frame)
    before, after = doc["signature"]["inputs"]
    assert [c["name"] for c in before] == ["age", "income"] and [c["name"] for c in after] == ["age", "salary"]
    pred = doc["predictions"]
    assert pred["compared"] == "values" and pred["max_abs_diff"] == pred["mean_abs_diff"] == 1.0
    assert pred["nan_on_one_side"] == 0  # the NaN row is NaN for both


def test_an_onnx_model_records_the_onnx_and_mlflow_versions(registry):
    """The importers of section 15 read files with onnx / catboost / mlflow: their versions are lineage."""
    pytest.importorskip("onnx")
    from importlib import metadata

    from onnx import TensorProto, helper

    # one stump (x0 < 0.5 -> 1.0 else 2.0) as an ai.onnx.ml TreeEnsembleRegressor, built by hand: no converter
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1,
                            nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                            nodes_modes=["BRANCH_LT", "LEAF", "LEAF"], nodes_values=[0.5, 0.0, 0.0],
                            nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
                            target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[1.0, 2.0])
    g = helper.make_graph([node], "stump", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    proto.ir_version = 9
    mv = registry.register("o", proto)
    packages = registry.lineage(mv.ref)["environment"]["packages"]
    assert packages["onnx"] == metadata.version("onnx")
    for dist in ("mlflow-skinny", "catboost"):
        try:
            assert packages[dist] == metadata.version(dist)
        except metadata.PackageNotFoundError:
            assert dist not in packages
