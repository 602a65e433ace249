"""A registered ensemble served over HTTP equals DuckDB PREDICT bit for bit (fused and unfused),
by the same checks as every zoo model in :mod:`tests.serving.test_parity`."""

from __future__ import annotations

import pytest

from tests.serving.test_parity import test_served_equals_predict as _served_equals_predict
from tests.zoo.ensemble_cases import CASES

IDS = ("ensemble-lgbm-margin-mean-fused", "ensemble-multiclass-vote")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.id in IDS])
def test_served_ensemble_equals_predict(case, registry):
    _served_equals_predict(case, registry)
