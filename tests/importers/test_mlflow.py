"""MLflow interop: models:/ and runs:/ URIs and model directories against a real (local file) tracking store.

The LightGBM / XGBoost models are the zoo's (tests/zoo/mlflow_cases.py, logged once per process);
their parity on adversarial rows runs with the rest of the zoo.  Here: every way of naming a model
gives the same model, nothing is unpickled for native flavors, what is refused is refused in one
line, and the lineage lands in the registry.
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("mlflow")

import sparkscore as ss  # noqa: E402
from sparkscore.cli import app  # noqa: E402
from sparkscore.errors import IntegrityError, SignatureError, UnsupportedModelError  # noqa: E402
from sparkscore.importers import mlflow as mlflow_importer  # noqa: E402
from tests.zoo.mlflow_cases import data, log_lightgbm_binary, log_xgboost_multiclass, tracking  # noqa: E402


@pytest.fixture(scope="module")
def logged():
    """The zoo's LightGBM and XGBoost runs plus a scikit-learn model logged as a (cloud)pickle."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    lgb_native, lgb_frame, lgb_run = log_lightgbm_binary()
    xgb_native, xgb_frame, xgb_run = log_xgboost_multiclass()
    frame, signal = data(seed=13)
    frame = frame.fillna(0.0)
    sk = LogisticRegression().fit(frame, (signal > 0).astype(int))
    with tracking(), mlflow.start_run() as run:
        mlflow.log_metric("brier", float("nan"))  # MLflow keeps NaN metrics; the record's JSON must too
        mlflow.sklearn.log_model(sk, name="model", serialization_format="cloudpickle",
                                 signature=mlflow.models.infer_signature(frame, sk.predict(frame)),
                                 pip_requirements=["scikit-learn"])
    return {"lgb": (lgb_native, lgb_frame, lgb_run), "xgb": (xgb_native, xgb_frame, xgb_run),
            "sklearn": (sk, frame, run.info.run_id)}


@pytest.fixture
def store(logged):
    with tracking():
        yield logged


@pytest.fixture(scope="module")
def lgb_dir(logged, tmp_path_factory) -> Path:
    """The LightGBM model's artifact directory, downloaded (a plain MLflow model directory)."""
    import mlflow

    with tracking():
        return Path(mlflow.artifacts.download_artifacts("models:/zoo_lgb/1", dst_path=str(tmp_path_factory.mktemp("m"))))


def edited_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of the model directory ``src`` whose MLmodel document went through ``edit(doc)``."""
    shutil.copytree(src, dst)
    doc = yaml.safe_load((dst / "MLmodel").read_text())
    edit(doc)
    (dst / "MLmodel").write_text(yaml.safe_dump(doc))
    return dst


def saved(model) -> str:
    """The model's sha256 as Model.save computes it (equal bytes, equal model)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return model.save(Path(tmp) / "m")


def test_every_uri_form_and_the_directory_give_the_same_model(store, lgb_dir):
    _, frame, run_id = store["lgb"]
    models = [ss.convert(uri) for uri in ("models:/zoo_lgb@champion", "models:/zoo_lgb/1", f"runs:/{run_id}/model")]
    models += [ss.convert(lgb_dir), ss.convert(lgb_dir / "MLmodel")]
    assert len({saved(m) for m in models}) == 1
    assert models[0].signature.names == tuple(frame.columns)
    assert models[0].metadata["source"] == "lightgbm"


def test_native_flavors_never_unpickle(store, monkeypatch):
    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("a native flavor was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(cloudpickle, "load", refuse)
    native, frame, _ = store["xgb"]
    model = ss.convert("models:/zoo_xgb/1")
    np.testing.assert_array_equal(model.predict(frame), native.predict(frame))
    assert ss.convert("models:/zoo_lgb@champion").task == "classification"


def test_sklearn_flavor_needs_the_pickle_opt_in(store):
    native, frame, run_id = store["sklearn"]
    uri = f"runs:/{run_id}/model"
    with pytest.raises(UnsupportedModelError, match=r"sklearn flavor .*pickle.*allow_pickle=True .*--allow-pickle"):
        ss.convert(uri)
    with pytest.warns(UserWarning, match="unpickling"):
        model = ss.convert(uri, allow_pickle=True)
    np.testing.assert_allclose(model.predict_proba(frame), native.predict_proba(frame), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("edit, error, fragment", [
    (lambda d: d.update(flavors={"python_function": {"loader_module": "custom"}, "pytorch": {"data": "m.pth"}}),
     UnsupportedModelError, r"flavors \['python_function', 'pytorch'\] are not supported"),
    (lambda d: d.update(flavors={"sklearn": {"pickled_model": "model.lgb", "serialization_format": "skops"}}),
     UnsupportedModelError, "cannot be read without the skops package"),
    (lambda d: d["flavors"]["lightgbm"].update(model_class="lightgbm.sklearn.LGBMClassifier",
                                                serialization_format="cloudpickle"),
     UnsupportedModelError, "is a pickle"),
    (lambda d: d["flavors"]["lightgbm"].update(data="../../etc/passwd"), IntegrityError, "is missing from"),
    (lambda d: d["signature"].update(inputs='[{"type": "double", "name": "x%d"}]' % 0), SignatureError,
     "signature"),
    (lambda d: d["signature"].update(inputs=d["signature"]["inputs"].replace('"feat_1"', '"renamed"')),
     SignatureError, r"input names of its MLflow signature .*do not match"),
    (lambda d: d["signature"].update(inputs=d["signature"]["inputs"].replace('"double"', '"string"', 1)),
     UnsupportedModelError, r"input 'feat_0' is 'string' in its MLflow signature"),
], ids=["other-flavor", "skops", "lgb-sklearn-wrapper-pickle", "data-outside-dir", "signature-width",
        "signature-names", "signature-type"])
def test_refused_in_one_line(lgb_dir, tmp_path, edit, error, fragment):
    model_dir = edited_copy(lgb_dir, tmp_path / "model", edit)
    with pytest.raises(error, match=fragment) as info:
        ss.convert(model_dir)
    assert "\n" not in str(info.value) and str(model_dir) in str(info.value)


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning")
def test_signature_names_and_types_are_applied(tmp_path):
    """A Booster fitted on a bare array has no names: the MLflow signature's become the model's."""
    import lightgbm as lgb
    import mlflow

    frame, signal = data(seed=14)
    booster = lgb.train(dict(objective="regression", num_leaves=4, verbose=-1, num_threads=1),
                        lgb.Dataset(frame.to_numpy(), signal), num_boost_round=3)
    typed = frame.assign(feat_3=(frame.feat_3 > 0).astype(np.int64))
    mlflow.lightgbm.save_model(booster, tmp_path / "m", pip_requirements=["lightgbm"],
                               signature=mlflow.models.infer_signature(typed, booster.predict(frame.to_numpy())))
    model = ss.convert(tmp_path / "m")
    assert model.signature.names == tuple(frame.columns)
    assert [c.dtype for c in model.signature.inputs] == ["double", "double", "double", "bigint"]
    np.testing.assert_allclose(model.predict(typed), booster.predict(typed.to_numpy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("uri, fragment", [
    ("models:/zoo_lgb/Production", "stage 'Production' URIs are deprecated"),
    ("models:/zoo_lgb@nosuchalias", "check the name, version or alias"),
    ("models:/no_such_model/1", "check the name, version or alias"),
])
def test_bad_registry_uris(store, uri, fragment):
    with pytest.raises(UnsupportedModelError, match=fragment):
        ss.convert(uri)


def test_register_records_mlflow_lineage(store, tmp_path):
    _, frame, run_id = store["lgb"]
    reg = ss.Registry(tmp_path / "reg")
    mv = reg.register("churn", "models:/zoo_lgb@champion")
    again = reg.register("churn", f"runs:/{run_id}/model")  # same bytes by another name: the same version
    assert again.existing and again.version == mv.version
    doc = reg.lineage(mv.ref)
    assert doc["importer"]["name"] == "sparkscore.importers.mlflow"
    assert doc["importer"]["flavor_importer"] == "sparkscore.importers.lightgbm"
    assert doc["importer"]["options"]["source"] == "models:/zoo_lgb@champion"
    assert doc["configuration"]["native"]["library"] == "lightgbm"
    assert doc["configuration"]["native"]["params"]["num_leaves"] == "8"
    ml = doc["mlflow"]
    assert ml["run_id"] == run_id and ml["flavor"] == "lightgbm" and ml["data_file"] == "model.lgb"
    assert ml["registered_model"] == {**ml["registered_model"], "name": "zoo_lgb", "version": 1, "aliases": ["champion"]}
    assert ml["run"]["params"] == {"num_boost_round": "20", "num_leaves": "8"}
    assert ml["run"]["metrics"] == {"auc": 0.875} and ml["run"]["tags"]["team"] == "risk"
    assert [c["name"] for c in ml["signature"]["inputs"]] == list(frame.columns)
    (dataset,) = ml["datasets"]
    assert dataset["name"] == "churn-train" and dataset["context"] == "training"
    assert dataset["source"] == {"uri": "s3://bucket/churn/train.parquet"} and len(dataset["digest"]) >= 8
    assert doc["data"] == {"kind": "mlflow", "datasets": [{k: dataset[k] for k in
                                                           ("name", "digest", "source_type", "source", "context")}]}
    assert reg.load(mv.ref).signature.names == tuple(frame.columns)


def test_register_sklearn_flavor_records_the_opt_in(store, tmp_path):
    _, _, run_id = store["sklearn"]
    reg = ss.Registry(tmp_path / "reg")
    with pytest.raises(UnsupportedModelError, match="allow_pickle"):
        reg.register("lr", f"runs:/{run_id}/model")
    assert reg.models() == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mv = reg.register("lr", f"runs:/{run_id}/model", allow_pickle=True)
    doc = reg.lineage(mv.ref)
    assert doc["importer"]["options"]["allow_pickle"] is True and doc["mlflow"]["allow_pickle"] is True
    assert doc["importer"]["flavor_importer"] == "sparkscore.importers.sklearn"
    assert doc["mlflow"]["run"]["metrics"] == {"brier": {"float": "nan"}}


def test_cli_register_from_mlflow(store, lgb_dir, tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    reg = tmp_path / "reg"
    out = runner.invoke(app, ["--registry", str(reg), "register", "multi", "models:/zoo_xgb/1", "--alias", "prod"])
    assert out.exit_code == 0, out.output
    assert "registered multi/1" in out.stdout
    shown = runner.invoke(app, ["--registry", str(reg), "lineage", "multi@prod"])
    assert shown.exit_code == 0, shown.output
    assert f"run_id: {store['xgb'][2]}" in shown.stdout and "importer:" in shown.stdout
    _, _, sk_run = store["sklearn"]
    refused = runner.invoke(app, ["--registry", str(reg), "register", "lr", f"runs:/{sk_run}/model"])
    assert refused.exit_code == 1 and "--allow-pickle" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    from_dir = runner.invoke(app, ["--registry", str(reg), "register", "churn", str(lgb_dir)])
    assert from_dir.exit_code == 0 and "registered churn/1" in from_dir.stdout, from_dir.output
    assert ss.Registry(reg).lineage("churn/1")["importer"]["options"]["source"] == str(lgb_dir)


def test_a_directory_without_a_tracking_store_imports_without_touching_the_working_directory(
        lgb_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    imported = mlflow_importer.load(lgb_dir)
    assert imported.lineage["run_id"] and imported.lineage["run"] is None
    assert "no MLflow tracking URI is set" in imported.lineage["run_unavailable"]
    assert list(tmp_path.iterdir()) == []  # no mlruns/ or mlflow.db from MLflow's defaults


def test_is_mlflow_source(lgb_dir, tmp_path):
    assert mlflow_importer.is_mlflow_source("models:/a@b") and mlflow_importer.is_mlflow_source("runs:/x/m")
    assert mlflow_importer.is_mlflow_source(lgb_dir) and mlflow_importer.is_mlflow_source(str(lgb_dir / "MLmodel"))
    assert not mlflow_importer.is_mlflow_source(tmp_path) and not mlflow_importer.is_mlflow_source(pd.DataFrame())


def test_lightgbm_sklearn_wrapper_is_a_pickle_too(tmp_path):
    """mlflow.lightgbm stores LGBMClassifier through the sklearn serializer: the opt-in applies."""
    import lightgbm as lgb
    import mlflow

    frame, signal = data(seed=15)
    native = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1, n_jobs=1).fit(frame, signal > 0)
    mlflow.lightgbm.save_model(native, tmp_path / "m", serialization_format="cloudpickle",
                               pip_requirements=["lightgbm"])
    with pytest.raises(UnsupportedModelError, match="LGBMClassifier.*is a pickle"):
        ss.convert(tmp_path / "m")
    with pytest.warns(UserWarning, match="unpickling"):
        model = ss.convert(tmp_path / "m", allow_pickle=True)
    np.testing.assert_allclose(model.predict_proba(frame), native.predict_proba(frame), rtol=1e-6, atol=1e-6)
