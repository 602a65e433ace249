"""Hot reload under concurrent load and the memory-bounded LRU of loaded versions."""

from __future__ import annotations

import asyncio
import time

import numpy as np

import sparkscore as ss
from sparkscore.serving import ServeConfig
from tests.serving.conftest import glm, post, serving, v2_body

CLIENTS = 8
SECONDS = 3.0          # the load runs this long (and at most MAX_REQUESTS requests per client)
MAX_REQUESTS = 400


def test_alias_move_under_load_has_no_failures_and_no_wrong_versions(tmp_path):
    reg = ss.Registry(tmp_path / "registry")
    models = {v: glm(10 + v, scale=v) for v in (1, 2)}
    for v in (1, 2):
        reg.register("m", models[v])
    reg.set_alias("m", "prod", 1)
    reg.set_alias("m", "stable", 2)   # v2 routed by another alias too: its rows stay warm
    rows = np.random.default_rng(0).normal(size=(CLIENTS, 3))
    expected = {v: models[v].predict(rows) for v in (1, 2)}

    async def go():
        async with serving(reg, ServeConfig(poll_s=0.1)) as (server, client):
            results, stop = [], time.perf_counter() + SECONDS

            async def user(i):
                body = v2_body({"a": [rows[i, 0]], "b": [rows[i, 1]], "c": [rows[i, 2]]})
                for _ in range(MAX_REQUESTS):
                    if time.perf_counter() > stop:
                        return
                    r = await post(client, "/v2/models/m@prod/infer", body)
                    results.append((time.perf_counter(), i, r))
                    await asyncio.sleep(0)

            async def operator():
                await asyncio.sleep(SECONDS / 3)
                moves.append(time.perf_counter())
                await asyncio.to_thread(reg.set_alias, "m", "prod", 2)
                await asyncio.sleep(SECONDS / 3)
                moves.append(time.perf_counter())
                await asyncio.to_thread(reg.set_alias, "m", "prod", 1)   # rollback: an alias move back

            moves: list[float] = []
            await asyncio.gather(operator(), *(user(i) for i in range(CLIENTS)))
            return results, moves, server
    results, moves, server = asyncio.run(go())
    failed = [r for _, _, r in results if r.status_code != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[0].text}"
    wrong = 0
    seen = []
    for t, i, r in results:
        version = int(r.headers["x-sparkscore-model-version"])
        assert r.json()["model_version"] == str(version)
        seen.append((t, version))
        wrong += r.json()["outputs"][0]["data"][0] != expected[version][i]
    assert wrong == 0, f"{wrong} responses computed by a version other than the one reported"
    # both moves were picked up within 1 s (poll 0.1 s, plus load + warm of the new target)
    first_v2 = min(t for t, v in seen if v == 2 and t > moves[0])
    back_v1 = min(t for t, v in seen if v == 1 and t > moves[1])
    assert first_v2 - moves[0] < 1.0 and back_v1 - moves[1] < 1.0
    assert len(results) > 100


def test_old_version_drains_then_unloads_and_lru_respects_the_budget(tmp_path):
    reg = ss.Registry(tmp_path / "registry")
    for v in (1, 2, 3):
        reg.register("m", glm(20 + v))
    reg.set_alias("m", "prod", 1)
    body = v2_body({"a": [1.0], "b": [2.0], "c": [3.0]})

    async def go():
        async with serving(reg, ServeConfig(poll_s=3600, memory_budget_bytes=1)) as (server, client):
            manager = server.manager
            assert set(manager.loaded) == {("m", 1), ("m", 3)}          # prod and latest, preloaded
            reg.set_alias("m", "prod", 2)
            assert await manager.refresh() == 1
            after_move = set(manager.loaded)                              # 1 unrouted: drained and unloaded
            r = await post(client, "/v2/models/m/versions/1/infer", body)  # pinned: loaded on demand
            with_pinned = set(manager.loaded)
            await manager.refresh()                                       # over budget: the idle pinned one goes
            return after_move, r, with_pinned, set(manager.loaded)
    after_move, r, with_pinned, final = asyncio.run(go())
    assert after_move == {("m", 2), ("m", 3)}
    assert r.status_code == 200 and r.headers["x-sparkscore-model-version"] == "1"
    assert ("m", 1) in with_pinned                               # loaded for the request, evicted once idle
    assert final == {("m", 2), ("m", 3)}                         # routed versions are never evicted
