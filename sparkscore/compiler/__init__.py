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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable, Hashable

import numpy as np

from sparkscore.compiler import reference
from sparkscore.compiler.chooser import Candidate, Dispatcher, calibrate
from sparkscore.errors import SparkscoreError
from sparkscore.ir.linear import LinearModel

BACKENDS = ("auto", "numpy", "numba", "torch")
STRATEGIES = {"numpy": ("reference",), "numba": ("numba", "numba_parallel", "numba_wide", "numba_wide_parallel"),
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
    return "logistic" if estimator.post_transform == "sigmoid" else estimator.post_transform


def _with_features(model, kernel: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return kernel if not model.features else (lambda X: kernel(reference.apply_features(model.features, X)))


def _with_link(link: str, raw: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda X: reference.apply_link(link, raw(X))


def _numba_candidates(model, layout) -> list[Candidate]:
    from sparkscore.compiler.numba_linear import NumbaLinear
    from sparkscore.compiler.numba_trees import NumbaTrees

    est = model.estimator
    if isinstance(est, LinearModel):
        kernels = {"numba": NumbaLinear(est, False), "numba_parallel": NumbaLinear(est, True)}
    else:
        kernels = NumbaTrees.variants(layout())
    out = []
    for name, kernel in kernels.items():
        fn = _with_features(model, kernel)
        out.append(Candidate(name, "numba", fn if getattr(kernel, "fuses_link", False) else _with_link(link_of(est), fn),
                             threaded=kernel.threads > 1))
    return out


def _torch_candidates(model, device: str, layout, wanted: tuple[str, ...]) -> list[Candidate]:
    from sparkscore.compiler import torch_kernels

    names = ("gemm",) if isinstance(model.estimator, LinearModel) else wanted
    out = []
    for name in names:
        try:
            raw = torch_kernels.build(model, name, device, layout)
            out.append(Candidate(name, "torch", _with_link(link_of(model.estimator), raw)))
        except torch_kernels.StrategyDeclined:
            continue
    return out


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


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
    numba_ok = _installed("numba")
    if backend in ("auto", "numba") and on_cpu and numba_ok:
        found += _numba_candidates(model, layout)
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
    found = candidates(model, backend, device, strategy)
    if not found:
        what = f"strategy {strategy!r} of backend {backend!r}" if strategy else f"backend {backend!r}"
        raise StrategyUnavailable(f"{getattr(model, 'name', 'model')}: {what} cannot run this model on device "
                                  f"{device!r} (not installed, no such device, over its memory limits, or nodes it does not "
                                  "route: the wide kernels take numerical splits only); "
                                  "use backend='auto' or backend='numpy'")
    dispatcher = calibrate(found, model)
    link = link_of(model.estimator)
    n_outputs = model.estimator.n_outputs

    def fn(X: np.ndarray) -> np.ndarray:
        return dispatcher(X) if X.shape[0] else reference.apply_link(link, np.zeros((0, n_outputs)))

    return Scorer(model, backend, device, fn, dispatcher)


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
