"""The cross-model parity suite: every zoo model, reference (numpy) evaluator vs native library."""

from __future__ import annotations

import numpy as np
import pytest

from tests.zoo import ALL_CASES, params


def assert_parity(fitted, predict, proba, what: str) -> None:
    exp = fitted.expected_predict
    if np.asarray(exp).dtype.kind in "fc" and fitted.model.task == "regression":
        np.testing.assert_allclose(predict, exp, rtol=fitted.rtol, atol=fitted.atol, err_msg=what)
    else:
        mism = int(np.sum(np.asarray(predict) != np.asarray(exp)))
        assert mism == 0, f"{what}: {mism} label mismatches of {len(exp)}"
    if fitted.expected_proba is not None:
        np.testing.assert_allclose(proba, fitted.expected_proba, rtol=fitted.rtol, atol=fitted.atol, err_msg=what)


@pytest.mark.parametrize("case", params())
def test_reference_matches_native(case):
    fitted = case.fitted()
    model = fitted.model
    predict = model.predict(fitted.X, backend="numpy")
    proba = model.predict_proba(fitted.X, backend="numpy") if fitted.expected_proba is not None else None
    assert_parity(fitted, predict, proba, f"{case.id} (numpy reference)")


def test_zoo_is_not_empty():
    assert len(ALL_CASES) >= 1
