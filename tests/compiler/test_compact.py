"""The compacting tree kernel (deep lopsided trees) and the thread budget of the numba kernels.

``numba_compact`` stops descending rows that reached a leaf; on every model it must return what
the reference returns, and bit for bit what the fixed-trip-count kernel returns (same sum order).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from sparkscore import compiler
from sparkscore.compiler.layout import tree_layout
from sparkscore.ir.trees import MISSING_AS_ZERO, MISSING_NAN
from tests.compiler import synthetic
from tests.compiler.test_backends import assert_exact

numba_trees = pytest.importorskip("sparkscore.compiler.numba_trees")

#: leaf-wise-like trees, 14 levels deep but most leaves near the top (what LightGBM grows)
LOPSIDED = {
    "lgbm_lopsided_f64": synthetic.tree_model(50, n_trees=21, depth=14, leaf_p=0.45, post_transform="sigmoid",
                                              missing_rules=(MISSING_NAN, MISSING_AS_ZERO), cmp="<=",
                                              threshold_dtype="float64"),
    "xgb_lopsided_multiclass_f32": synthetic.tree_model(51, n_trees=15, depth=12, leaf_p=0.4, n_outputs=3,
                                                        post_transform="softmax", cmp="<", threshold_dtype="float32",
                                                        accumulate_dtype="float32"),
    "rf_lopsided_vector_mean_f32": synthetic.tree_model(52, n_trees=9, depth=13, leaf_p=0.45, n_outputs=2,
                                                        vector_leaves=True, aggregation="mean", cmp="<=",
                                                        threshold_dtype="float32"),
}
STRATEGIES = ("numba", "numba_compact", "numba_compact_parallel")


def rows(model) -> np.ndarray:
    X = synthetic.adversarial_rows(model)
    return np.concatenate([X, X[::-1], X[:37]])  # > 2 blocks of BLOCK_ROWS, the last one short


def assert_bit_equal_to_fixed_trip_count(lay, X: np.ndarray, monkeypatch, **variant) -> None:
    """A kernel variant (``compact=True``, ``masks=True``) adds the same leaves in the same order as
    :func:`numba_trees._traverse`: identical bits, serially and split over 3 threads in small blocks."""
    fixed = numba_trees.NumbaTrees(lay, parallel=False)(X)
    np.testing.assert_array_equal(numba_trees.NumbaTrees(lay, parallel=False, **variant)(X), fixed)
    monkeypatch.setattr(numba_trees, "_MIN_ROWS_PER_THREAD", 8)
    monkeypatch.setattr(numba_trees, "BLOCK_ROWS", 4)
    np.testing.assert_array_equal(numba_trees.NumbaTrees(lay, parallel=True, threads=3, **variant)(X), fixed)


def test_lopsided_models_are_deep_and_lopsided():
    """The cases test what they claim: max depth far above the mean depth a row reaches."""
    for name, model in LOPSIDED.items():
        lay = tree_layout(model.estimator)
        assert lay.max_depth > numba_trees._COMPACT_MIN_DEPTH, name
        assert lay.is_leaf.sum() / lay.n_trees < 2 ** lay.max_depth / 8, name  # far from full trees


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", sorted(LOPSIDED))
def test_compact_exact_on_lopsided_trees(name, strategy):
    model = LOPSIDED[name]
    X = rows(model)
    got = compiler.compile(model, "numba", strategy=strategy).scores(X)
    assert_exact(model, got, X, f"{name} / {strategy}")


@pytest.mark.parametrize("name", sorted(LOPSIDED))
def test_compact_bit_equal_to_fixed_trip_count(name, monkeypatch):
    """Same leaves, same order of addition: identical bits, also split over 3 threads in small blocks."""
    model = LOPSIDED[name]
    assert_bit_equal_to_fixed_trip_count(tree_layout(model.estimator), rows(model), monkeypatch, compact=True)


def test_compact_refuses_general_nodes():
    model = synthetic.cases()[0].model  # categorical and zero-as-missing nodes
    with pytest.raises(compiler.StrategyUnavailable, match="numerical splits only"):
        compiler.compile(model, "numba", strategy="numba_compact")


def test_auto_calibrates_compact_on_deep_trees_only():
    deep = compiler.compile(LOPSIDED["lgbm_lopsided_f64"], "numba")
    shallow = compiler.compile(synthetic.tree_model(53, n_trees=10, depth=6), "numba")
    assert "numba_compact" in deep.strategies, deep.strategies
    assert "numba_compact" not in shallow.strategies, shallow.strategies
    assert "numba" in shallow.strategies


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("env, expected", [
    ({"NUMBA_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3),
    ({"OMP_NUM_THREADS": "1"}, 1),  # what Spark gives a Python worker (spark.task.cpus)
    ({"OMP_NUM_THREADS": "2"}, 2),
    ({"OMP_NUM_THREADS": ""}, None),
])
def test_default_threads_follows_numba_then_omp(env, expected, monkeypatch):
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    cores = len(os.sched_getaffinity(0))
    assert numba_trees.default_threads() == (expected if expected is not None else cores)


def test_one_thread_allowed_leaves_no_parallel_candidate(monkeypatch):
    """With OMP_NUM_THREADS=1 the parallel kernels would be copies of the serial ones: auto drops them,
    a pinned parallel strategy still runs (on one thread) and stays exact."""
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model = LOPSIDED["lgbm_lopsided_f64"]
    scorer = compiler.compile(model, "numba")
    assert scorer.strategies and not [s for s in scorer.strategies if s.endswith("_parallel")], scorer.strategies
    X = rows(model)
    pinned = compiler.compile(model, "numba", strategy="numba_parallel")
    assert_exact(model, pinned.scores(X), X, "numba_parallel on one thread")
