"""IR -> executable scoring kernels, plus the per-process compiled-model cache.

* ``compile(model, backend, device) -> Scorer``: build the exact kernels a backend offers for the
  model and, when there are several, pick per batch size from costs measured at compile time
  (:mod:`sparkscore.compiler.chooser`).
* ``cached(key, load, backend, device) -> Scorer``: one compiled model per process (executor),
  keyed by ``(name, version, sha256, device)``, so engines load and compile a model once.
* ``scores(model, X, backend, device)``: one-shot convenience used by ``Model.predict``.

Backends: ``numpy`` (the reference evaluator, the oracle), ``numba`` (compiled CPU tree traversal and
one-pass GLMs), ``torch`` (GEMM / tree traversal / perfect tree traversal on CPU or CUDA) and
``auto`` (every exact candidate for the device, cheapest measured).  numba and torch are imported lazily, only
when a backend that needs them is compiled.

numba is a core dependency: the compiled CPU kernels are what ``auto`` is meant to run.  If it is
missing or cannot be imported anyway (a broken environment, an llvmlite / numpy mismatch), ``auto``
still works on the reference (and torch, where it measures faster), but says so once per process,
loudly (:class:`~sparkscore.errors.PerformanceWarning` plus a log line naming ``pip install numba``),
instead of silently running several times slower than the native libraries.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable, Hashable

import numpy as np

from sparkscore.compiler import reference
from sparkscore.compiler.chooser import Candidate, Dispatcher, calibrate
from sparkscore.errors import PerformanceWarning, SparkscoreError
from sparkscore.ir.linear import LinearModel

BACKENDS = ("auto", "numpy", "numba", "torch")
STRATEGIES = {"numpy": ("reference",), "numba": ("numba", "numba_parallel", "numba_wide", "numba_wide_parallel",
                                                 "numba_compact", "numba_compact_parallel",
                                                 "numba_masks", "numba_masks_parallel"),
              "torch": ("gemm", "tt", "ptt")}


class StrategyUnavailable(SparkscoreError, ValueError):
    """A requested backend / strategy that cannot run this model exactly on this device."""


@dataclass(frozen=True, eq=False)
class Scorer:
    """A model compiled for one backend and device: ``scores(X) -> (n, k)`` transformed outputs."""

    model: object
    backend: str
    device: str
    fn: Callable[[np.ndarray], np.ndarray]
    dispatcher: Dispatcher | None = None

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self.fn(np.ascontiguousarray(X, dtype=np.float64))

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.dispatcher.candidates) if self.dispatcher else ("reference",)

    def strategy_for(self, n_rows: int) -> str:
        """The strategy a batch of ``n_rows`` runs on."""
        return self.dispatcher.choose(n_rows).name if self.dispatcher else "reference"


def link_of(estimator) -> str:
    if isinstance(estimator, LinearModel):
        return estimator.link
    return reference.tree_link(estimator)


def _with_features(model, kernel: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``kernel`` fed what the estimator takes: the feature maps' output, with an ensemble's
    ``missing_value`` already NaN (the kernels then route it as the NaN it stands for)."""
    est = model.estimator
    if not isinstance(est, LinearModel) and est.has_missing_value:
        inner = kernel
        kernel = lambda X: inner(reference.mark_missing(est, X))  # noqa: E731
    return kernel if not model.features else (lambda X: kernel(reference.apply_features(model.features, X)))


def _with_link(estimator, raw: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(estimator, LinearModel):  # float32 GLMs round their output like sklearn
        return lambda X: reference.linear_link(estimator, raw(X))
    link = link_of(estimator)
    return lambda X: reference.apply_link(link, raw(X))


def _numba_candidates(model, layout, strategy: str | None = None) -> list[Candidate]:
    from sparkscore.compiler.numba_linear import NumbaLinear
    from sparkscore.compiler.numba_trees import NumbaTrees

    est = model.estimator
    if isinstance(est, LinearModel):
        kernels = {"numba": NumbaLinear(est, False), "numba_parallel": NumbaLinear(est, True)}
    else:
        kernels = NumbaTrees.variants(layout())
    out = []
    for name, kernel in kernels.items():
        if strategy is None and ((name.endswith("_parallel") and kernel.threads == 1)
                                 or not getattr(kernel, "auto_candidate", True)):
            # one thread allowed (a Spark task: OMP_NUM_THREADS=1) makes a parallel kernel a copy of the
            # serial one; a variant not worth its share of the calibration budget is left out too
            continue
        fn = _with_features(model, kernel)
        out.append(Candidate(name, "numba", fn if getattr(kernel, "fuses_link", False) else _with_link(est, fn),
                             threaded=kernel.threads > 1))
    return out


def _torch_candidates(model, device: str, layout, wanted: tuple[str, ...]) -> list[Candidate]:
    from sparkscore.compiler import torch_kernels

    est = model.estimator
    names = ("gemm",) if isinstance(est, LinearModel) else wanted
    marks_missing = not isinstance(est, LinearModel) and est.has_missing_value
    if marks_missing and model.features:
        return []  # torch applies feature maps on the device: missing values would be marked too early
    out = []
    for name in names:
        try:
            raw = torch_kernels.build(model, name, device, layout)
            if marks_missing:
                raw = _with_features(model, raw)
            out.append(Candidate(name, "torch", _with_link(model.estimator, raw)))
        except torch_kernels.StrategyDeclined:
            continue
    return out


_LOG = logging.getLogger("sparkscore.compiler")
_NUMBA: list = []  # [None] importable, or [reason it is not], decided once per process
_WARNED_NO_NUMBA: list = []


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # sys.modules[module] = None, or a module without a spec
        return False


def numba_unavailable() -> str | None:
    """Why the numba kernels cannot run here (None when they can); imports numba once to find out.

    ``find_spec`` is not enough: an installed numba whose llvmlite or numpy does not match fails
    only on import, and must then read as missing, not crash ``auto``.
    """
    if not _NUMBA:
        try:
            import numba  # noqa: F401

            _NUMBA.append(None)
        except Exception as exc:  # noqa: BLE001 - any import failure means "no numba"; the reason is reported
            _NUMBA.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
    return _NUMBA[0]


def _warn_no_numba(reason: str) -> None:
    """Once per process: auto runs without the compiled kernels; say why and how to fix it."""
    if _WARNED_NO_NUMBA:
        return
    _WARNED_NO_NUMBA.append(True)
    message = (f"sparkscore: numba is not importable ({reason}), so backend='auto' runs the numpy reference "
               "(or torch) on CPU, typically 3-10x slower than the native libraries; fix: pip install numba "
               "(it is a core dependency of sparkscore)")
    _LOG.warning(message)
    warnings.warn(message, PerformanceWarning, stacklevel=4)


def candidates(model, backend: str = "auto", device: str = "cpu", strategy: str | None = None) -> list[Candidate]:
    """Every exact kernel ``backend`` can build for ``model`` on ``device`` (filtered to ``strategy``)."""
    from sparkscore.compiler.layout import tree_layout

    layout_cache: list = []

    def layout():
        if not layout_cache:
            layout_cache.append(tree_layout(model.estimator))
        return layout_cache[0]

    wanted = STRATEGIES["torch"] if strategy is None else (strategy,)
    found: list[Candidate] = []
    on_cpu = device == "cpu"
    if backend in ("auto", "numpy") and on_cpu:
        found.append(Candidate("reference", "numpy", partial(reference.scores, model)))
    numba_ok = on_cpu and backend in ("auto", "numba") and numba_unavailable() is None
    if backend == "auto" and on_cpu and not numba_ok:
        _warn_no_numba(numba_unavailable())
    if numba_ok:
        found += _numba_candidates(model, layout, strategy)
    # auto on CPU leaves torch out where numba runs: torch's OpenMP workers keep spinning after each
    # call and skew the interleaved calibration, and torch CPU lost to numba on every measured config
    torch_wanted = backend == "torch" or (backend == "auto" and not (on_cpu and numba_ok))
    if torch_wanted and _installed("torch"):
        found += _torch_candidates(model, device, layout, wanted)
    return [c for c in found if strategy is None or c.name == strategy]


def compile(model, backend: str = "auto", device: str = "cpu",  # noqa: A001 - mirrors torch.compile
            strategy: str | None = None) -> Scorer:
    """Compile ``model`` for ``backend`` on ``device``; ``strategy`` pins one kernel (tests, benchmarks)."""
    if backend not in BACKENDS:
        raise SparkscoreError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    known = [name for names in STRATEGIES.values() for name in names]
    if strategy is not None and strategy not in known:
        raise StrategyUnavailable(f"{getattr(model, 'name', 'model')}: unknown strategy {strategy!r}; use one of "
                                  f"{', '.join(known)}, or backend='auto'")
    if model.kind == "ensemble":
        return _compile_ensemble(model, backend, device, strategy)
    found = candidates(model, backend, device, strategy)
    if not found:
        what = f"strategy {strategy!r} of backend {backend!r}" if strategy else f"backend {backend!r}"
        raise StrategyUnavailable(f"{getattr(model, 'name', 'model')}: {what} cannot run this model on device "
                                  f"{device!r} (not installed, no such device, over its memory limits, or nodes it does not "
                                  "route: the wide, compact and masks kernels take numerical splits only, masks trees of "
                                  "at most 64 leaves); "
                                  "use backend='auto' or backend='numpy'")
    dispatcher = calibrate(found, model)
    empty = _with_link(model.estimator, lambda X: np.zeros((0, model.estimator.n_outputs)))

    def fn(X: np.ndarray) -> np.ndarray:
        return dispatcher(X) if X.shape[0] else empty(X)

    return Scorer(model, backend, device, fn, dispatcher)


def _compile_ensemble(model, backend: str, device: str, strategy: str | None) -> Scorer:
    """An ensemble's kernels: its fused GLM / trees where fusing is exact (:func:`sparkscore.ir.ensemble.fuse`),
    otherwise every member compiled on its own and run on its columns of each batch, then combined."""
    from sparkscore.compiler import ensemble
    from sparkscore.ir.ensemble import fuse

    fused, _why = fuse(model)
    if fused is not None:
        return compile(fused, backend=backend, device=device, strategy=strategy)
    members = [compile(m, backend=backend, device=device, strategy=strategy)
               for m in ensemble.member_scorer_models(model.estimator)]
    fns = [s.scores for s in members]

    def fn(X: np.ndarray) -> np.ndarray:
        return ensemble.run(model, X, fns)

    return Scorer(model, backend, device, fn, calibrate([Candidate("ensemble", backend, fn)], model))


def row_stable_backend() -> str:
    """The backend whose value for a row does not depend on the batch it is scored in (nor the process).

    Under ``auto`` a GLM races BLAS (the reference: its sum order depends on the other rows of the
    call) against numba (each row summed in feature order), and the winner can differ between a
    60-row and a 10k-row batch or between two processes' calibrations: last-bit differences.  Jobs
    that write a prediction log score it again in small batches, so they use ``numba`` (all of its
    kernels agree row by row) where numba runs, the reference alone otherwise.  Cost: wide GLMs lose
    BLAS at large batches (100 features, 1M rows: 37 vs 71 ns/row measured on 2 cores).
    """
    return "numba" if numba_unavailable() is None else "auto"


_CACHE: dict[Hashable, Scorer] = {}
_CACHE_LOCK = threading.Lock()
_BY_CONTENT: OrderedDict[tuple, Scorer] = OrderedDict()
_BY_CONTENT_SIZE = 32
ONE_SHOT_ROWS = 2048


def cached(key: Hashable, load: Callable[[], object], backend: str = "auto", device: str = "cpu") -> Scorer:
    """The process-wide compiled model for ``key``; ``load()`` runs only on the first call."""
    full_key = (key, backend, device)
    scorer = _CACHE.get(full_key)
    if scorer is None:
        with _CACHE_LOCK:
            scorer = _CACHE.get(full_key)
            if scorer is None:
                scorer = compile(load(), backend=backend, device=device)
                _CACHE[full_key] = scorer
    return scorer


def forget(key: Hashable, backend: str = "auto", device: str = "cpu") -> None:
    """Drop one :func:`cached` entry (a server unloading a model version frees its kernels)."""
    with _CACHE_LOCK:
        _CACHE.pop((key, backend, device), None)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
        _BY_CONTENT.clear()


def scores(model, X: np.ndarray, backend: str = "auto", device: str = "cpu") -> np.ndarray:
    """Transformed outputs (n, k) for the encoded input matrix ``X``.

    Compiled scorers are reused across calls by model content (a small LRU), so repeated
    ``Model.predict`` calls do not recompile or recalibrate.  A one-off ``auto`` call on a small
    batch of a model not compiled yet runs the reference: compiling and calibrating would cost
    more than the kernels could save on it.
    """
    X = np.asarray(X, dtype=np.float64)
    if device == "cpu" and backend == "numpy":
        return reference.scores(model, X)
    key = (model.sha256, backend, device)
    with _CACHE_LOCK:
        scorer = _BY_CONTENT.get(key)
        if scorer is not None:
            _BY_CONTENT.move_to_end(key)
    if scorer is None and backend == "auto" and device == "cpu" and X.shape[0] <= ONE_SHOT_ROWS:
        return reference.scores(model, X)
    if scorer is None:
        scorer = compile(model, backend=backend, device=device)
        with _CACHE_LOCK:
            _BY_CONTENT[key] = scorer
            while len(_BY_CONTENT) > _BY_CONTENT_SIZE:
                _BY_CONTENT.popitem(last=False)
    return scorer.scores(X)
