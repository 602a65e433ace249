"""Sampled request logging (``sparkscore serve --log``): rows equal the served responses; a full queue
drops and counts (``sparkscore_log_dropped_total``) and no request waits on the writer."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from sparkscore.monitor import predlog
from sparkscore.serving import ServeConfig
from tests.serving.conftest import FEATURES, glm, post, serving, v2_body

deltalake = pytest.importorskip("deltalake")


def _rows(i: int, n: int = 1) -> dict:
    return {"a": [0.1 * i + j for j in range(n)], "b": [None if i % 3 == 0 else -1.0 * i] * n, "c": [2.0 ** -i] * n}


def test_logged_rows_equal_the_served_responses(small_registry, tmp_path):
    table = str(tmp_path / "log")
    config = ServeConfig(log_table=table, log_sample=1.0, instance_id="test-server")

    async def go():
        async with serving(small_registry, config) as (server, client):
            answers = []
            for i in range(6):
                doc = v2_body(_rows(i))
                doc["id"] = f"oip-{i}"
                answers.append(("v2", f"oip-{i}", (await post(client, "/v2/models/clf/infer", doc)).json()))
            for i in range(6, 9):
                rid = f"hdr-{i}"
                r = await post(client, "/invocations?model=lin@prod", {"dataframe_split": {
                    "columns": FEATURES, "data": [list(row) for row in zip(*_rows(i, 2).values())]}},
                    headers={"x-request-id": rid})
                answers.append(("mlflow", rid, r.json()))
            r = await post(client, "/v2/models/lin/infer", v2_body(_rows(9)))  # no id: one is generated
            answers.append(("v2", None, r.json()))
        return answers  # leaving the block stopped the server: the writer flushed

    answers = asyncio.run(go())
    logged = predlog.read(table).order("request_id").to_arrow_table().to_pylist()
    by_id = {row["request_id"]: row for row in logged}
    assert len(logged) == 6 + 3 * 2 + 1
    clf, lin = small_registry.get("clf"), small_registry.get("lin@prod")
    for protocol, rid, doc in answers[:6]:
        row = by_id[rid]
        served = {o["name"]: o["data"] for o in doc["outputs"]}
        np.testing.assert_equal(row["prediction"], served["predict"][0])  # bit-equal, NaN (a NULL input) too
        np.testing.assert_equal(row["proba"], served["proba"])
        assert (row["model"], row["version"], row["sha256"]) == ("clf", clf.version, clf.sha256)
        i = int(rid.split("-")[1])
        np.testing.assert_equal([row[f] for f in FEATURES], [_rows(i)[f][0] if _rows(i)[f][0] is not None else np.nan
                                                             for f in FEATURES])
    for protocol, rid, doc in answers[6:9]:
        np.testing.assert_equal([by_id[f"{rid}:{j}"]["prediction"] for j in range(2)], doc["predictions"])
        assert by_id[f"{rid}:0"]["version"] == lin.version and by_id[f"{rid}:0"]["proba"] is None
    generated = [r for r in logged if r["model"] == "lin" and r["version"] == 2]
    assert len(generated) == 1
    np.testing.assert_equal(generated[0]["prediction"], answers[-1][2]["outputs"][0]["data"][0])
    assert {r["source"] for r in logged} == {"test-server"}
    assert all(r["route"] is None and r["shadow"] is False for r in logged)


def test_a_full_queue_drops_and_counts_without_slowing_requests(small_registry, tmp_path, monkeypatch):
    release = threading.Event()
    writing = threading.Event()
    real_write = predlog.LogWriter._write

    def stuck_write(self, batch):  # the Delta append hangs (a slow disk, a lock)
        writing.set()
        release.wait(30)
        real_write(self, batch)
    monkeypatch.setattr(predlog.LogWriter, "_write", stuck_write)
    config = ServeConfig(log_table=str(tmp_path / "log"), log_sample=1.0, log_queue_size=4)
    n = 40

    async def go():
        async with serving(small_registry, config) as (server, client):
            server.request_log.flush_s = 0.0
            first = await post(client, "/v2/models/lin/infer", v2_body(_rows(0)))
            assert first.status_code == 200
            await asyncio.to_thread(writing.wait, 10)  # the writer holds record 1 and is stuck
            started = time.perf_counter()
            statuses = [(await post(client, "/v2/models/lin/infer", v2_body(_rows(i)))).status_code
                        for i in range(1, n + 1)]
            elapsed = time.perf_counter() - started
            metrics = (await client.get("/metrics")).text
            dropped = server.request_log.dropped
            release.set()
        return statuses, elapsed, metrics, dropped

    statuses, elapsed, metrics, dropped = asyncio.run(go())
    assert statuses == [200] * n
    assert dropped == n - 4  # 4 queued behind the stuck write, the rest dropped
    assert f"sparkscore_log_dropped_total {float(n - 4)}" in metrics
    assert elapsed < 10  # the writer is stuck for 30 s: no request waited on it
    logged = predlog.read(str(tmp_path / "log")).aggregate("count(*)").fetchall()[0][0]
    assert logged == 1 + 4  # stop() flushed the queue


def test_sampling_rate_and_no_log_by_default(small_registry, tmp_path):
    config = ServeConfig(log_table=str(tmp_path / "log"), log_sample=0.0)

    async def go():
        async with serving(small_registry, config) as (server, client):
            for i in range(5):
                await post(client, "/v2/models/lin/infer", v2_body(_rows(i)))
            assert server.request_log.dropped == 0
        async with serving(small_registry) as (server, client):
            assert server.request_log is None
    asyncio.run(go())
    assert not (tmp_path / "log").exists()
    np.testing.assert_equal(ServeConfig.build({"log_sample": 0.5}).log_sample, 0.5)
    with pytest.raises(ValueError, match="log_sample"):
        ServeConfig.build({"log_sample": 2.0})


def test_cli_serve_log_options_reach_the_server(small_registry, runner, monkeypatch, tmp_path):
    import uvicorn

    from sparkscore.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: seen.setdefault("config", asgi.state.server.config))
    result = runner.invoke(app, ["serve", "--registry", str(small_registry.root), "--log", str(tmp_path / "log"),
                                 "--log-sample", "0.25"])
    assert result.exit_code == 0, result.output
    assert (seen["config"].log_table, seen["config"].log_sample) == (str(tmp_path / "log"), 0.25)


@pytest.mark.parametrize("per_model", [False, True])
def test_models_with_other_inputs_share_a_log_or_get_one_each(registry, tmp_path, per_model):
    from tests.engines.test_batch import churn_model

    registry.register("churn", churn_model())  # inputs age, spend
    registry.register("lin", glm(1))  # inputs a, b, c
    table = str(tmp_path / ("log-{model}" if per_model else "log"))
    config = ServeConfig(log_table=table, log_sample=1.0)

    async def go():
        async with serving(registry, config) as (server, client):
            assert (await post(client, "/v2/models/lin/infer", v2_body(_rows(1)))).status_code == 200
            churn = v2_body({"age": [1.0], "spend": [2.0]})
            assert (await post(client, "/v2/models/churn/infer", churn)).status_code == 200
    asyncio.run(go())
    if per_model:
        assert predlog.read(str(tmp_path / "log-lin")).columns[9:12] == FEATURES
        assert predlog.read(str(tmp_path / "log-churn")).project("age, spend").fetchall() == [(1.0, 2.0)]
    else:
        rows = predlog.read(table).order("model").project("model, a, age").fetchall()
        assert rows == [("churn", None, 1.0), ("lin", _rows(1)["a"][0], None)]


def test_served_inputs_are_decoded_as_the_model_saw_them():
    from types import SimpleNamespace

    from sparkscore.ir.inputs import as_matrix
    from sparkscore.ir.signature import Column, Signature

    sig = Signature([Column("plan", "varchar", categories=("basic", "pro")), Column("tier", categories=(1.0, 5.0)),
                     Column("age")])
    raw = {"plan": ["pro", None, "gold", "basic"], "tier": [5.0, 1.0, 3.0, None], "age": [1.5, np.nan, -0.0, 7.0]}
    decoded = predlog.decode_inputs(SimpleNamespace(signature=sig), as_matrix(sig, raw)).to_pydict()
    assert decoded["plan"] == ["pro", None, None, "basic"]  # 'gold' is unknown to the model: it saw a missing value
    assert decoded["tier"] == [5.0, 1.0, None, None]
    np.testing.assert_equal(decoded["age"], raw["age"])


def test_writer_records_route_arm_and_shadow(small_registry, tmp_path):
    from sparkscore.serving.common import output_values

    model = small_registry.load("clf")
    mv = small_registry.get("clf")
    X = np.array([[0.5, 1.0, -1.0]])
    writer = predlog.LogWriter(str(tmp_path / "log"), "srv", flush_s=0.0)
    for arm, shadow in (("prod", False), ("candidate", True)):
        S = model.scores(X)
        writer.offer(predlog.LogRecord(predlog.now(), f"r-{arm}", "clf", mv.version, mv.sha256, model, X,
                                       lambda S=S: (output_values(model, S, "predict"), output_values(model, S, "proba")),
                                       route="churn@ab", arm=arm, shadow=shadow))
    writer.close()
    got = predlog.read(str(tmp_path / "log")).order("request_id").project("request_id, route, arm, shadow").fetchall()
    assert got == [("r-candidate", "churn@ab", "candidate", True), ("r-prod", "churn@ab", "prod", False)]


def test_routed_requests_log_each_row_with_its_arm_and_the_shadow_rows(tmp_path):
    """A sampled routed request logs every row under the arm that answered it (``<id>:<row>`` as for
    any request) and, flagged ``shadow``, the shadow arm's score of every row; never returned."""
    import sparkscore as ss
    from sparkscore.ir import LinearModel, Model, Signature

    reg = ss.Registry(tmp_path / "registry")
    for intercept in (1.0, 2.0, 1e6):
        reg.register("churn", Model(LinearModel(np.array([1.0, 0.0, 0.0]), np.array([intercept])),
                                    Signature.from_names(FEATURES)))
    for alias, version in (("prod", 1), ("challenger", 2), ("candidate", 3)):
        reg.set_alias("churn", alias, version)
    reg.set_route("churn", "ab", arms={"prod": 50, "challenger": 50}, key="customer_id", shadow=["candidate"])
    table = str(tmp_path / "log")
    rows = [[k, float(k), 0.0, 0.0] for k in range(40)]

    async def go():
        async with serving(reg, ServeConfig(log_table=table, log_sample=1.0)) as (server, client):
            r = await post(client, "/invocations?model=churn@ab",
                           {"dataframe_split": {"columns": ["customer_id", *FEATURES], "data": rows}},
                           headers={"x-request-id": "req"})
            assert r.status_code == 200
            for _ in range(200):  # the shadow arm is scored after the answer
                if not server._shadow_tasks:
                    break
                await asyncio.sleep(0.01)
            return r.json()

    doc = asyncio.run(go())
    logged = predlog.read(table).to_arrow_table().to_pylist()
    served = [r for r in logged if not r["shadow"]]
    shadow = [r for r in logged if r["shadow"]]
    assert len(served) == len(shadow) == 40
    by_id = {r["request_id"]: r for r in served}
    assert {"prod", "challenger"} == set(doc["arms"])
    for i, (arm, version, prediction) in enumerate(zip(doc["arms"], doc["versions"], doc["predictions"])):
        row = by_id[f"req:{i}"]
        assert (row["route"], row["arm"], row["version"], row["prediction"]) == ("churn@ab", arm, version, prediction)
        assert row[FEATURES[0]] == float(i)
    assert {(r["arm"], r["version"], r["route"]) for r in shadow} == {("candidate", 3, "churn@ab")}
    assert sorted(r["prediction"] for r in shadow) == [1e6 + i for i in range(40)]
    assert all(p < 1e5 for p in doc["predictions"])  # the shadow's answers are never returned
