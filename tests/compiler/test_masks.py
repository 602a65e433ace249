"""The all-nodes tree kernel (``numba_masks``): every node against a block of rows, leaf by bit mask.

It must return what the reference returns and, since it adds leaves tree by tree, bit for bit what
the fixed-trip-count traversal returns; it refuses what it cannot route (general nodes, trees of
more than 64 leaves) instead of guessing.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparkscore import compiler
from sparkscore.compiler.layout import tree_layout
from sparkscore.ir.trees import MISSING_AS_ZERO, MISSING_NAN
from tests.compiler import synthetic
from tests.compiler.test_backends import assert_exact
from tests.compiler.test_compact import assert_bit_equal_to_fixed_trip_count, rows

numba_trees = pytest.importorskip("sparkscore.compiler.numba_trees")

MODELS = {
    "lgbm_lopsided_f64": synthetic.tree_model(60, n_trees=21, depth=12, leaf_p=0.55, post_transform="sigmoid",
                                              missing_rules=(MISSING_NAN, MISSING_AS_ZERO), cmp="<=",
                                              threshold_dtype="float64"),
    "xgb_full_depth6_multiclass_f32": synthetic.tree_model(61, n_trees=12, depth=6, leaf_p=0.0, n_outputs=3,
                                                           post_transform="softmax", cmp="<",
                                                           threshold_dtype="float32", accumulate_dtype="float32"),
    "rf_vector_mean_f32": synthetic.tree_model(62, n_trees=9, depth=5, n_outputs=2, vector_leaves=True,
                                               aggregation="mean", cmp="<=", threshold_dtype="float32"),
    "stumps": synthetic.tree_model(63, n_trees=7, depth=1, cmp="<=", threshold_dtype="float64"),
    "single_leaf_trees": synthetic.tree_model(65, n_trees=3, depth=0, cmp="<=", threshold_dtype="float64"),
}


def test_models_span_the_kernel_limits():
    """The cases test what they claim: trees of exactly 64 leaves, deep lopsided trees, single leaves."""
    leaves = {name: numba_trees.MaskTables(numba_trees.PackedTrees(tree_layout(m.estimator))).max_leaves
              for name, m in MODELS.items()}
    assert leaves["xgb_full_depth6_multiclass_f32"] == numba_trees.MASK_LEAVES, leaves
    assert tree_layout(MODELS["lgbm_lopsided_f64"].estimator).max_depth > 8
    assert leaves["single_leaf_trees"] == 1 and leaves["stumps"] == 2, leaves


@pytest.mark.parametrize("strategy", ["numba_masks", "numba_masks_parallel"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_masks_exact(name, strategy):
    model = MODELS[name]
    X = rows(model)
    assert_exact(model, compiler.compile(model, "numba", strategy=strategy).scores(X), X, f"{name} / {strategy}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_masks_bit_equal_to_fixed_trip_count(name, monkeypatch):
    """Same leaves, same order of addition: identical bits, in blocks of 3 rows and over 3 threads."""
    model = MODELS[name]
    X = rows(model)
    lay = tree_layout(model.estimator)
    kernel = numba_trees.NumbaTrees(lay, parallel=False, masks=True)
    kernel._mask_block = 3
    np.testing.assert_array_equal(kernel(X), numba_trees.NumbaTrees(lay, parallel=False)(X))
    assert_bit_equal_to_fixed_trip_count(lay, X, monkeypatch, masks=True)


def test_masks_transposes_only_the_columns_the_trees_read():
    model = MODELS["lgbm_lopsided_f64"]
    tables = numba_trees.MaskTables(numba_trees.PackedTrees(tree_layout(model.estimator)))
    est = model.estimator
    assert tables.used.tolist() == sorted(set(est.feature[est.feature >= 0].tolist()))
    assert tables.block in (64, 128, 256, 512)


def test_masks_refuses_trees_over_64_leaves():
    model = synthetic.tree_model(64, n_trees=3, depth=8, leaf_p=0.0, cmp="<=", threshold_dtype="float64")
    assert "numba_masks" not in compiler.compile(model, "numba").strategies
    with pytest.raises(compiler.StrategyUnavailable, match="masks trees of at most 64 leaves"):
        compiler.compile(model, "numba", strategy="numba_masks")
    with pytest.raises(ValueError, match="at most 64 leaves, this model has 256"):
        numba_trees.NumbaTrees(tree_layout(model.estimator), parallel=False, masks=True)


def test_masks_refuses_general_nodes():
    model = synthetic.cases()[0].model  # categorical and zero-as-missing nodes
    with pytest.raises(compiler.StrategyUnavailable, match="numerical splits only"):
        compiler.compile(model, "numba", strategy="numba_masks")
