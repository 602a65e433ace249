"""Closed-loop HTTP/1.1 load generator for bench_serve.py: its own process, asyncio (uvloop when present).

Why hand-rolled and not httpx: on 2 cores the client shares the machine with the server under test,
so every microsecond the client spends per request is taken from the server.  httpx costs ~100-200 µs
of Python per request; this client writes pre-encoded request bytes on keep-alive connections and
parses only the status line and Content-Length (chunked bodies are handled too), a few tens of µs.
It measures its own CPU time per segment so the results say how much of the machine it took.

Protocol: one JSON object per stdin line (a segment spec), one JSON object per stdout line back::

    {"host": "127.0.0.1", "port": 8080, "path": "/invocations", "bodies": ["{...}", ...],
     "headers": {"content-type": "application/json"}, "concurrency": 16,
     "warmup_s": 0.5, "duration_s": 3.0, "max_requests": 200000}

Each of ``concurrency`` connections sends a request, waits for its whole response, sends the next
(closed loop).  Requests completed during warm-up are not counted.  The answer holds the count,
non-200 count, QPS over the measured window, latency percentiles and the client's CPU seconds
(and with ``"raw": true`` every latency in µs, so rounds can be merged exactly).
Only the standard library (and uvloop) is imported: start-up must be cheap and light.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

_PERCENTILES = (50, 90, 99, 99.9)


def _request_bytes(spec: dict) -> list[bytes]:
    headers = {"host": f"{spec['host']}:{spec['port']}", "content-type": "application/json", **spec.get("headers", {})}
    out = []
    for body in spec["bodies"]:
        raw = body.encode()
        head = f"POST {spec['path']} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(head.encode() + f"content-length: {len(raw)}\r\n\r\n".encode() + raw)
    return out


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.index(b"\r\n", i + 2)
        return status, await reader.readexactly(int(lower[i + 17:j]))
    if b"transfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(parts)
            parts.append(chunk[:-2])
    return status, b""


async def run_segment(spec: dict) -> dict:
    requests = _request_bytes(spec)
    concurrency = int(spec["concurrency"])
    max_requests = int(spec.get("max_requests", 1_000_000))
    latencies: list[float] = []
    state = {"errors": 0, "reserved": 0, "sample": None, "statuses": {}}
    loop_start = time.perf_counter()
    measure_from = loop_start + float(spec.get("warmup_s", 0.5))
    stop_at = measure_from + float(spec["duration_s"])

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        i = k
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                if t0 >= measure_from:  # a measured request takes its slot before it is sent: the cap holds
                    if state["reserved"] >= max_requests:
                        return
                    state["reserved"] += 1
                writer.write(requests[i % len(requests)])
                i += 1
                status, body = await _read_response(reader)
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    if status != 200:
                        state["errors"] += 1
                        state["statuses"][status] = state["statuses"].get(status, 0) + 1
                if state["sample"] is None and status == 200:
                    state["sample"] = body.decode("utf-8", "replace")[:400]
        finally:
            writer.close()

    cpu0 = time.process_time()
    tasks = [asyncio.create_task(client(k)) for k in range(concurrency)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    end = time.perf_counter()
    cpu = time.process_time() - cpu0
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    window = max(1e-9, min(end, stop_at) - measure_from)
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float | None:
        return latencies[min(n - 1, int(q / 100 * n))] * 1e3 if n else None

    out = {"concurrency": concurrency, "requests": n, "errors": state["errors"], "statuses": state["statuses"],
            "connection_failures": failures[:3], "qps": n / window, "window_s": window,
            **{f"p{q:g}_ms": pct(q) for q in _PERCENTILES},
            "mean_ms": sum(latencies) / n * 1e3 if n else None,
            "client_cpu_s": cpu, "client_cpu_share": cpu / max(1e-9, end - loop_start), "sample": state["sample"]}
    if spec.get("raw"):  # the driver merges rounds exactly from the raw latencies
        out["latencies_us"] = [round(x * 1e6) for x in latencies]
    return out


def main() -> int:
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        try:
            out = run(run_segment(spec))
        except Exception as exc:  # noqa: BLE001 - the driver reports it and goes on with the next segment
            out = {"concurrency": spec.get("concurrency"), "failed": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
