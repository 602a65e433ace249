"""XGBoost ``Booster`` / ``XGBClassifier`` / ``XGBRegressor`` (and saved JSON / UBJ files) -> IR.

Read from ``save_raw("json")``: ``split_conditions`` are the exact float32 thresholds (and leaf
values).  XGBoost casts inputs to float32, goes left iff ``x < threshold``, sends NaN to the
default child, and accumulates its float32 output from ``float32(base margin)`` plus each leaf in
tree order.  Categorical nodes send the categories *in* the node's set to the RIGHT child; the
IR sends its set left, so those nodes get their children (and default side) swapped.

Output transforms run on the float32 margin in float32, as XGBoost's do (the IR's float32
ensembles: :func:`sparkscore.compiler.reference.tree_link`), so probabilities are bit-equal.

``missing``: XGBoost treats a value as missing when ``float(x) == float(missing)`` (or NaN) while
it builds the DMatrix / inplace-predict batch; it is a property of the *data*, not of the model,
and no model file records it.  The sklearn wrappers carry it (``XGBModel.missing``) and use it in
``predict``: it is honoured (``TreeEnsemble.missing_value``).  A bare ``Booster`` (and a file)
knows nothing about it; it converts as ``Booster.predict(DMatrix(X))`` scores, with NaN as the
only missing value.

``dart`` boosters predict with every tree, each scaled by its tree's ``weight_drop`` in float32
(no dropout at inference), held in the IR as pre-scaled float32 leaf values.  The two native paths
scale differently: ``Booster.predict(DMatrix)`` adds ``leaf * w``; ``inplace_predict`` (what the
sklearn wrappers' ``predict`` runs) adds ``(float32(base + leaf) - base) * w``.  Wrappers convert
with the second, a bare ``Booster`` with the first.

``gblinear`` boosters become a ``LinearModel`` with ``accumulate="float32_sequential"``: XGBoost's
``PredValue`` sums ``bias + base_margin`` and then each present feature's ``x * w`` in float32, in
feature order, skipping missing cells (NaN, or the wrapper's ``missing``, which its ``predict``
applies through a DMatrix).  Outputs are bit-equal to ``Booster.predict`` and the wrappers'
``predict`` / ``predict_proba``.  They run on the reference and numba (torch declines) and stay out
of SQL inlining (float32 GLMs do).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, UnsupportedModelError
from sparkscore.importers.common import make_signature, metadata, resolve_names
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.model import Model
from sparkscore.ir.trees import MISSING_NAN, TreeBuilder

#: objectives whose prediction is the raw margin (rankers and logitraw score, they do not transform)
_IDENTITY = ("reg:squarederror", "reg:pseudohubererror", "reg:absoluteerror", "reg:squaredlogerror",
             "reg:quantileerror", "binary:logitraw", "rank:pairwise", "rank:ndcg", "rank:map")
_LOG_LINK = ("count:poisson", "reg:gamma", "reg:tweedie", "survival:cox")
_LOGIT = ("binary:logistic", "reg:logistic")
_MULTI = ("multi:softprob", "multi:softmax")
_SUPPORTED = ", ".join(_IDENTITY + _LOG_LINK + _LOGIT + _MULTI + ("binary:hinge", "survival:aft"))


def convert(native, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a fitted ``xgboost.Booster`` or ``XGBModel``.

    Sklearn wrappers are converted with the trees their ``predict`` uses (``best_iteration``
    after early stopping) and their ``missing`` value; a bare ``Booster`` with all its trees and
    NaN as the only missing value, as ``Booster.predict(DMatrix(X))`` does.
    """
    import xgboost

    is_wrapper = hasattr(native, "get_booster")
    booster = native.get_booster() if is_wrapper else native
    if not isinstance(booster, xgboost.Booster):
        raise UnsupportedModelError(f"cannot convert {type(native).__qualname__}: supported are xgboost.Booster, "
                                    "XGBClassifier and XGBRegressor")
    doc = json.loads(bytes(booster.save_raw("json")))
    classes = getattr(native, "classes_", None) if is_wrapper else None
    meta = metadata("xgboost", native, xgboost.__version__)
    missing = _missing(getattr(native, "missing", None) if is_wrapper else None, f"xgboost {meta['name']}")
    return _to_model(doc, feature_names, classes, use_best_iteration=is_wrapper, meta=meta, missing=missing,
                     inplace=is_wrapper)


def _missing(value, label: str) -> list[float]:
    """The wrapper's ``missing`` as ``TreeEnsemble.missing_value`` ([] when it is NaN / None)."""
    if value is None:
        return []
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UnsupportedModelError(f"{label}: missing={value!r} is not a number; set missing to a float "
                                    "(np.nan by default)") from None
    return [] if np.isnan(value) else [value]


def load_file(path) -> Model:
    """Load an XGBoost model file (JSON or UBJ, as ``save_model`` writes it) with XGBoost's own loader."""
    import xgboost

    try:
        booster = xgboost.Booster(model_file=str(Path(path)))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise IntegrityError(f"{path}: not an XGBoost model file ({first}); "
                             "pass a save_model .json or .ubj file") from None
    return convert(booster)


def _to_model(doc: dict, feature_names, classes, *, use_best_iteration: bool, meta: dict,
              missing: Sequence[float] = (), inplace: bool = False) -> Model:
    label = f"xgboost {meta['name']}"
    try:
        learner = doc["learner"]
        params = learner["learner_model_param"]
        objective = learner["objective"]["name"]
        gbm = learner["gradient_booster"]
        n_features = int(params["num_feature"])
        num_class = int(params.get("num_class", 0))
        num_target = int(params.get("num_target", 1))
        base = _floats(params["base_score"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{label}: malformed XGBoost model JSON ({type(exc).__name__}: {exc}); re-save it "
                             "with save_model") from None
    booster_name = gbm.get("name")
    if booster_name == "gblinear":
        return _gblinear(gbm, learner, objective, n_features, num_class, num_target, base, feature_names, classes,
                         meta=meta, missing=missing, label=label)
    if booster_name not in ("gbtree", "dart"):
        raise UnsupportedModelError(f"{label}: booster {booster_name!r} is not supported; use booster='gbtree' "
                                    "or 'dart'")
    if num_target > 1:
        what = (f"objective {objective!r} with {num_target} quantile_alpha values" if objective == "reg:quantileerror"
                else f"multi-target models ({num_target} targets)")
        raise UnsupportedModelError(f"{label}: {what} are not supported; fit one model per "
                                    f"{'quantile' if objective == 'reg:quantileerror' else 'target'}")
    model = gbm["gbtree"]["model"] if booster_name == "dart" else gbm["model"]
    trees = model["trees"]
    tree_info = model["tree_info"]
    weights = [float(w) for w in gbm.get("weight_drop", [])] if booster_name == "dart" else [1.0] * len(trees)
    if len(weights) != len(trees):
        raise IntegrityError(f"{label}: {len(weights)} dart weights for {len(trees)} trees; re-save the model")
    best = learner.get("attributes", {}).get("best_iteration")
    if use_best_iteration and best is not None:
        per_iteration = max(num_class, 1) * int(model["gbtree_model_param"].get("num_parallel_tree", 1))
        indptr = model.get("iteration_indptr") or range(0, len(trees) + per_iteration, per_iteration)
        n_trees = int(indptr[int(best) + 1])
        trees, tree_info, weights = trees[:n_trees], tree_info[:n_trees], weights[:n_trees]

    task, transform, n_outputs, margin = _objective(objective, num_class, base, label)
    if objective == "binary:logitraw" and classes is not None:
        # XGBClassifier: predict_proba is [1 - margin, margin] and predict is margin > 0.5, as here
        task = "classification"
    if task == "classification" and classes is None:
        classes = tuple(range(max(num_class, 2)))
    builder = TreeBuilder(n_features, n_outputs=n_outputs)
    for tree, output, weight in zip(trees, tree_info, weights):
        dart = None if booster_name == "gbtree" else (weight, float(margin[int(output)]) if inplace else None)
        _add_tree(builder, tree, int(output), label, dart=dart)
    ensemble = builder.build(cmp="<", threshold_dtype="float32", accumulate_dtype="float32",
                             base_score=margin, post_transform=transform, cat_negative_before_trunc=True,
                             missing_value=np.asarray(missing, dtype=np.float64))
    names = resolve_names(n_features, learner.get("feature_names") or None, feature_names, label)
    categories = _categories(learner.get("feature_types") or [], model.get("cats") or {}, label)
    signature = make_signature(names, task, classes, categories)
    # multi:softmax labels are XGBoost's argmax of the float32 margins (first on ties), not of the
    # probabilities, which tie where expf rounds margins an ulp apart to the same float32
    decision = "margin" if objective == "multi:softmax" else "proba"
    return Model(ensemble, signature, task=task, classes=tuple(classes) if classes is not None else None,
                 metadata=meta, decision=decision)


#: XGBoost's float32 transforms as LinearModel links (gblinear margins are float32, like its trees')
_LINEAR_LINKS = {"identity": "identity", "sigmoid": "logistic32", "softmax": "softmax32", "exp": "exp32"}


def _gblinear(gbm: dict, learner: dict, objective: str, n_features: int, num_class: int, num_target: int,
              base: list[float], feature_names, classes, *, meta: dict, missing: Sequence[float],
              label: str) -> Model:
    """A gblinear booster as a ``float32_sequential`` LinearModel (XGBoost's ``PredValue``).

    ``weights`` is ``(num_feature + 1) x groups`` float32, row-major, the bias row last.  Each output
    starts from ``float32(bias + base_margin)`` (the base score in margin space, as for trees, but the
    *first* base score for every output: multiclass too, as XGBoost's gblinear does), then
    adds ``x * w`` of each present feature in float32.  The sklearn wrappers predict gblinear through
    a ``DMatrix(X, missing=self.missing)`` (no inplace path), so the wrapper's ``missing`` applies.
    """
    if num_target > 1:
        raise UnsupportedModelError(f"{label}: gblinear with {num_target} targets is not supported; fit one "
                                    "model per target")
    task, transform, n_outputs, margin = _objective(objective, num_class, base, label)
    link = _LINEAR_LINKS.get(transform)
    if link is None:
        raise UnsupportedModelError(f"{label}: objective {objective!r} with booster 'gblinear' is not supported; "
                                    "use booster='gbtree'")
    try:
        weights = np.asarray(gbm["model"]["weights"], dtype=np.float64).astype(np.float32)
        weights = weights.reshape(n_features + 1, n_outputs)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{label}: malformed gblinear weights ({type(exc).__name__}: {exc}); re-save the "
                             "model with save_model") from None
    if objective == "binary:logitraw" and classes is not None:
        task = "classification"
    if task == "classification" and classes is None:
        classes = tuple(range(max(num_class, 2)))
    with np.errstate(over="ignore", invalid="ignore"):
        # gblinear's PredictBatchInternal adds base_score(0) to every group: a multiclass model's
        # per-class base scores beyond the first are not used (measured: XGBoost 3.x)
        intercept = weights[n_features] + np.float32(margin[0])
    estimator = LinearModel(weights[:n_features].astype(np.float64), intercept.astype(np.float64), link=link,
                            dtype="float32", intercept_dtype="float32", accumulate="float32_sequential",
                            missing_value=np.asarray(missing, dtype=np.float64))
    names = resolve_names(n_features, learner.get("feature_names") or None, feature_names, label)
    signature = make_signature(names, task, classes, {})
    decision = "margin" if objective == "multi:softmax" else "proba"
    return Model(estimator, signature, task=task, classes=tuple(classes) if classes is not None else None,
                 metadata=meta, decision=decision)


def _floats(text) -> list[float]:
    """base_score as stored: '5E-1' (XGBoost < 3) or '[5E-1]' / '[a,b,c]' (one per output)."""
    return [float(v) for v in str(text).strip("[]").split(",")]


def _objective(objective: str, num_class: int, base: list[float], label: str):
    """(task, post_transform, n_outputs, base margin as float32-exact float64s)."""
    f32 = np.float32
    if objective in _MULTI:
        if len(base) not in (1, num_class):
            raise IntegrityError(f"{label}: {len(base)} base scores for {num_class} classes; re-save the model")
        return "classification", "softmax", num_class, np.asarray(np.broadcast_to(np.asarray(base, f32), (num_class,)),
                                                                   np.float64)
    if len(base) != 1:
        raise UnsupportedModelError(f"{label}: vector base_score with objective {objective!r} is not supported")
    b = f32(base[0])
    with np.errstate(divide="ignore"):
        if objective in _IDENTITY:
            return "regression", "identity", 1, [float(b)]
        if objective in _LOG_LINK:  # ProbToMargin: logf(base_score)
            return "regression", "exp", 1, [float(_logf(b))]
        if objective == "survival:aft":  # PredTransform calls the double exp; ProbToMargin logf
            return "regression", "exp_double", 1, [float(_logf(b))]
        if objective == "binary:hinge":  # predicts 1.0 if margin > 0 else 0.0; no base transform
            return "classification", "hinge", 1, [float(b)]
        if objective in _LOGIT:  # ProbToMargin: -logf(1 / base_score - 1), in float32
            margin = -_logf(f32(1.0) / b - f32(1.0))
            return ("classification" if objective == "binary:logistic" else "regression"), "sigmoid", 1, [float(margin)]
    raise UnsupportedModelError(f"{label}: objective {objective!r} is not supported; supported are {_SUPPORTED}")


def _logf(x: np.float32) -> np.float32:
    """libm's ``logf``, as XGBoost's ProbToMargin calls it (numpy's float32 log can differ by an ulp)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("m")
    if name is None:  # no C math library to ask: the correctly rounded value
        return np.float32(np.log(np.float64(x)))
    logf = ctypes.CDLL(name).logf
    logf.restype, logf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.float32(logf(float(x)))


def _add_tree(builder: TreeBuilder, tree: dict, output: int, label: str,
              dart: tuple[float, float | None] | None = None) -> None:
    """One XGBoost tree; ``dart``: ``(weight_drop, base margin of the inplace path or None)``."""
    if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
        raise UnsupportedModelError(f"{label}: vector-leaf trees (multi_strategy='multi_output_tree') are not "
                                    "supported; use multi_strategy='one_output_per_tree'")
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    feature = np.where(left < 0, -1, np.asarray(tree["split_indices"], dtype=np.int64))
    # split_conditions: float32 thresholds on internal nodes, float32 leaf values on leaves
    cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32).astype(np.float64)
    if dart is not None:
        weight, base = dart
        leaf32 = cond.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            if base is not None:  # inplace_predict: the tree's output starts from the base margin
                leaf32 = (leaf32 + np.float32(base)) - np.float32(base)
            scaled = (leaf32 * np.float32(weight)).astype(np.float64)
        value = np.where(left < 0, scaled, cond)
    else:
        value = cond
    default_left = np.asarray(tree["default_left"], dtype=bool)
    categories: list = [None] * len(left)
    split_type = tree.get("split_type") or [0] * len(left)
    for i, node in enumerate(tree.get("categories_nodes", [])):
        beg, size = tree["categories_segments"][i], tree["categories_sizes"][i]
        categories[node] = tree["categories"][beg:beg + size]
    for node in np.nonzero(np.asarray(split_type) == 1)[0]:
        if categories[node] is None:
            categories[node] = []
        # XGBoost: in set -> right; IR: in set -> left
        left[node], right[node] = right[node], left[node]
        default_left[node] = not default_left[node]
    builder.add_tree(feature=feature, threshold=cond, left=left, right=right, value=value,
                     default_left=default_left, missing=MISSING_NAN,
                     categories=categories if any(c is not None for c in categories) else None, output=output)


def _categories(feature_types: list, cats: dict, label: str) -> dict[int, tuple]:
    """Categories XGBoost (>= 3.1) stored for categorical columns fitted from a DataFrame."""
    enc = cats.get("enc") or []
    out: dict[int, tuple] = {}
    for i, ftype in enumerate(feature_types):
        if ftype != "c" or i >= len(enc) or not enc[i].get("values"):
            continue
        values, offsets = enc[i]["values"], enc[i].get("offsets") or []
        if offsets:  # strings: UTF-8 bytes of every category, delimited by offsets
            data = bytes(values)
            out[i] = tuple(data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:]))
        else:
            out[i] = tuple(values)
    return out
