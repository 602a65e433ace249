"""Both protocols over refs ``name``, ``name/3``, ``name@alias``; every response names its version."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sparkscore.serving.models import BACKEND  # the server's: row-stable
from tests.serving.conftest import FEATURES, post, serving, v2_body

ROWS = {"a": [0.5, -1.0, None], "b": [1.0, 2.0, 3.0], "c": [0.0, 0.25, -4.0]}


def expected(registry, ref: str) -> list:
    model = registry.load(ref)
    X = np.array([[np.nan if v is None else v for v in ROWS[f]] for f in FEATURES]).T
    return model.predict(X, backend=BACKEND).tolist()


def run(registry, calls, config=None):
    async def go():
        kwargs = {} if config is None else {"config": config}
        async with serving(registry, **kwargs) as (_, client):
            return [await call(client) for call in calls]
    return asyncio.run(go())


@pytest.mark.parametrize("path, version", [
    ("/v2/models/lin/infer", 2),                   # name: latest
    ("/v2/models/lin/versions/1/infer", 1),        # OIP's version segment
    ("/v2/models/lin/1/infer", 1),                 # the name/1 ref in the path
    ("/v2/models/lin@prod/infer", 1),              # alias, raw '@'
    ("/v2/models/lin%40prod/infer", 1),            # alias, '@' escaped (tritonclient)
])
def test_v2_refs(small_registry, path, version):
    (r,) = run(small_registry, [lambda c: post(c, path, v2_body(ROWS))])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "lin" and doc["model_version"] == str(version)
    assert r.headers["x-sparkscore-model-version"] == str(version)
    assert doc["outputs"][0]["name"] == "predict" and doc["outputs"][0]["shape"] == [3]
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], float), expected(small_registry, f"lin/{version}"))


def test_v2_matrix_tensor_and_nested_data(small_registry):
    rows = np.array([[np.nan if v is None else v for v in ROWS[f]] for f in FEATURES]).T
    data = [[None if np.isnan(x) else x for x in row] for row in rows.tolist()]
    body = {"inputs": [{"name": "input__0", "shape": [3, 3], "datatype": "FP64", "data": data}], "id": "r1"}
    (r,) = run(small_registry, [lambda c: post(c, "/v2/models/lin/versions/2/infer", body)])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "r1"
    np.testing.assert_array_equal(np.array(r.json()["outputs"][0]["data"], float), expected(small_registry, "lin/2"))


def test_v2_metadata_health_and_outputs(small_registry):
    calls = [lambda c: c.get("/v2/health/live"), lambda c: c.get("/v2/health/ready"),
             lambda c: c.get("/v2/models/clf"), lambda c: c.get("/v2/models/lin/versions/1"),
             lambda c: c.get("/v2/models/lin@prod/ready"),
             lambda c: post(c, "/v2/models/clf/infer", {**v2_body(ROWS), "outputs": [{"name": "proba"}]})]
    live, ready, meta, meta1, model_ready, proba = run(small_registry, calls)
    assert live.status_code == ready.status_code == model_ready.status_code == 200
    doc = meta.json()
    assert [(i["name"], i["datatype"]) for i in doc["inputs"]] == [(f, "FP64") for f in FEATURES]
    assert [o["name"] for o in doc["outputs"]] == ["predict", "proba"] and doc["versions"] == ["1"]
    assert meta1.json()["versions"] == ["1"] and meta1.headers["x-sparkscore-model-version"] == "1"
    (out,) = proba.json()["outputs"]
    assert out["name"] == "proba" and out["shape"] == [3, 2]


BODIES = {
    "split": {"dataframe_split": {"columns": FEATURES, "data": [list(r) for r in zip(*ROWS.values())]}},
    "split-no-columns": {"dataframe_split": {"data": [list(r) for r in zip(*ROWS.values())]}},  # signature order
    "records": {"dataframe_records": [dict(zip(FEATURES, r)) for r in zip(*ROWS.values())]},
    "instances-records": {"instances": [dict(zip(FEATURES, r)) for r in zip(*ROWS.values())]},
    "instances-rows": {"instances": [list(r) for r in zip(*ROWS.values())]},
    "inputs-columns": {"inputs": ROWS},
    "inputs-records": {"inputs": [dict(zip(FEATURES, r)) for r in zip(*ROWS.values())], "params": {}},
}


@pytest.mark.parametrize("ref, version", [("lin", 2), ("lin/1", 1), ("lin@prod", 1), ("lin%40prod", 1), ("lin%2F1", 1)])
def test_mlflow_formats_and_refs(small_registry, ref, version):
    responses = run(small_registry, [lambda c, b=b: post(c, f"/invocations?model={ref}", b) for b in BODIES.values()])
    for fmt, r in zip(BODIES, responses):
        assert r.status_code == 200, (fmt, r.text)
        doc = r.json()
        assert doc["model_version"] == str(version) and r.headers["x-sparkscore-model-version"] == str(version), fmt
        np.testing.assert_array_equal(np.array(doc["predictions"], float), expected(small_registry, f"lin/{version}"),
                                      err_msg=fmt)


def test_mlflow_header_ref_proba_and_single_model_default(small_registry, registry):
    by_header, proba = run(small_registry, [
        lambda c: post(c, "/invocations", {"inputs": ROWS}, headers={"x-sparkscore-model": "lin@prod"}),
        lambda c: post(c, "/invocations?model=clf&kind=proba", {"inputs": ROWS})])
    assert by_header.json()["model_version"] == "1"
    assert np.array(proba.json()["predictions"]).shape == (3, 2)
    from tests.serving.conftest import glm

    registry.register("only", glm(5))
    (alone,) = run(registry, [lambda c: post(c, "/invocations", {"inputs": ROWS})])
    assert alone.status_code == 200 and alone.json()["model_name"] == "only"
