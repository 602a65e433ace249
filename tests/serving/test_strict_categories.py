"""Serving a OneHotEncoder(handle_unknown='error') pipeline: an unknown category is a 400 carrying the
line PREDICT raises (naming the version served), on both protocols; known rows score as sklearn does."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sparkscore as ss  # noqa: E402
from sparkscore.serving import ServeConfig, create_app  # noqa: E402
from tests.importers.test_unknown_categories import known_rows, pipeline  # noqa: E402


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    native = pipeline("error")
    reg = ss.Registry(tmp_path_factory.mktemp("strict-serving") / "registry")
    reg.register("shop", native)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    with TestClient(create_app(reg, ServeConfig()), raise_server_exceptions=False) as client:
        yield client, native


def _v2(rows) -> dict:
    return {"inputs": [{"name": "region", "shape": [len(rows)], "datatype": "BYTES", "data": list(rows.region)},
                       {"name": "tier", "shape": [len(rows)], "datatype": "FP64", "data": list(rows.tier)},
                       {"name": "x", "shape": [len(rows)], "datatype": "FP64", "data": list(rows.x)}]}


@pytest.mark.parametrize("column, value, shown", [("region", "mars", "'mars'"), ("tier", 7.0, "7.0")])
def test_an_unknown_category_is_a_400_with_the_predict_line(shop, column, value, shown):
    client, native = shop
    rows = known_rows()
    ok = client.post("/v2/models/shop/infer", content=json.dumps(_v2(rows)).encode())
    assert ok.status_code == 200, ok.text
    np.testing.assert_allclose(ok.json()["outputs"][0]["data"], native.predict_proba(rows)[:, 1], rtol=1e-6, atol=1e-6)
    rows.loc[2, column] = value
    line = f"column {column!r} has value {shown}, a category its encoder did not see in training"
    r = client.post("/v2/models/shop/infer", content=json.dumps(_v2(rows)).encode())
    assert r.status_code == 400 and line in r.json()["error"] and "shop/1" in r.json()["error"], r.text
    records = json.loads(rows.to_json(orient="records"))
    r = client.post("/invocations?model=shop", content=json.dumps({"dataframe_records": records}).encode())
    assert r.status_code == 400 and line in r.json()["message"] and "\n" not in r.json()["message"], r.text


def test_a_numeric_only_strict_model_leaves_the_fast_path_and_still_refuses(tmp_path):
    """Plain-number bodies skip per-column parsing (one ``np.array`` call); a strict input must not."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from tests.importers.test_unknown_categories import frame

    X, y = frame()
    X = X[["tier", "x"]]
    native = make_pipeline(ColumnTransformer([("t", OneHotEncoder(), ["tier"])], remainder="passthrough"),
                           LogisticRegression()).fit(X, y)
    reg = ss.Registry(tmp_path / "registry")
    reg.register("num", native)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    with TestClient(create_app(reg, ServeConfig()), raise_server_exceptions=False) as client:
        ok = client.post("/invocations?model=num", content=json.dumps(
            {"dataframe_split": {"columns": ["tier", "x"], "data": [[2.0, 0.5]]}}).encode())
        assert ok.status_code == 200, ok.text
        bad = client.post("/invocations?model=num", content=json.dumps(
            {"dataframe_split": {"columns": ["tier", "x"], "data": [[2.0, 0.5], [7.0, 0.5]]}}).encode())
        assert bad.status_code == 400 and "column 'tier' has value 7.0" in bad.json()["message"], bad.text
