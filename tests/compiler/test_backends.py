"""Every compiled strategy against the numpy reference: identical routing on adversarial rows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sparkscore import compiler
from sparkscore.compiler import reference
from sparkscore.compiler.chooser import Candidate, CostCurve, Dispatcher
from sparkscore.compiler.layout import tree_layout
from sparkscore.errors import SparkscoreError
from tests.compiler import synthetic
from tests.zoo import ALL_CASES, params

STRATEGIES = [("numba", "numba"), ("numba", "numba_parallel"), ("numba", "numba_wide"), ("numba", "numba_wide_parallel"),
              ("numba", "numba_compact"), ("numba", "numba_compact_parallel"),
              ("numba", "numba_masks"), ("numba", "numba_masks_parallel"),
              ("torch", "gemm"), ("torch", "tt"), ("torch", "ptt"), ("auto", None)]
LINEAR_STRATEGIES = [("numba", "numba"), ("numba", "numba_parallel"), ("torch", "gemm"), ("auto", None)]
SYNTHETIC = synthetic.cases()
ZOO = ([(case, b, s) for case in params(kind="trees") for b, s in STRATEGIES]
       + [(case, b, s) for case in params(kind="linear") for b, s in LINEAR_STRATEGIES])
HAS_CUDA = pytest.importorskip("torch").cuda.is_available()


def _compile(model, backend: str, strategy: str | None, device: str = "cpu"):
    try:
        return compiler.compile(model, backend, device=device, strategy=strategy)
    except compiler.StrategyUnavailable as exc:
        pytest.skip(str(exc))


def assert_exact(model, got: np.ndarray, X: np.ndarray, what: str) -> None:
    """float32-accumulated ensembles: bit-identical; float64 paths: rtol 1e-12 (sum order only)."""
    expected = reference.scores(model, X)
    assert got.shape == expected.shape, what
    est = model.estimator
    if getattr(est, "accumulate_dtype", "float64") == "float32":
        np.testing.assert_array_equal(got, expected, err_msg=what)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=what)


@pytest.mark.parametrize("case,backend,strategy", [
    pytest.param(c, b, s, id=f"{c.id}-{s or b}") for c in SYNTHETIC
    for b, s in (LINEAR_STRATEGIES if c.model.kind == "linear" else STRATEGIES)])
def test_synthetic_rules_exact(case, backend, strategy):
    scorer = _compile(case.model, backend, strategy)
    assert_exact(case.model, scorer.scores(case.X), case.X, f"{case.id} / {strategy or backend}")


@pytest.mark.parametrize("case,backend,strategy", [
    pytest.param(p.values[0], b, s, id=f"{p.id}-{s or b}", marks=p.marks) for p, b, s in ZOO])
def test_zoo_exact(case, backend, strategy):
    fitted = case.fitted()
    X = fitted.model.to_matrix(fitted.X)
    scorer = _compile(fitted.model, backend, strategy)
    assert_exact(fitted.model, scorer.scores(X), X, f"{case.id} / {strategy or backend}")


def test_zoo_has_cases():
    assert ALL_CASES, "the model zoo is empty: the zoo parity runs above tested nothing"


@pytest.mark.parametrize("strategy", ["gemm", "tt", "ptt"])
def test_torch_splits_large_inputs_into_batches(strategy, monkeypatch):
    from sparkscore.compiler import torch_kernels

    monkeypatch.setattr(torch_kernels, "_CPU_BATCH_BYTES", 1)  # one row per batch
    case = SYNTHETIC[0]
    scorer = _compile(case.model, "torch", strategy)
    assert_exact(case.model, scorer.scores(case.X[:37]), case.X[:37], strategy)


@pytest.mark.parametrize("case", [SYNTHETIC[0], SYNTHETIC[3], SYNTHETIC[11]], ids=lambda c: c.id)
def test_numba_parallel_splits_rows_across_threads(case, monkeypatch):
    numba_trees = pytest.importorskip("sparkscore.compiler.numba_trees")
    from sparkscore.compiler.numba_linear import NumbaLinear

    monkeypatch.setattr(numba_trees, "_MIN_ROWS_PER_THREAD", 8)  # the adversarial rows become three chunks
    monkeypatch.setattr(numba_trees, "BLOCK_ROWS", 4)
    est = case.model.estimator
    kernel = (NumbaLinear(est, parallel=True, threads=3) if case.model.kind == "linear"
              else numba_trees.NumbaTrees(tree_layout(est), parallel=True, threads=3))
    got = kernel(reference.apply_features(case.model.features, case.X))
    if not getattr(kernel, "fuses_link", False):
        got = reference.apply_link(compiler.link_of(est), got)
    assert_exact(case.model, got, case.X, f"{case.id} / 3 threads")


@pytest.mark.parametrize("model", [
    synthetic.tree_model(20, n_trees=53, depth=5, cmp="<", threshold_dtype="float32", accumulate_dtype="float32"),
    synthetic.tree_model(21, n_trees=40, depth=4, n_outputs=3, post_transform="softmax", threshold_dtype="float64"),
    synthetic.tree_model(22, n_trees=35, depth=6, n_outputs=2, vector_leaves=True, aggregation="mean",
                         threshold_dtype="float32")], ids=["xgb_f32_sum", "multiclass_f64", "vector_leaf_mean"])
def test_numba_wide_parallel_splits_trees_across_threads(model):
    """A batch too small to split by rows splits the trees; the leaves still add up in tree order."""
    numba_trees = pytest.importorskip("sparkscore.compiler.numba_trees")
    kernel = numba_trees.NumbaTrees(tree_layout(model.estimator), parallel=True, threads=3, wide=True)
    X = synthetic.adversarial_rows(model)
    for rows in (X[:1], X[:37], X[:300]):
        assert kernel._run_tree_split(np.ascontiguousarray(rows, dtype=kernel.layout.compare_dtype),
                                      np.zeros((len(rows), model.estimator.n_outputs), kernel.layout.acc_dtype))
        got = reference.apply_link(compiler.link_of(model.estimator), kernel(rows))
        assert_exact(model, got, rows, f"{len(rows)} rows on 3 threads")


def test_empty_batch_gives_empty_scores():
    case = SYNTHETIC[1]
    scorer = _compile(case.model, "numba", "numba")
    assert scorer.scores(np.zeros((0, synthetic.N_FEATURES))).shape == (0, 3)


def test_declined_strategy_names_model_and_fix():
    with pytest.raises(compiler.StrategyUnavailable, match="synthetic1: unknown strategy.*backend=.auto."):
        compiler.compile(SYNTHETIC[0].model, "torch", device="cpu", strategy="no_such_strategy")


def test_importing_the_compiler_loads_neither_torch_nor_numba():
    code = "import sys, sparkscore.compiler; assert not {'torch', 'numba'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- chooser
def _candidate(name: str) -> Candidate:
    return Candidate(name, "test", lambda X: np.zeros((len(X), 1)))


def test_dispatcher_picks_cheapest_curve_per_batch_size():
    low_overhead = CostCurve((1, 64, 1024), (1e-5, 1e-4, 2e-3))
    high_throughput = CostCurve((1, 64, 1024), (1e-3, 1.2e-3, 1.5e-3))
    dropped = CostCurve((1,), (1e-6,), extrapolates=False)
    d = Dispatcher((_candidate("small"), _candidate("large"), _candidate("dropped")),
                   (low_overhead, high_throughput, dropped))
    assert d.choose(1).name == "dropped"
    assert d.choose(2).name == "small"  # a dropped single-point curve is never extrapolated
    assert d.choose(1024).name == "large"
    assert d.choose(10**7).name == "large"  # extrapolated with each curve's last slope


def test_calibration_follows_measured_cost(monkeypatch):
    """Fake clock: 'fixed' costs 1 unit + 1e-4/row, 'per_row' 1e-3/row; the crossover is ~1100 rows."""
    from sparkscore.compiler import chooser

    clock = [0.0]
    monkeypatch.setattr(chooser.time, "perf_counter", lambda: clock[0])

    def costing(fixed: float, per_row: float):
        def raw(X):
            clock[0] += fixed + per_row * len(X)
            return np.zeros((len(X), 1))
        return raw

    cands = [Candidate("fixed", "test", costing(1.0, 1e-4)), Candidate("per_row", "test", costing(0.0, 1e-3))]
    monkeypatch.setattr(chooser, "CALIBRATION_BUDGET_S", 1e9)
    monkeypatch.delenv("SPARKSCORE_CALIBRATION_BUDGET_S", raising=False)  # conftest's short test budget
    d = chooser.calibrate(cands, SYNTHETIC[0].model)
    assert d.choose(1).name == "per_row"
    assert d.choose(8192).name == "fixed"
    assert set(d.describe()) == {"fixed", "per_row"}


def test_calibration_budget_from_environment(monkeypatch):
    from sparkscore.compiler import chooser

    monkeypatch.setenv("SPARKSCORE_CALIBRATION_BUDGET_S", "0.25")
    assert chooser.calibration_budget_s() == 0.25
    monkeypatch.delenv("SPARKSCORE_CALIBRATION_BUDGET_S")
    assert chooser.calibration_budget_s() == chooser.CALIBRATION_BUDGET_S
    monkeypatch.setenv("SPARKSCORE_CALIBRATION_BUDGET_S", "two seconds")
    with pytest.raises(SparkscoreError, match="SPARKSCORE_CALIBRATION_BUDGET_S='two seconds'.*unset it"):
        chooser.calibration_budget_s()


def test_auto_keeps_only_exact_candidates_and_reports_choice():
    case = SYNTHETIC[3]
    scorer = compiler.compile(case.model, "auto")
    assert "reference" in scorer.strategies and "numba" in scorer.strategies
    assert scorer.strategy_for(1) in scorer.strategies
    assert_exact(case.model, scorer.scores(case.X), case.X, "auto")


# ----------------------------------------------------------------------------- caches
def test_cached_loads_and_compiles_once_per_key():
    compiler.clear_cache()
    calls = []
    model = SYNTHETIC[10].model

    def load():
        calls.append(1)
        return model

    key = ("glm", 3, model.sha256, "cpu")
    first = compiler.cached(key, load, backend="numpy")
    again = compiler.cached(key, load, backend="numpy")
    other = compiler.cached(("glm", 4, model.sha256, "cpu"), load, backend="numpy")
    assert first is again and other is not first
    assert len(calls) == 2
    compiler.clear_cache()


def test_scores_reuses_compiled_model_by_content(monkeypatch):
    compiler.clear_cache()
    case = SYNTHETIC[4]
    compiled = []
    real = compiler.compile
    monkeypatch.setattr(compiler, "compile", lambda *a, **k: compiled.append(1) or real(*a, **k))
    for _ in range(3):
        compiler.scores(case.model, case.X, backend="numba")
    assert len(compiled) == 1
    compiler.clear_cache()


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["gemm", "tt", "ptt"])
@pytest.mark.parametrize("case", SYNTHETIC, ids=[c.id for c in SYNTHETIC])
def test_cuda_exact(case, strategy):
    import torch

    scorer = _compile(case.model, "torch", strategy, device="cuda")
    assert_exact(case.model, scorer.scores(case.X), case.X, f"{case.id} / cuda {strategy}")
    assert torch.backends.cuda.matmul.allow_tf32 is False


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_batches_under_memory_budget(monkeypatch):
    from sparkscore.compiler import torch_kernels

    monkeypatch.setattr(torch_kernels.TorchProgram, "batch_rows", lambda self: 100)
    case = SYNTHETIC[0]
    X = np.tile(case.X, (3, 1))
    scorer = _compile(case.model, "torch", "tt", device="cuda")
    assert_exact(case.model, scorer.scores(X), X, "cuda batched")


def test_split_nothing_passes_routes_every_value_right():
    """``v < -inf`` holds for no value, -inf included: the kernels may not turn it into ``v > t``."""
    from sparkscore.ir import Model, TreeBuilder

    builder = TreeBuilder(synthetic.N_FEATURES)
    builder.add_tree(feature=[0, -1, -1], threshold=[-np.inf, 0, 0], left=[1, -1, -1], right=[2, -1, -1],
                     value=[0.0, 1.0, 2.0], default_left=[True, False, False])
    ens = builder.build(cmp="<", threshold_dtype="float32", accumulate_dtype="float32")
    model = Model(ens, synthetic._signature(), (), "regression", None, {"name": "never_left"})
    X = np.zeros((4, synthetic.N_FEATURES))
    X[:, 0] = [-np.inf, -1e300, np.nan, np.inf]
    ran = []
    for backend, strategy in STRATEGIES:
        try:
            scorer = compiler.compile(model, backend, strategy=strategy)
        except compiler.StrategyUnavailable:
            continue  # e.g. the wide kernels: a NaN threshold takes the general path
        assert_exact(model, scorer.scores(X), X, strategy or backend)
        ran.append(strategy or backend)
    assert {"numba", "auto"} <= set(ran), ran
