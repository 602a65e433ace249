"""scikit-learn linear models: decision rules, float32 arithmetic, one-class fits, GLM links.

Every case fits a small linear model and scores, besides the generic adversarial rows, rows built
for linear models:

* **decision boundary**: one non-zero feature ``x_j`` chosen so that the margin is exactly 0 and the
  nearest representable margins either side (|margin| ~ 1e-17: the sigmoid rounds to 0.5 there).  A
  row with a single non-zero feature has one product, so every summation order (BLAS, numba,
  torch, sklearn) gives the same margin bit for bit: the label rule is what is tested.
* **multiclass ties**: a single feature value where two classes' margins are exactly equal, and the
  neighbouring values where they differ by one ulp (softmax / normalised probabilities round equal).
* **saturation**: training rows scaled by up to 1e6, so |margin| > 40 (sigmoid == 1.0, one-vs-rest
  probabilities tie) and < -745 (every sigmoid underflows to 0: sklearn's all-zero row rules).
* **float32 models** (fitted on float32 data, scored on float32 input as sklearn does): values near
  ``FLT_MAX`` whose products overflow to +-inf.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sparkscore.importers import convert
from tests.zoo import Case, Fitted
from tests.zoo.adversarial import adversarial_matrix
from tests.zoo.sklearn_cases import _accepted

N_ROWS = 240
COLUMNS = ("a", "b", "c", "d")
SCALES = (1e2, 1e3, 1e6, -1e2, -1e3, -1e6)
LABELS = np.asarray(["red", "green", "blue"], dtype=object)


def _data(dtype=np.float64) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(N_ROWS, len(COLUMNS))) * np.array([1.0, 2.0, 0.5, 1.5])
    z = X @ np.array([1.0, -0.5, 2.0, 0.3]) + 0.2
    noise = rng.normal(0, 0.4, N_ROWS)
    targets = {
        "regression": z + noise,
        "binary": (z + noise > 0).astype(int),
        "multiclass": LABELS[np.digitize(z + noise, [-0.7, 0.7])],
        "counts": rng.poisson(np.exp(np.clip(0.4 * z, -3, 3))).astype(float),
        "positive": np.exp(0.3 * z + 0.1 * noise),
        "one-class": np.full(N_ROWS, 7),
    }
    return X.astype(dtype), targets


def _nextafter_steps(x: float, n: int) -> list[float]:
    out, lo, hi = [x], x, x
    for _ in range(n):
        lo, hi = float(np.nextafter(lo, -np.inf)), float(np.nextafter(hi, np.inf))
        out += [lo, hi]
    return out


def _margin(x: float, w: float, b: float, float32: bool) -> float:
    """The margin of a row whose only non-zero feature is ``x`` (one product: order-free)."""
    if float32:
        return float(np.float32(np.float32(x) * np.float32(w)) + np.float32(b))
    return x * w + b


def boundary_rows(coef: np.ndarray, intercept: np.ndarray, float32: bool = False, steps: int = 40,
                  center: np.ndarray | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """Rows on (and one representable margin either side of) each decision boundary.

    Binary (k == 1): margin == 0.  Multiclass: margins of classes p and q equal.  Behind a
    StandardScaler (``center``, ``scale``) the other inputs sit on their mean (scaled to exactly 0)
    and ``x_j`` is searched for where ``(x_j - center) / scale`` puts the margin on the tie.
    """
    d, k = coef.shape
    center = np.zeros(d) if center is None else center
    scale = np.ones(d) if scale is None else scale
    rows = []
    pairs = [(0, None)] if k == 1 else [(p, q) for p in range(k) for q in range(p + 1, k)]
    for j in range(d):
        for p, q in pairs:
            if q is None:
                w, b = coef[j, p], intercept[p]
            else:  # margin_p - margin_q == 0 at x = (b_q - b_p) / (w_p - w_q)
                w, b = coef[j, p] - coef[j, q], intercept[p] - intercept[q]
            if w == 0 or not np.isfinite(-b / w):
                continue
            x0 = float(-b / w) * scale[j] + center[j]
            if float32:
                x0 = float(np.float32(x0))

            def gap(x, j=j, p=p, q=q):
                t = (x - center[j]) / scale[j]
                if q is None:
                    return _margin(t, coef[j, p], intercept[p], float32)
                return _margin(t, coef[j, p], intercept[p], float32) - _margin(t, coef[j, q], intercept[q], float32)

            cands = _f32_steps(x0, steps) if float32 else _nextafter_steps(x0, steps)
            gaps = {x: gap(x) for x in cands}
            chosen = [x for x, g in gaps.items() if g == 0]
            pos = [x for x, g in gaps.items() if g > 0]
            neg = [x for x, g in gaps.items() if g < 0]
            if pos:
                chosen.append(min(pos, key=lambda x: gaps[x]))
            if neg:
                chosen.append(max(neg, key=lambda x: gaps[x]))
            for x in chosen:
                row = center.copy()
                row[j] = x
                rows.append(row)
    return np.array(rows).reshape(-1, d)


def _f32_steps(x: float, n: int) -> list[float]:
    out, lo, hi = [x], np.float32(x), np.float32(x)
    for _ in range(n):
        lo, hi = np.nextafter(lo, np.float32(-np.inf)), np.nextafter(hi, np.float32(np.inf))
        out += [float(lo), float(hi)]
    return out


def saturated_rows(X: np.ndarray) -> np.ndarray:
    base = X[:20]
    return np.concatenate([base * s for s in SCALES])


def overflow_rows(X: np.ndarray) -> np.ndarray:
    """float32 values near FLT_MAX (finite in float32: sklearn accepts them) whose products overflow."""
    big = float(np.finfo(np.float32).max)
    rows = []
    for j in range(X.shape[1]):
        for v in (big, -big, big / 4, 1e37, -1e37):
            row = X[j].copy()
            row[j] = v
            rows.append(row)
    return np.array(rows)


def _fit(estimator, task: str, *, float32: bool = False, pipeline: bool = False) -> Fitted:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _fit_scored(estimator, task, float32=float32, pipeline=pipeline)


def _fit_scored(estimator, task: str, *, float32: bool, pipeline: bool) -> Fitted:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    dtype = np.float32 if float32 else np.float64
    X, targets = _data(dtype)
    frame_train = pd.DataFrame(X, columns=list(COLUMNS))
    native = make_pipeline(StandardScaler(), estimator) if pipeline else estimator
    native.fit(frame_train, targets[task])
    model = convert(native)
    X64 = X.astype(np.float64)
    blocks = [adversarial_matrix(model, X64), saturated_rows(X64)]
    est = model.estimator
    if not model.features:
        blocks.append(boundary_rows(est.coef, est.intercept, float32=est.dtype == "float32"))
    elif len(model.features) == 1 and np.array_equal(model.features[0].source, np.arange(est.n_features)):
        fmap = model.features[0]
        blocks.append(boundary_rows(est.coef, est.intercept, center=fmap.center, scale=fmap.scale))
    if float32:
        blocks.append(overflow_rows(X64))
    M = np.concatenate(blocks)
    frame = _accepted(native, pd.DataFrame(M, columns=list(model.signature.names)))
    if float32:  # sklearn scores float32 input: rows that are not finite in float32 are rejected
        with np.errstate(over="ignore"):
            finite = np.isfinite(frame.to_numpy().astype(np.float32)).all(axis=1)
        frame = frame[finite].reset_index(drop=True)
    native_X = frame.astype(dtype)
    with np.errstate(all="ignore"):
        predict = np.asarray(native.predict(native_X))
        proba = native.predict_proba(native_X) if task != "regression" and hasattr(native, "predict_proba") else None
    rtol = 1e-6
    if float32 and est.link == "exp":
        # sklearn's float32 margin is a BLAS sgemv sum whose last bit depends on the other rows of the
        # call (see reference.linear_from_dot); exp turns a margin ulp into m * 2**-24 relative: allow 4.
        with np.errstate(over="ignore"):
            m = model.margin_model.scores(frame, backend="numpy")[:, 0]
            finite = np.isfinite(np.exp(m.astype(np.float32)))
        rtol = max(rtol, 4 * 2.0 ** -24 * float(np.max(np.abs(m[finite]), initial=1.0)))
    return Fitted(native, model, frame, predict, proba, rtol=rtol, notes="float32" if float32 else "")


def _lm(name: str, **params):
    from sklearn import linear_model, svm

    module = svm if name == "LinearSVC" else linear_model
    return getattr(module, name)(**params)


def _ovr(estimator):
    from sklearn.multiclass import OneVsRestClassifier

    return OneVsRestClassifier(estimator)


_SPECS: list[tuple[str, str, object]] = [
    # decision rules (item 5)
    ("logreg-binary", "binary", lambda: _fit(_lm("LogisticRegression"), "binary")),
    ("logreg-no-intercept-binary", "binary", lambda: _fit(_lm("LogisticRegression", fit_intercept=False), "binary")),
    ("logreg-balanced-multinomial", "multiclass",
     lambda: _fit(_lm("LogisticRegression", class_weight="balanced"), "multiclass")),
    ("logreg-scaled-multinomial", "multiclass", lambda: _fit(_lm("LogisticRegression"), "multiclass", pipeline=True)),
    ("ovr-logreg-multiclass", "multiclass", lambda: _fit(_ovr(_lm("LogisticRegression")), "multiclass")),
    ("ovr-perceptron-multiclass", "multiclass", lambda: _fit(_ovr(_lm("Perceptron", random_state=0)), "multiclass")),
    ("sgd-log-multiclass", "multiclass",
     lambda: _fit(_lm("SGDClassifier", loss="log_loss", random_state=0), "multiclass")),
    ("ridgeclassifier-binary", "binary", lambda: _fit(_lm("RidgeClassifier"), "binary")),
    ("ridgeclassifiercv-multiclass", "multiclass", lambda: _fit(_lm("RidgeClassifierCV"), "multiclass")),
    ("perceptron-binary", "binary", lambda: _fit(_lm("Perceptron", random_state=0), "binary")),
    ("linearsvc-multiclass", "multiclass", lambda: _fit(_lm("LinearSVC", random_state=0), "multiclass")),
    # one-class fit (item 8): sklearn's RidgeClassifier accepts a single label
    ("ridgeclassifier-one-class", "one-class", lambda: _fit(_lm("RidgeClassifier"), "one-class")),
    # more model kinds (item 9)
    ("ridgecv", "regression", lambda: _fit(_lm("RidgeCV", alphas=(0.1, 1.0, 10.0)), "regression")),
    ("lassocv", "regression", lambda: _fit(_lm("LassoCV", cv=3, alphas=5), "regression")),
    ("elasticnetcv", "regression", lambda: _fit(_lm("ElasticNetCV", cv=3, alphas=5, l1_ratio=0.5), "regression")),
    ("lars", "regression", lambda: _fit(_lm("Lars"), "regression")),
    ("lassolars", "regression", lambda: _fit(_lm("LassoLars", alpha=0.01), "regression")),
    ("bayesianridge", "regression", lambda: _fit(_lm("BayesianRidge"), "regression")),
    ("ardregression", "regression", lambda: _fit(_lm("ARDRegression"), "regression")),
    ("huber", "regression", lambda: _fit(_lm("HuberRegressor"), "regression")),
    ("linearsvc-crammer-singer-binary", "binary",
     lambda: _fit(_lm("LinearSVC", multi_class="crammer_singer", random_state=0), "binary")),
    ("sgd-averaged-hinge-multiclass", "multiclass",
     lambda: _fit(_lm("SGDClassifier", average=True, random_state=0), "multiclass")),
    ("logregcv-binary", "binary", lambda: _fit(_lm("LogisticRegressionCV", Cs=3, cv=3), "binary")),
    ("logregcv-multiclass", "multiclass", lambda: _fit(_lm("LogisticRegressionCV", Cs=3, cv=3), "multiclass")),
    ("poisson", "regression", lambda: _fit(_lm("PoissonRegressor", alpha=0.1), "counts")),
    ("gamma", "regression", lambda: _fit(_lm("GammaRegressor", alpha=0.1), "positive")),
    ("tweedie-log", "regression", lambda: _fit(_lm("TweedieRegressor", power=1.5, alpha=0.1), "counts")),
    ("tweedie-identity", "regression", lambda: _fit(_lm("TweedieRegressor", power=0, alpha=0.1), "regression")),
    ("sgd-modified-huber-binary", "binary",
     lambda: _fit(_lm("SGDClassifier", loss="modified_huber", random_state=0), "binary")),
    ("sgd-modified-huber-multiclass", "multiclass",
     lambda: _fit(_lm("SGDClassifier", loss="modified_huber", random_state=0), "multiclass")),
    # fitted on float32 data (item 7)
    ("float32-linreg", "regression", lambda: _fit(_lm("LinearRegression"), "regression", float32=True)),
    ("float32-ridge-no-intercept", "regression",
     lambda: _fit(_lm("Ridge", fit_intercept=False), "regression", float32=True)),
    ("float32-sgd-regression", "regression",
     lambda: _fit(_lm("SGDRegressor", random_state=0), "regression", float32=True)),
    ("float32-logreg-binary", "binary", lambda: _fit(_lm("LogisticRegression"), "binary", float32=True)),
    ("float32-logreg-multinomial", "multiclass", lambda: _fit(_lm("LogisticRegression"), "multiclass", float32=True)),
    ("float32-poisson", "regression", lambda: _fit(_lm("PoissonRegressor", alpha=0.1), "counts", float32=True)),
    ("float32-sgd-modified-huber-multiclass", "multiclass",
     lambda: _fit(_lm("SGDClassifier", loss="modified_huber", random_state=0), "multiclass", float32=True)),
]

_TASK_OF = {"counts": "regression", "positive": "regression", "one-class": "multiclass"}

CASES: list[Case] = [Case(f"sklearn-linear-{suffix}", build, library="sklearn", kind="linear",
                          task=_TASK_OF.get(task, task))
                     for suffix, task, build in _SPECS]
