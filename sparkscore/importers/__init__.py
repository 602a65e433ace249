"""Native models -> :class:`sparkscore.ir.Model`.

``convert`` dispatches on the native object's module (so no ML library is imported unless the
user passes one of its models) to one importer per library, Hummingbird-style.
"""

from __future__ import annotations

import importlib
from typing import Sequence

from sparkscore.errors import UnsupportedModelError
from sparkscore.ir.model import Model

#: top-level module of the native object's class -> importer module
_IMPORTERS = {
    "sklearn": "sparkscore.importers.sklearn",
    "lightgbm": "sparkscore.importers.lightgbm",
    "xgboost": "sparkscore.importers.xgboost",
    "pyspark": "sparkscore.importers.pyspark_ml",
    "catboost": "sparkscore.importers.catboost",
    "onnx": "sparkscore.importers.onnx",  # onnx.ModelProto (classical-ML graphs)
}

SUPPORTED = (
    "scikit-learn: LinearRegression, Ridge, Lasso, ElasticNet, SGDClassifier/Regressor, LogisticRegression, "
    "DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*, HistGradientBoosting*, Pipelines of "
    "StandardScaler/SimpleImputer/OneHotEncoder; LightGBM Booster/LGBMClassifier/LGBMRegressor/LGBMRanker; "
    "XGBoost Booster/XGBClassifier/XGBRegressor; pyspark.ml LogisticRegression/LinearRegression/"
    "DecisionTree/RandomForest/GBT models (or their saved directories); MLflow models (a model directory, "
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH) of the lightgbm and xgboost flavors (sklearn "
    "with allow_pickle=True); CatBoost/CatBoostClassifier/CatBoostRegressor on numeric features (or their "
    ".json / .cbm files); ONNX classical-ML graphs (onnx.ModelProto or a .onnx file: TreeEnsembleClassifier/"
    "Regressor, LinearClassifier/Regressor, Scaler, Imputer, ZipMap); sparkscore Model"
)


def convert(native_model, feature_names: Sequence[str] | None = None, *, allow_pickle: bool = False) -> Model:
    """Convert a fitted native model (or a saved pyspark.ml model directory, a CatBoost or ``.onnx`` model file,
    or an MLflow model directory / ``models:/`` / ``runs:/`` URI) to a sparkscore Model.

    ``allow_pickle`` only matters for MLflow's sklearn flavor, which is a pickle: it is refused
    unless the caller opts in (unpickling runs any code the file holds).
    """
    if isinstance(native_model, Model):
        return native_model
    if isinstance(native_model, (str,)) or hasattr(native_model, "__fspath__"):
        from sparkscore.importers import catboost, mlflow
        from sparkscore.importers import onnx as onnx_importer

        if mlflow.is_mlflow_source(native_model):
            return mlflow.convert(native_model, feature_names, allow_pickle=allow_pickle)
        if onnx_importer.is_onnx_file(native_model):
            return onnx_importer.load_file(native_model, feature_names)
        if catboost.is_catboost_file(native_model):
            return catboost.load_file(native_model, feature_names)
        from sparkscore.importers import pyspark_ml

        return pyspark_ml.convert_saved(native_model, feature_names)
    root = type(native_model).__module__.split(".", 1)[0]
    module_name = _IMPORTERS.get(root)
    if module_name is None:
        raise UnsupportedModelError(
            f"cannot convert {type(native_model).__module__}.{type(native_model).__qualname__}: "
            f"supported are {SUPPORTED}"
        )
    module = importlib.import_module(module_name)
    return module.convert(native_model, feature_names)
