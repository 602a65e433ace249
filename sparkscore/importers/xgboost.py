"""XGBoost ``Booster`` / ``XGBClassifier`` / ``XGBRegressor`` (and saved JSON / UBJ files) -> IR.

Read from ``save_raw("json")``: ``split_conditions`` are the exact float32 thresholds (and leaf
values).  XGBoost casts inputs to float32, goes left iff ``x < threshold``, sends NaN to the
default child, and accumulates its float32 output from ``float32(base margin)`` plus each leaf in
tree order.  Categorical nodes send the categories *in* the node's set to the RIGHT child; the
IR sends its set left, so those nodes get their children (and default side) swapped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, UnsupportedModelError
from sparkscore.importers.common import make_signature, metadata, resolve_names
from sparkscore.ir.model import Model
from sparkscore.ir.trees import MISSING_NAN, TreeBuilder

_IDENTITY = ("reg:squarederror", "reg:pseudohubererror", "reg:absoluteerror")
_LOG_LINK = ("count:poisson", "reg:gamma", "reg:tweedie")
_LOGIT = ("binary:logistic", "reg:logistic")
_MULTI = ("multi:softprob", "multi:softmax")
_SUPPORTED = ", ".join(_IDENTITY + _LOG_LINK + _LOGIT + _MULTI)


def convert(native, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a fitted ``xgboost.Booster`` or ``XGBModel``.

    Sklearn wrappers are converted with the trees their ``predict`` uses (``best_iteration``
    after early stopping); a bare ``Booster`` with all its trees, as ``Booster.predict`` does.
    """
    import xgboost

    is_wrapper = hasattr(native, "get_booster")
    booster = native.get_booster() if is_wrapper else native
    if not isinstance(booster, xgboost.Booster):
        raise UnsupportedModelError(f"cannot convert {type(native).__qualname__}: supported are xgboost.Booster, "
                                    "XGBClassifier and XGBRegressor")
    doc = json.loads(bytes(booster.save_raw("json")))
    classes = getattr(native, "classes_", None) if is_wrapper else None
    return _to_model(doc, feature_names, classes, use_best_iteration=is_wrapper,
                     meta=metadata("xgboost", native, xgboost.__version__))


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


def _to_model(doc: dict, feature_names, classes, *, use_best_iteration: bool, meta: dict) -> Model:
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
    if gbm.get("name") != "gbtree":
        raise UnsupportedModelError(f"{label}: booster {gbm.get('name')!r} is not supported; use booster='gbtree'")
    if num_target > 1:
        raise UnsupportedModelError(f"{label}: multi-target models are not supported; fit one model per target")
    model = gbm["model"]
    trees = model["trees"]
    tree_info = model["tree_info"]
    best = learner.get("attributes", {}).get("best_iteration")
    if use_best_iteration and best is not None:
        per_iteration = max(num_class, 1) * int(model["gbtree_model_param"].get("num_parallel_tree", 1))
        indptr = model.get("iteration_indptr") or range(0, len(trees) + per_iteration, per_iteration)
        n_trees = int(indptr[int(best) + 1])
        trees, tree_info = trees[:n_trees], tree_info[:n_trees]

    task, transform, n_outputs, margin = _objective(objective, num_class, base, label)
    if task == "classification" and classes is None:
        classes = tuple(range(max(num_class, 2)))
    builder = TreeBuilder(n_features, n_outputs=n_outputs)
    for tree, output in zip(trees, tree_info):
        _add_tree(builder, tree, int(output), label)
    ensemble = builder.build(cmp="<", threshold_dtype="float32", accumulate_dtype="float32",
                             base_score=margin, post_transform=transform, cat_negative_before_trunc=True)
    names = resolve_names(n_features, learner.get("feature_names") or None, feature_names, label)
    categories = _categories(learner.get("feature_types") or [], model.get("cats") or {}, label)
    signature = make_signature(names, task, classes, categories)
    return Model(ensemble, signature, task=task, classes=tuple(classes) if classes is not None else None,
                 metadata=meta)


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
            return "regression", "exp", 1, [float(np.log(b))]
        if objective in _LOGIT:  # ProbToMargin: -logf(1 / base_score - 1), in float32
            margin = -np.log(f32(1.0) / b - f32(1.0))
            return ("classification" if objective == "binary:logistic" else "regression"), "sigmoid", 1, [float(margin)]
    raise UnsupportedModelError(f"{label}: objective {objective!r} is not supported; supported are {_SUPPORTED}")


def _add_tree(builder: TreeBuilder, tree: dict, output: int, label: str) -> None:
    if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
        raise UnsupportedModelError(f"{label}: vector-leaf trees (multi_strategy='multi_output_tree') are not "
                                    "supported; use multi_strategy='one_output_per_tree'")
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    feature = np.where(left < 0, -1, np.asarray(tree["split_indices"], dtype=np.int64))
    # split_conditions: float32 thresholds on internal nodes, float32 leaf values on leaves
    cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32).astype(np.float64)
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
    builder.add_tree(feature=feature, threshold=cond, left=left, right=right, value=cond,
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
