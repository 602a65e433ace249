"""Bad input and safety: 400 naming input and model, 404, 413, 401, 503; fuzzing finds no 500."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkscore.serving import ServeConfig, create_app
from tests.serving.conftest import post, serving, v2_body

GOOD = {"a": [1.0], "b": [2.0], "c": [3.0]}


@pytest.fixture(scope="module")
def client(small_registry):
    """A sync client over a running app (TestClient runs the lifespan in its own event-loop thread)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = create_app(small_registry, ServeConfig(max_body_bytes=20_000, max_rows=100))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _v2(client, body, path="/v2/models/lin/infer"):
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("body, needle", [
    (v2_body({"a": [1.0], "b": [2.0]}), "missing input 'c'"),
    (v2_body({**GOOD, "zz": [1.0]}), "input 'zz' is not a model input"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}, *v2_body(GOOD)["inputs"][1:]]},
     "input 'a' must be FP64, got BYTES"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": ["x"]}, *v2_body(GOOD)["inputs"][1:]]},
     "input 'a' must be a number"),
    ({"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0]}, *v2_body(GOOD)["inputs"][1:]]},
     "input 'a': shape [2] needs 2 values, got 1"),
    ({"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}, *v2_body(GOOD)["inputs"][1:]]},
     "input 'a' has shape [1, 2]"),
    (v2_body({"a": [1.0, 2.0], "b": [2.0], "c": [3.0]}), "different lengths"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, "input 'x' is not a model input"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "COMPLEX", "data": [1]}]}, "unsupported datatype"),
    ({**v2_body(GOOD), "outputs": [{"name": "proba"}]}, "unknown output 'proba'"),
    ({"inputs": []}, "non-empty 'inputs'"),
    ([1, 2], "JSON object"),
])
def test_v2_bad_input_is_400_naming_input_and_model(client, body, needle):
    r = _v2(client, body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert needle in message and "lin/2" in message and "\n" not in message


@pytest.mark.parametrize("body, needle", [
    ({"dataframe_records": [{"a": 1, "b": 2}]}, "missing input 'c'"),
    ({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2]]}}, "row 0 must be a list of 3 values"),
    ({"inputs": {"a": [1], "b": [2], "c": ["three"]}}, "input 'c' must be a number"),
    ({"instances": [1, 2]}, "all records, all rows"),
    ({"inputs": GOOD, "params": {"x": 1}}, "'params' are not supported"),
    ({"dataframe_split": {"data": []}}, "no rows"),
    ({"nothing": 1}, "exactly one of"),
])
def test_mlflow_bad_input_is_400(client, body, needle):
    r = client.post("/invocations?model=lin", content=json.dumps(body).encode())
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"] and "lin/2" in r.json()["message"]
    assert r.json()["error_code"] == "BAD_REQUEST"


@pytest.mark.parametrize("path, status", [
    ("/v2/models/nope/infer", 404), ("/v2/models/lin/versions/9/infer", 404), ("/v2/models/lin@nope/infer", 404),
    ("/v2/models/lin/versions/x/infer", 400), ("/v2/models/..%2F..%2Fetc/infer", 400), ("/v2/models/lin/wat", 404),
])
def test_unknown_model_or_version(client, path, status):
    r = _v2(client, v2_body(GOOD), path)
    assert r.status_code == status, r.text
    if path.endswith("/infer"):  # the metadata endpoint of the same ref answers the same
        assert client.get(path.removesuffix("/infer")).status_code == status


def test_errors_are_counted_by_kind_and_hide_the_registry_path(client, small_registry):
    def count(kind):
        line = next(l for l in client.get("/metrics").text.splitlines() if l.startswith(f'sparkscore_errors_total{{kind="{kind}"}}'))
        return float(line.split()[-1])
    before = {k: count(k) for k in ("bad_request", "not_found")}
    _v2(client, {"inputs": []})
    r = _v2(client, v2_body(GOOD), "/v2/models/nope/infer")
    assert str(small_registry.root) not in r.text and "'nope'" in r.json()["error"]
    assert count("bad_request") == before["bad_request"] + 1 and count("not_found") == before["not_found"] + 1


def test_oversized_body_and_rows_are_413(client):
    big = v2_body({k: [1.0] * 2000 for k in GOOD})
    assert _v2(client, big).status_code == 413
    many = v2_body({k: [1.0] * 101 for k in GOOD})  # under the byte limit, over max_rows
    assert len(json.dumps(many)) < 20_000
    r = _v2(client, many)
    assert r.status_code == 413 and "101 rows" in r.json()["error"]


def test_bearer_token_and_loopback_default(small_registry):
    assert ServeConfig().host == "127.0.0.1"
    config = ServeConfig(token="s3cret")

    async def go():
        async with serving(small_registry, config) as (_, c):
            return [await c.get("/v2/health/live"), await post(c, "/v2/models/lin/infer", v2_body(GOOD)),
                    await post(c, "/v2/models/lin/infer", v2_body(GOOD), headers={"authorization": "Bearer nope"}),
                    await post(c, "/v2/models/lin/infer", v2_body(GOOD), headers={"authorization": "Bearer s3cret"}),
                    await c.get("/metrics")]
    live, missing, wrong, right, metrics = asyncio.run(go())
    assert live.status_code == 200 and right.status_code == 200
    assert missing.status_code == wrong.status_code == metrics.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"


def test_concurrency_limit_is_503_not_a_backlog(small_registry):
    async def go():
        async with serving(small_registry, ServeConfig(max_concurrency=1)) as (_, c):
            return await asyncio.gather(*(post(c, "/v2/models/lin/infer", v2_body(GOOD)) for _ in range(20)))
    statuses = {r.status_code for r in asyncio.run(go())}
    assert statuses <= {200, 503} and 200 in statuses


# ---------------------------------------------------------------------- fuzz: never a 500
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                    st.text(max_size=8))
_json = st.recursive(_scalar, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                     max_leaves=20)
_tensor = st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c", "x", 1]),
                                 "shape": st.one_of(st.lists(st.integers(-1, 4), max_size=3), _json),
                                 "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "X", None]),
                                 "data": st.one_of(st.lists(_scalar, max_size=6), _json)},
                                optional={"parameters": st.one_of(_json, st.fixed_dictionaries(
                                    {"binary_data_size": st.integers(-2, 50)}))})
_v2_doc = st.one_of(_json, st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=4)},
                                                 optional={"outputs": _json, "id": _json}))
_mlflow_doc = st.one_of(_json, st.dictionaries(st.sampled_from(["dataframe_split", "dataframe_records", "instances",
                                                                "inputs", "params"]), _json, max_size=2),
                        st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries(
                            {"columns": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4),
                             "data": st.lists(st.lists(_scalar, max_size=4), max_size=3)})}))
_path = st.sampled_from(["lin", "lin/1", "lin@prod", "clf", "lin/versions/2", "nope", "lin@x", "", "..", "a/b/c",
                         "lin/versions/0", "lin%40prod", "lin/99999999999999999999"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=_path, v2_doc=_v2_doc, mlflow_doc=_mlflow_doc, raw=st.binary(max_size=64),
       header=st.one_of(st.none(), st.text(max_size=4)), query=st.text(max_size=12))
def test_fuzz_never_500(client, path, v2_doc, mlflow_doc, raw, header, query):
    headers = {"inference-header-content-length": header} if header and header.isascii() and header.isprintable() else {}
    responses = [
        client.post(f"/v2/models/{path}/infer", content=json.dumps(v2_doc).encode() + raw, headers=headers),
        client.post(f"/v2/models/{path}/infer", content=raw),
        client.get(f"/v2/models/{path}"),
        client.post("/invocations", params={"model": path, "kind": query}, content=json.dumps(mlflow_doc).encode()),
        client.post("/invocations", params={"model": query}, content=raw),
    ]
    for r in responses:
        assert r.status_code < 500 or r.status_code == 503, (r.request.url, r.text)
        if r.status_code >= 400:
            assert "Traceback" not in r.text
