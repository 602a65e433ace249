"""ONNX zoo cases: converter-made graphs (skl2onnx, onnxmltools), expected outputs from ONNX Runtime.

The native model is the ``onnx.ModelProto``; ``expected_*`` are ONNX Runtime's outputs (one
intra-op thread) on the adversarial rows cast to float32, as a caller feeds the graph.  Trees are
bit-equal; linear models agree within float32 ulps (ONNX Runtime's GEMM order and MLAS
logistic / softmax), well inside rtol = atol = 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx  # noqa: F401  (the case module is skipped without it)
import onnxruntime as ort
import pandas as pd

import sparkscore as ss
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix
from tests.zoo.gbm_cases import _data

OPSET = {"": 15, "ai.onnx.ml": 3}


def ort_outputs(proto, X: np.ndarray, model) -> tuple[np.ndarray | None, np.ndarray]:
    """(labels or None, scores as float64) from ONNX Runtime for float64 rows ``X`` (cast to float32)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # more threads sum small batches' trees in chunks (last-bit noise)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with np.errstate(over="ignore"):  # doubles beyond FLT_MAX become +-inf, as a caller's cast makes them
        X32 = np.ascontiguousarray(X, dtype=np.float32)
    outs = sess.run(None, {sess.get_inputs()[0].name: X32})
    if not model.is_classifier:
        return None, np.asarray(outs[0], dtype=np.float64)
    label = np.asarray(outs[0]).ravel()
    if label.dtype.kind in "OU":
        label = label.astype(object)
    proba = outs[1]
    if isinstance(proba, list):  # ZipMap: one {label: p} per row
        proba = [[row[c] for c in model.classes] for row in proba]
    return label, np.asarray(proba, dtype=np.float32).astype(np.float64)


def _fitted(proto, X_train: np.ndarray, rows: np.ndarray | None = None, notes: str = "") -> Fitted:
    model = ss.convert(proto)
    rows = adversarial_matrix(model, X_train) if rows is None else rows
    label, scores = ort_outputs(proto, rows, model)
    frame = pd.DataFrame(rows, columns=list(model.signature.names))
    if model.is_classifier:
        return Fitted(proto, model, frame, label, scores, notes=notes)
    return Fitted(proto, model, frame, scores[:, 0] if scores.shape[1] == 1 else scores, notes=notes)


def _train(seed: int):
    X, signal, rng = _data(seed=seed)
    return X, np.nan_to_num(X), signal, rng


def _skl(estimator, X, y, **kw):
    from skl2onnx import to_onnx

    estimator.fit(X, y)
    return to_onnx(estimator, X[:1].astype(np.float32), target_opset=OPSET, **kw)


def _mltools(convert, estimator, X, y):
    from onnxmltools.convert.common.data_types import FloatTensorType

    estimator.fit(X, y)
    return convert(estimator, initial_types=[("input", FloatTensorType([None, X.shape[1]]))], target_opset=15)


# ---------------------------------------------------------------------------- skl2onnx
def skl_forest_binary() -> Fitted:
    from sklearn.ensemble import RandomForestClassifier

    X, X0, s, rng = _train(20)
    proto = _skl(RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0, n_jobs=1), X0,
                 (s + 0.3 * rng.normal(size=len(s)) > 0).astype(int))
    return _fitted(proto, X0)


def skl_gbm_multiclass() -> Fitted:
    from sklearn.ensemble import GradientBoostingClassifier

    X, X0, s, rng = _train(21)
    labels = np.array(["low", "mid", "high"])
    proto = _skl(GradientBoostingClassifier(n_estimators=6, max_depth=3, random_state=0), X0,
                 labels[np.digitize(s + 0.3 * rng.normal(size=len(s)), [-0.5, 0.5])], options={"zipmap": False})
    return _fitted(proto, X0)


def skl_pipeline_tree_regression() -> Fitted:
    """SimpleImputer + StandardScaler + DecisionTreeRegressor: the float32 preprocessing folds into
    the thresholds (adversarial rows sit on the folded, input-space thresholds)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    X, X0, s, rng = _train(22)
    proto = _skl(make_pipeline(SimpleImputer(), StandardScaler(), DecisionTreeRegressor(max_depth=5, random_state=0)),
                 X, s)
    return _fitted(proto, X0)


def skl_logistic_multiclass() -> Fitted:
    from sklearn.linear_model import LogisticRegression

    X, X0, s, rng = _train(23)
    proto = _skl(LogisticRegression(max_iter=500), X0, np.digitize(s, [-0.5, 0.5]) * 10)
    return _fitted(proto, X0)


def skl_pipeline_linear_regression() -> Fitted:
    """Imputer + Scaler + LinearRegression.  Rows near FLT_MAX are left out: ONNX Runtime's float32
    Scaler overflows there to +-inf where the IR's float64 feature map does not (the importer's
    docstring); +-inf and 1e300 rows stay."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, X0, s, rng = _train(24)
    proto = _skl(make_pipeline(SimpleImputer(), StandardScaler(), LinearRegression()), X, s)
    model = ss.convert(proto)
    rows = adversarial_matrix(model, X0, allow_inf=False)
    extra = np.repeat(X0[:4], 4, axis=0)
    for j in range(X0.shape[1]):
        block = X0[:4].copy()
        block[:, j] = [np.inf, -np.inf, 1e300, -1e300]
        extra[4 * j:4 * j + 4] = block
    return _fitted(proto, X0, np.concatenate([rows, extra]), notes="no rows within a scale factor of FLT_MAX")


# ---------------------------------------------------------------------------- onnxmltools
def lgbm_binary() -> Fitted:
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm

    X, X0, s, rng = _train(25)
    proto = _mltools(convert_lightgbm, lgb.LGBMClassifier(n_estimators=12, num_leaves=8, min_child_samples=10,
                                                          num_threads=1, verbose=-1),
                     X, (s + 0.3 * rng.normal(size=len(s)) > 0).astype(int))
    return _fitted(proto, X0)


def xgb_regression() -> Fitted:
    import xgboost as xgb
    from onnxmltools import convert_xgboost

    X, X0, s, rng = _train(26)
    proto = _mltools(convert_xgboost, xgb.XGBRegressor(n_estimators=12, max_depth=3, n_jobs=1, tree_method="hist"),
                     X, s)
    return _fitted(proto, X0)


def xgb_multiclass() -> Fitted:
    import xgboost as xgb
    from onnxmltools import convert_xgboost

    X, X0, s, rng = _train(27)
    proto = _mltools(convert_xgboost, xgb.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1, tree_method="hist"),
                     X, np.digitize(s + 0.3 * rng.normal(size=len(s)), [-0.5, 0.5]))
    return _fitted(proto, X0)


CASES = [
    Case("onnx-skl-forest-binary", skl_forest_binary, "onnx", "trees", "binary"),
    Case("onnx-skl-gbm-multiclass", skl_gbm_multiclass, "onnx", "trees", "multiclass"),
    Case("onnx-skl-pipeline-tree-regression", skl_pipeline_tree_regression, "onnx", "trees", "regression"),
    Case("onnx-skl-logistic-multiclass", skl_logistic_multiclass, "onnx", "linear", "multiclass"),
    Case("onnx-skl-pipeline-linear-regression", skl_pipeline_linear_regression, "onnx", "linear", "regression"),
    Case("onnx-lightgbm-binary", lgbm_binary, "onnx", "trees", "binary"),
    Case("onnx-xgboost-regression", xgb_regression, "onnx", "trees", "regression"),
    Case("onnx-xgboost-multiclass", xgb_multiclass, "onnx", "trees", "multiclass"),
]
