"""bench/bench_serve.py smoke test: arguments, the load generator against a tiny server, the merge of rounds."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench(monkeypatch):
    """bench_serve imported with the thread variables it sets (through bench_kernels) restored afterwards."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(var, "2")
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("bench_serve")


def test_quick_and_full_arguments(bench):
    quick, full = bench.parse_args(["--quick"]), bench.parse_args([])
    assert (full.trees, full.depth, full.concurrency, full.rounds) == (500, 8, [1, 4, 16, 64], 3)
    assert full.servers == list(bench.SERVERS) and "glm" not in full.libs
    assert quick.trees < full.trees and quick.rounds == 1 and quick.seconds * len(quick.concurrency) < 2


async def _tiny_server(counter):
    """Keep-alive HTTP/1.1: every 4th answer is a 503, every 3rd is chunked."""
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n")
                                  if line.startswith(b"content-length")))
                body = await reader.readexactly(length)
                counter.append(body)
                n = len(counter)
                status = b"503 Service Unavailable" if n % 4 == 0 else b"200 OK"
                if n % 3 == 0:
                    writer.write(b"HTTP/1.1 " + status + b"\r\ntransfer-encoding: chunked\r\n\r\n"
                                 + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_loadgen_closed_loop_counts_answers_errors_and_its_own_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    loadgen = importlib.import_module("serve_loadgen")
    seen: list[bytes] = []

    async def go():
        server = await _tiny_server(seen)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await loadgen.run_segment({"host": "127.0.0.1", "port": port, "path": "/invocations",
                                              "bodies": ['{"a": 1}', '{"b": 2}'], "concurrency": 4,
                                              "warmup_s": 0.05, "duration_s": 0.3, "max_requests": 400, "raw": True})
    out = asyncio.run(go())
    assert 0 < out["requests"] <= 400 and len(out["latencies_us"]) == out["requests"]
    assert len(seen) >= out["requests"]                        # warm-up requests are sent, not counted
    assert set(seen) == {b'{"a": 1}', b'{"b": 2}'}
    assert 0.15 * out["requests"] < out["errors"] < 0.35 * out["requests"] and set(out["statuses"]) == {503}
    # CPU seconds per wall second of the client process: at most one per core (a CI run measured 1.54 on 2)
    assert out["p50_ms"] <= out["p99_ms"] and 0 < out["client_cpu_share"] <= os.cpu_count() + 0.05
    assert not out["connection_failures"]
    assert out["sample"] in ('{"a": 1}', '{"b": 2}')


def test_rounds_merge_into_qps_and_percentiles_and_the_targets(bench):
    def seg(server, requests, window, lat_ms):
        return {"server": server, "concurrency": 64, "requests": requests, "errors": 0, "window_s": window,
                "qps": requests / window, "latencies_us": [lat_ms * 1000] * requests, "client_cpu_share": 0.1,
                "server_cpu_share": 0.9}
    segments = [seg("sparkscore_batching", 3000, 1.0, 2), seg("sparkscore_batching", 1000, 1.0, 4),
                seg("sparkscore_no_batching", 1000, 1.0, 5), seg("mlflow", 300, 1.0, 20)]
    res = bench.aggregate(segments, [64], ["sparkscore_batching", "sparkscore_no_batching", "mlflow"])
    on = res["sparkscore_batching"]["64"]
    assert on["qps"] == 2000 and on["requests"] == 4000 and on["p50_ms"] == 2 and on["p99_ms"] == 4
    t = bench.targets(res)["64"]
    assert t["qps_vs_mlflow"] == pytest.approx(2000 / 300) and t["met_5x_mlflow"]
    assert t["batching_on_vs_off_qps"] == 2.0
