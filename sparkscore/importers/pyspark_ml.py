"""pyspark.ml models -> IR, read from the *saved* model directory (JSON metadata + parquet data).

One code path: :func:`convert` saves a fitted model to a temporary directory and hands it to
:func:`convert_saved`, which needs neither a JVM nor pyspark (only pyarrow) and never unpickles.

Spark's scoring semantics reproduced here (Spark 4.x ``ml`` sources):

* continuous split: left iff ``value <= threshold`` in float64, so NaN goes right;
* categorical split: saved as the left categories ``L`` of a feature with ``n`` categories; Spark
  tests ``v in L`` when ``|L| <= n / 2`` and ``v not in (complement of L)`` otherwise.  The second
  form is stored with the complement as the IR set and the children swapped, so unseen codes,
  negatives, infinities and NaN route as Spark routes them;
* classifiers predict labels ``0.0 .. k-1`` (doubles, like Spark's ``prediction`` column);
  trees' class probabilities are the leaf's normalised ``impurityStats``, a random forest
  averages them over trees, a GBT classifier is ``sigmoid(2 * sum(w_i * tree_i))``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, UnsupportedModelError
from sparkscore.importers.common import make_signature, resolve_names
from sparkscore.ir import LEAF, Column, FeatureMap, LinearModel, Model, Signature, TreeBuilder, TreeEnsemble

SOURCE = "pyspark.ml"
_SPARK_PACKAGE = "org.apache.spark.ml."

_LINEAR = ("LogisticRegressionModel", "LinearRegressionModel")
_TREES = ("DecisionTreeClassificationModel", "DecisionTreeRegressionModel",
          "RandomForestClassificationModel", "RandomForestRegressionModel",
          "GBTClassificationModel", "GBTRegressionModel")
SUPPORTED = (f"pyspark.ml {', '.join(_LINEAR + _TREES)}, or a PipelineModel of VectorAssembler "
             "[+ StandardScalerModel] + one of those")


@dataclass(frozen=True)
class SavedStage:
    """One saved pyspark.ml stage: its directory and parsed ``metadata`` JSON."""

    path: Path
    metadata: dict

    @property
    def class_name(self) -> str:
        return self.metadata["class"].rsplit(".", 1)[-1]

    @property
    def python_class(self) -> str:
        cls = self.metadata["class"]
        return "pyspark.ml." + cls[len(_SPARK_PACKAGE):] if cls.startswith(_SPARK_PACKAGE) else cls

    def param(self, name: str):
        """Effective param value: explicitly set, else Spark's default, else None."""
        return self.metadata.get("paramMap", {}).get(name, self.metadata.get("defaultParamMap", {}).get(name))

    def table(self, sub: str = "data"):
        import pyarrow.parquet as pq

        folder = self.path / sub
        if not folder.is_dir():
            raise IntegrityError(f"{self.path}: saved {self.class_name} has no {sub}/ folder; re-save the model")
        return pq.read_table(str(folder))


def convert(native, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a fitted pyspark.ml model by saving it and reading the saved files back."""
    if not hasattr(native, "write"):
        raise UnsupportedModelError(f"cannot convert {type(native).__module__}.{type(native).__qualname__}: "
                                    f"supported are {SUPPORTED}")
    with tempfile.TemporaryDirectory(prefix="sparkscore-pyspark-") as tmp:
        path = os.path.join(tmp, "model")
        native.write().save(path)
        return convert_saved(path, feature_names)


def convert_saved(path, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a saved pyspark.ml model directory (``model.write().save(path)``) without a JVM."""
    stage = read_stage(Path(path))
    if stage.class_name == "PipelineModel":
        return _pipeline(stage, feature_names)
    return _predictor(stage, names=None, given=feature_names)


def read_stage(path: Path) -> SavedStage:
    parts = sorted(p for p in (path / "metadata").glob("part-*") if not p.name.endswith(".crc"))
    for part in parts:
        text = part.read_text(encoding="utf-8").strip()
        if text:
            try:
                return SavedStage(path, json.loads(text.splitlines()[0]))
            except json.JSONDecodeError as exc:
                raise IntegrityError(f"{part}: unreadable pyspark.ml metadata ({exc}); re-save the model") from None
    raise UnsupportedModelError(f"{path} is not a saved pyspark.ml model (no metadata/part-* file); "
                                "save it with model.write().save(path)")


# ---------------------------------------------------------------------------------- pipelines
def _pipeline(pipe: SavedStage, given: Sequence[str] | None) -> Model:
    uids = pipe.param("stageUids") or []
    stages = [read_stage(_stage_dir(pipe.path, uid)) for uid in uids]
    kinds = [s.class_name for s in stages]
    if len(stages) not in (2, 3) or kinds[0] != "VectorAssembler" or \
            (len(stages) == 3 and kinds[1] != "StandardScalerModel"):
        raise UnsupportedModelError(f"PipelineModel with stages {kinds} is not supported: supported are {SUPPORTED}")
    assembler, *middle, predictor = stages
    column = assembler.param("outputCol")
    scaler = None
    for stage in middle:
        _check_wiring(stage, "inputCol", column)
        scaler = Scaler.read(stage)
        column = stage.param("outputCol")
    _check_wiring(predictor, "featuresCol", column)
    return _predictor(predictor, names=assembler.param("inputCols"), given=given, scaler=scaler)


def _stage_dir(root: Path, uid: str) -> Path:
    matches = sorted((root / "stages").glob(f"*_{uid}"))
    if len(matches) != 1:
        raise IntegrityError(f"{root}: pipeline stage {uid!r} missing from stages/; re-save the pipeline")
    return matches[0]


def _check_wiring(stage: SavedStage, param: str, expected: str) -> None:
    if stage.param(param) != expected:
        raise UnsupportedModelError(f"{stage.class_name} reads column {stage.param(param)!r}, not the previous "
                                    f"stage's output {expected!r}; only straight pipelines are supported")


@dataclass(frozen=True, eq=False)
class Scaler:
    """A StandardScalerModel: Spark computes ``(x - shift) * factor`` with ``factor = 1 / std`` (0 where std is 0)."""

    shift: np.ndarray
    factor: np.ndarray
    scale: np.ndarray  # FeatureMap divisor: std, inf where std is 0, 1 without withStd

    @classmethod
    def read(cls, stage: SavedStage) -> "Scaler":
        row = stage.table().to_pylist()[0]
        std, mean = vector(row["std"]), vector(row["mean"])
        n = len(std)
        with np.errstate(divide="ignore"):
            factor = np.where(std == 0, 0.0, 1.0 / std) if stage.param("withStd") else np.ones(n)
            scale = np.where(std == 0, np.inf, std) if stage.param("withStd") else np.ones(n)
        return cls(mean if stage.param("withMean") else np.zeros(n), factor, scale)

    def feature_map(self) -> FeatureMap:
        """As a FeatureMap (divides by ``std``, so it may differ from Spark in the last bit).

        ``std == 0`` becomes ``scale = inf``: 0 for finite values and NaN for infinite ones, like Spark's 0 factor.
        """
        n = len(self.shift)
        return FeatureMap(n, np.zeros(n), np.arange(n), np.full(n, np.nan), self.shift, self.scale, np.full(n, np.nan))

    def fold_into(self, ens: TreeEnsemble) -> TreeEnsemble | None:
        """The ensemble on unscaled inputs with exactly Spark's routing, or None if not foldable.

        ``x -> (x - shift) * factor`` is monotone for ``factor > 0``, so ``scaled(x) <= t`` holds
        exactly for ``x <= x*``: the largest double with that property, found by bisection.
        """
        internal = np.nonzero((ens.feature != LEAF) & ~ens.is_categorical)[0]
        feats = ens.feature[internal]
        if ens.is_categorical.any() or (self.factor[feats] <= 0).any():
            return None
        threshold = ens.threshold.copy()
        threshold[internal] = _largest_left(ens.threshold[internal], self.shift[feats], self.factor[feats])
        return replace(ens, threshold=threshold)


_SIGN = np.int64(-0x8000000000000000)
_MAX_KEY = np.float64(np.finfo(np.float64).max).view(np.int64)


def _to_key(x: np.ndarray) -> np.ndarray:
    """float64 -> int64 with the same order (-0.0 and 0.0 share a key)."""
    bits = x.view(np.int64)
    return np.where(bits < 0, -(bits & ~_SIGN), bits)


def _from_key(key: np.ndarray) -> np.ndarray:
    return np.where(key < 0, (-key) | _SIGN, key).astype(np.int64).view(np.float64)


def _largest_left(t: np.ndarray, shift: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Largest finite x with ``(x - shift) * factor <= t`` (-inf if none, max double if all)."""
    def goes_left(key):
        with np.errstate(over="ignore", invalid="ignore"):
            return (_from_key(key) - shift) * factor <= t

    lo = np.full(len(t), -_MAX_KEY)
    hi = np.full(len(t), _MAX_KEY)
    none_left, all_left = ~goes_left(lo), goes_left(hi)
    while True:
        open_ = (lo + 1 < hi) & ~none_left & ~all_left  # hi - lo could overflow int64
        if not open_.any():
            break
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)
        ok = goes_left(mid)
        lo = np.where(open_ & ok, mid, lo)
        hi = np.where(open_ & ~ok, mid, hi)
    out = _from_key(lo)
    out[all_left] = _from_key(hi)[all_left]
    out[none_left] = -np.inf
    return out


# ---------------------------------------------------------------------------------- predictors
def _predictor(stage: SavedStage, names, given, scaler: Scaler | None = None) -> Model:
    kind = stage.class_name
    if kind not in _LINEAR + _TREES:
        raise UnsupportedModelError(f"cannot convert {stage.python_class}: supported are {SUPPORTED}")
    if stage.param("thresholds") is not None or (kind == "LogisticRegressionModel" and stage.param("threshold") != 0.5):
        raise UnsupportedModelError(f"{stage.python_class} uses custom class thresholds, which change its "
                                    "predicted labels; clear threshold/thresholds before converting")
    estimator, classes = _linear(stage) if kind in _LINEAR else _trees(stage)
    features: tuple[FeatureMap, ...] = ()
    if scaler is not None:  # trees: exact thresholds on raw inputs; GLMs: a FeatureMap in front
        folded = scaler.fold_into(estimator) if isinstance(estimator, TreeEnsemble) else None
        estimator, features = (folded, ()) if folded is not None else (estimator, (scaler.feature_map(),))
    n_in = features[0].n_inputs if features else estimator.n_features
    input_names = resolve_names(n_in, names, given, stage.python_class)
    task = "classification" if classes else "regression"
    signature = make_signature(input_names, task, classes)
    if classes:  # Spark's prediction column is a double label, whatever the class count
        signature = Signature(signature.inputs, (Column("prediction", "double"), Column("probability", "double[]")))
    meta = {"source": SOURCE, "library_version": str(stage.metadata.get("sparkVersion", "")),
            "class": stage.python_class, "name": kind}
    return Model(estimator, signature, features, task, classes, meta)


def _labels(n_classes: int) -> tuple[float, ...]:
    return tuple(float(c) for c in range(n_classes))


def _linear(stage: SavedStage):
    row = stage.table().to_pylist()[0]
    if stage.class_name == "LinearRegressionModel":
        return LinearModel(vector(row["coefficients"]), [row["intercept"]], "identity"), None
    if "coefficientMatrix" not in row:
        raise UnsupportedModelError(f"{stage.path}: LogisticRegressionModel saved by Spark < 2.1 is not supported; "
                                    "load and re-save it with a current Spark")
    coef = matrix(row["coefficientMatrix"])  # (k, d)
    intercept = vector(row["interceptVector"])
    link = "softmax" if row["isMultinomial"] else "logistic"
    return LinearModel(coef.T, intercept, link), _labels(int(row["numClasses"]))


def _trees(stage: SavedStage):
    kind = stage.class_name
    n_features = int(stage.metadata["numFeatures"])
    classify = "Classification" in kind
    n_classes = 2 if kind == "GBTClassificationModel" else int(stage.metadata.get("numClasses", 0))
    table = stage.table()
    if "treeID" in table.column_names:
        flat = table.flatten()
        nodes = {name.split(".", 1)[1]: flat.column(name).to_pylist() for name in flat.column_names if "." in name}
        tree_ids = np.asarray(flat.column("treeID").to_pylist())
    else:
        nodes = {name: table.column(name).to_pylist() for name in table.column_names}
        tree_ids = np.zeros(table.num_rows, dtype=np.int64)
    split = nodes.pop("split", None)
    if split is not None:  # single-tree tables keep the split as a struct column
        nodes.update({f"split.{k}": [s[k] for s in split] for k in split[0]})
    weights = _tree_weights(stage) if kind.startswith("GBT") else None
    proba_leaves = classify and not kind.startswith("GBT")
    width = n_classes if proba_leaves else 1
    builder = TreeBuilder(n_features, n_outputs=width, value_width=width)
    for t in np.unique(tree_ids):
        rows = np.nonzero(tree_ids == t)[0]
        leaf_scale = 1.0 if weights is None else float(weights[int(t)])
        _add_tree(builder, nodes, rows, proba_leaves, leaf_scale, 2.0 if kind == "GBTClassificationModel" else 1.0)
    aggregation = "mean" if kind.startswith("RandomForest") else "sum"
    post_transform = "sigmoid" if kind == "GBTClassificationModel" else "identity"
    # Spark tests exact membership: -0.5 is in no set, so negatives go right before truncation
    ensemble = builder.build(aggregation=aggregation, post_transform=post_transform, cat_negative_before_trunc=True)
    return ensemble, (_labels(n_classes) if classify else None)


def _tree_weights(stage: SavedStage) -> np.ndarray:
    meta = stage.table("treesMetadata")
    ids = np.asarray(meta.column("_1").to_pylist())
    weights = np.empty(len(ids))
    weights[ids] = meta.column("_3").to_pylist()
    return weights


def _add_tree(builder: TreeBuilder, nodes: dict, rows: np.ndarray, proba_leaves: bool,
              weight: float, margin_factor: float) -> None:
    """One saved tree (rows of the node table) in local preorder-id numbering."""
    ids = [nodes["id"][r] for r in rows]
    local = {node_id: i for i, node_id in enumerate(sorted(ids))}
    n = len(ids)
    feature = np.full(n, -1)
    threshold = np.zeros(n)
    left = np.full(n, -1)
    right = np.full(n, -1)
    width = builder.value_width
    value = np.zeros((n, width))
    categories: list = [None] * n
    for r, node_id in zip(rows, ids):
        i = local[node_id]
        if nodes["leftChild"][r] < 0:
            if proba_leaves:
                stats = np.asarray(nodes["impurityStats"][r], dtype=np.float64)
                total = np.cumsum(stats)[-1]  # sequential sum, as Spark's Array.sum
                value[i] = stats / total if total != 0 else stats
            else:  # GBT leaves enter the margin as w * leaf (times 2 for the logistic loss)
                value[i, 0] = (weight * nodes["prediction"][r]) * margin_factor
            continue
        lo, hi = local[nodes["leftChild"][r]], local[nodes["rightChild"][r]]
        feature[i] = nodes["split.featureIndex"][r]
        n_cats = nodes["split.numCategories"][r]
        values = nodes["split.leftCategoriesOrThreshold"][r]
        if n_cats < 0:
            threshold[i], left[i], right[i] = values[0], lo, hi
            continue
        goes_left = _category_codes(values, feature[i])
        if len(goes_left) <= n_cats // 2:  # Spark tests membership of the left set
            categories[i], left[i], right[i] = goes_left, lo, hi
        else:  # Spark tests non-membership of the right set: store that set, swap children
            categories[i] = sorted(set(range(n_cats)) - set(goes_left))
            left[i], right[i] = hi, lo
    builder.add_tree(feature=feature, threshold=threshold, left=left, right=right, value=value,
                     categories=categories if any(c is not None for c in categories) else None)


def _category_codes(values, feature: int) -> list[int]:
    codes = [int(v) for v in values]
    if any(c != v or c < 0 for c, v in zip(codes, values)):
        raise IntegrityError(f"categorical split on feature {feature} has non-integer categories {values[:5]}; "
                             "re-save the model")
    return codes


# ---------------------------------------------------------------------------------- linalg
def vector(struct: dict) -> np.ndarray:
    """Spark ``VectorUDT`` parquet struct -> dense float64 array (type 0 sparse, 1 dense)."""
    if struct["type"] == 1:
        return np.asarray(struct["values"], dtype=np.float64)
    out = np.zeros(struct["size"])
    out[np.asarray(struct["indices"], dtype=np.int64)] = struct["values"]
    return out


def matrix(struct: dict) -> np.ndarray:
    """Spark ``MatrixUDT`` parquet struct -> dense (numRows, numCols) float64 array.

    Dense values are column-major (row-major when ``isTransposed``); sparse ones are CSC
    (CSR when ``isTransposed``: ``colPtrs`` are row pointers, ``rowIndices`` column indices).
    """
    rows, cols = struct["numRows"], struct["numCols"]
    values = np.asarray(struct["values"], dtype=np.float64)
    transposed = struct["isTransposed"]
    if struct["type"] == 1:
        return values.reshape(rows, cols) if transposed else values.reshape(cols, rows).T
    out = np.zeros((rows, cols))
    ptrs = struct["colPtrs"]
    inner = np.asarray(struct["rowIndices"], dtype=np.int64)
    for outer in range(len(ptrs) - 1):
        span = slice(ptrs[outer], ptrs[outer + 1])
        if transposed:
            out[outer, inner[span]] = values[span]
        else:
            out[inner[span], outer] = values[span]
    return out
