"""CatBoost ``CatBoost`` / ``CatBoostClassifier`` / ``CatBoostRegressor`` (and their JSON / .cbm files) -> IR.

Everything is read from CatBoost's JSON export (``save_model(path, format="json")``): a fitted
object is exported to a temporary file, a ``.json`` file is parsed directly (no catboost needed),
a ``.cbm`` file is loaded by catboost itself and exported.  Nothing is unpickled.

Semantics (CatBoost 1.2, checked against ``predict(prediction_type="RawFormulaVal")`` on crafted
models, tests/importers/test_catboost.py):

* Inputs are cast to float32 and a split sends a row to its "1" side iff ``float32(x) > border``
  (borders are float32).  In the IR that is ``cmp="<="`` with float32 thresholds: left is the
  "0" side, so ``x == border`` goes left and ``nextafter(border, inf)`` right.
* NaN: CatBoost replaces it before comparing only when the feature ``has_nans`` in training and its
  ``nan_value_treatment`` is ``AsTrue`` (``nan_mode="Max"``): then it goes to the "1" side of every
  split.  Otherwise (``AsFalse`` from ``nan_mode="Min"``, ``AsIs`` for features without NaNs and
  ``nan_mode="Forbidden"``) ``NaN > border`` is false and it goes to the "0" side.  ``-inf`` is
  never greater, ``+inf`` (and doubles that round to float32 inf) always.
* Oblivious trees (``grow_policy="SymmetricTree"``, the default) test one split per level; split
  ``j`` of the JSON is bit ``j`` of the leaf index.  The IR has no oblivious form (it would only
  save memory: the routing is the same), so each becomes a *complete* binary tree of depth ``D``
  in heap order, root testing split ``D-1`` and the last level split 0: leaf ``p`` of the heap is
  leaf index ``p``.  Complete trees are exactly what the ``ptt`` (perfect tree traversal)
  strategy runs without padding.  ``Depthwise`` / ``Lossguide`` trees ("trees" in the JSON) map
  node by node ("left" = the "0" side).
* Output: ``scale * sum(leaves) + bias`` per dimension (``scale_and_bias``), leaves float64
  (``MultiRMSE``: one dimension per target, a ``double[]`` prediction).  The
  scale is folded into the leaf values (exact when it is 1, the default; otherwise within 1 ulp
  per tree, far below rtol 1e-6), the bias is the base score.  Multiclass leaves are
  ``leaf_values[leaf * k + class]``.
* Labels: binary ``Logloss`` predicts ``class_names[1]`` iff the raw value is ``> 0`` (so ``1e-300``
  -> class 1 although its probability rounds to 0.5), multiclass the first argmax of the raw values:
  both are the IR's ``decision="margin"``.  A probability threshold other than 0.5
  (``set_probability_threshold``) is refused.

Refused (``UnsupportedModelError``, naming the model and what to change): categorical features
(one-hot and CTR splits compare CatBoost's 32-bit hashes of the category strings, which the model
does not store), text and embedding features, and losses whose prediction is not the raw sum /
sigmoid / softmax (Poisson, Tweedie, RMSEWithUncertainty, MultiClassOneVsAll, ranking, ...).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, SparkscoreError, UnsupportedModelError
from sparkscore.importers.common import make_signature, metadata, resolve_names
from sparkscore.ir.model import Model
from sparkscore.ir.trees import MISSING_NAN, TreeBuilder

#: losses whose ``predict`` is the raw formula value (``CatBoostRegressor.predict`` returns it as is)
_IDENTITY = ("RMSE", "MAE", "Quantile", "MAPE", "Huber", "Lq", "Expectile", "LogCosh", "LogLinQuantile")
#: multi-target regression: one raw sum per target (``predict`` returns them as an (n, d) array)
_MULTI_TARGET = ("MultiRMSE",)
_SUPPORTED = ", ".join(_IDENTITY + _MULTI_TARGET + ("Logloss", "MultiClass"))
#: feature kinds of ``features_info`` besides float features; any present makes the model refused
_OTHER_FEATURES = {
    "categorical_features": "categorical feature",
    "text_features": "text feature",
    "embedding_features": "embedding feature",
}


def convert(native, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a fitted ``catboost.CatBoost`` (``CatBoostClassifier``, ``CatBoostRegressor``) object.

    The object is exported with its own ``save_model(format="json")`` so that the fitted path and the
    JSON path read the same document (tests compare the two).
    """
    import catboost

    if not isinstance(native, catboost.CatBoost):
        raise UnsupportedModelError(f"cannot convert {type(native).__qualname__}: supported are catboost.CatBoost, "
                                    "CatBoostClassifier and CatBoostRegressor")
    if not native.is_fitted():
        raise UnsupportedModelError(f"catboost {type(native).__name__} is not fitted; call fit() before converting")
    meta = metadata("catboost", native, catboost.__version__)
    _refuse_text_and_embeddings(native, f"catboost {meta['name']}")
    return from_json(_export(native, catboost.CatBoostError), feature_names, meta=meta)


def _refuse_text_and_embeddings(native, label: str) -> None:
    """Checked on the object: CatBoost cannot export such models as JSON at all."""
    names = list(native.feature_names_ or [])
    for getter, what in (("get_text_feature_indices", "text feature"),
                         ("get_embedding_feature_indices", "embedding feature")):
        indices = list(getattr(native, getter, lambda: [])() or [])
        if indices:
            column = names[indices[0]] if indices[0] < len(names) else f"#{indices[0]}"
            raise UnsupportedModelError(f"{label}: {what} {column!r} is not supported (CatBoost scores it from "
                                        "tokenizers / estimators the model cannot reproduce exactly); turn it into "
                                        "numeric columns upstream and refit")


def _export(native, error: type) -> dict:
    with tempfile.TemporaryDirectory(prefix="sparkscore-catboost-") as tmp:
        path = Path(tmp) / "model.json"
        try:
            native.save_model(str(path), format="json")
        except error as exc:  # a model kind CatBoost's JSON exporter does not cover
            first = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise UnsupportedModelError(f"catboost {type(native).__name__}: cannot be exported as JSON ({first}); "
                                        "refit with numeric features only") from None
        return json.loads(path.read_text(encoding="utf-8"))


def load_file(path, feature_names: Sequence[str] | None = None) -> Model:
    """A CatBoost model file: JSON (parsed here) or the .cbm binary (read by catboost's own loader)."""
    path = Path(path)
    if is_catboost_json(path):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntegrityError(f"{path}: unreadable CatBoost JSON ({exc}); re-export it with "
                                 "save_model(path, format='json')") from None
        return from_json(doc, feature_names, meta=_file_meta(doc, path))
    import catboost

    model = catboost.CatBoost()
    try:
        model.load_model(str(path))
    except catboost.CatBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise IntegrityError(f"{path}: not a CatBoost model file ({first}); pass a save_model .cbm or .json "
                             "file") from None
    return convert(model, feature_names)


def is_catboost_json(path) -> bool:
    """Whether ``path`` is a file that looks like CatBoost's JSON export (read only its head)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    text = head.lstrip()
    return text.startswith(b"{") and any(key in head for key in (b'"oblivious_trees"', b'"features_info"',
                                                                 b'"scale_and_bias"'))


def is_catboost_file(path) -> bool:
    """A CatBoost JSON export, or a ``.cbm`` file (CatBoost's binary format)."""
    path = Path(path)
    return is_catboost_json(path) or (path.is_file() and path.suffix.lower() == ".cbm")


def _file_meta(doc: dict, path: Path) -> dict:
    version = str(doc.get("model_info", {}).get("catboost_version_info", ""))
    tag = version.split("tags/v", 1)[1].split()[0] if "tags/v" in version else "unknown"
    return {"source": "catboost", "library_version": tag, "class": "catboost.CatBoost", "name": "CatBoost",
            "file": path.name}


def from_json(doc: dict, feature_names: Sequence[str] | None = None, *, meta: dict | None = None) -> Model:
    """The IR of a CatBoost JSON document (``save_model(format="json")``)."""
    meta = dict(meta or {"source": "catboost", "library_version": "unknown", "class": "catboost.CatBoost",
                         "name": "CatBoost"})
    label = f"catboost {meta['name']}"
    try:
        info = doc["model_info"]
        features_info = doc["features_info"]
        float_features = features_info.get("float_features") or []
        scale, bias = doc.get("scale_and_bias", [1.0, [0.0]])
        scale = float(scale)
        bias = [float(b) for b in np.atleast_1d(np.asarray(bias, dtype=np.float64))]
        loss = _loss(info)
        threshold = info.get("binclass_probability_threshold")
        threshold = None if threshold is None else float(threshold)
        floats = {int(f["feature_index"]): f for f in float_features}
        names_by_flat = {int(f["flat_feature_index"]): str(f.get("feature_id") or "") for f in float_features}
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{label}: malformed CatBoost model JSON ({type(exc).__name__}: {exc}); re-export it "
                             "with save_model(path, format='json')") from None
    _refuse_other_features(features_info, label)
    if doc.get("ctr_data"):
        raise UnsupportedModelError(f"{label}: the model uses CTR statistics of categorical features, which sparkscore "
                                    "cannot compute; one-hot encode the categorical columns upstream and refit")
    task, transform, classes = _task(loss, info, label)
    if threshold is not None and threshold != 0.5:
        raise UnsupportedModelError(f"{label}: probability threshold {threshold} (set_probability_threshold) changes "
                                    "its predicted labels and is not supported; call set_probability_threshold(0.5) "
                                    "and pick the label from PREDICT_PROBA")

    n_features = max(names_by_flat, default=-1) + 1
    if sorted(names_by_flat) != list(range(n_features)):
        raise IntegrityError(f"{label}: feature indices {sorted(names_by_flat)[:8]} have gaps; re-export the model")

    k = len(bias)
    if task == "classification" and transform == "softmax" and k != len(classes):
        raise IntegrityError(f"{label}: {k} output dimensions for {len(classes)} classes; re-export the model")
    if transform != "softmax" and k != 1 and loss not in _MULTI_TARGET:
        raise UnsupportedModelError(f"{label}: loss {loss!r} with {k} output dimensions is not supported; fit one "
                                    "model per target")
    split = _SplitReader(floats, label)
    builder = TreeBuilder(n_features, n_outputs=k, value_width=k)
    try:
        for tree in doc.get("oblivious_trees") or []:
            _add_oblivious(builder, tree, split, scale, k, label)
        for tree in doc.get("trees") or []:
            _add_tree(builder, tree, split, scale, k, label)
    except SparkscoreError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{label}: malformed CatBoost tree ({type(exc).__name__}: {exc}); re-export the model "
                             "with save_model(path, format='json')") from None
    ensemble = builder.build(cmp="<=", threshold_dtype="float32", accumulate_dtype="float64",
                             base_score=np.asarray(bias), post_transform=transform)

    stored = [names_by_flat[i] for i in range(n_features)]
    native_names = stored if all(stored) else None  # fitted on unnamed data: f0..fN, as the other importers
    names = resolve_names(n_features, native_names, feature_names, label)
    signature = make_signature(names, task, classes, n_outputs=k)
    meta["loss_function"] = loss
    return Model(ensemble, signature, task=task, classes=tuple(classes) if classes is not None else None,
                 metadata=meta, decision="margin" if task == "classification" else "proba")


def _loss(info: dict) -> str:
    params = info.get("params") or {}
    loss = (params.get("loss_function") or {}).get("type")
    if loss is None:  # models trained by old versions or assembled by hand
        loss = (params.get("flat_params") or {}).get("loss_function", "RMSE")
    return str(loss).split(":", 1)[0]


def _task(loss: str, info: dict, label: str) -> tuple[str, str, tuple | None]:
    """(task, post_transform, class labels in output order)."""
    if loss in _IDENTITY or loss in _MULTI_TARGET:
        return "regression", "identity", None
    if loss not in ("Logloss", "MultiClass"):
        raise UnsupportedModelError(f"{label}: loss_function {loss!r} is not supported; supported are {_SUPPORTED}")
    params = info.get("class_params") or {}
    names = params.get("class_names") or []
    kind = params.get("class_label_type", "Integer")
    if kind == "Integer":
        classes = tuple(int(c) for c in names)
    elif kind == "Float":
        classes = tuple(float(c) for c in names)
    elif kind == "String":
        classes = tuple(str(c) for c in names)
    elif kind == "Boolean":
        classes = tuple(c if isinstance(c, bool) else str(c).lower() == "true" for c in names)
    else:
        raise UnsupportedModelError(f"{label}: class label type {kind!r} is not supported; refit with integer or "
                                    "string labels")
    if loss == "Logloss":
        if not classes:  # CatBoost fitted on 0/1 targets without class names
            classes = (0, 1)
        if len(classes) != 2:
            raise IntegrityError(f"{label}: Logloss model with {len(classes)} class names; re-export the model")
        return "classification", "sigmoid", classes
    if not classes and int(params.get("classes_count") or 0) >= 2:  # fitted with classes_count, no names
        classes = tuple(range(int(params["classes_count"])))
    if len(classes) < 2:
        raise IntegrityError(f"{label}: MultiClass model without class names; re-export the model")
    dims = [int(c) for c in params.get("class_to_label") or range(len(classes))]
    if dims != list(range(len(classes))):
        # a class named in class_names / classes_count but absent from the training data has no output
        # dimension: CatBoost reports a placeholder probability (~1e-308) for it
        absent = [c for i, c in enumerate(classes) if i not in dims]
        raise UnsupportedModelError(f"{label}: classes {absent} never occur in the training data (no output "
                                    "dimension); refit with class_names / classes_count listing only the classes "
                                    "present")
    return "classification", "softmax", classes


def _refuse_other_features(features_info: dict, label: str) -> None:
    """Refuse categorical / text / embedding inputs, naming the column and the fix."""
    for key, what in _OTHER_FEATURES.items():
        entries = features_info.get(key) or []
        if entries:
            first = entries[0]
            column = first.get("feature_id") or f"#{first.get('flat_feature_index', '?')}"
            fix = ("one-hot encode it upstream (e.g. pandas.get_dummies) and refit with numeric features only"
                   if key == "categorical_features" else "turn it into numeric columns upstream and refit")
            raise UnsupportedModelError(f"{label}: {what} {column!r} is not supported (CatBoost scores it from "
                                        f"hashes / statistics the model cannot reproduce exactly); {fix}")
    unknown = [key for key, value in features_info.items() if value and key not in _OTHER_FEATURES
               and key != "float_features"]
    if unknown:
        raise UnsupportedModelError(f"{label}: features_info {unknown[0]!r} is not supported; refit with numeric "
                                    "features only")


class _SplitReader:
    """One JSON split -> (flat feature index, float32 border, NaN goes to the "1" side)."""

    def __init__(self, floats: dict[int, dict], label: str) -> None:
        self.floats = floats
        self.label = label

    def __call__(self, split: dict) -> tuple[int, float, bool]:
        kind = split.get("split_type", "FloatFeature")
        if kind != "FloatFeature":
            raise UnsupportedModelError(f"{self.label}: split type {kind!r} is not supported (only float features); "
                                        "one-hot encode categorical columns upstream and refit")
        try:
            feature = self.floats[int(split["float_feature_index"])]
            border = float(split["border"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{self.label}: malformed split {split!r} ({type(exc).__name__}); re-export "
                                 "the model") from None
        border32 = float(np.float32(border))
        if border32 != border and not math.isnan(border):
            raise IntegrityError(f"{self.label}: border {border!r} is not a float32 value; re-export the model with "
                                 "save_model(format='json')")
        nan_right = bool(feature.get("has_nans")) and feature.get("nan_value_treatment") == "AsTrue"
        return int(feature["flat_feature_index"]), border32, nan_right


def _add_oblivious(builder: TreeBuilder, tree: dict, split: _SplitReader, scale: float, k: int, label: str) -> None:
    """A symmetric tree as a complete binary tree in heap order (see the module docstring)."""
    splits = [split(s) for s in tree.get("splits") or []]
    depth = len(splits)
    leaves = np.asarray(tree["leaf_values"], dtype=np.float64)
    if leaves.size != (1 << depth) * k:
        raise IntegrityError(f"{label}: oblivious tree of depth {depth} has {leaves.size} leaf values for {k} "
                             "dimensions; re-export the model")
    n_internal = (1 << depth) - 1
    n = 2 * n_internal + 1
    # heap node i sits on level floor(log2(i + 1)) and tests split depth - 1 - level
    level = np.zeros(n_internal, dtype=np.int64)
    for lvl in range(depth):
        level[(1 << lvl) - 1:(1 << (lvl + 1)) - 1] = lvl
    split_feature = np.asarray([f for f, _, _ in splits], dtype=np.int64)
    split_border = np.asarray([b for _, b, _ in splits], dtype=np.float64)
    split_nan_left = np.asarray([not r for _, _, r in splits], dtype=bool)
    feature = np.full(n, -1, dtype=np.int64)
    threshold = np.zeros(n)
    default_left = np.zeros(n, dtype=bool)
    value = np.zeros((n, k))
    which = depth - 1 - level
    feature[:n_internal] = split_feature[which]
    threshold[:n_internal] = split_border[which]
    default_left[:n_internal] = split_nan_left[which]
    value[n_internal:] = leaves.reshape(1 << depth, k) * scale
    left = np.where(feature >= 0, 2 * np.arange(n) + 1, -1)
    right = np.where(feature >= 0, 2 * np.arange(n) + 2, -1)
    builder.add_tree(feature=feature, threshold=threshold, left=left, right=right, value=value,
                     default_left=default_left, missing=MISSING_NAN)


def _add_tree(builder: TreeBuilder, root: dict, split: _SplitReader, scale: float, k: int, label: str) -> None:
    """A non-symmetric (Depthwise / Lossguide) tree: nested {"split", "left", "right"} / {"value"} nodes."""
    nodes: list[dict] = []  # local numbering in depth-first order
    children: list[list[int]] = []
    stack = [(root, -1, 0)]
    while stack:
        node, parent, side = stack.pop()
        idx = len(nodes)
        nodes.append(node)
        children.append([-1, -1])
        if parent >= 0:
            children[parent][side] = idx
        if "split" in node:
            stack.append((node["right"], idx, 1))
            stack.append((node["left"], idx, 0))
    n = len(nodes)
    feature = np.full(n, -1, dtype=np.int64)
    threshold = np.zeros(n)
    default_left = np.zeros(n, dtype=bool)
    value = np.zeros((n, k))
    for i, node in enumerate(nodes):
        if "split" in node:
            f, border, nan_right = split(node["split"])
            feature[i], threshold[i], default_left[i] = f, border, not nan_right
            continue
        leaf = np.atleast_1d(np.asarray(node.get("value"), dtype=np.float64))
        if leaf.size != k:
            raise IntegrityError(f"{label}: leaf with {leaf.size} values for {k} dimensions; re-export the model")
        value[i] = leaf * scale
    left, right = np.asarray(children, dtype=np.int64).reshape(n, 2).T
    builder.add_tree(feature=feature, threshold=threshold, left=left, right=right, value=value,
                     default_left=default_left, missing=MISSING_NAN)
