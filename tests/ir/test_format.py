"""Safe model format: exact round trip, integrity checks, no unpickling, format versions."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from sparkscore.errors import FormatVersionError, IntegrityError, SparkscoreError
from sparkscore.ir import Column, FeatureMap, LinearModel, Model, Signature, TreeBuilder
from sparkscore.ir.serialize import ARRAYS_NPZ, MODEL_JSON, SHA256_FILE, digest


def _tree_model() -> Model:
    b = TreeBuilder(n_features=2, n_outputs=1)
    b.add_tree(feature=[0, -1, 1, -1, -1], threshold=[0.5, 0, 1.0000000000000002, 0, 0],
               left=[1, -1, 3, -1, -1], right=[2, -1, 4, -1, -1], value=[0, 1.5, 0, -2.25, 3e-300],
               default_left=[True, False, False, False, False], categories=[None, None, [1, 3, 40], None, None])
    ens = b.build(cmp="<", threshold_dtype="float32", post_transform="sigmoid", base_score=[0.1])
    return Model(ens, Signature((Column("a"), Column("b", categories=("x", "y", "z")))),
                 task="classification", classes=("no", "yes"), metadata={"name": "t", "source": "test"})


def _linear_model() -> Model:
    fmap = FeatureMap(2, kind=[0, 0, 1], source=[0, 1, 1], fill=[np.nan, 2.0, np.nan],
                      center=[1.0, 0, 0], scale=[3.0, 1, 1], category=[np.nan, np.nan, 2.0])
    return Model(LinearModel(np.arange(6.0).reshape(3, 2) / 7, [0.25, -1.0], "softmax"),
                 Signature.from_names(["u", "v"]), (fmap,), task="classification", classes=(3, 7))


MODELS = [pytest.param(_tree_model, id="trees"), pytest.param(_linear_model, id="linear")]
ROWS = {"trees": {"a": [0.1, np.nan, 7.0, -0.0], "b": ["y", "x", None, "q"]},
        "linear": {"u": [0.1, np.nan, 7.0, -0.0], "v": [1.0, np.nan, 2.0, np.inf]}}


@pytest.mark.parametrize("make", MODELS)
def test_round_trip_is_exact(tmp_path, make, request):
    model = make()
    digest = model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m")
    assert digest == model.sha256 == loaded.sha256
    d1, a1 = model.to_payload()
    d2, a2 = loaded.to_payload()
    assert d1 == d2
    assert a1.keys() == a2.keys()
    for k in a1:
        assert a1[k].dtype == a2[k].dtype and np.array_equal(a1[k], a2[k], equal_nan=True), k
    rows = ROWS[request.node.callspec.id]
    np.testing.assert_array_equal(model.predict_proba(rows), loaded.predict_proba(rows))


def test_sha256_is_content_based(tmp_path):
    m = _tree_model()
    assert m.save(tmp_path / "a") == m.save(tmp_path / "b")


@pytest.mark.parametrize("target", [MODEL_JSON, ARRAYS_NPZ])
def test_any_flipped_byte_is_an_integrity_error(tmp_path, target):
    model = _tree_model()
    model.save(tmp_path / "m")
    path = tmp_path / "m" / target
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for pos in rng.choice(len(data), size=min(25, len(data)), replace=False):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(IntegrityError):
            Model.load(tmp_path / "m")
    path.write_bytes(bytes(data))
    Model.load(tmp_path / "m")


def test_wrong_recorded_hash_is_rejected(tmp_path):
    _tree_model().save(tmp_path / "m")
    (tmp_path / "m" / SHA256_FILE).write_text("0" * 64)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        Model.load(tmp_path / "m")


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/sparkscore-pickle-was-executed", "w"))


def test_pickle_payloads_are_never_executed(tmp_path):
    import os

    marker = "/tmp/sparkscore-pickle-was-executed"
    if os.path.exists(marker):
        os.remove(marker)
    model = _tree_model()
    model.save(tmp_path / "m")
    # a pickle dropped beside the files, and an object array smuggled into the npz
    (tmp_path / "m" / "model.pkl").write_bytes(pickle.dumps(_Boom()))
    Model.load(tmp_path / "m")
    obj = np.empty(1, dtype=object)
    obj[0] = _Boom()
    np.savez(tmp_path / "m" / ARRAYS_NPZ, **{"estimator.feature": obj})
    with pytest.raises(IntegrityError):
        Model.load(tmp_path / "m")
    (tmp_path / "m" / ARRAYS_NPZ).write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(IntegrityError):
        Model.load(tmp_path / "m")
    assert not os.path.exists(marker)


def test_unknown_format_version_is_a_clear_error(tmp_path):
    _tree_model().save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / MODEL_JSON).read_text())
    doc["format_version"] = 99  # as a future sparkscore would write it, with a matching hash
    raw_json = json.dumps(doc).encode()
    (tmp_path / "m" / MODEL_JSON).write_bytes(raw_json)
    (tmp_path / "m" / SHA256_FILE).write_text(digest(raw_json, (tmp_path / "m" / ARRAYS_NPZ).read_bytes()))
    with pytest.raises(FormatVersionError, match="format version 99 is not supported"):
        Model.load(tmp_path / "m")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(IntegrityError, match="not a sparkscore model directory"):
        Model.load(tmp_path / "nothing")
    assert issubclass(IntegrityError, SparkscoreError) and issubclass(IntegrityError, ValueError)
