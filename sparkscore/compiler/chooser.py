"""Strategy choice from *measured* cost, per model, device and batch size.

At compile time every exact candidate (numpy reference, numba traversal serial / parallel, torch
GEMM / TT / PTT) is timed on a synthetic sample drawn around the model's own thresholds: at 1 row
(call overhead), 64 and 1024 rows and, for candidates still in the race and while the calibration
budget lasts, 8192, 65536 and 524288 rows (the last beyond the L3 cache, where memory-bound kernels such
as GLMs show their threaded speedup; only cheap models reach it).  Each candidate gets
a piecewise-linear cost curve; a call with ``n`` rows runs the candidate cheapest at ``n``.  So
tiny batches go where start-up is cheapest and large ones where throughput is highest, without
hard-coded depth or size thresholds.

The numpy reference is the *baseline*: a torch CPU kernel is never chosen at a batch size where it
costs more than the reference.  That is a guarantee, not a hope: while a candidate that is not a
compiled numba kernel (the torch CPU strategies) is still being measured, the reference is measured
at the same sizes and stays in the race (its curve extrapolates as far as theirs), so the per-size
argmin can never pick such a kernel where it measured slower than the reference.  (The reference
may still leave the race against numba kernels measured 3x faster: those are not the ones in doubt.)
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sparkscore.errors import SparkscoreError
from sparkscore.ir.features import INDICATOR
from sparkscore.ir.trees import LEAF, TreeEnsemble

CALIBRATION_SIZES = (1, 64, 1024, 8192, 65536, 524288)  # the last (117 MB at 28 features) is past the L3 cache
CALIBRATION_BUDGET_S = 2.0  # default; $SPARKSCORE_CALIBRATION_BUDGET_S overrides
_REPEATS = 3
_REPEATS_FROM_SLOPE = 5  # where serial and threaded kernels part ways: more tries, so a burst of load elsewhere does not pick
_IN_CACHE_SAMPLE = 65536  # drawn up front; larger sizes are drawn only when the budget reaches them
_MIN_SLOPE_SIZE = 1024  # always measured, so no cost curve is a flat line from a single point
_THREADED_KEPT_UNTIL = 8192
_STILL_IN_RACE = 3.0  # a candidate projected this much slower than the best at the largest size stops being measured


@dataclass(frozen=True, eq=False)
class Candidate:
    name: str                                  # "reference", "numba", "numba_parallel", "gemm", "tt", "ptt"
    backend: str                               # "numpy" | "numba" | "torch"
    scores: Callable[[np.ndarray], np.ndarray]  # encoded inputs (n, d) -> float64 transformed scores (n, k)
    # splits large batches across threads: a fixed hand-off cost the slope from 64 to 1024 rows overstates,
    # so it stays in the race until measured where the split pays (8192 rows and up)
    threaded: bool = False

    @property
    def is_baseline(self) -> bool:
        """The numpy reference: every other candidate must beat it to be chosen."""
        return self.backend == "numpy"

    @property
    def needs_baseline(self) -> bool:
        """Kernels not known to beat the reference on CPU (torch): measured beside it at every size."""
        return self.backend not in ("numpy", "numba")


@dataclass(frozen=True)
class CostCurve:
    sizes: tuple[int, ...]
    seconds: tuple[float, ...]
    extrapolates: bool = True  # False: dropped from the race, so never chosen beyond its last size

    def at(self, n: int) -> float:
        """Interpolated cost; linear extrapolation (from the last two points) beyond the last size."""
        if n <= self.sizes[-1]:  # plain Python: np.interp costs more than a 1-row kernel call
            i = bisect.bisect_left(self.sizes, n)
            if i == 0:
                return self.seconds[0]
            x0, x1, y0, y1 = self.sizes[i - 1], self.sizes[i], self.seconds[i - 1], self.seconds[i]
            return y0 + (y1 - y0) * (n - x0) / (x1 - x0)
        if not self.extrapolates:
            return float("inf")
        if len(self.sizes) == 1:
            return self.seconds[0]
        slope = max(0.0, (self.seconds[-1] - self.seconds[-2]) / (self.sizes[-1] - self.sizes[-2]))
        return self.seconds[-1] + slope * (n - self.sizes[-1])


@dataclass(frozen=True, eq=False)
class Dispatcher:
    """Runs each batch on the candidate whose measured cost curve is lowest at that batch size."""

    candidates: tuple[Candidate, ...]
    curves: tuple[CostCurve, ...]

    def choose(self, n: int) -> Candidate:
        costs = [curve.at(max(n, 1)) for curve in self.curves]
        return self.candidates[costs.index(min(costs))]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.choose(X.shape[0]).scores(X)

    def describe(self) -> dict[str, dict[int, float]]:
        """Measured seconds per candidate and batch size (for EXPLAIN-style reporting and benchmarks)."""
        return {c.name: dict(zip(k.sizes, k.seconds)) for c, k in zip(self.candidates, self.curves)}


def sample_inputs(model, n: int, seed: int = 0) -> np.ndarray:
    """Synthetic encoded inputs that exercise the model's splits (values drawn near its thresholds)."""
    rng = np.random.default_rng(seed)
    d = len(model.signature)
    X = rng.normal(size=(n, d))
    est = model.estimator
    if isinstance(est, TreeEnsemble) and not model.features:
        internal = est.feature != LEAF
        for j in range(d):
            thr = est.threshold[internal & (est.feature == j) & ~est.is_categorical]
            thr = thr[np.isfinite(thr)]
            if len(thr):
                spread = np.std(thr) + 1e-3
                X[:, j] = rng.choice(thr, size=n) + rng.normal(scale=spread * 0.1, size=n)
            elif (internal & (est.feature == j)).any():  # categorical codes
                X[:, j] = rng.integers(0, est.cat_words.shape[1] * 32, size=n)
    for fmap in model.features[:1]:
        for src, cat in zip(fmap.source[fmap.kind == INDICATOR], fmap.category[fmap.kind == INDICATOR]):
            X[rng.random(n) < 0.5, src] = cat
    return X


def _seconds(fn: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> float:
    start = time.perf_counter()
    fn(X)
    return time.perf_counter() - start


def calibration_budget_s() -> float:
    """Seconds a compile may spend timing candidates: ``$SPARKSCORE_CALIBRATION_BUDGET_S`` or the default.

    A knob because the right trade-off differs: an executor compiling once for hours of scoring
    wants the full budget, a test suite compiling hundreds of small models wants little.
    """
    env = os.environ.get("SPARKSCORE_CALIBRATION_BUDGET_S")
    if not env:
        return CALIBRATION_BUDGET_S
    try:
        return float(env)
    except ValueError:
        raise SparkscoreError(f"SPARKSCORE_CALIBRATION_BUDGET_S={env!r} is not a number of seconds; "
                              f"unset it (default {CALIBRATION_BUDGET_S}) or set e.g. 0.5") from None


def calibrate(candidates: list[Candidate], model) -> Dispatcher:
    """Time the candidates on growing samples and return the per-batch-size dispatcher.

    From ``_MIN_SLOPE_SIZE`` on, only candidates whose cost projected to the largest size is within
    ``_STILL_IN_RACE`` of the best keep being measured (start-up cost alone never drops one), and
    a size beyond ``_MIN_SLOPE_SIZE`` is measured only if its projected cost fits ``CALIBRATION_BUDGET_S``,
    so compiling stays cheap for huge models.
    """
    if len(candidates) == 1:
        return Dispatcher(tuple(candidates), (CostCurve((1,), (0.0,)),))
    budget = calibration_budget_s()
    X = sample_inputs(model, _IN_CACHE_SAMPLE)
    for cand in candidates:
        cand.scores(X[:2])  # warm-up: JIT compilation, lazy allocations
    start = time.perf_counter()
    times: list[dict[int, float]] = [{} for _ in candidates]
    alive = list(range(len(candidates)))
    for size in CALIBRATION_SIZES:
        if size > _MIN_SLOPE_SIZE:  # every survivor has a measured per-row slope: grow only within budget
            projected = sum(_curve(times[i]).at(size) for i in alive) * _REPEATS_FROM_SLOPE
            if time.perf_counter() - start + projected > budget:
                break
            if size > len(X):  # only cheap models get here (GLMs): draw the out-of-cache sample now
                X = sample_inputs(model, size)
        measuring = list(alive)
        for _ in range(_REPEATS_FROM_SLOPE if size >= _MIN_SLOPE_SIZE else _REPEATS):
            # round-robin, so a burst of load from other processes hits every candidate
            for i in measuring:
                times[i][size] = min(times[i].get(size, float("inf")), _seconds(candidates[i].scores, X[:size]))
            if size >= _MIN_SLOPE_SIZE:  # a far slower candidate (the reference on trees) is not timed again
                best_here = min(times[i][size] for i in measuring)
                measuring = [i for i in measuring
                             if times[i][size] <= _STILL_IN_RACE * best_here or candidates[i].threaded
                             or _baseline_needed(candidates, measuring, i)]
        if size >= _MIN_SLOPE_SIZE:  # a slope from 1 and 64 rows is start-up noise: project from here on
            projected = {i: _curve(times[i]).at(CALIBRATION_SIZES[-1]) for i in alive}
            best = min(projected.values())
            alive = [i for i in alive if projected[i] <= _STILL_IN_RACE * best
                     or (candidates[i].threaded and size < _THREADED_KEPT_UNTIL)
                     or _baseline_needed(candidates, alive, i)]
    curves = tuple(_curve(t, i in alive) for i, t in enumerate(times))
    return Dispatcher(tuple(candidates), curves)


def _baseline_needed(candidates: list[Candidate], others: list[int], i: int) -> bool:
    """The reference stays in the race while any candidate that must beat it (torch CPU) does."""
    return candidates[i].is_baseline and any(candidates[j].needs_baseline for j in others if j != i)


def _curve(seconds_by_size: dict[int, float], extrapolates: bool = True) -> CostCurve:
    sizes = tuple(sorted(seconds_by_size))
    return CostCurve(sizes, tuple(seconds_by_size[k] for k in sizes), extrapolates)
