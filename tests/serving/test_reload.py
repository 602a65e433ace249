"""Hot reload under concurrent load and the memory-bounded LRU of loaded versions."""

from __future__ import annotations

import asyncio
import time

import numpy as np

import sparkscore as ss
from sparkscore.serving import ServeConfig
from sparkscore.serving.models import BACKEND
from tests.serving.conftest import glm, post, serving, v2_body

CLIENTS = 8
PHASE_S = 1.2          # load on v1, then v2, then (rollback) v1 again, each at least this long
HARD_STOP_S = 60.0     # the load never runs longer than this (a slow CI machine: the test fails, saying so)


def test_alias_move_under_load_has_no_failures_and_no_wrong_versions(tmp_path):
    reg = ss.Registry(tmp_path / "registry")
    models = {v: glm(10 + v, scale=v) for v in (1, 2)}
    for v in (1, 2):
        reg.register("m", models[v])
    reg.set_alias("m", "prod", 1)
    rows = np.random.default_rng(0).normal(size=(CLIENTS, 3))
    expected = {v: models[v].predict(rows, backend=BACKEND) for v in (1, 2)}  # the server's row-stable backend

    async def go():
        async with serving(reg, ServeConfig(poll_s=0.1)) as (server, client):
            results, moves = [], []
            start = time.perf_counter()
            done = asyncio.Event()

            async def user(i):  # load until the operator is done: never a request budget that can run out first
                body = v2_body({"a": [rows[i, 0]], "b": [rows[i, 1]], "c": [rows[i, 2]]})
                while not done.is_set():
                    assert time.perf_counter() - start < HARD_STOP_S, "the load ran past its hard stop"
                    r = await post(client, "/v2/models/m@prod/infer", body)
                    results.append((time.perf_counter(), i, r))
                    await asyncio.sleep(0)

            async def seen(version, after):
                while not any(t > after and r.headers.get("x-sparkscore-model-version") == str(version)
                              for t, _, r in results[-CLIENTS * 4:]):
                    assert time.perf_counter() - start < HARD_STOP_S, f"no response from version {version} " \
                        f"{time.perf_counter() - after:.1f} s after the alias moved to it"
                    await asyncio.sleep(0.02)

            async def operator():
                for version in (2, 1):  # move, then roll back (an alias move back)
                    await asyncio.sleep(PHASE_S)
                    await asyncio.to_thread(reg.set_alias, "m", "prod", version)
                    # the move is in the registry once set_alias returns: "picked up within 1 s" counts
                    # from there (the write itself, under this load, waits on the GIL in its thread)
                    moves.append(time.perf_counter())
                    await seen(version, moves[-1])
                await asyncio.sleep(PHASE_S)
                done.set()

            await asyncio.gather(operator(), *(user(i) for i in range(CLIENTS)))
            return results, moves, list(server.manager.moves)
    results, moves, route_moves = asyncio.run(go())
    failed = [r for _, _, r in results if r.status_code != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[0].text}"
    wrong = 0
    for _, i, r in results:
        version = int(r.headers["x-sparkscore-model-version"])
        assert r.json()["model_version"] == str(version)
        wrong += r.json()["outputs"][0]["data"][0] != expected[version][i]
    assert wrong == 0, f"{wrong} responses computed by a version other than the one reported"
    # each move was picked up within 1 s of the alias write: detection (poll 0.1 s) + load + warm
    prod = [m for m in route_moves if m.route == ("m", "prod")]
    assert [(m.old, m.new) for m in prod] == [(1, 2), (2, 1)]
    for written, move in zip(moves, prod):
        assert move.at - move.load_s - written < 1.0, f"alias move noticed {move.at - move.load_s - written:.2f} s late"
    print(f"{len(results)} requests, 0 failed, 0 wrong; moves noticed after "
          f"{[round(m.at - m.load_s - w, 3) for w, m in zip(moves, prod)]} s, load+warm {[round(m.load_s, 3) for m in prod]} s")
    versions = [int(r.headers["x-sparkscore-model-version"]) for _, _, r in results]
    assert versions[0] == 1 and versions[-1] == 1 and 2 in versions and len(results) > 100


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


def test_watcher_rereads_the_registry_only_when_a_stat_changed(tmp_path):
    reg = ss.Registry(tmp_path / "registry")
    for v in (1, 2):
        reg.register("m", glm(30 + v))
    reg.set_alias("m", "prod", 1)

    async def go():
        async with serving(reg, ServeConfig(poll_s=0.02)) as (server, _):
            manager = server.manager
            reads = []
            real = manager._resolve_routes
            manager._resolve_routes = lambda: (reads.append(time.perf_counter()), real())[1]
            await asyncio.sleep(0.5)                      # ~25 polls of an unchanged registry
            quiet = len(reads)
            reg.set_alias("m", "prod", 2)
            written = time.perf_counter()
            while manager.routes[("m", "prod")] != 2 and time.perf_counter() - written < 5:
                await asyncio.sleep(0.005)
            return quiet, manager.routes[("m", "prod")], manager.moves[-1].at - manager.moves[-1].load_s - written
    quiet, route, noticed = asyncio.run(go())
    assert quiet <= 1, f"{quiet} registry re-reads in 0.5 s with nothing changed"  # at most the first poll's
    assert route == 2 and noticed < 0.5
