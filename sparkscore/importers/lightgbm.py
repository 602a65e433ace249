"""LightGBM ``Booster`` / ``LGBMClassifier`` / ``LGBMRegressor`` / ``LGBMRanker`` (and saved model files) -> IR.

Everything is read from LightGBM's own text format (``model_to_string``, thresholds and leaves
written with round-trip precision) or from its JSON dump (``dump_model``), never from a pickle.
LightGBM routes in float64 with ``<=``; before routing, its predictor drops every input with
``|v| <= kZeroThreshold`` from the row, i.e. reads it as 0.0 (``RowPairFunctionFromDenseMatric``).
A numerical threshold inside ``[-kZeroThreshold, kZeroThreshold)`` is therefore moved to the
edge of that band (:func:`_zero_band_threshold`) so plain ``v <= t`` routes exactly as LightGBM.

Column names: LightGBM stores ``mean radius`` as ``mean_radius`` and its wrapper forgets the
original.  The signature keeps the stored names unless ``feature_names`` gives the originals (each
accepted when LightGBM would have renamed it to the stored one); either way the model records
``feature_name_rule = "lightgbm"`` so that a frame or table with the original names binds to it
(:func:`sparkscore.ir.inputs.bind_names`), as native ``predict`` accepts that frame.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, UnsupportedModelError
from sparkscore.importers.common import make_signature, metadata, resolve_names
from sparkscore.ir.inputs import NAME_RULES
from sparkscore.ir.model import Model
from sparkscore.ir.trees import MISSING_AS_ZERO, MISSING_NAN, MISSING_ZERO, ZERO_THRESHOLD, TreeBuilder

#: decision_type bits (LightGBM tree.h): categorical, default-left, then 2 bits of missing type
_CATEGORICAL_MASK = 1
_DEFAULT_LEFT_MASK = 2
#: LightGBM MissingType (None, Zero, NaN) -> IR missing rule
_MISSING = {0: MISSING_AS_ZERO, 1: MISSING_ZERO, 2: MISSING_NAN}
_MISSING_NAMES = {"None": 0, "Zero": 1, "NaN": 2}

#: objective -> (task, post-transform of the summed raw score)
_OBJECTIVES = {
    **{name: ("regression", "identity")
       for name in ("regression", "regression_l1", "huber", "fair", "quantile", "mape")},
    **{name: ("regression", "exp") for name in ("poisson", "gamma", "tweedie")},
    "cross_entropy": ("regression", "sigmoid"),
    "binary": ("classification", "sigmoid"),
    "multiclass": ("classification", "softmax"),
    "multiclassova": ("classification", "sigmoid"),  # one sigmoid per class, not normalised
    # rankers: Booster.predict / LGBMRanker.predict return the raw summed score (no ConvertOutput)
    **{name: ("regression", "identity") for name in ("lambdarank", "rank_xendcg")},
}
_SUPPORTED = ", ".join(_OBJECTIVES)
#: linear_tree leaves are linear models over the leaf's features (NaN in any of them -> the constant
#: leaf value); the tree IR has constant leaves only, so converting one would be inexact: refuse
_LINEAR_TREE = ("lightgbm model uses linear_tree=True (linear models in the leaves), which sparkscore's tree IR "
                "cannot represent exactly; re-train with linear_tree=False")


@dataclass
class _Tree:
    """One tree in IR-local numbering: internal nodes first, then leaf ``i`` at ``n_internal + i``."""

    feature: list = field(default_factory=list)
    threshold: list = field(default_factory=list)
    left: list = field(default_factory=list)
    right: list = field(default_factory=list)
    default_left: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    value: list = field(default_factory=list)


@dataclass
class _Parsed:
    objective: str
    num_class: int
    trees_per_iteration: int
    feature_names: list
    average_output: bool
    trees: list
    pandas_categorical: list | None
    categorical_features: list  # feature indices LightGBM treats as categorical
    version: str


def convert(native, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a fitted ``lightgbm.Booster`` or ``LGBMModel`` (its best iteration, as predict uses)."""
    booster = native.booster_ if hasattr(native, "booster_") else native
    if not hasattr(booster, "model_to_string"):
        raise UnsupportedModelError(f"cannot convert {type(native).__qualname__}: supported are lightgbm.Booster, "
                                    "LGBMClassifier, LGBMRegressor and LGBMRanker")
    parsed = _parse_text(booster.model_to_string())
    classes = getattr(native, "classes_", None) if hasattr(native, "booster_") else None
    import lightgbm

    fitted = _wrapper_names(native, parsed.feature_names)
    if fitted is not None and feature_names is None:
        feature_names = fitted
    return _to_model(parsed, feature_names, classes, metadata("lightgbm", native, lightgbm.__version__))


def _wrapper_names(native, stored: list) -> list | None:
    """The fitted frame's own column names, where the sklearn wrapper kept them and they differ from
    the booster's only by LightGBM's renaming (' ' -> '_'); LightGBM 4.x returns the renamed ones."""
    try:
        names = [str(n) for n in getattr(native, "feature_names_in_")]
    except (AttributeError, ValueError):  # unfitted, or fitted without names (LGBMNotFittedError is both)
        return None
    if len(names) != len(stored) or names == list(stored):
        return None
    return names if all(_lgb_name(n) == s for n, s in zip(names, stored)) else None


def load_file(path) -> Model:
    """Load a LightGBM model file: the text format (``save_model``) or a ``dump_model`` JSON."""
    text = Path(path).read_text(encoding="utf-8")
    parsed = _parse_dump(_json(text, path)) if text.lstrip().startswith("{") else _parse_text(text)
    meta = {"source": "lightgbm", "library_version": parsed.version, "class": "lightgbm.basic.Booster",
            "name": "Booster"}
    return _to_model(parsed, None, None, meta)


def _json(text: str, path) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{path}: not a LightGBM JSON dump ({exc}); pass a save_model text file "
                             "or a dump_model JSON") from None


# ---------------------------------------------------------------------------------------- IR
def _to_model(parsed: _Parsed, feature_names, classes, meta: dict) -> Model:
    name, params = _objective(parsed.objective)
    n_features = len(parsed.feature_names)
    native_names = _native_names(parsed.feature_names)
    label = f"lightgbm {meta['name']}"
    if (native_names is not None and feature_names is not None and len(feature_names) == n_features
            and all(_lgb_name(str(g)) == n for g, n in zip(feature_names, native_names))):
        native_names = None  # the fitted frame's own names ('mean radius' for the stored 'mean_radius')
    names = resolve_names(n_features, native_names, feature_names, label)
    meta = {**meta, "feature_name_rule": "lightgbm"}
    k = parsed.trees_per_iteration
    if name in ("multiclass", "multiclassova") and k != parsed.num_class:
        raise UnsupportedModelError(f"{label}: {k} trees per iteration for {parsed.num_class} classes; "
                                    "re-train with num_class set")
    if name not in _OBJECTIVES:
        raise UnsupportedModelError(f"{label}: objective {name!r} is not supported; supported are {_SUPPORTED}")
    if "sqrt" in params:
        raise UnsupportedModelError(f"{label}: reg_sqrt=True is not supported; re-train without it")
    task, transform = _OBJECTIVES[name]
    # ConvertOutput: 1 / (1 + exp(-sigmoid * score)); folding the factor into the leaves is exact for 1.0
    scale = float(params.get("sigmoid", 1.0)) if name in ("binary", "multiclassova") else 1.0
    if parsed.average_output and k > 1:
        raise UnsupportedModelError(f"{label}: multiclass random forests (boosting='rf') are not "
                                    "supported; use boosting='gbdt'")
    if task == "classification" and classes is None:
        classes = tuple(range(max(parsed.num_class, 2)))
    builder = TreeBuilder(n_features, n_outputs=k)
    for t, tree in enumerate(parsed.trees):
        values = np.asarray(tree.value, dtype=np.float64)
        builder.add_tree(feature=tree.feature, threshold=tree.threshold, left=tree.left, right=tree.right,
                         value=values * scale if scale != 1.0 else values, default_left=tree.default_left,
                         missing=tree.missing, categories=tree.categories, output=t % k)
    ensemble = builder.build(cmp="<=", threshold_dtype="float64", accumulate_dtype="float64",
                             aggregation="mean" if parsed.average_output else "sum", post_transform=transform)
    categories = _column_categories(parsed)
    signature = make_signature(names, task, classes, categories)
    return Model(ensemble, signature, task=task, classes=tuple(classes) if classes is not None else None,
                 metadata=meta)


def _objective(objective: str) -> tuple[str, dict]:
    """``"binary sigmoid:1"`` -> ``("binary", {"sigmoid": "1"})``; flags without a value map to ''."""
    parts = objective.split()
    if not parts:
        raise UnsupportedModelError(f"lightgbm model has no objective (custom objective?); supported are {_SUPPORTED}")
    params = dict((p.split(":", 1) + [""])[:2] for p in parts[1:])
    return parts[0], params


def _lgb_name(name: str) -> str:
    """The name LightGBM stores for a fitted column name (``Dataset::set_feature_names``)."""
    return NAME_RULES["lightgbm"](name)


def _native_names(names: list) -> list | None:
    """LightGBM's auto names ``Column_i`` mean 'fitted without names' (-> sparkscore's ``f0..``)."""
    if all(n == f"Column_{i}" for i, n in enumerate(names)):
        return None
    return names


def _column_categories(parsed: _Parsed) -> dict[int, tuple]:
    """pandas category dtype columns: their categories in code order (what the splits compare)."""
    if not parsed.pandas_categorical:
        return {}
    if len(parsed.pandas_categorical) != len(parsed.categorical_features):
        raise UnsupportedModelError(
            f"lightgbm model: {len(parsed.pandas_categorical)} pandas categorical columns but "
            f"{len(parsed.categorical_features)} categorical features; re-train with categorical_feature='auto'")
    return {f: tuple(cats) for f, cats in zip(parsed.categorical_features, parsed.pandas_categorical)}


def _zero_band_threshold(threshold: float, missing: int) -> float:
    """Equivalent threshold once LightGBM has read ``|v| <= kZeroThreshold`` as 0.0 (see module doc)."""
    if missing == MISSING_ZERO:
        return threshold  # the whole band is routed as missing before the comparison
    if -ZERO_THRESHOLD <= threshold < 0.0:
        return float(np.nextafter(-ZERO_THRESHOLD, -np.inf))
    if 0.0 <= threshold < ZERO_THRESHOLD:
        return ZERO_THRESHOLD
    return threshold


def _add_split(tree: _Tree, feature: int, threshold: float, decision: int, cats) -> None:
    missing = _MISSING[(decision >> 2) & 3]
    if cats is not None:
        # CategoricalDecision: NaN (whatever the missing type) and negative ints go right
        tree.feature.append(feature)
        tree.threshold.append(0.0)
        tree.default_left.append(False)
        tree.missing.append(MISSING_NAN)
        tree.categories.append(cats)
        return
    tree.feature.append(feature)
    tree.threshold.append(_zero_band_threshold(threshold, missing))
    tree.default_left.append(bool(decision & _DEFAULT_LEFT_MASK))
    tree.missing.append(missing)
    tree.categories.append(None)


def _finish(tree: _Tree, leaf_values: list, children: list[tuple[int, int]]) -> _Tree:
    """Append leaves and map LightGBM child ids (>= 0 internal, ``~leaf`` for leaves) to local ones."""
    n_internal = len(tree.feature)
    local = lambda c: c if c >= 0 else n_internal + ~c  # noqa: E731
    tree.left = [local(l) for l, _ in children] + [-1] * len(leaf_values)
    tree.right = [local(r) for _, r in children] + [-1] * len(leaf_values)
    tree.value = [0.0] * n_internal + [float(v) for v in leaf_values]
    for attr, pad in (("feature", -1), ("threshold", 0.0), ("default_left", False), ("missing", MISSING_NAN),
                      ("categories", None)):
        getattr(tree, attr).extend([pad] * len(leaf_values))
    return tree


# ------------------------------------------------------------------------------- text format
def _parse_text(text: str) -> _Parsed:
    head, _, rest = text.partition("\nTree=")
    if not head.startswith("tree"):
        raise IntegrityError("not a LightGBM model: the text must start with 'tree' (Booster.save_model output)")
    header = _key_values(head)
    blocks, _, tail = ("Tree=" + rest).partition("end of trees")
    trees = [_text_tree(_key_values(b)) for b in re.split(r"\n(?=Tree=)", blocks.strip()) if b.startswith("Tree=")]
    pandas_categorical = None
    cat_line = re.search(r"^pandas_categorical:(.*)$", tail, re.MULTILINE)
    if cat_line:
        pandas_categorical = json.loads(cat_line.group(1))
    param = re.search(r"^\[categorical_feature: ([0-9,]*)\]$", tail, re.MULTILINE)
    categorical = [int(i) for i in param.group(1).split(",") if i] if param else _categorical_from_infos(
        header.get("feature_infos", "").split())
    return _Parsed(objective=header.get("objective", ""), num_class=int(header.get("num_class", 1)),
                   trees_per_iteration=int(header.get("num_tree_per_iteration", 1)),
                   feature_names=header.get("feature_names", "").split(), average_output="average_output" in header,
                   trees=trees, pandas_categorical=pandas_categorical, categorical_features=categorical,
                   version=header.get("version", ""))


def _categorical_from_infos(infos: list[str]) -> list[int]:
    """Categorical features list their category codes ('1:0:3'); numerical ones a '[min:max]' range."""
    return [i for i, info in enumerate(infos) if info != "none" and not info.startswith("[")]


def _key_values(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        out[key.strip()] = value.strip() if sep else ""
    return out


def _text_tree(kv: dict[str, str]) -> _Tree:
    if kv.get("is_linear", "0") != "0":
        raise UnsupportedModelError(_LINEAR_TREE)
    nums = lambda key, typ=float: [typ(x) for x in kv.get(key, "").split()]  # noqa: E731
    leaf_values = nums("leaf_value")
    tree = _Tree()
    if int(kv["num_leaves"]) == 1:
        return _finish(tree, leaf_values, [])
    decision = nums("decision_type", int)
    thresholds = nums("threshold")
    boundaries, words = nums("cat_boundaries", int), np.asarray(nums("cat_threshold", int), dtype=np.uint64)
    for feature, threshold, dtype in zip(nums("split_feature", int), thresholds, decision):
        cats = None
        if dtype & _CATEGORICAL_MASK:
            idx = int(threshold)
            cats = _bitset_members(words[boundaries[idx]:boundaries[idx + 1]])
        _add_split(tree, feature, threshold, dtype, cats)
    return _finish(tree, leaf_values, list(zip(nums("left_child", int), nums("right_child", int))))


def _bitset_members(words: np.ndarray) -> list[int]:
    return [32 * w + b for w, word in enumerate(words.tolist()) for b in range(32) if (int(word) >> b) & 1]


# ------------------------------------------------------------------------------- JSON dump
def _parse_dump(doc: dict) -> _Parsed:
    try:
        trees = [_dump_tree(info["tree_structure"]) for info in doc["tree_info"]]
        infos = doc.get("feature_infos", {})
        names = doc["feature_names"]
        categorical = [i for i, n in enumerate(names) if infos.get(n, {}).get("values")]
        return _Parsed(objective=doc.get("objective", ""), num_class=int(doc["num_class"]),
                       trees_per_iteration=int(doc["num_tree_per_iteration"]), feature_names=names,
                       average_output=bool(doc.get("average_output", False)), trees=trees,
                       pandas_categorical=doc.get("pandas_categorical"), categorical_features=categorical,
                       version=str(doc.get("version", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed LightGBM JSON dump ({type(exc).__name__}: {exc}); re-export it with "
                             "Booster.dump_model()") from None


def _dump_tree(root: dict) -> _Tree:
    """Nested dump -> local numbering (internal node = ``split_index``, leaf = ``leaf_index``)."""
    splits, leaves = {}, {}
    stack = [root]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            splits[node["split_index"]] = node
            stack += [node["left_child"], node["right_child"]]
        else:
            if "leaf_coeff" in node:
                raise UnsupportedModelError(_LINEAR_TREE)
            leaves[node.get("leaf_index", 0)] = node["leaf_value"]
    child = lambda n: n["split_index"] if "split_index" in n else ~n.get("leaf_index", 0)  # noqa: E731
    tree = _Tree()
    children = []
    for i in range(len(splits)):
        node = splits[i]
        categorical = node["decision_type"] == "=="
        decision = ((_CATEGORICAL_MASK if categorical else 0) | (_DEFAULT_LEFT_MASK if node["default_left"] else 0)
                    | _MISSING_NAMES[node["missing_type"]] << 2)
        cats = [int(c) for c in str(node["threshold"]).split("||")] if categorical else None
        _add_split(tree, int(node["split_feature"]), 0.0 if categorical else float(node["threshold"]), decision, cats)
        children.append((child(node["left_child"]), child(node["right_child"])))
    return _finish(tree, [leaves[i] for i in range(len(leaves))], children)
