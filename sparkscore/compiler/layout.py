"""A tree ensemble normalised for fast kernels (numpy arrays only; every strategy builds on it).

The normalisation keeps routing *identical* to :mod:`sparkscore.compiler.reference` while removing
per-node cases from the hot loop:

* every comparison becomes ``v <= threshold`` in the comparison dtype: ``<`` becomes ``<=`` the
  predecessor, and float32 models get their float64 thresholds rounded *towards* the side that
  keeps ``float32(x) <= t`` unchanged for every float32 ``x``;
* the side a NaN takes is one precomputed bit per node (``nan_left``), whatever the missing rule;
* nodes that need more than a comparison (categorical sets, LightGBM ``zero_as_missing``) are
  flagged ``general`` and routed by the full rule;
* leaves point to themselves, so a traversal may run a fixed number of levels without a leaf test;
* leaf values are stored in the accumulation dtype, pre-scaled by ``1/n_trees`` for a float32 mean
  (exactly the product the reference rounds), so kernels only add.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sparkscore.ir.trees import LEAF, MISSING_AS_ZERO, MISSING_ZERO, TreeEnsemble


@dataclass(frozen=True, eq=False)
class TreeLayout:
    compare_dtype: type          # np.float32 | np.float64: dtype of inputs and thresholds
    acc_dtype: type              # np.float32 | np.float64: dtype leaf values are summed in
    feature: np.ndarray          # (n_nodes,) int32, 0 at leaves
    threshold: np.ndarray        # (n_nodes,) compare_dtype: go left iff v <= threshold
    nan_left: np.ndarray         # (n_nodes,) bool: side a NaN takes
    children: np.ndarray         # (n_nodes, 2) int32 [left, right]; leaves point to themselves
    is_leaf: np.ndarray          # (n_nodes,) bool
    general: np.ndarray          # (n_nodes,) bool: categorical or zero-as-missing node
    zero_missing: np.ndarray     # (n_nodes,) bool: |v| <= ZERO_THRESHOLD takes default_left
    default_left: np.ndarray     # (n_nodes,) bool
    is_categorical: np.ndarray   # (n_nodes,) bool
    cat_index: np.ndarray        # (n_nodes,) int32 row of cat_words (0 if numerical)
    cat_words: np.ndarray        # (n_cat >= 1, n_words) uint32
    negative_before_trunc: bool
    roots: np.ndarray            # (n_trees,) int32
    depth: np.ndarray            # (n_trees,) int32 levels to descend to reach any leaf
    tree_output: np.ndarray      # (n_trees,) int32
    leaf_value: np.ndarray       # (n_nodes, V) acc_dtype, pre-scaled for a float32 mean
    base: np.ndarray             # (n_outputs,) acc_dtype
    mean_divisor: float          # divide the float64 tree sum by this (1.0 for sum / float32)
    n_outputs: int
    n_features: int
    from_base: bool = True       # accumulate from base, in tree order (all but a float64 mean)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def has_general(self) -> bool:
        return bool(self.general.any())

    @property
    def n_bits(self) -> int:
        return self.cat_words.shape[1] * 32

    @cached_property
    def max_depth(self) -> int:
        return int(self.depth.max()) if len(self.depth) else 0


def le_threshold(threshold: np.ndarray, cmp: str, dtype: type) -> np.ndarray:
    """Thresholds ``t'`` in ``dtype`` with ``(v cmp t) == (v <= t')`` for every non-NaN ``v`` of ``dtype``.

    A split that nothing passes (``v < -inf``) gets NaN, which no value is ``<=``.
    """
    t = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):
        if cmp == "<=":  # largest dtype value <= t
            td = t.astype(dtype)
            td = np.where(td.astype(np.float64) > t, np.nextafter(td, dtype(-np.inf)), td)
        else:  # v < t  <=>  v <= pred(smallest dtype value >= t)
            up = t.astype(dtype)
            up = np.where(up.astype(np.float64) < t, np.nextafter(up, dtype(np.inf)), up)
            td = np.where(up == -np.inf, dtype(np.nan), np.nextafter(up, dtype(-np.inf)))
    return np.asarray(td, dtype=dtype)


def _nan_left(ens: TreeEnsemble, thr: np.ndarray) -> np.ndarray:
    """Side a NaN takes at every node: MISSING_AS_ZERO routes it as 0.0, the others by default_left."""
    as_zero = ens.missing == MISSING_AS_ZERO
    zero_left = np.zeros(ens.n_nodes, dtype=bool)
    with np.errstate(invalid="ignore"):
        zero_left[:] = 0.0 <= thr.astype(np.float64)
    cat = ens.is_categorical
    if cat.any():  # category 0 in the node's set
        zero_left[cat] = (ens.cat_words[ens.cat_index[cat], 0] & 1) == 1
    return np.where(as_zero, zero_left, ens.default_left)


def tree_layout(ens: TreeEnsemble) -> TreeLayout:
    compare = np.float32 if ens.threshold_dtype == "float32" else np.float64
    acc = np.float32 if ens.accumulate_dtype == "float32" else np.float64
    leaf = ens.feature == LEAF
    idx = np.arange(ens.n_nodes, dtype=np.int32)
    thr = le_threshold(ens.threshold, ens.cmp, compare)
    thr = np.where(leaf, compare(0), thr).astype(compare)
    children = np.stack([np.where(leaf, idx, ens.left), np.where(leaf, idx, ens.right)], axis=1).astype(np.int32)
    zero_missing = (ens.missing == MISSING_ZERO) & ~leaf
    general = (ens.is_categorical | zero_missing) & ~leaf
    if acc is np.float32:
        scale = np.float32(1.0 / ens.n_trees) if ens.aggregation == "mean" else np.float32(1.0)
        leaf_value = (ens.value.astype(np.float32) * scale).astype(np.float32)
        divisor = 1.0
    else:
        leaf_value = ens.value.astype(np.float64)
        divisor = float(ens.n_trees) if ens.aggregation == "mean" else 1.0
    cat_words = ens.cat_words if len(ens.cat_words) else np.zeros((1, 1), dtype=np.uint32)
    return TreeLayout(
        compare_dtype=compare, acc_dtype=acc,
        feature=np.where(leaf, 0, ens.feature).astype(np.int32),
        threshold=thr,
        nan_left=_nan_left(ens, thr) & ~leaf,
        children=np.ascontiguousarray(children),
        is_leaf=leaf,
        general=general,
        zero_missing=zero_missing,
        default_left=ens.default_left.copy(),
        is_categorical=ens.is_categorical & ~leaf,
        cat_index=np.maximum(ens.cat_index, 0).astype(np.int32),
        cat_words=np.ascontiguousarray(cat_words, dtype=np.uint32),
        negative_before_trunc=bool(ens.cat_negative_before_trunc),
        roots=ens.roots.astype(np.int32),
        depth=ens.tree_depths(),
        tree_output=ens.tree_output.astype(np.int32),
        leaf_value=np.ascontiguousarray(leaf_value),
        base=ens.base_score.astype(acc),
        mean_divisor=divisor,
        from_base=acc is np.float32 or ens.aggregation == "sum",
        n_outputs=ens.n_outputs,
        n_features=ens.n_features,
    )

