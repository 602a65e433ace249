"""Tree ensembles as flat per-node arrays (one array per node attribute, all trees concatenated).

Routing of one row ``x`` at internal node ``i`` (the numpy reference evaluator is the executable
definition; every backend must route identically):

1. ``v = x[feature[i]]`` cast to ``threshold_dtype`` (float32 for sklearn trees and XGBoost,
   float64 for LightGBM and HistGradientBoosting).  ``threshold`` holds float64 values that are
   exactly representable in ``threshold_dtype``'s comparison.  If ``missing_value`` holds a value
   ``M`` (XGBoost's DMatrix ``missing=``), every ``v`` equal to ``M`` cast to ``threshold_dtype``
   is NaN from here on (so ``missing=0`` also catches ``-0.0``, and ``missing=inf`` every double
   that rounds to float32 inf).
2. Missing values, by ``missing[i]`` (numerical and categorical nodes alike):

   * ``MISSING_NAN``: NaN goes to ``default_left[i]``'s side;
   * ``MISSING_AS_ZERO``: NaN is replaced by 0.0, then compared (LightGBM ``missing_type=None``);
   * ``MISSING_ZERO``: NaN and ``|v| <= ZERO_THRESHOLD`` go to ``default_left[i]``'s side (LightGBM
     ``zero_as_missing``).

3. Numerical split: left iff ``v < threshold`` (``cmp == "<"``) or ``v <= threshold``.
4. Categorical split (``is_categorical[i]``): after step 2, the category
   is ``c = trunc(v)`` and the row goes left iff ``c`` is in the node's set:
   ``cat_words[cat_index[i], c // 32] >> (c % 32) & 1``.  Negative ``c`` (with
   ``cat_negative_before_trunc``: negative ``v``) or ``c`` beyond the bitset goes right.

Leaves carry ``value`` rows of width ``V``.  If ``V == 1`` tree ``t`` adds its leaf to output column
``tree_output[t]``; otherwise ``V == n_outputs`` and the leaf vector adds to every output.  Scores are
``base_score + sum`` (``aggregation == "sum"``) or ``base_score + mean`` over trees, accumulated in
``accumulate_dtype`` in tree order (XGBoost sums in float32), then ``post_transform`` is applied,
in float32 arithmetic too when ``accumulate_dtype`` is float32 (XGBoost's ``1/(1+expf(-x))``,
softmax with ``expf`` and a double sum, ``expf``; ``hinge`` is ``1.0 if x > 0 else 0.0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING_NAN = 0
MISSING_AS_ZERO = 1
MISSING_ZERO = 2

LEAF = -1

#: sigmoid applies elementwise (binary, or LightGBM one-vs-all multiclass without normalising).
#: exp_double: exp computed in float64 even for float32 sums (XGBoost survival:aft calls the double exp).
#: onnx_logistic / onnx_softmax / onnx_softmax_zero: ONNX Runtime's tree-ensemble post-transforms
#: (``ComputeLogistic`` / ``ComputeSoftmax`` / ``ComputeSoftmaxZero`` of its ml_common.h) in float32
#: with ``expf``, for float32 sums only (see :mod:`sparkscore.importers.onnx`).
POST_TRANSFORMS = ("identity", "sigmoid", "softmax", "exp", "hinge", "exp_double",
                   "onnx_logistic", "onnx_softmax", "onnx_softmax_zero")
#: post-transforms defined only on float32 sums
FLOAT32_ONLY_TRANSFORMS = ("onnx_logistic", "onnx_softmax", "onnx_softmax_zero")

#: LightGBM's kZeroThreshold (the float literal 1e-35f widened to double).
ZERO_THRESHOLD = float(np.float32(1e-35))
AGGREGATIONS = ("sum", "mean")

_NODE_ARRAYS = (
    ("feature", np.int32),
    ("threshold", np.float64),
    ("left", np.int32),
    ("right", np.int32),
    ("default_left", np.bool_),
    ("missing", np.int8),
    ("is_categorical", np.bool_),
    ("cat_index", np.int32),
)


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    feature: np.ndarray         # (n_nodes,) int32, LEAF (-1) for leaves
    threshold: np.ndarray       # (n_nodes,) float64
    left: np.ndarray            # (n_nodes,) int32, absolute node index (-1 for leaves)
    right: np.ndarray           # (n_nodes,) int32
    default_left: np.ndarray    # (n_nodes,) bool: side missing values take
    missing: np.ndarray         # (n_nodes,) int8: MISSING_NAN | MISSING_AS_ZERO | MISSING_ZERO
    is_categorical: np.ndarray  # (n_nodes,) bool
    cat_index: np.ndarray       # (n_nodes,) int32 row in cat_words, -1 if numerical
    cat_words: np.ndarray       # (n_cat_splits, n_words) uint32 bitsets of left-going categories
    value: np.ndarray           # (n_nodes, V) float64 leaf values (0 for internal nodes)
    roots: np.ndarray           # (n_trees,) int32 root node of each tree
    tree_output: np.ndarray     # (n_trees,) int32 output column a V == 1 tree adds to
    n_features: int
    n_outputs: int = 1
    base_score: np.ndarray = None  # (n_outputs,) float64
    cmp: str = "<="
    threshold_dtype: str = "float64"
    accumulate_dtype: str = "float64"
    aggregation: str = "sum"
    post_transform: str = "identity"
    cat_negative_before_trunc: bool = False
    missing_value: np.ndarray = None  # (0,) only NaN is missing, or (1,) [M]: inputs equal to M too

    def __post_init__(self) -> None:
        n = len(self.feature)
        for name, dtype in _NODE_ARRAYS:
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"TreeEnsemble.{name} must have shape ({n},), got {arr.shape}")
            self._freeze(name, arr)
        value = np.asarray(self.value, dtype=np.float64)
        if value.ndim == 1:
            value = value[:, None]
        if value.shape[0] != n or value.shape[1] not in (1, self.n_outputs):
            raise ValueError(f"TreeEnsemble.value must have shape ({n}, 1 or {self.n_outputs}), got {value.shape}")
        self._freeze("value", value)
        cat_words = np.asarray(self.cat_words if self.cat_words is not None else np.zeros((0, 1)), dtype=np.uint32)
        if cat_words.ndim != 2:
            raise ValueError("TreeEnsemble.cat_words must be 2-D (n_cat_splits, n_words)")
        self._freeze("cat_words", cat_words)
        self._freeze("roots", np.asarray(self.roots, dtype=np.int32))
        tree_output = np.asarray(self.tree_output, dtype=np.int32)
        if tree_output.shape != self.roots.shape:
            raise ValueError("TreeEnsemble.tree_output must have one entry per tree")
        self._freeze("tree_output", tree_output)
        base = np.zeros(self.n_outputs) if self.base_score is None else self.base_score
        base = np.atleast_1d(np.asarray(base, dtype=np.float64))
        if base.shape != (self.n_outputs,):
            raise ValueError(f"TreeEnsemble.base_score must have shape ({self.n_outputs},)")
        self._freeze("base_score", base)
        missing_value = np.zeros(0) if self.missing_value is None else self.missing_value
        missing_value = np.atleast_1d(np.asarray(missing_value, dtype=np.float64))
        if missing_value.shape[0] > 1 or (missing_value.shape[0] == 1 and np.isnan(missing_value[0])):
            raise ValueError("TreeEnsemble.missing_value must be empty or hold one non-NaN value")
        self._freeze("missing_value", missing_value)
        if self.cmp not in ("<", "<="):
            raise ValueError("TreeEnsemble.cmp must be '<' or '<='")
        for name in ("threshold_dtype", "accumulate_dtype"):
            if getattr(self, name) not in ("float32", "float64"):
                raise ValueError(f"TreeEnsemble.{name} must be 'float32' or 'float64'")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"TreeEnsemble.aggregation must be one of {AGGREGATIONS}")
        if self.post_transform not in POST_TRANSFORMS:
            raise ValueError(f"TreeEnsemble.post_transform must be one of {POST_TRANSFORMS}")
        if self.post_transform in FLOAT32_ONLY_TRANSFORMS and self.accumulate_dtype != "float32":
            raise ValueError(f"TreeEnsemble.post_transform {self.post_transform!r} needs accumulate_dtype 'float32'")
        internal = self.feature != LEAF
        if internal.any():
            if self.feature[internal].max() >= self.n_features:
                raise ValueError("TreeEnsemble.feature refers to a feature beyond n_features")
            if (self.left[internal] < 0).any() or (self.right[internal] < 0).any():
                raise ValueError("TreeEnsemble internal node without children")
            if (self.left[internal] >= n).any() or (self.right[internal] >= n).any():
                raise ValueError("TreeEnsemble child index out of range")

    def _freeze(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        arr.setflags(write=False)
        object.__setattr__(self, name, arr)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def has_missing_value(self) -> bool:
        """Whether a value other than NaN counts as missing (see step 1 of the module docstring)."""
        return self.missing_value.shape[0] == 1

    def tree_depths(self) -> np.ndarray:
        """Max depth (edges root -> deepest leaf) of each tree: the levels a fixed-trip traversal descends.

        Level by level over all trees at once, with numpy, rather than node by node in Python.
        """
        depth = np.zeros(self.n_trees, dtype=np.int32)
        nodes, owner = self.roots.astype(np.int64), np.arange(self.n_trees)
        level = 0
        while True:
            internal = self.feature[nodes] != LEAF
            if not internal.any():
                return depth
            level += 1
            nodes, owner = nodes[internal], owner[internal]
            depth[owner] = level
            nodes = np.concatenate([self.left[nodes], self.right[nodes]])
            owner = np.concatenate([owner, owner])


class TreeBuilder:
    """Accumulates trees node by node; importers use it so they never hand-build flat arrays.

    ``add_tree`` takes one tree in local numbering (children as local indices, -1 for leaves)
    and shifts it into the ensemble.
    """

    def __init__(self, n_features: int, n_outputs: int = 1, value_width: int = 1) -> None:
        self.n_features = n_features
        self.n_outputs = n_outputs
        self.value_width = value_width
        self._cols: dict[str, list[np.ndarray]] = {name: [] for name, _ in _NODE_ARRAYS}
        self._values: list[np.ndarray] = []
        self._cat_sets: list[np.ndarray] = []
        self.roots: list[int] = []
        self.tree_output: list[int] = []
        self._n = 0

    def add_tree(self, *, feature, threshold, left, right, value, default_left=None, missing=None,
                 categories=None, output: int = 0) -> None:
        """Add one tree.

        ``categories``: optional list (per node) of ``None`` or an iterable of non-negative ints
        that go *left* at that node (marks the node categorical).
        """
        feature = np.asarray(feature, dtype=np.int32).copy()
        n = len(feature)
        left = np.asarray(left, dtype=np.int64)
        right = np.asarray(right, dtype=np.int64)
        leaf = feature < 0
        feature[leaf] = LEAF
        shift_left = np.where(leaf, -1, left + self._n).astype(np.int32)
        shift_right = np.where(leaf, -1, right + self._n).astype(np.int32)
        is_cat = np.zeros(n, dtype=bool)
        cat_index = np.full(n, -1, dtype=np.int32)
        if categories is not None:
            for i, cats in enumerate(categories):
                if cats is not None and not leaf[i]:
                    is_cat[i] = True
                    cat_index[i] = len(self._cat_sets)
                    self._cat_sets.append(np.asarray(sorted(int(c) for c in cats), dtype=np.int64))
        cols = {
            "feature": feature,
            "threshold": np.where(leaf, 0.0, np.asarray(threshold, dtype=np.float64)),
            "left": shift_left,
            "right": shift_right,
            "default_left": np.zeros(n, bool) if default_left is None else np.asarray(default_left, bool),
            "missing": np.zeros(n, np.int8) if missing is None else np.broadcast_to(np.asarray(missing, np.int8), (n,)),
            "is_categorical": is_cat,
            "cat_index": cat_index,
        }
        for name, arr in cols.items():
            self._cols[name].append(np.asarray(arr))
        value = np.asarray(value, dtype=np.float64).reshape(n, -1)
        if value.shape[1] != self.value_width:
            raise ValueError(f"tree leaf values have width {value.shape[1]}, expected {self.value_width}")
        value = np.where(leaf[:, None], value, 0.0)
        self._values.append(value)
        self.roots.append(self._n)
        self.tree_output.append(output)
        self._n += n

    def build(self, **kwargs) -> TreeEnsemble:
        arrays = {name: (np.concatenate(parts) if parts else np.zeros(0, dtype))
                  for (name, dtype), parts in zip(_NODE_ARRAYS, self._cols.values())}
        max_cat = max((int(s.max()) for s in self._cat_sets if len(s)), default=0)
        n_words = max_cat // 32 + 1
        words = np.zeros((len(self._cat_sets), n_words), dtype=np.uint32)
        for row, cats in enumerate(self._cat_sets):
            for c in cats:
                words[row, c // 32] |= np.uint32(1) << np.uint32(c % 32)
        value = np.concatenate(self._values) if self._values else np.zeros((0, self.value_width))
        return TreeEnsemble(**arrays, cat_words=words, value=value, roots=np.asarray(self.roots),
                            tree_output=np.asarray(self.tree_output), n_features=self.n_features,
                            n_outputs=self.n_outputs, **kwargs)
