"""The model zoo: every supported native model, fitted once per test run, with adversarial rows.

Each importer's cases live in their own module (listed in ``_MODULES``) and export
``CASES: list[Case]``.  Every backend / engine parity test
parametrizes over :data:`ALL_CASES` so a new importer case is checked everywhere at once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd


@dataclass
class Fitted:
    """A fitted native model, its conversion, adversarial input rows and the native outputs.

    ``X`` has named columns equal to ``model.signature.names``.  ``expected_predict`` is the native
    ``predict`` (values or labels); ``expected_proba`` the native class probabilities (or None).
    ``exact_labels``: labels must match exactly (False only where native ties are last-bit noise).
    """

    native: object
    model: object
    X: pd.DataFrame
    expected_predict: np.ndarray
    expected_proba: np.ndarray | None = None
    rtol: float = 1e-6
    atol: float = 1e-6
    notes: str = ""


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], Fitted] = field(compare=False)
    library: str = ""
    kind: str = ""        # "linear" | "trees" | "ensemble"
    task: str = ""        # "regression" | "binary" | "multiclass"
    marks: tuple = ()

    def fitted(self) -> Fitted:
        """Fit once per test run (cached by id: marks are not hashable)."""
        if self.id not in _FITTED:
            _FITTED[self.id] = self.build()
        return _FITTED[self.id]


_FITTED: dict[str, Fitted] = {}


_MODULES = (
    "tests.zoo.sklearn_cases",
    "tests.zoo.gbm_cases",
    "tests.zoo.pyspark_cases",
    "tests.zoo.lgbm_extra_cases",
    "tests.zoo.xgb_extra_cases",
    "tests.zoo.sklearn_linear_cases",
    "tests.zoo.sklearn_tree_cases",
    "tests.zoo.mlflow_cases",
    "tests.zoo.catboost_cases",
    "tests.zoo.onnx_cases",
    "tests.zoo.ensemble_cases",
    "tests.zoo.trust_cases",
)


def _collect() -> list[Case]:
    cases: list[Case] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:  # the library (or the case module) is not installed
            continue
        cases.extend(module.CASES)
    return cases


ALL_CASES: list[Case] = _collect()


def params(cases=None, **filters):
    """pytest params (ids, marks) for the zoo, optionally filtered by Case attributes."""
    import pytest

    chosen = [c for c in (cases or ALL_CASES) if all(getattr(c, k) == v for k, v in filters.items())]
    return [pytest.param(c, id=c.id, marks=c.marks) for c in chosen]
