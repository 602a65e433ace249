"""IR invariants, input encoding and the reference evaluator's routing rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sparkscore.compiler import reference
from sparkscore.errors import SignatureError
from sparkscore.ir import (MISSING_AS_ZERO, MISSING_NAN, MISSING_ZERO, Column, FeatureMap, LinearModel,
                           Model, Signature, TreeBuilder)
from sparkscore.ir.trees import ZERO_THRESHOLD


def _stump(threshold=1.0, **build):
    missing = build.pop("missing", MISSING_NAN)
    default_left = build.pop("default_left", True)
    cats = build.pop("categories", None)
    b = TreeBuilder(n_features=1)
    b.add_tree(feature=[0, -1, -1], threshold=[threshold, 0, 0], left=[1, -1, -1], right=[2, -1, -1],
               value=[0, 1.0, 2.0], default_left=[default_left, 0, 0], missing=[missing, 0, 0],
               categories=[cats, None, None])
    return b.build(**build)


def _route(ens, values):
    return reference.tree_raw(ens, np.asarray(values, dtype=np.float64).reshape(-1, 1))[:, 0]


def test_le_and_lt_on_the_threshold():
    t = 0.1
    below, above = np.nextafter(t, -1), np.nextafter(t, 2)
    np.testing.assert_array_equal(_route(_stump(t, cmp="<="), [below, t, above]), [1, 1, 2])
    np.testing.assert_array_equal(_route(_stump(t, cmp="<"), [below, t, above]), [1, 2, 2])


def test_float32_inputs_round_before_comparing():
    t = float(np.float32(0.1))  # float32-representable threshold, like XGBoost
    x = np.nextafter(t, 1.0)    # float64 above t, rounds to t in float32
    assert _route(_stump(t, cmp="<", threshold_dtype="float64"), [x])[0] == 2
    assert _route(_stump(t, cmp="<", threshold_dtype="float32"), [x])[0] == 2
    assert _route(_stump(t, cmp="<=", threshold_dtype="float32"), [x])[0] == 1


@pytest.mark.parametrize("missing,default_left,values,expected", [
    (MISSING_NAN, True, [np.nan, 0.0, 5.0], [1, 1, 2]),
    (MISSING_NAN, False, [np.nan, 0.0], [2, 1]),
    (MISSING_AS_ZERO, False, [np.nan, -0.0], [1, 1]),          # NaN -> 0 <= 1
    (MISSING_ZERO, False, [np.nan, 0.0, ZERO_THRESHOLD, -ZERO_THRESHOLD, 2 * ZERO_THRESHOLD], [2, 2, 2, 2, 1]),
])
def test_missing_value_kinds(missing, default_left, values, expected):
    ens = _stump(1.0, missing=missing, default_left=default_left)
    np.testing.assert_array_equal(_route(ens, values), expected)


def test_categorical_bitset_routing():
    ens = _stump(0.0, categories=[1, 3, 40], default_left=False)
    vals = [1, 3, 40, 2, 0, 41, 1000, -1, 1.9, -0.5, np.nan, np.inf]
    np.testing.assert_array_equal(_route(ens, vals), [1, 1, 1, 2, 2, 2, 2, 2, 1, 2, 2, 2])
    ens0 = _stump(0.0, categories=[0], default_left=False)
    assert _route(ens0, [-0.5])[0] == 1
    assert _route(_stump(0.0, categories=[0], cat_negative_before_trunc=True), [-0.5])[0] == 2


def test_float32_accumulation_in_tree_order():
    b = TreeBuilder(n_features=1)
    for v in (1e8, 1.0, -1e8):
        b.add_tree(feature=[-1], threshold=[0], left=[-1], right=[-1], value=[v])
    ens64 = b.build(base_score=[0.5])
    ens32 = b.build(base_score=[0.5], accumulate_dtype="float32")
    x = np.zeros((1, 1))
    assert reference.tree_raw(ens64, x)[0, 0] == 1.5
    expected = np.float32(np.float32(np.float32(np.float32(0.5) + np.float32(1e8)) + np.float32(1.0)) - np.float32(1e8))
    assert reference.tree_raw(ens32, x)[0, 0] == expected


def test_feature_map_impute_scale_onehot():
    fmap = FeatureMap(2, kind=[0, 1, 1], source=[0, 1, 1], fill=[5.0, np.nan, np.nan],
                      center=[1.0, 0, 0], scale=[2.0, 1, 1], category=[np.nan, 0.0, 1.0])
    out = fmap.apply(np.array([[np.nan, 1.0], [3.0, np.nan], [-0.0, 0.0]]))
    np.testing.assert_array_equal(out, [[2.0, 0, 1], [1.0, 0, 0], [-0.5, 1, 0]])


def test_inputs_by_name_position_and_categories():
    sig = Signature((Column("a"), Column("c", categories=("x", "y"))))
    m = Model(LinearModel([[1.0], [10.0]], [0.0]), sig)
    expected = [1.0, 12.0, np.nan]
    frame = pd.DataFrame({"c": ["x", "y", "zz"], "a": [1.0, 2.0, 3.0]})
    np.testing.assert_array_equal(m.predict(frame), [1.0, 12.0, np.nan])
    np.testing.assert_array_equal(m.predict(pa.table(frame)), expected)
    np.testing.assert_array_equal(m.predict({"a": [1.0, 2.0, None], "c": ["x", "y", "y"]}), [1.0, 12.0, np.nan])
    with pytest.raises(SignatureError, match="missing column 'c'"):
        m.predict(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(SignatureError, match="takes 2"):
        Model(LinearModel([[1.0], [1.0]], [0.0]), Signature.from_names(["a", "b"])).predict(np.zeros((2, 3)))


def test_invalid_ir_is_rejected():
    with pytest.raises(ValueError):
        LinearModel(np.ones((2, 2)), [0.0], "identity")
    with pytest.raises(ValueError):
        LinearModel(np.ones((2, 1)), [0.0], "bogus")
    with pytest.raises(ValueError):
        Model(LinearModel(np.ones((3, 1)), [0.0]), Signature.from_names(["a", "b"]))
    with pytest.raises(SignatureError):
        Signature.from_names(["a", "a"])
    with pytest.raises(ValueError):
        Model(LinearModel(np.ones((1, 1)), [0.0]), Signature.from_names(["a"]), task="classification")
