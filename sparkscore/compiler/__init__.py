"""IR -> executable scoring kernels, plus the per-process compiled-model cache.

* ``compile(model, backend, device) -> Scorer``: pick and build a kernel for the model.
* ``cached(key, load, backend, device) -> Scorer``: one compiled model per process (executor),
  keyed by ``(name, version, sha256, device)``, so engines load and compile a model once.
* ``scores(model, X, backend, device)``: one-shot convenience used by ``Model.predict``.

``backend="numpy"`` is the reference evaluator (the oracle); faster backends register here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np

from sparkscore.compiler import reference
from sparkscore.errors import SparkscoreError

BACKENDS = ("auto", "numpy", "torch")


@dataclass(frozen=True, eq=False)
class Scorer:
    """A model compiled for one backend and device: ``scores(X) -> (n, k)`` transformed outputs."""

    model: object
    backend: str
    device: str
    fn: Callable[[np.ndarray], np.ndarray]

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self.fn(np.ascontiguousarray(X, dtype=np.float64))


def compile(model, backend: str = "auto", device: str = "cpu") -> Scorer:  # noqa: A001 - mirrors torch.compile
    if backend not in BACKENDS:
        raise SparkscoreError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend in ("numpy", "auto") and device == "cpu":
        return Scorer(model, "numpy", device, lambda X: reference.scores(model, X))
    raise SparkscoreError(f"backend {backend!r} on device {device!r} is not available yet; use backend='numpy'")


_CACHE: dict[Hashable, Scorer] = {}
_CACHE_LOCK = threading.Lock()


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


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def scores(model, X: np.ndarray, backend: str = "auto", device: str = "cpu") -> np.ndarray:
    """Transformed outputs (n, k) for the encoded input matrix ``X``."""
    return compile(model, backend=backend, device=device).scores(X)
