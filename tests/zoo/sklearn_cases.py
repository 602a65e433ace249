"""scikit-learn zoo: one small fitted model per supported class / task variant.

Every case fits on a few hundred rows (n_jobs=1, so forest probabilities are summed in tree
order) and scores adversarial rows from the model's own thresholds.  NaN / inf rows are kept only
in the columns where sklearn's own ``predict`` accepts them (probed per column).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from sparkscore.importers import convert
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix

N_ROWS = 300
NUMERIC = ("age", "income", "tenure", "score", "visits")
REGIONS = ("north", "south", "east", "west")
UNSEEN = "<unseen>"


@lru_cache(maxsize=None)
def _data(nan: bool = False, region: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Numeric columns on very different scales (+ optional string / category column) and targets."""
    rng = np.random.default_rng(42)
    X = pd.DataFrame({
        "age": rng.integers(18, 80, N_ROWS).astype(float),
        "income": rng.lognormal(10, 1, N_ROWS).round(2),
        "tenure": rng.uniform(0, 1, N_ROWS),
        "score": rng.normal(0, 3, N_ROWS),
        "visits": rng.poisson(3, N_ROWS).astype(float),
    })
    z = 0.05 * (X.age - 50) + 0.4 * X.score + 2 * (X.tenure - 0.5) + 0.3 * np.log(X.income / 2e4)
    if region is not None:
        codes = rng.integers(0, len(REGIONS), N_ROWS)
        values = np.asarray(REGIONS, dtype=object)[codes]
        X["region"] = pd.Categorical(values, categories=REGIONS) if region == "category" else values
        z = z + np.asarray([1.5, -1.0, 0.0, 0.5])[codes]
    if nan:
        for col, frac in (("income", 0.1), ("score", 0.15)):
            X.loc[rng.random(N_ROWS) < frac, col] = np.nan
    noise = rng.normal(0, 0.3, N_ROWS)
    zf = np.nan_to_num(np.asarray(z, dtype=float))
    targets = {
        "regression": zf + noise,
        "counts": rng.poisson(np.exp(np.clip(0.3 * zf, -3, 3))).astype(float),
        "binary": (zf + noise > 0).astype(int),
        "multiclass": np.asarray(["low", "mid", "high"], dtype=object)[np.digitize(zf + noise, [-0.8, 0.8])],
    }
    return X, targets


def _codes_matrix(X: pd.DataFrame) -> np.ndarray:
    """Training frame as floats in column order (string / category columns as category codes)."""
    cols = []
    for name in X.columns:
        col = X[name]
        if col.dtype == object or isinstance(col.dtype, pd.CategoricalDtype):
            cols.append(pd.Categorical(col.astype(object), categories=REGIONS).codes.astype(float))
        else:
            cols.append(col.to_numpy(dtype=float))
    return np.column_stack(cols)


def _to_frame(M: np.ndarray, like: pd.DataFrame) -> pd.DataFrame:
    """Adversarial float rows back into a frame shaped like the training frame."""
    out = {}
    for j, name in enumerate(like.columns):
        col = like[name]
        if col.dtype == object or isinstance(col.dtype, pd.CategoricalDtype):
            values = []
            for v in M[:, j]:
                if np.isnan(v):
                    values.append(np.nan)
                elif np.isfinite(v) and v == int(v) and 0 <= v < len(REGIONS):
                    values.append(REGIONS[int(v)])
                else:
                    values.append(UNSEEN)
            if isinstance(col.dtype, pd.CategoricalDtype):
                out[name] = pd.Categorical(values, categories=list(REGIONS) + [UNSEEN])
            else:
                out[name] = np.asarray(values, dtype=object)
        else:
            out[name] = M[:, j]
    return pd.DataFrame(out)


def _native_input(native, frame: pd.DataFrame):
    return frame if hasattr(native, "feature_names_in_") else frame.to_numpy(dtype=float)


def _accepted(native, frame: pd.DataFrame) -> pd.DataFrame:
    """Drop rows holding NaN / values beyond float32 in a column where the native predict rejects them.

    (Trees fitted with NaN can split at threshold inf, whose ``nextafter`` neighbour is float64-max.)
    """
    base = frame.iloc[[0]]
    keep = np.ones(len(frame), dtype=bool)
    for name in frame.columns:
        if frame[name].dtype == object or isinstance(frame[name].dtype, pd.CategoricalDtype):
            continue
        values = frame[name].to_numpy(dtype=float)
        huge = np.abs(values) >= np.finfo(np.float32).max  # FLT_MAX itself overflows once a scaler multiplies it
        for special, rows in ((np.nan, np.isnan(values)), (np.inf, huge)):
            if not rows.any():
                continue
            probe = base.copy()
            probe[name] = special
            try:
                native.predict(_native_input(native, probe))
            except ValueError:
                keep &= ~rows
    return frame[keep].reset_index(drop=True)


def _fit(estimator, task: str, *, nan: bool = False, region: str | None = None, names: bool = True,
         numeric: tuple = NUMERIC, target: str | None = None) -> Fitted:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one core: HistGB's OpenMP threads only spin on a shared CI box
        return _fit_scored(estimator, task, nan=nan, region=region, names=names, numeric=numeric, target=target)


def _fit_scored(estimator, task: str, *, nan: bool, region: str | None, names: bool, numeric: tuple,
                target: str | None) -> Fitted:
    X, targets = _data(nan, region)
    cols = list(numeric) + (["region"] if region else [])
    X = X[cols]
    y = targets[target or task]
    native = estimator.fit(X if names else X.to_numpy(dtype=float), y)
    model = convert(native)
    categorical = {cols.index("region")} if region else set()
    M = adversarial_matrix(model, _codes_matrix(X), categorical=categorical)
    frame = _to_frame(M, X)
    frame.columns = list(model.signature.names)
    frame = _accepted(native, frame)
    native_X = _native_input(native, frame)
    proba = native.predict_proba(native_X) if task != "regression" and hasattr(native, "predict_proba") else None
    return Fitted(native, model, frame, np.asarray(native.predict(native_X)), proba)


def _linear(name: str, **params):
    from sklearn import linear_model

    return getattr(linear_model, name)(**params)


def _pipeline(kind: str, final):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if kind == "scale":
        return make_pipeline(StandardScaler(), final)
    if kind == "impute-scale":
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), final)
    if kind == "columns":
        numeric = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler())
        ct = ColumnTransformer([("num", numeric, ["age", "income", "score"]),
                                ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])],
                               remainder="passthrough")
        return make_pipeline(ct, final)
    if kind == "columns-drop-first":
        ct = ColumnTransformer([("cat", OneHotEncoder(drop="first", handle_unknown="ignore"), ["region"]),
                                ("imp", SimpleImputer(strategy="constant", fill_value=-1.0), ["income", "score"])],
                               remainder="drop")
        return make_pipeline(ct, final)
    raise ValueError(kind)


def _ensemble(name: str, **params):
    from sklearn import ensemble, tree

    module = tree if name.startswith("DecisionTree") else ensemble
    return getattr(module, name)(**params)


_SMALL = dict(max_depth=5, random_state=0)
_FOREST = dict(n_estimators=15, max_depth=6, random_state=0, n_jobs=1)
_GB = dict(n_estimators=20, max_depth=3, random_state=0)
_HGB = dict(max_iter=20, max_depth=4, random_state=0, early_stopping=False)

_SPECS: list[tuple[str, str, str, object]] = [
    # id suffix, kind, task, builder
    ("linreg", "linear", "regression", lambda: _fit(_linear("LinearRegression"), "regression")),
    ("ridge", "linear", "regression", lambda: _fit(_linear("Ridge", alpha=2.0), "regression", names=False)),
    ("lasso", "linear", "regression", lambda: _fit(_linear("Lasso", alpha=0.05), "regression")),
    ("elasticnet", "linear", "regression", lambda: _fit(_linear("ElasticNet", alpha=0.05, l1_ratio=0.3), "regression")),
    ("sgd-regression", "linear", "regression",
     lambda: _fit(_pipeline("scale", _linear("SGDRegressor", random_state=0)), "regression")),
    ("logreg-binary", "linear", "binary", lambda: _fit(_linear("LogisticRegression", solver="newton-cholesky"), "binary")),
    ("logreg-liblinear-binary", "linear", "binary",
     lambda: _fit(_linear("LogisticRegression", solver="liblinear"), "binary", names=False)),
    ("logreg-multinomial", "linear", "multiclass", lambda: _fit(_pipeline("scale", _linear("LogisticRegression")), "multiclass")),
    ("logreg-ovr", "linear", "multiclass", lambda: _fit(_pipeline("scale", _ovr(_linear("LogisticRegression"))), "multiclass")),
    ("sgd-log-binary", "linear", "binary",
     lambda: _fit(_pipeline("scale", _linear("SGDClassifier", loss="log_loss", random_state=0)), "binary")),
    ("sgd-log-multiclass", "linear", "multiclass",
     lambda: _fit(_pipeline("scale", _linear("SGDClassifier", loss="log_loss", random_state=0)), "multiclass")),
    ("sgd-hinge-binary", "linear", "binary",
     lambda: _fit(_pipeline("scale", _linear("SGDClassifier", random_state=0)), "binary")),
    ("sgd-hinge-multiclass", "linear", "multiclass",
     lambda: _fit(_pipeline("scale", _linear("SGDClassifier", random_state=0)), "multiclass")),
    ("pipe-impute-scale-linreg", "linear", "regression",
     lambda: _fit(_pipeline("impute-scale", _linear("LinearRegression")), "regression", nan=True)),
    ("pipe-columns-logreg", "linear", "binary",
     lambda: _fit(_pipeline("columns", _linear("LogisticRegression", max_iter=1000)), "binary", nan=True, region="str")),
    ("pipe-columns-ridge", "linear", "regression",
     lambda: _fit(_pipeline("columns-drop-first", _linear("Ridge")), "regression", nan=True, region="str")),
    ("dt-regression", "trees", "regression", lambda: _fit(_ensemble("DecisionTreeRegressor", **_SMALL), "regression", nan=True)),
    ("dt-binary", "trees", "binary", lambda: _fit(_ensemble("DecisionTreeClassifier", **_SMALL), "binary", nan=True)),
    ("dt-multiclass", "trees", "multiclass", lambda: _fit(_ensemble("DecisionTreeClassifier", **_SMALL), "multiclass", names=False)),
    ("rf-regression", "trees", "regression", lambda: _fit(_ensemble("RandomForestRegressor", **_FOREST), "regression", nan=True)),
    ("rf-binary", "trees", "binary", lambda: _fit(_ensemble("RandomForestClassifier", **_FOREST), "binary", nan=True)),
    ("rf-multiclass", "trees", "multiclass", lambda: _fit(_ensemble("RandomForestClassifier", **_FOREST), "multiclass")),
    ("et-regression", "trees", "regression", lambda: _fit(_ensemble("ExtraTreesRegressor", **_FOREST), "regression")),
    ("et-binary", "trees", "binary", lambda: _fit(_ensemble("ExtraTreesClassifier", **_FOREST), "binary", nan=True)),
    ("et-multiclass", "trees", "multiclass", lambda: _fit(_ensemble("ExtraTreesClassifier", **_FOREST), "multiclass")),
    ("gb-regression", "trees", "regression", lambda: _fit(_ensemble("GradientBoostingRegressor", **_GB), "regression")),
    ("gb-huber-regression", "trees", "regression",
     lambda: _fit(_ensemble("GradientBoostingRegressor", loss="huber", **_GB), "regression", names=False)),
    ("gb-binary", "trees", "binary", lambda: _fit(_ensemble("GradientBoostingClassifier", **_GB), "binary")),
    ("gb-exponential-binary", "trees", "binary",
     lambda: _fit(_ensemble("GradientBoostingClassifier", loss="exponential", **_GB), "binary")),
    ("gb-multiclass", "trees", "multiclass", lambda: _fit(_ensemble("GradientBoostingClassifier", **_GB), "multiclass")),
    ("hgb-regression", "trees", "regression",
     lambda: _fit(_ensemble("HistGradientBoostingRegressor", **_HGB), "regression", nan=True)),
    ("hgb-poisson", "trees", "regression",
     lambda: _fit(_ensemble("HistGradientBoostingRegressor", loss="poisson", **_HGB), "regression", target="counts")),
    ("hgb-binary", "trees", "binary",
     lambda: _fit(_ensemble("HistGradientBoostingClassifier", **_HGB), "binary", nan=True, names=False)),
    ("hgb-multiclass", "trees", "multiclass",
     lambda: _fit(_ensemble("HistGradientBoostingClassifier", **_HGB), "multiclass", nan=True)),
    ("hgb-categorical-binary", "trees", "binary",
     lambda: _fit(_ensemble("HistGradientBoostingClassifier", **_HGB), "binary", nan=True, region="category")),
    ("hgb-categorical-regression", "trees", "regression",
     lambda: _fit(_ensemble("HistGradientBoostingRegressor", **_HGB), "regression", region="category")),
    ("pipe-columns-rf", "trees", "multiclass",
     lambda: _fit(_pipeline("columns", _ensemble("RandomForestClassifier", **_FOREST)), "multiclass", nan=True, region="str")),
    ("pipe-impute-gb", "trees", "binary",
     lambda: _fit(_pipeline("impute-scale", _ensemble("GradientBoostingClassifier", **_GB)), "binary", nan=True)),
]


def _ovr(estimator):
    from sklearn.multiclass import OneVsRestClassifier

    return OneVsRestClassifier(estimator)


CASES: list[Case] = [Case(f"sklearn-{suffix}", build, library="sklearn", kind=kind, task=task)
                     for suffix, kind, task, build in _SPECS]
