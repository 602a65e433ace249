"""Strategy choice: the compiled kernels are in the core install, auto says when they are missing,
and no kernel is ever chosen where it measured slower than the numpy reference."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparkscore.compiler import chooser
from sparkscore.compiler.chooser import Candidate
from tests.compiler import synthetic

ROOT = Path(__file__).resolve().parents[2]


def _setup_core() -> list[str]:
    """setup.py's ``CORE`` list, read without running setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CORE" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no CORE list")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_core_install_requires_numba():
    """README command 1 installs the core (+ model libraries): it must bring the compiled kernels."""
    assert "numba" in {_name(r) for r in _setup_core()}
    dist = importlib.metadata.distribution("sparkscore")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if url.rstrip("/") == ROOT.as_uri():  # installed from this checkout (CI): its metadata must agree
        core = {_name(r) for r in dist.requires or () if "extra ==" not in r}
        assert "numba" in core, dist.requires


# A tree ensemble and a 28-feature GLM built straight as IR: sklearn itself imports torch (via scipy's
# array API helpers) once it is installed, so no native library is used in the torch-less process.
_AUTO_WITHOUT_TORCH = """
import sys, warnings
sys.modules["torch"] = None
import numpy as np
from sparkscore import compiler
from sparkscore.errors import PerformanceWarning
warnings.simplefilter("error", PerformanceWarning)  # "no numba" would fail this run
from sparkscore.ir import Column, LinearModel, Model, Signature
from tests.compiler import synthetic
rng = np.random.default_rng(0)
glm = Model(LinearModel(rng.normal(size=(28, 1)), rng.normal(size=1), "logistic"),
            Signature(tuple(Column(f"x{j}") for j in range(28))), (), "classification", (0, 1), {"name": "glm"})
trees = synthetic.tree_model(30, n_trees=50, depth=6)
for model in (trees, glm):
    scorer = compiler.compile(model, "auto")
    print(",".join(scorer.strategies), scorer.strategy_for(10**6))
assert sys.modules["torch"] is None
"""


def test_auto_picks_a_compiled_strategy_with_the_core_only():
    """torch (an extra) made unimportable: auto still runs numba kernels on trees and GLMs.

    A 1 s calibration budget (not the suite's 0.3 s): on a GLM the reference's BLAS product is close
    to numba at 1024 rows, and the choice at scale needs the large sizes measured.
    """
    env = dict(os.environ, SPARKSCORE_CALIBRATION_BUDGET_S="1.0")
    out = subprocess.run([sys.executable, "-c", _AUTO_WITHOUT_TORCH], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert len(lines) == 4, out.stdout
    for i, (strategies, chosen) in enumerate(zip(lines[::2], lines[1::2])):
        assert "numba" in strategies.split(","), strategies
        assert not {"gemm", "tt", "ptt"} & set(strategies.split(",")), strategies
        # trees: numba beats the reference by far; the GLM is a near-tie with the reference's BLAS
        # product, and auto choosing the measured-faster one of the two is right (a CI run chose it)
        assert chosen.startswith("numba") or (i == 1 and chosen == "reference"), (strategies, chosen)


_AUTO_WITHOUT_NUMBA = """
import logging, sys, warnings
sys.modules["numba"] = None
sys.modules["torch"] = None  # fast: only the reference is left, and the warning is what is tested
logging.basicConfig(stream=sys.stdout, format="LOG %(levelname)s %(message)s")
import numpy as np
from sparkscore import compiler
from sparkscore.compiler import reference
from sparkscore.errors import PerformanceWarning
from tests.compiler import synthetic
X = np.random.default_rng(1).normal(size=(300, synthetic.N_FEATURES))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for model in (synthetic.tree_model(1, n_trees=5, depth=3), synthetic.linear_model(12, "logistic", 1)):
        scorer = compiler.compile(model, "auto")
        assert scorer.strategies == ("reference",), scorer.strategies
        np.testing.assert_array_equal(scorer.scores(X), reference.scores(model, X))
mine = [w for w in caught if issubclass(w.category, PerformanceWarning)]
print("WARNINGS", len(mine))
print("TEXT", mine[0].message)
"""


def test_auto_without_numba_says_so_once():
    out = subprocess.run([sys.executable, "-c", _AUTO_WITHOUT_NUMBA], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "WARNINGS 1" in out.stdout, out.stdout
    assert re.search(r"TEXT .*numba is not importable.*pip install numba", out.stdout), out.stdout
    logged = [line for line in out.stdout.splitlines() if line.startswith("LOG WARNING")]
    assert len(logged) == 1 and "pip install numba" in logged[0], out.stdout


# ------------------------------------------------------------------ never slower than the reference
def _reference_cost(n: int) -> float:
    return 1e-4 + 1e-6 * n


_FAKE_TORCH_COSTS = {
    # slower than the reference at every size
    "always_slower": lambda n: 3 * _reference_cost(n),
    # far faster up to 1024 rows (so the reference looks out of the race there), then 10x slower
    "slower_past_1024": lambda n: 1e-5 + 1e-8 * n if n <= 1024 else 1e-4 + 1e-5 * n,
    # faster below 8192 rows, slower from there on
    "slower_at_scale": lambda n: 1e-5 + 5e-7 * n if n < 8192 else 1e-4 + 3e-6 * n,
}


@pytest.mark.parametrize("profile", sorted(_FAKE_TORCH_COSTS))
def test_torch_cpu_is_never_chosen_where_slower_than_the_reference(profile, monkeypatch):
    """Fake clock: a torch-like candidate whose measured cost we set; the reference must win wherever
    the torch one costs more, measured sizes and extrapolation beyond them alike."""
    clock = [0.0]
    monkeypatch.setattr(chooser.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(chooser, "CALIBRATION_BUDGET_S", 1e9)
    monkeypatch.delenv("SPARKSCORE_CALIBRATION_BUDGET_S", raising=False)  # conftest's short test budget
    fake_cost = _FAKE_TORCH_COSTS[profile]

    def costing(cost):
        def run(X):
            clock[0] += cost(len(X))
            return np.zeros((len(X), 1))
        return run

    cands = [Candidate("reference", "numpy", costing(_reference_cost)), Candidate("tt", "torch", costing(fake_cost))]
    dispatcher = chooser.calibrate(cands, synthetic.tree_model(40, n_trees=2, depth=2))
    for n in (1, 64, 1024, 8192, 65536, 524288, 10**6, 10**8):
        chosen = dispatcher.choose(n).name
        if fake_cost(n) > _reference_cost(n):
            assert chosen == "reference", (profile, n, dispatcher.describe())
        else:
            assert chosen == "tt", (profile, n, dispatcher.describe())  # a faster torch kernel is still used


# ------------------------------------------------------------------ one row, one value
@pytest.mark.parametrize("link,n_outputs", [("logistic", 1), ("identity", 1), ("softmax", 3)])
def test_a_glm_row_gets_the_same_bits_in_any_batch_on_the_row_stable_backend(link, n_outputs):
    """Jobs with a prediction log score its sampled rows again in one small batch: on
    ``row_stable_backend()`` a GLM never races BLAS (whose sum order depends on the other rows of the
    call) against numba, so a row's value does not depend on the batch it lands in."""
    from sparkscore import compiler

    model = synthetic.linear_model(3, link, n_outputs)
    scorer = compiler.compile(model, compiler.row_stable_backend())
    assert "reference" not in scorer.strategies, scorer.strategies
    X = np.random.default_rng(5).normal(size=(20000, synthetic.N_FEATURES))
    whole = scorer.scores(X)
    for size in (1, 7, 64, 4099):
        parts = np.concatenate([scorer.scores(X[i:i + size]) for i in range(0, 4 * size + 3, size)])
        np.testing.assert_array_equal(parts, whole[:len(parts)])
