"""MLflow zoo cases: models logged with their MLflow flavors into a throwaway local tracking store,
registered there, and imported back through ``models:/`` URIs (the path users take).

One store per test process (a temporary directory, removed at exit) holds every model these cases
and ``tests/importers/test_mlflow.py`` log, so MLflow's start-up and logging are paid once.
MLflow 3 keeps its file store in "maintenance mode" behind ``MLFLOW_ALLOW_FILE_STORE``; the sqlite
store needs SQLAlchemy, which mlflow-skinny does not bring, so the tests use the file store.
``mlflow`` is imported when a case is built, not at collection (its import takes seconds).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb

import sparkscore as ss
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix

N_ROWS = 400
_STORE: dict[str, str] = {}
_LOGGED: dict[str, object] = {}


def store_uri() -> str:
    """The process-wide tracking store (created on first use)."""
    if "uri" not in _STORE:
        root = Path(tempfile.mkdtemp(prefix="sparkscore-mlflow-store-"))
        atexit.register(shutil.rmtree, root, True)
        _STORE["uri"] = (root / "mlruns").as_uri()
    return _STORE["uri"]


@contextlib.contextmanager
def tracking(uri: str | None = None):
    """MLflow pointed at ``uri`` (default: the zoo's store) for the block, then back as it was."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    allow = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(uri or store_uri())
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets it
        if allow is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = allow


def data(seed: int = 0, n_features: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    """Training frame with a NaN-bearing and a zero-heavy column, and a smooth signal."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_ROWS, n_features))
    X[rng.random(N_ROWS) < 0.3, 2] = 0.0
    signal = X[:, 0] + 0.5 * X[:, 1] - 0.7 * (X[:, 2] == 0) + 0.3 * X[:, 3]
    X[rng.random(N_ROWS) < 0.15, 1] = np.nan
    return pd.DataFrame(X, columns=[f"feat_{i}" for i in range(n_features)]), signal


def log_lightgbm_binary():
    """A LightGBM Booster logged with the lightgbm flavor (native model.lgb), its run's params,
    metrics, tags and training dataset, registered as ``zoo_lgb`` version 1 with alias ``champion``."""
    import mlflow

    if "lgb" not in _LOGGED:
        frame, signal = data(seed=11)
        y = (signal + 0.3 * np.random.default_rng(1).normal(size=N_ROWS) > 0).astype(int)
        params = dict(objective="binary", num_leaves=8, min_data_in_leaf=10, num_threads=1, verbose=-1)
        booster = lgb.train(params, lgb.Dataset(frame, y), num_boost_round=20)
        with tracking(), mlflow.start_run() as run:
            mlflow.log_params({"num_leaves": 8, "num_boost_round": 20})
            mlflow.log_metric("auc", 0.875)
            mlflow.set_tag("team", "risk")
            mlflow.log_input(mlflow.data.from_pandas(frame, source="s3://bucket/churn/train.parquet", name="churn-train"),
                             context="training")
            mlflow.lightgbm.log_model(booster, name="model", registered_model_name="zoo_lgb",
                                      signature=mlflow.models.infer_signature(frame, booster.predict(frame)),
                                      pip_requirements=["lightgbm"])
            mlflow.MlflowClient().set_registered_model_alias("zoo_lgb", "champion", "1")
        _LOGGED["lgb"] = (booster, frame, run.info.run_id)
    return _LOGGED["lgb"]


def log_xgboost_multiclass():
    """An XGBClassifier logged with the xgboost flavor (native model.ubj), registered as ``zoo_xgb`` 1."""
    import mlflow

    if "xgb" not in _LOGGED:
        frame, signal = data(seed=12)
        y = np.digitize(signal + 0.3 * np.random.default_rng(2).normal(size=N_ROWS), [-0.5, 0.5])
        native = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1, tree_method="hist").fit(frame, y)
        with tracking(), mlflow.start_run() as run:
            mlflow.xgboost.log_model(native, name="model", registered_model_name="zoo_xgb",
                                     signature=mlflow.models.infer_signature(frame, native.predict(frame)),
                                     pip_requirements=["xgboost"])
        _LOGGED["xgb"] = (native, frame, run.info.run_id)
    return _LOGGED["xgb"]


def mlflow_lightgbm_binary() -> Fitted:
    booster, frame, _ = log_lightgbm_binary()
    with tracking():
        model = ss.convert("models:/zoo_lgb@champion")
    rows = pd.DataFrame(adversarial_matrix(model, frame.to_numpy()), columns=list(model.signature.names))
    p1 = booster.predict(rows)
    return Fitted(native=booster, model=model, X=rows, expected_predict=(p1 > 0.5).astype(np.int64),
                  expected_proba=np.column_stack([1.0 - p1, p1]))


def mlflow_xgboost_multiclass() -> Fitted:
    native, frame, _ = log_xgboost_multiclass()
    with tracking():
        model = ss.convert("models:/zoo_xgb/1")
    rows = pd.DataFrame(adversarial_matrix(model, frame.to_numpy()), columns=list(model.signature.names))
    return Fitted(native=native, model=model, X=rows, expected_predict=np.asarray(native.predict(rows)),
                  expected_proba=np.asarray(native.predict_proba(rows)))


CASES = [] if find_spec("mlflow") is None else [
    Case("mlflow-lightgbm-binary", mlflow_lightgbm_binary, "mlflow", "trees", "binary"),
    Case("mlflow-xgboost-multiclass", mlflow_xgboost_multiclass, "mlflow", "trees", "multiclass"),
]
