"""scikit-learn estimators and pipelines -> :class:`sparkscore.ir.Model`, with exact semantics.

What "exact" means per family (checked against sklearn 1.9 sources):

* linear models: ``X @ coef_ + intercept_`` and the estimator's own link (binary sigmoid,
  multinomial softmax, one-vs-rest sigmoids normalised to sum 1 with sklearn's all-zero-row rule,
  SGD ``modified_huber``'s clipped margins, GLM log / identity links).  Classifiers decide labels on
  the margins (``Model.decision = "margin"``: binary ``> 0``, multiclass first argmax), never on
  rounded probabilities, and keep a StandardScaler as a FeatureMap (not folded) so a tie rounds
  exactly as in sklearn.  Models fitted on float32 data (float32 ``coef_``) predict in float32
  (``LinearModel.dtype``), as sklearn does on float32 input; ``class_weight`` / ``sample_weight``,
  penalties and solvers are training-only.  A one-class fit (RidgeClassifier) predicts its label
  (``predict_proba``, where a model has one, is one column);
* ``sklearn.tree`` based models (DecisionTree, RandomForest, ExtraTrees, GradientBoosting): X is
  cast to float32 and a row goes left when ``float32(x) <= threshold`` (float64 threshold); NaN
  takes the node's ``missing_go_to_left``.  Forest classifiers average per-tree class fractions
  (``tree_.value`` already holds fractions, which is what ``predict_proba`` returns per tree);
  gradient boosting adds ``learning_rate * leaf`` to the init estimator's constant raw prediction;
* HistGradientBoosting: float64 ``<=`` on raw values, NaN by ``missing_go_to_left``, categorical
  nodes by the left-category bitset over the codes its internal OrdinalEncoder assigns (unknown
  categories -> NaN -> missing direction), which is exactly what ``Column.categories`` encodes;
* preprocessing (StandardScaler, RobustScaler, MaxAbsScaler, SimpleImputer, OneHotEncoder,
  ColumnTransformer with ``remainder`` of any kind) becomes :class:`FeatureMap` stages;
  standardisation in front of a GLM is folded into its coefficients when the fold cannot cost more
  than ~1e-12 relative precision.  What a FeatureMap cannot replay bit for bit -- MinMaxScaler's
  ``x * scale_ + min_``, ``clip=True``, ``transformer_weights``, and the ``x * (1 / scale_)`` the
  scalers compute on sparse input (a sparse ColumnTransformer / OneHotEncoder output) -- is an
  elementwise tail the final estimator absorbs: trees get float64 thresholds in the untransformed
  space (exact by construction, see :func:`_absorb_tail`), GLMs fold affine tails and refuse clips;
* labels follow each estimator's own ``predict`` (``Model.decision``): GradientBoosting
  ``raw >= 0`` (``margin_ge``), HistGradientBoosting ``raw > 0`` (``margin``), multiclass argmax of the raw scores, forests the
  argmax of ``predict_proba``; a classifier fitted on one class predicts it with one probability
  column (HistGradientBoosting, whose native output then has two columns, is refused).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sparkscore.errors import UnsupportedModelError
from sparkscore.importers.common import make_signature, metadata, resolve_names
from sparkscore.ir.features import INDICATOR, PASSTHROUGH, FeatureMap
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.model import Model
from sparkscore.ir.trees import MISSING_NAN, TreeBuilder, TreeEnsemble

SUPPORTED = ("LinearRegression, Ridge(CV), Lasso(CV), ElasticNet(CV), Lars, LassoLars, BayesianRidge, ARDRegression, "
             "HuberRegressor, SGDRegressor, Poisson/Gamma/TweedieRegressor, LogisticRegression(CV), SGDClassifier, "
             "RidgeClassifier(CV), Perceptron, LinearSVC, "
             "OneVsRestClassifier(of those classifiers), DecisionTree/RandomForest/ExtraTrees/"
             "GradientBoosting/HistGradientBoosting Classifier|Regressor, and Pipeline/ColumnTransformer of "
             "StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, SimpleImputer, OneHotEncoder in front of them")

#: regressors whose predict is ``LinearModel._decision_function``: ``X @ coef_(.T) + intercept_``
_LINEAR_REGRESSORS = ("LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV",
                      "Lars", "LassoLars", "BayesianRidge", "ARDRegression", "HuberRegressor", "SGDRegressor")
#: generalised linear models: ``link.inverse(X @ coef_ + intercept_)``
_GLM_REGRESSORS = ("PoissonRegressor", "GammaRegressor", "TweedieRegressor")
_GLM_LINKS = {"IdentityLink": "identity", "LogLink": "exp"}
#: classifiers predicting by ``LinearClassifierMixin``: binary ``margin > 0``, multiclass first argmax
_LINEAR_CLASSIFIERS = ("LogisticRegression", "LogisticRegressionCV", "SGDClassifier", "RidgeClassifier",
                       "RidgeClassifierCV", "Perceptron", "LinearSVC")
_SKTREE_MODELS = ("DecisionTreeClassifier", "DecisionTreeRegressor", "RandomForestClassifier",
                  "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")
#: label rules that are not "first argmax of predict_proba" (sklearn 1.9 ``predict``):
#: GradientBoostingClassifier ``raw >= 0`` / argmax(raw); HistGradientBoostingClassifier ``raw > 0`` /
#: argmax(raw).  See :data:`sparkscore.ir.model.DECISIONS`.
_DECISIONS = {"GradientBoostingClassifier": "margin_ge", "HistGradientBoostingClassifier": "margin"}
#: linear folding of (x - center) / scale is exact to ~eps * |center| / scale relative to the
#: standardised value; beyond this ratio keep the FeatureMap instead.
_MAX_FOLD_RATIO = 1e4


def convert(native, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a fitted scikit-learn estimator or Pipeline (see :data:`SUPPORTED`)."""
    import sklearn

    transformers, final = _flatten(native)
    n_in = _n_features_in(native)
    names = resolve_names(n_in, getattr(native, "feature_names_in_", None), feature_names,
                          type(native).__name__)
    prep = _Prep(n_in)
    for step in transformers:
        prep.add(step)
    maps, categories, width = [m for m in prep.maps if not _is_identity(m)], dict(prep.categories), prep.width
    estimator, task, classes, extra, est_categories = _estimator(final, width)
    if est_categories:
        if maps or prep.tail is not None:
            raise UnsupportedModelError(
                f"{type(final).__name__}: native categorical features behind preprocessing steps are not "
                f"supported; feed the categorical columns to it directly")
        categories.update(est_categories)
    if prep.tail is not None:
        estimator = _absorb_tail(prep.tail, estimator, final, classifier=classes is not None)
    if isinstance(estimator, LinearModel) and maps and estimator.dtype == "float64" and task == "regression":
        # Regressors only: folding moves the margins by ~1e-12 relative (values stay within rtol), but
        # a classifier's label on a tie is decided by the exact rounding of sklearn's (x - mean) / scale
        # then the dot product, which the FeatureMap reproduces.  A float32 GLM keeps its float32 coef.
        maps, estimator = _fold_standardisation(maps, estimator)
    decision = extra.pop("decision", "proba")
    meta = metadata("sklearn", native, sklearn.__version__)
    meta.update(extra)
    n_outputs = estimator.n_outputs if task == "regression" else 1
    signature = make_signature(names, task, classes, categories, n_outputs, accepts=prep.strict)
    return Model(estimator, signature, tuple(maps), task,
                 tuple(classes) if classes is not None else None, meta, decision)


# ---------------------------------------------------------------------------------- structure
def _unsupported(obj, what: str = "") -> UnsupportedModelError:
    cls = type(obj)
    detail = f" ({what})" if what else ""
    return UnsupportedModelError(f"cannot convert {cls.__module__}.{cls.__qualname__}{detail}: "
                                 f"supported scikit-learn models are {SUPPORTED}")


def _flatten(native) -> tuple[list, object]:
    """(transformer steps in order, final estimator) of a possibly nested Pipeline."""
    if type(native).__name__ != "Pipeline":
        return [], native
    steps = [est for _, est in native.steps if est is not None and not (isinstance(est, str) and est == "passthrough")]
    if not steps:
        raise _unsupported(native, "empty pipeline")
    transformers: list = []
    for step in steps[:-1]:
        inner, last = _flatten(step)
        transformers.extend(inner + [last])
    inner, final = _flatten(steps[-1])
    return transformers + inner, final


def _n_features_in(native) -> int:
    n = getattr(native, "n_features_in_", None)
    if n is None:
        raise _unsupported(native, "not fitted, or fitted on input without a feature count")
    return int(n)


# ---------------------------------------------------------------------------------- preprocessing
#: one elementwise float64 operation sklearn applies to a feature, replayed exactly:
#: ("sub", c, 0) x - c | ("div", d, 0) x / d | ("mul", m, 0) x * m | ("add", a, 0) x + a |
#: ("clip", lo, hi) np.clip(x, lo, hi).  A tail is one tuple of such steps per feature.
Op = tuple[str, float, float]
Tail = list[tuple[Op, ...]]
_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")


class _Prep:
    """Preprocessing steps in order: exact :class:`FeatureMap` stages, then an elementwise ``tail``.

    Scalers whose arithmetic is a FeatureMap's (``(x - c) / d``) become FeatureMap stages; the others
    (MinMaxScaler's ``x * s + m``, clipping, ``transformer_weights``, the ``x * (1 / d)`` scalers use
    on sparse input) become the tail, which the final estimator absorbs exactly
    (:func:`_absorb_tail`).  ``sparse``: the current output is a scipy sparse matrix, which changes
    how the next scaler computes.
    """

    def __init__(self, n_in: int, raw_inputs: bool = True, sparse: bool = False) -> None:
        self.maps: list[FeatureMap] = []
        self.tail: Tail | None = None
        self.categories: dict[int, tuple] = {}
        #: input -> the values a strict encoder (OneHotEncoder handle_unknown='error') accepts there
        #: (None: NULL too, imputed to a known category); becomes ``Column.accepts``
        self.strict: dict[int, tuple] = {}
        self.width = n_in
        self.raw_inputs = raw_inputs
        self.sparse = sparse

    def add(self, step) -> None:
        kind = type(step).__name__
        if kind in _SCALERS:
            ops = _scaler_ops(step, self.width, self.sparse)
            fmap = None if self.tail is not None else _ops_map(ops, self.width)
            if fmap is not None:
                self._add_map(fmap, {})
            else:
                self.tail = [a + b for a, b in zip(self.tail or [()] * self.width, ops)]
            return
        if kind == "Pipeline":
            transformers, last = _flatten(step)
            for sub in transformers + [last]:
                self.add(sub)
            return
        if self.tail is not None:
            raise _unsupported(step, f"{kind} after a MinMaxScaler / clip / transformer weight has no exact "
                                     f"form; put the scaling last")
        fmap, cats, tail, sparse, strict = _step_map(step, self.width, self.raw_inputs and not self.maps, self.sparse)
        for j, values in strict.items():
            source, accepts = self._strict_source(step, j, values)
            self.strict[source] = _intersect(self.strict.get(source), accepts)
        self._add_map(fmap, cats)
        self.tail = tail
        self.sparse = sparse

    def _strict_source(self, step, j: int, values: tuple) -> tuple[int, tuple]:
        """(input, accepted raw values) of a strict encoder reading the current feature ``j``.

        Through the maps before it, the raw value reaches the encoder unchanged or imputed: NULL is
        accepted exactly when the imputed value is a known category (sklearn imputes, then the
        encoder checks).  Scaled values would need the scaler's arithmetic inverted: refused.
        """
        if not self.maps:
            return j, values
        fmap = self.maps[-1]
        if len(self.maps) > 1 or fmap.kind[j] != PASSTHROUGH or fmap.center[j] != 0 or fmap.scale[j] != 1:
            raise _unsupported(step, "handle_unknown='error' behind a scaler or a chain of steps (its check runs on "
                                     "transformed values); put the encoder first, or use handle_unknown='ignore'")
        fill = float(fmap.fill[j])
        if np.isnan(fill):  # no imputation: NULL reaches the encoder as it is
            return int(fmap.source[j]), values
        known = tuple(v for v in values if v is not None)
        return int(fmap.source[j]), known + ((None,) if fill in known else ())

    def _add_map(self, fmap: FeatureMap, cats: dict[int, tuple]) -> None:
        self.categories.update(cats)
        self.maps = _append_map(self.maps, fmap)
        self.width = fmap.n_outputs

    def single(self, step) -> tuple[FeatureMap, Tail | None]:
        """The steps as one FeatureMap (+ tail), or refuse (a ColumnTransformer part must be one map)."""
        if len(self.maps) > 1:
            raise _unsupported(step, "its steps do not combine into one exact feature map")
        fmap = self.maps[0] if self.maps else None
        if fmap is None:
            fmap = FeatureMap.identity(self.width)
        return fmap, self.tail


def _is_identity(fmap: FeatureMap) -> bool:
    """A map that returns its input unchanged (e.g. a ColumnTransformer of passthrough parts in order)."""
    return (fmap.n_outputs == fmap.n_inputs and np.array_equal(fmap.source, np.arange(fmap.n_inputs))
            and bool(np.all(fmap.kind == PASSTHROUGH)) and bool(np.all(np.isnan(fmap.fill)))
            and bool(np.all(fmap.center == 0)) and bool(np.all(fmap.scale == 1)))


def _scaler_ops(step, n: int, sparse: bool) -> Tail:
    """A fitted scaler's ``transform`` as elementwise steps, in sklearn 1.9's order of operations."""
    kind = type(step).__name__
    per_feature: list[list[Op]] = [[] for _ in range(n)]

    def each(op: str, values, other: float = 0.0) -> None:
        for j, v in enumerate(np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))):
            per_feature[j].append((op, float(v), other))

    def inverse_scale(scale) -> np.ndarray:  # sparse input: inplace_column_scale(X, 1.0 / scale_)
        return 1.0 / np.asarray(scale, dtype=np.float64)

    if kind == "StandardScaler":
        if sparse and step.with_mean:
            raise _unsupported(step, "with_mean=True on sparse input")
        if step.with_mean and step.mean_ is not None:
            each("sub", step.mean_)
        if step.with_std and step.scale_ is not None:
            each("mul", inverse_scale(step.scale_)) if sparse else each("div", step.scale_)
    elif kind == "RobustScaler":
        if sparse and step.with_centering:
            raise _unsupported(step, "with_centering=True on sparse input")
        if step.with_centering:
            each("sub", step.center_)
        if step.with_scaling:
            each("mul", inverse_scale(step.scale_)) if sparse else each("div", step.scale_)
    elif kind == "MaxAbsScaler":
        each("mul", inverse_scale(step.scale_)) if sparse else each("div", step.scale_)
        if getattr(step, "clip", False):
            each("clip", -1.0, 1.0)
    elif kind == "MinMaxScaler":
        if sparse:
            raise _unsupported(step, "sparse input")
        each("mul", step.scale_)
        each("add", step.min_)
        if step.clip:
            lo, hi = step.feature_range
            each("clip", float(lo), float(hi))
    return [tuple(ops) for ops in per_feature]


def _ops_map(ops: Tail, n: int) -> FeatureMap | None:
    """The steps as one FeatureMap stage when they are exactly ``(x - c) / d``, else None."""
    center, scale = np.zeros(n), np.ones(n)
    for j, steps in enumerate(ops):
        names = [op for op, _, _ in steps]
        if names not in ([], ["sub"], ["div"], ["sub", "div"]):
            return None
        for op, v, _ in steps:
            if op == "sub":
                center[j] = v
            else:
                scale[j] = v
    return FeatureMap(n, np.zeros(n), np.arange(n), np.full(n, np.nan), center, scale, np.full(n, np.nan))


def apply_ops(steps: tuple[Op, ...], col: np.ndarray) -> np.ndarray:
    """One feature's steps with sklearn's float64 arithmetic (bit for bit)."""
    col = np.asarray(col, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for op, a, b in steps:
            if op == "sub":
                col = col - a
            elif op == "div":
                col = col / a
            elif op == "mul":
                col = col * a
            elif op == "add":
                col = col + a
            else:
                col = np.clip(col, a, b)
    return col


def _absorb_tail(tail: Tail, estimator, final, classifier: bool):
    """Fold the elementwise tail into the final estimator, exactly, or refuse.

    * trees: every op is monotone non-decreasing, so ``cast(tail(z)) <= t`` (cast: the tree's
      comparison dtype) holds exactly for ``z`` up to one double ``z*``, found by bisection over the
      ordered doubles with the tail replayed bit for bit; the tree then compares ``z <= z*`` in
      float64, which routes every value, ``inf`` and the float32 rounding boundaries included, as
      sklearn routes its transformed value (NaN stays NaN: the node's missing side);
    * linear regressors: an affine tail ``a * z + b`` folds into the coefficients (``coef * a``,
      ``intercept + b @ coef``) under the same precision bound as standardisation; clipping is not
      linear: refused.  Linear classifiers are refused: a tied label depends on the exact rounding of
      ``z * a`` before the dot product, which a fold moves by an ulp (the reason a StandardScaler in
      front of a classifier stays a FeatureMap).
    """
    for steps in tail:
        for op, a, b in steps:
            if op in ("mul", "div") and not (np.isfinite(a) and a > 0):
                raise _unsupported(final, f"a preprocessing factor {a!r} that is not positive and finite")
    if isinstance(estimator, TreeEnsemble):
        return _map_thresholds(estimator, tail, final)
    if not isinstance(estimator, LinearModel):
        raise _unsupported(final, "MinMaxScaler / clip / transformer weights in front of it")
    if classifier:
        raise _unsupported(final, "MinMaxScaler / transformer_weights / sparse-input scaling in front of a linear "
                                  "classifier (its labels on ties need sklearn's exact x * scale rounding); use "
                                  "StandardScaler / RobustScaler / MaxAbsScaler on dense input, unweighted")
    if estimator.dtype == "float32":
        raise _unsupported(final, "MinMaxScaler / transformer_weights / sparse-input scaling in front of a model "
                                  "fitted on float32 data (its float32 coefficients cannot absorb the scaling "
                                  "exactly); fit it on float64 data")
    mul, add = np.ones(len(tail)), np.zeros(len(tail))
    for j, steps in enumerate(tail):
        for op, a, _ in steps:
            if op == "clip":
                raise _unsupported(final, "clip=True scaling in front of a linear model (clipping is not linear); "
                                          "use clip=False")
            if op == "mul":
                mul[j], add[j] = mul[j] * a, add[j] * a
            elif op == "div":
                mul[j], add[j] = mul[j] / a, add[j] / a
            elif op == "add":
                add[j] += a
            else:
                add[j] -= a
    if np.any(np.abs(add) > _MAX_FOLD_RATIO):
        raise _unsupported(final, f"scaling offsets up to {np.abs(add).max():.3g} in front of a linear model "
                                  f"(folding them would lose precision); center the data before scaling")
    coef = estimator.coef * mul[:, None]
    return LinearModel(coef, estimator.intercept + add @ estimator.coef, estimator.link)


def _ordered_key(x: np.ndarray) -> np.ndarray:
    """int64 keys in the order of the doubles (-0.0 just below +0.0), NaN excluded."""
    bits = np.asarray(x, dtype=np.float64).view(np.int64)
    return np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)


def _from_key(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.int64)
    return np.where(k < 0, k ^ np.int64(0x7FFFFFFFFFFFFFFF), k).view(np.float64)


def _map_thresholds(ens: TreeEnsemble, tail: Tail, final) -> TreeEnsemble:
    import dataclasses

    internal = np.flatnonzero(ens.feature >= 0)
    if ens.is_categorical[internal].any():
        raise _unsupported(final, "categorical splits behind MinMaxScaler / clip / transformer weights")
    feat, thr = ens.feature[internal], ens.threshold[internal]
    cast32 = ens.threshold_dtype == "float32"

    groups = [(feat == j, tail[j]) for j in np.unique(feat)]

    def goes_left(z: np.ndarray) -> np.ndarray:
        v = np.empty_like(z)
        for rows, steps in groups:
            v[rows] = apply_ops(steps, z[rows])
        if cast32:
            with np.errstate(over="ignore"):
                v = v.astype(np.float32).astype(np.float64)
        return (v < thr) if ens.cmp == "<" else (v <= thr)

    lo = np.full(len(internal), _ordered_key(np.array(-np.inf))[()], dtype=np.int64)
    hi = np.full(len(internal), _ordered_key(np.array(np.inf))[()], dtype=np.int64)
    if not goes_left(_from_key(lo)).all():
        raise _unsupported(final, "a split no value reaches after its preprocessing")
    all_left = goes_left(_from_key(hi))
    for _ in range(80):  # invariant: left at lo, right at hi (where not all_left)
        open_ = (hi.view(np.uint64) - lo.view(np.uint64) > 1) & ~all_left  # keys span > 2**63: no int64 overflow
        if not open_.any():
            break
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        left = goes_left(_from_key(mid))
        lo = np.where(open_ & left, mid, lo)
        hi = np.where(open_ & ~left, mid, hi)
    mapped = np.where(all_left, np.inf, _from_key(lo))
    threshold = ens.threshold.copy()
    threshold[internal] = mapped
    return dataclasses.replace(ens, threshold=threshold, threshold_dtype="float64", cmp="<=")


def _step_map(step, n_in: int, raw_inputs: bool,
              sparse: bool = False) -> tuple[FeatureMap, dict[int, tuple], Tail | None, bool, dict[int, tuple]]:
    """One structural step: (FeatureMap over ``n_in`` inputs, string categories it needs, elementwise
    tail after it, whether its output is sparse, the values strict encoders accept per input)."""
    kind = type(step).__name__
    if kind == "FunctionTransformer" and step.func is None:  # ColumnTransformer remainder="passthrough"
        return FeatureMap.identity(n_in), {}, None, sparse, {}
    if kind == "SimpleImputer":
        return _imputer_map(step, n_in), {}, None, sparse, {}
    if kind == "OneHotEncoder":
        fmap, cats, strict = _onehot_map(step, n_in, raw_inputs)
        return fmap, cats, None, bool(getattr(step, "sparse_output", False)), strict
    if kind == "ColumnTransformer":
        fmap, cats, tail, strict = _column_transformer_map(step, n_in, raw_inputs)
        return fmap, cats, tail, bool(getattr(step, "sparse_output_", False)), strict
    raise _unsupported(step, "preprocessing step")


#: OneHotEncoder ``handle_unknown`` options that score an unknown value as the all-zero row
#: (``infrequent_if_exist`` / ``warn`` do so when no infrequent categories exist, which is all we import)
_LENIENT_UNKNOWN = ("ignore", "infrequent_if_exist", "warn")


def _intersect(old: tuple | None, new: tuple) -> tuple:
    """Values both strict encoders of one input accept (either one raises on the others)."""
    return new if old is None else tuple(v for v in old if v in new)


def _imputer_map(step, n_in: int) -> FeatureMap:
    from sklearn.utils._missing import is_scalar_nan

    if not is_scalar_nan(step.missing_values):
        raise _unsupported(step, f"missing_values={step.missing_values!r}; only NaN is supported")
    if step.add_indicator:
        raise _unsupported(step, "add_indicator=True")
    try:
        stats = np.asarray(step.statistics_, dtype=np.float64)
    except (TypeError, ValueError):
        raise _unsupported(step, "non-numeric fill values") from None
    keep = np.arange(n_in) if getattr(step, "keep_empty_features", False) else np.flatnonzero(~np.isnan(stats))
    m = len(keep)
    return FeatureMap(n_in, np.zeros(m), keep, stats[keep], np.zeros(m), np.ones(m), np.full(m, np.nan))


def _onehot_map(step, n_in: int, raw_inputs: bool) -> tuple[FeatureMap, dict[int, tuple], dict[int, tuple]]:
    """(indicator map, string categories per input, values accepted per input when strict).

    ``handle_unknown='error'`` (sklearn's default) makes ``transform`` raise on a value outside
    ``categories_`` (NaN included), dropped categories still being known: every such input is
    strict.  The lenient options give the all-zero row, which the indicators already compute.
    """
    if getattr(step, "_infrequent_enabled", False):
        raise _unsupported(step, "infrequent categories (min_frequency / max_categories)")
    handle_unknown = getattr(step, "handle_unknown", "error")
    if handle_unknown != "error" and handle_unknown not in _LENIENT_UNKNOWN:
        raise _unsupported(step, f"handle_unknown={handle_unknown!r}")
    strict: dict[int, tuple] = {}
    drop_idx = step.drop_idx_ if step.drop_idx_ is not None else [None] * n_in
    source, category = [], []
    string_cats: dict[int, tuple] = {}
    for j, (cats, drop) in enumerate(zip(step.categories_, drop_idx)):
        cats = list(cats)
        if any(isinstance(c, str) for c in cats):
            if not raw_inputs or not all(isinstance(c, str) for c in cats):
                raise _unsupported(step, f"string categories of input {j} must be plain strings read from the model input")
            string_cats[j] = tuple(cats)
            codes = [float(i) for i in range(len(cats))]
            known = tuple(cats)
        else:
            codes = [float(c) for c in cats]
            if any(np.isnan(codes)):
                raise _unsupported(step, f"NaN is a category of input {j}; impute it first")
            known = tuple(codes)
        if handle_unknown == "error":
            strict[j] = known
        for i, code in enumerate(codes):
            if drop is not None and i == int(drop):
                continue
            source.append(j)
            category.append(code)
    m = len(source)
    fmap = FeatureMap(n_in, np.full(m, INDICATOR), source, np.full(m, np.nan), np.zeros(m), np.ones(m), category)
    return fmap, string_cats, strict


def _column_transformer_map(step, n_in: int,
                            raw_inputs: bool) -> tuple[FeatureMap, dict[int, tuple], Tail | None, dict[int, tuple]]:
    """The parts side by side in output order; ``transformer_weights`` multiply a part's outputs
    (sklearn: ``transform(X) * weight``), which becomes the tail."""
    parts: list[tuple[int, FeatureMap, Tail]] = []
    cats: dict[int, tuple] = {}
    strict: dict[int, tuple] = {}
    weights = step.transformer_weights or {}
    for name, trans, _ in step.transformers_:
        idx = np.asarray(step._transformer_to_input_indices[name], dtype=np.int64)
        out = step.output_indices_[name]
        if (isinstance(trans, str) and trans == "drop") or len(idx) == 0 or out.stop == out.start:
            continue
        if isinstance(trans, str) and trans == "passthrough":
            sub, sub_tail = FeatureMap.identity(len(idx)), None
        else:
            prep = _Prep(len(idx), raw_inputs)
            prep.add(trans)
            for j, c in prep.categories.items():
                if cats.get(int(idx[j]), c) != c:
                    raise _unsupported(step, f"input {int(idx[j])} is one-hot encoded twice with different categories")
                cats[int(idx[j])] = c
            for j, values in prep.strict.items():
                strict[int(idx[j])] = _intersect(strict.get(int(idx[j])), values)
            sub, sub_tail = prep.single(step)
        tail = list(sub_tail) if sub_tail is not None else [()] * sub.n_outputs
        weight = weights.get(name)
        if weight is not None and float(weight) != 1.0:
            tail = [ops + (("mul", float(weight), 0.0),) for ops in tail]
        parts.append((out.start, _reindex(sub, n_in, idx), tail))
    parts.sort(key=lambda p: p[0])
    fmaps = [p for _, p, _ in parts]
    fields = {f: np.concatenate([getattr(p, f) for p in fmaps]) if fmaps else np.zeros(0)
              for f in ("kind", "source", "fill", "center", "scale", "category")}
    fmap = FeatureMap(n_in, **fields)
    used_as_number = {int(s) for s, k in zip(fmap.source, fmap.kind) if k == PASSTHROUGH}
    if used_as_number & set(cats):
        raise _unsupported(step, "a string column is also passed through as a number")
    tail = [ops for _, _, part_tail in parts for ops in part_tail]
    return fmap, cats, (tail if any(tail) else None), strict


def _reindex(fmap: FeatureMap, n_in: int, idx: np.ndarray) -> FeatureMap:
    return FeatureMap(n_in, fmap.kind, idx[fmap.source], fmap.fill, fmap.center, fmap.scale, fmap.category)


def _append_map(maps: list[FeatureMap], fmap: FeatureMap) -> list[FeatureMap]:
    """``maps + [fmap]``, merged into the last map where the composition is exact."""
    if not maps:
        return [fmap]
    merged = _compose(maps[-1], fmap)
    return maps[:-1] + [merged] if merged is not None else maps + [fmap]


def _compose(a: FeatureMap, b: FeatureMap) -> FeatureMap | None:
    """One map equal to ``b(a(X))`` bit for bit, or None.

    Exact when every ``a`` output that ``b`` reads is an un-scaled passthrough (a pure fill can be
    moved into ``b``: imputation then scaling / one-hot), or when ``b`` only selects ``a``'s outputs.
    """
    s = b.source
    b_identity = (b.kind == PASSTHROUGH) & np.isnan(b.fill) & (b.center == 0) & (b.scale == 1)
    a_plain = (a.kind[s] == PASSTHROUGH) & (a.center[s] == 0) & (a.scale[s] == 1)
    if not np.all(b_identity | a_plain):
        return None
    fill = np.where(b_identity, a.fill[s], np.where(np.isnan(a.fill[s]), b.fill, a.fill[s]))
    return FeatureMap(a.n_inputs,
                      np.where(b_identity, a.kind[s], b.kind),
                      a.source[s],
                      fill,
                      np.where(b_identity, a.center[s], b.center),
                      np.where(b_identity, a.scale[s], b.scale),
                      np.where(b_identity, a.category[s], b.category))


def _fold_standardisation(maps: list[FeatureMap], glm: LinearModel) -> tuple[list[FeatureMap], LinearModel]:
    """Move ``(x - center) / scale`` of the last map into the GLM where that stays exact to rtol 1e-6."""
    last = maps[-1]
    scaled = (last.kind == PASSTHROUGH) & ((last.center != 0) | (last.scale != 1))
    ratio = np.abs(last.center) / np.abs(last.scale)
    if not scaled.any() or np.any(ratio[scaled] > _MAX_FOLD_RATIO):
        return maps, glm
    coef = glm.coef / np.where(scaled, last.scale, 1.0)[:, None]
    intercept = glm.intercept - (np.where(scaled, last.center, 0.0) @ coef)
    folded = FeatureMap(last.n_inputs, last.kind, last.source, last.fill,
                        np.where(scaled, 0.0, last.center), np.where(scaled, 1.0, last.scale), last.category)
    is_identity = (folded.n_outputs == folded.n_inputs and np.array_equal(folded.source, np.arange(folded.n_inputs))
                   and np.all(folded.kind == PASSTHROUGH) and np.all(np.isnan(folded.fill)))
    rest = maps[:-1] if is_identity else maps[:-1] + [folded]
    return rest, LinearModel(coef, intercept, glm.link)  # float64 only (see convert)


# ---------------------------------------------------------------------------------- estimators
def _estimator(est, n_features: int):
    """(IR estimator, task, classes, extra metadata, categorical inputs) of a final estimator."""
    name = type(est).__name__
    if _n_features_in(est) != n_features:
        raise _unsupported(est, f"takes {_n_features_in(est)} features but preprocessing gives {n_features}")
    if name in _LINEAR_REGRESSORS or name in _GLM_REGRESSORS:
        return _linear_regressor(est), "regression", None, {}, {}
    if name in _LINEAR_CLASSIFIERS:
        return (*_linear_classifier(est), {})
    if name == "OneVsRestClassifier":
        return (*_one_vs_rest(est), {})
    if name in _SKTREE_MODELS:
        return _forest(est), _task(est), _classes(est), {}, {}
    decision = {"decision": _DECISIONS[name]} if name in _DECISIONS else {}
    if name in ("GradientBoostingClassifier", "GradientBoostingRegressor"):
        return _gradient_boosting(est), _task(est), _classes(est), decision, {}
    if name in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"):
        ens, cats = _hist_gradient_boosting(est)
        return ens, _task(est), _classes(est), decision, cats
    raise _unsupported(est)


def _task(est) -> str:
    return "classification" if hasattr(est, "classes_") else "regression"


def _classes(est):
    return list(est.classes_) if hasattr(est, "classes_") else None


def _glm(est, coef, intercept, link: str) -> LinearModel:
    """A LinearModel in sklearn's arithmetic: float32 ``coef_`` (fitted on float32 data) predicts in
    float32 with the intercept added in the dtype numpy promotes ``float32 + intercept_`` to."""
    coef_dtype = np.asarray(est.coef_).dtype
    if coef_dtype not in (np.float32, np.float64):
        raise _unsupported(est, f"coef_ of dtype {coef_dtype}")
    dtype = "float64"
    intercept_dtype = "float64"
    if coef_dtype == np.float32:
        dtype = "float32"
        intercept_dtype = str((np.zeros(1, dtype=np.float32) + est.intercept_).dtype)
        if intercept_dtype not in ("float32", "float64"):
            raise _unsupported(est, f"intercept_ of dtype {intercept_dtype}")
    coef = np.asarray(coef, dtype=np.float64)
    return LinearModel(coef.T if coef.ndim == 2 else coef, np.atleast_1d(np.asarray(intercept, dtype=np.float64)),
                       link, dtype, intercept_dtype)


def _linear_regressor(est) -> LinearModel:
    """``X @ coef_ + intercept_``, for GLMs through their link (log -> exp, identity)."""
    link = "identity"
    if type(est).__name__ in _GLM_REGRESSORS:
        name = type(est._base_loss.link).__name__
        if name not in _GLM_LINKS:
            raise _unsupported(est, f"link {name}; only the log and identity links")
        link = _GLM_LINKS[name]
    return _glm(est, est.coef_, est.intercept_, link)


def _linear_classifier(est):
    """``LinearClassifierMixin`` models: labels from the margins (binary ``> 0``, multiclass first
    argmax), probabilities by the estimator's own rule where it has one."""
    classes = list(est.classes_)
    kind = type(est).__name__
    binary = len(classes) <= 2
    extra: dict = {"decision": "margin"}
    loss = getattr(est, "loss", None) if kind == "SGDClassifier" else None
    binarizer = getattr(est, "_label_binarizer", None)
    if binarizer is not None and str(getattr(binarizer, "y_type_", "")).startswith("multilabel"):
        raise _unsupported(est, "multilabel targets")
    if kind in ("LogisticRegression", "LogisticRegressionCV"):
        # older sklearn versions had multi_class: "ovr" (and "auto" with liblinear) normalise per-class sigmoids
        multi = getattr(est, "multi_class", "deprecated")
        ovr = multi == "ovr" or (multi == "auto" and getattr(est, "solver", "") == "liblinear")
        link = "logistic" if binary else ("ovr_logistic" if ovr else "softmax")
    elif loss == "log_loss":
        link = "logistic" if binary else "ovr_logistic"
    elif loss == "modified_huber":
        link = "modified_huber"
    else:
        # no native probabilities: the sigmoid keeps PREDICT's binary value monotone in the margin,
        # raw margins for multiclass ones; labels come from the margins either way.
        one_margin = np.ndim(est.coef_) == 1 or np.shape(est.coef_)[0] == 1  # (LinearSVC crammer_singer: 2)
        link = "logistic" if len(classes) == 2 and one_margin else "identity"
        extra["native_proba"] = False
    return _glm(est, est.coef_, est.intercept_, link), "classification", classes, extra


def _one_vs_rest(est):
    """One binary linear classifier per class; labels by the first argmax of their margins
    (``_predict_binary`` reads ``decision_function``), probabilities sigmoids normalised, all-zero
    rows kept at 0 (``OneVsRestClassifier.predict_proba``)."""
    inner = est.estimators_
    if getattr(est, "multilabel_", False):
        raise _unsupported(est, "multilabel targets")
    if len(est.classes_) < 2:
        raise _unsupported(est, "fitted on a single class (its predict_proba has 2 columns for 1 class)")
    kinds = set()
    for e in inner:
        kind = type(e).__name__
        if kind not in _LINEAR_CLASSIFIERS or len(e.classes_) != 2 or e.coef_.shape[0] != 1:
            raise _unsupported(est, f"inner estimator {kind}; use a binary linear classifier "
                                    f"({', '.join(_LINEAR_CLASSIFIERS)})")
        kinds.add("log" if kind.startswith("LogisticRegression") or getattr(e, "loss", None) == "log_loss"
                  else getattr(e, "loss", None) if kind == "SGDClassifier" else "none")
    if len(kinds) != 1 or kinds & {"modified_huber"}:
        raise _unsupported(est, f"inner probability rules {sorted(map(str, kinds))}; use one kind of inner "
                                f"estimator, LogisticRegression or SGDClassifier(loss='log_loss') for probabilities")
    coefs = [np.ravel(e.coef_) for e in inner]
    intercepts = [float(np.ravel(e.intercept_)[0]) for e in inner]
    dtypes = {np.asarray(e.coef_).dtype for e in inner}
    if dtypes != {np.dtype(np.float64)}:
        raise _unsupported(est, "inner estimators fitted on float32 data; fit on float64")
    native_proba = kinds == {"log"}
    if len(inner) == 1:
        link = "logistic"
    else:
        link = "ovr_logistic_zero" if native_proba else "identity"
    extra: dict = {"decision": "margin"}
    if not native_proba:
        extra["native_proba"] = False
    glm = LinearModel(np.column_stack(coefs), np.array(intercepts), link)
    return glm, "classification", list(est.classes_), extra


# ---------------------------------------------------------------------------------- sklearn.tree
def _add_sktree(builder: TreeBuilder, tree, value: np.ndarray, output: int = 0) -> None:
    t = tree.tree_
    builder.add_tree(feature=t.feature, threshold=t.threshold, left=t.children_left, right=t.children_right,
                     value=value, default_left=t.missing_go_to_left.astype(bool), missing=MISSING_NAN,
                     output=output)


def _forest(est) -> TreeEnsemble:
    """DecisionTree / RandomForest / ExtraTrees: one tree or the mean of per-tree outputs.

    Classifiers output per-class fractions (one column when fitted on a single class, as sklearn's
    ``predict_proba``); multi-output regressors (``y`` of shape (n, k)) output k values per row,
    ``tree_.value[:, :, 0]`` in sklearn's own order.
    """
    trees = est.estimators_ if hasattr(est, "estimators_") else [est]
    n_targets = int(getattr(est, "n_outputs_", 1))
    is_classifier = hasattr(est, "classes_")
    if is_classifier and n_targets != 1:
        raise _unsupported(est, "multi-output (multilabel) classification targets")
    width = len(est.classes_) if is_classifier else n_targets
    builder = TreeBuilder(est.n_features_in_, n_outputs=width, value_width=width)
    for tree in trees:
        # per-tree predict_proba is tree_.value (fractions since sklearn 1.4), unnormalised
        value = tree.tree_.value[:, 0, :width] if is_classifier else tree.tree_.value[:, :, 0]
        _add_sktree(builder, tree, value)
    return builder.build(cmp="<=", threshold_dtype="float32", aggregation="mean" if len(trees) > 1 else "sum")


def _gradient_boosting(est) -> TreeEnsemble:
    from sklearn.dummy import DummyClassifier, DummyRegressor

    init = est.init_
    if not (isinstance(init, str) and init == "zero") and not isinstance(init, (DummyClassifier, DummyRegressor)):
        raise _unsupported(est, f"init={type(init).__name__}; only the default (constant) init or 'zero'")
    # a constant init: its raw prediction on any row is the base score
    base = est._raw_predict_init(np.zeros((1, est.n_features_in_)))[0]
    loss = type(est._loss).__name__
    post, scale = "identity", 1.0
    if loss == "HalfBinomialLoss":
        post = "sigmoid"
    elif loss == "HalfMultinomialLoss":
        post = "softmax"
    elif loss == "ExponentialLoss":
        post, scale = "sigmoid", 2.0  # predict_proba = expit(2 * raw); doubling is exact
    elif hasattr(est, "classes_"):
        raise _unsupported(est, f"loss {loss}")
    n_stages, k = est.estimators_.shape
    builder = TreeBuilder(est.n_features_in_, n_outputs=k, value_width=1)
    for stage in range(n_stages):
        for out in range(k):
            tree = est.estimators_[stage, out]
            _add_sktree(builder, tree, scale * (est.learning_rate * tree.tree_.value[:, 0, 0]), output=out)
    return builder.build(cmp="<=", threshold_dtype="float32", base_score=scale * np.asarray(base),
                         post_transform=post)


# ---------------------------------------------------------------------------------- HistGB
_HIST_LINKS = {"IdentityLink": "identity", "LogLink": "exp", "LogitLink": "sigmoid", "MultinomialLogit": "softmax"}


def _hist_gradient_boosting(est) -> tuple[TreeEnsemble, dict[int, tuple]]:
    link = type(est._loss.link).__name__
    if hasattr(est, "classes_") and len(est.classes_) == 1:
        raise _unsupported(est, "fitted on a single class: its predict_proba has two columns for one class "
                                "and its predict can index past classes_; fit it on two or more classes")
    if link not in _HIST_LINKS:
        raise _unsupported(est, f"loss link {link}")
    n_in = est.n_features_in_
    # the internal preprocessor puts categorical columns first: model column -> input column
    to_input = np.arange(n_in)
    categories: dict[int, tuple] = {}
    if est._preprocessor is not None:
        is_cat = np.asarray(est.is_categorical_, dtype=bool)
        to_input = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
        encoder = est._preprocessor.named_transformers_["encoder"]
        for col, cats in zip(np.flatnonzero(is_cat), encoder.categories_):
            cats = [c for c in cats if not (isinstance(c, (float, np.floating)) and np.isnan(c))]
            if all(isinstance(c, str) for c in cats):
                categories[int(col)] = tuple(cats)
            elif all(isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool) for c in cats):
                # numeric categories (indices / mask / 'from_dtype' of numbers): the encoder matches values
                # by float equality (-0.0 is 0.0); any other value, negative or not, is unknown -> NaN
                categories[int(col)] = tuple(float(c) for c in cats)
            else:
                raise _unsupported(est, f"categorical feature {col} mixes strings and numbers")
    k = est.n_trees_per_iteration_
    builder = TreeBuilder(n_in, n_outputs=k, value_width=1)
    for iteration in est._predictors:
        for out, predictor in enumerate(iteration):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            is_cat = nodes["is_categorical"].astype(bool) & ~leaf
            bitsets = predictor.raw_left_cat_bitsets
            cat_sets = [None] * len(nodes)
            for i in np.flatnonzero(is_cat):
                n_known = len(categories[int(to_input[nodes["feature_idx"][i]])])
                words = bitsets[nodes["bitset_idx"][i]]
                cat_sets[i] = [c for c in range(n_known) if (int(words[c // 32]) >> (c % 32)) & 1]
            builder.add_tree(
                feature=np.where(leaf, -1, to_input[nodes["feature_idx"]]),
                threshold=np.where(is_cat, 0.0, nodes["num_threshold"]),
                left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
                right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
                value=nodes["value"],
                default_left=nodes["missing_go_to_left"].astype(bool),
                missing=MISSING_NAN,
                categories=cat_sets if is_cat.any() else None,
                output=out,
            )
    ens = builder.build(cmp="<=", threshold_dtype="float64",
                        base_score=np.ravel(est._baseline_prediction), post_transform=_HIST_LINKS[link])
    return ens, categories
