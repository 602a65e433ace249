"""Serving benchmark: single-row latency in process, and QPS / latency over HTTP on loopback.

    python bench/bench_serve.py            # full run (~6 min on 2 cores): bench/results/serve.{json,md,png}
    python bench/bench_serve.py --quick    # smoke run, < 60 s: bench/results/serve_quick.{json,md,png}
    python bench/bench_serve.py --sections http --concurrency 1 64 --seconds 2
    python bench/bench_serve.py --render bench/results/serve.json   # rewrite its md + png (e.g. after notes)

1. In process, same run, same threads (2): one-row calls of sparkscore (``Model.predict`` on the
   compiled path, and the serving scorer the app uses: ``serving.models.load_version`` =
   ``compiler.cached(...).scores``) against LightGBM ``Booster.predict``, XGBoost ``inplace_predict``,
   sklearn ``GradientBoostingClassifier`` / ``HistGradientBoostingClassifier`` ``predict`` and ONNX
   Runtime (onnxmltools / skl2onnx conversions) on a 500-tree depth-8 GBM of each library and on a
   ``LogisticRegression``.  Calls are interleaved (each round calls every system once, in a rotating
   order) so a disturbance from other processes hits all of them alike; p50 / p99 / p99.9 in µs.
2. HTTP on 127.0.0.1: closed-loop clients at concurrency 1, 4, 16, 64 (``serve_loadgen.py``, its own
   process, asyncio + keep-alive connections, its CPU share reported) against ``sparkscore serve``
   with batching on (defaults) and off (``--max-batch-rows 1``), MLflow's scoring server
   (``python -m mlflow models serve --env-manager local`` over ``mlflow.lightgbm.save_model``) and a
   FastAPI + ``Booster.predict(num_threads=1)`` baseline (``serve_fastapi_baseline.py``, uvicorn, 1 worker), all
   for the same LightGBM model, one-row MLflow ``dataframe_split`` bodies.  All servers run for the
   whole section; segments rotate over servers within each concurrency and repeat ``--rounds``
   times, so load from other processes is spread over all of them.  Every server's answer is checked
   against ``Booster.predict`` before any timing.  ``--quick`` starts the servers while the
   in-process section runs (to fit in a minute), so its in-process figures are disturbed.

Bounded: every segment has a duration and a request cap, server start-up a timeout, and every
process started here is stopped on exit.  Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_kernels import N_FEATURES, RESULTS, THREADS, _onnx_session, fit, machine  # noqa: E402 (sets thread env)

import numpy as np  # noqa: E402

import sparkscore as ss  # noqa: E402

GBM_LIBS = ("lightgbm", "xgboost", "sklearn_gb", "sklearn_hgb")
SERVERS = ("sparkscore_batching", "sparkscore_no_batching", "mlflow", "fastapi_native")
START_TIMEOUT_S = 240.0


# ---------------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (< 60 s): small models, short segments")
    p.add_argument("--sections", nargs="+", default=["inproc", "http"], choices=["inproc", "http"])
    p.add_argument("--libs", nargs="+", default=list(GBM_LIBS), choices=GBM_LIBS, help="GBM libraries in process")
    p.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    p.add_argument("--trees", type=int, default=500)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--train-rows", type=int, default=5000)
    p.add_argument("--calls", type=int, default=3000, help="one-row calls per system in process")
    p.add_argument("--inproc-budget-s", type=float, default=45.0, help="most seconds of timed calls per model")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per HTTP segment")
    p.add_argument("--warmup-s", type=float, default=0.5, help="unmeasured seconds at the start of each segment")
    p.add_argument("--rounds", type=int, default=3, help="HTTP segments per (server, concurrency)")
    p.add_argument("--max-requests", type=int, default=200_000, help="request cap per HTTP segment")
    p.add_argument("--name", default=None, help="results file stem (default serve_quick / serve)")
    args = p.parse_args(argv)
    if args.quick:
        args.trees, args.depth, args.train_rows, args.calls, args.inproc_budget_s = 50, 6, 2000, 200, 3.0
        args.libs, args.concurrency = ["lightgbm"], [1, 16]
        args.seconds, args.warmup_s, args.rounds = 0.5, 0.2, 1
    return args


# ---------------------------------------------------------------------- statistics
def percentiles_us(samples_ns) -> dict:
    a = np.sort(np.asarray(samples_ns, dtype=np.float64)) / 1e3
    if not len(a):
        return {"n": 0}
    q = lambda p: float(a[min(len(a) - 1, int(p / 100 * len(a)))])  # noqa: E731 - nearest rank, as the client
    return {"n": int(len(a)), "p50_us": q(50), "p99_us": q(99), "p99.9_us": q(99.9), "mean_us": float(a.mean())}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------- 1. in process
def _native_call(lib: str, native):
    """The library's own one-row entry point (what the issue names), ``THREADS`` threads."""
    if lib == "lightgbm":
        booster = native.booster_
        return lambda Z: booster.predict(Z, num_threads=THREADS)
    if lib == "xgboost":
        booster = native.get_booster()
        return lambda Z: booster.inplace_predict(Z)
    return native.predict  # sklearn GradientBoosting / HistGradientBoosting / LogisticRegression


def _systems(lib: str, native, registry, name: str) -> tuple[dict, dict]:
    """The timed callables of one model, and how far each probability output is from native's."""
    from sparkscore.serving.models import load_version

    model = ss.convert(native)
    registry.register(name, model)
    big = np.zeros((4096, N_FEATURES))
    model.predict(big)  # compiles (a one-off small call would run the numpy reference): later calls are compiled
    _, _, serving_scores = load_version(registry, name, 1)
    systems = {"native": _native_call(lib, native), "sparkscore_predict": model.predict,
               "sparkscore_serving_scorer": serving_scores}
    if lib == "lightgbm":  # at one row LightGBM's OpenMP team costs more than it saves on a busy machine
        booster = native.booster_
        systems["native_num_threads_1"] = lambda Z: booster.predict(Z, num_threads=1)
    if importlib.util.find_spec("onnxruntime"):
        try:
            systems["onnxruntime"] = _onnx_session("sklearn" if lib in ("sklearn_gb", "sklearn_hgb", "glm") else lib,
                                                   native)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot convert is reported, not fatal
            print(f"  onnxruntime for {lib}: {type(exc).__name__}: {str(exc)[:200]}")
    rng = np.random.default_rng(7)
    Xc = rng.normal(size=(256, N_FEATURES))
    p_native = native.predict_proba(Xc)[:, 1]
    check = {"sparkscore_predict_proba": float(np.max(np.abs(model.predict_proba(Xc)[:, 1] - p_native))),
             "sparkscore_serving_scorer": float(np.max(np.abs(model.outputs_to_proba(serving_scores(Xc))[:, 1]
                                                             - p_native))),
             "labels_equal": bool(np.array_equal(model.predict(Xc), native.predict(Xc)))}
    if "onnxruntime" in systems:
        probs = systems["onnxruntime"](Xc)[1]
        check["onnxruntime_float32_input"] = float(np.max(np.abs(np.asarray(probs)[:, 1] - p_native)))
    return systems, check


def time_interleaved(systems: dict, rows: list, calls: int, budget_s: float) -> dict:
    """Per system, the nanoseconds of each one-row call; every round calls each system once, rotating."""
    names = list(systems)
    for fn in systems.values():  # warm: first calls pay lazy initialisation
        for x in rows[:20]:
            fn(x)
    samples = {n: [] for n in names}
    clock = time.perf_counter_ns
    gc.collect()
    deadline = time.perf_counter() + budget_s
    for i in range(calls):
        x = rows[i % len(rows)]
        k = i % len(names)
        for n in names[k:] + names[:k]:
            fn = systems[n]
            t0 = clock()
            fn(x)
            samples[n].append(clock() - t0)
        if i % 64 == 0 and time.perf_counter() > deadline:
            break
    return samples


_FITTED: dict = {}


def training_data(n: int):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, N_FEATURES))
    y = ((X[:, 0] + X[:, 1] * X[:, 2] + np.sin(3 * X[:, 3]) + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    return X, y


def fitted(lib: str, args):
    """bench_kernels.fit's model of ``lib`` on the shared training rows, fitted once per run (both sections use it)."""
    key = (lib, args.depth, args.trees, args.train_rows)
    if key not in _FITTED:
        X, y = training_data(args.train_rows)
        if lib == "glm":
            from sklearn.linear_model import LogisticRegression
            _FITTED[key] = LogisticRegression(max_iter=500).fit(X, y)
        else:
            _FITTED[key] = fit(lib, args.depth, args.trees, X, y)[0]
    return _FITTED[key]


def bench_inproc(args) -> dict:
    rng = np.random.default_rng(1)
    rows = [np.ascontiguousarray(r.reshape(1, -1)) for r in rng.normal(size=(256, N_FEATURES))]
    tmp = tempfile.TemporaryDirectory(prefix="sparkscore-bench-serve-")
    registry = ss.Registry(tmp.name)
    out = {"load_average_before": loadavg(), "models": []}
    configs = [(lib, f"{lib} {args.trees} trees depth {args.depth}") for lib in args.libs] + [("glm", "LogisticRegression")]
    for lib, label in configs:
        t0 = time.perf_counter()
        native = fitted(lib, args)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        systems, check = _systems(lib, native, registry, lib.replace("_", "-"))
        prep_s = time.perf_counter() - t0
        la = loadavg()
        samples = time_interleaved(systems, rows, args.calls, args.inproc_budget_s)
        stats = {n: percentiles_us(s) for n, s in samples.items()}
        ss_p50 = stats["sparkscore_serving_scorer"]["p50_us"]
        entry = {"lib": lib, "model": label, "fit_s": round(fit_s, 2), "convert_compile_s": round(prep_s, 2),
                 "load_average": la, "latency": stats, "max_abs_diff_vs_native_proba": check,
                 "p50_ratio_vs_serving_scorer": {n: s["p50_us"] / ss_p50 for n, s in stats.items()},
                 "p99_ratio_vs_serving_scorer": {n: s["p99_us"] / stats["sparkscore_serving_scorer"]["p99_us"]
                                                 for n, s in stats.items()}}
        out["models"].append(entry)
        print(f"{label}: " + ", ".join(f"{n} p50 {s['p50_us']:.1f} p99 {s['p99_us']:.1f} p99.9 {s['p99.9_us']:.1f} µs"
                                       for n, s in stats.items()) + f"  (check {check})", flush=True)
    out["load_average_after"] = loadavg()
    tmp.cleanup()
    return out


# ---------------------------------------------------------------------- 2. HTTP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(THREADS)
    env.update(extra)
    return env


def server_commands(names, work: Path) -> dict:
    """name -> (argv, env, port) of every server under test."""
    ss_cli = [sys.executable, "-c", "from sparkscore.cli import main; main()", "serve", "--registry",
              str(work / "registry"), "--models", "gbm"]
    out = {}
    for name in names:
        port = free_port()
        if name == "sparkscore_batching":
            argv = ss_cli + ["--port", str(port)]
        elif name == "sparkscore_no_batching":
            argv = ss_cli + ["--port", str(port), "--max-batch-rows", "1", "--max-delay-ms", "0"]
        elif name == "mlflow":
            argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(work / "mlflow_model"),
                    "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        else:
            argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "serve_fastapi_baseline:app",
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
                    "--no-access-log"]
        out[name] = (argv, _env(SPARKSCORE_BENCH_LGB_MODEL=str(work / "model.txt")), port)
    return out


def _http(port: int, path: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tree_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and every descendant (MLflow's CLI starts uvicorn as a child)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total


def start_servers(commands: dict, work: Path, stack: contextlib.ExitStack) -> dict:
    """Start every server (not waiting for it); ``stack`` stops them all, whatever happens."""
    procs: dict[str, subprocess.Popen] = {}
    stack.callback(stop_servers, procs)
    for name, (argv, env, _) in commands.items():
        with open(work / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(work),
                                           start_new_session=True)
    return procs


def wait_ready(commands: dict, procs: dict, work: Path) -> None:
    deadline = time.perf_counter() + START_TIMEOUT_S
    for name, (_, _, port) in commands.items():
        while True:
            if procs[name].poll() is not None:
                tail = (work / f"{name}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{name} exited with {procs[name].returncode} before it answered /ping:\n{tail}")
            with contextlib.suppress(OSError):
                if _http(port, "/ping", timeout=2)[0] == 200:
                    break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name} did not answer /ping within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.3)


def stop_servers(procs: dict) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _body(columns: list[str], rows: np.ndarray) -> str:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}})


def prepare_http(args, stack: contextlib.ExitStack) -> dict:
    """Save the LightGBM model for every server, start the servers; returns what measure_http needs."""
    import mlflow.lightgbm

    rng = np.random.default_rng(2)
    native = fitted("lightgbm", args)
    booster = native.booster_
    work = Path(tempfile.mkdtemp(prefix="sparkscore-bench-serve-http-"))
    stack.callback(shutil.rmtree, work, True)
    model = ss.convert(native)
    ss.Registry(work / "registry").register("gbm", model)
    booster.save_model(str(work / "model.txt"))
    mlflow.lightgbm.save_model(booster, str(work / "mlflow_model"))  # no signature: MLflow's fastest path
    Xr = rng.normal(size=(64, N_FEATURES))
    commands = server_commands(args.servers, work)
    started = time.perf_counter()
    return {"work": work, "commands": commands, "procs": start_servers(commands, work, stack), "started": started,
            "bodies": [_body(list(model.signature.names), Xr[i:i + 1]) for i in range(len(Xr))],
            "expected": booster.predict(Xr, num_threads=1),
            "model": f"LightGBM binary, {args.trees} trees, depth {args.depth}, {N_FEATURES} features"}


def measure_http(args, setup: dict) -> dict:
    commands, procs, bodies, work = setup["commands"], setup["procs"], setup["bodies"], setup["work"]
    out = {"model": setup["model"],
           "request": "POST /invocations, one row as MLflow dataframe_split JSON (64 different rows, cycled)",
           "servers": {n: shlex.join([Path(c[0][0]).name] + c[0][1:]).replace(str(work), "$WORK")
                       for n, c in commands.items()},
           "load_average_before": loadavg()}
    wait_ready(commands, procs, work)
    out["start_s"] = round(time.perf_counter() - setup["started"], 1)
    check = {}
    for name, (_, _, port) in commands.items():
        got = [json.loads(_http(port, "/invocations", b.encode())[1])["predictions"][0] for b in bodies]
        check[name] = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - setup["expected"])))
    out["max_abs_diff_vs_booster_predict"] = check
    print(f"servers up in {out['start_s']} s; max |served - Booster.predict| {check}", flush=True)
    gen = subprocess.Popen([sys.executable, str(HERE / "serve_loadgen.py")], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=_env())
    segments = []
    try:
        names = list(commands)
        for r in range(args.rounds):
            out.setdefault("load_average_by_round", []).append(loadavg())
            for ci, conc in enumerate(args.concurrency):
                k = (r + ci) % len(names)
                for name in names[k:] + names[:k]:
                    spec = {"host": "127.0.0.1", "port": commands[name][2], "path": "/invocations", "bodies": bodies,
                            "concurrency": conc, "warmup_s": args.warmup_s, "duration_s": args.seconds,
                            "max_requests": args.max_requests, "raw": True}
                    cpu0, t0 = _tree_cpu_s(procs[name].pid), time.perf_counter()
                    gen.stdin.write(json.dumps(spec) + "\n")
                    gen.stdin.flush()
                    seg = json.loads(gen.stdout.readline())
                    wall = time.perf_counter() - t0
                    seg["server_cpu_share"] = (_tree_cpu_s(procs[name].pid) - cpu0) / wall
                    seg.update(server=name, round=r)
                    segments.append(seg)
                    print(f"round {r} c={conc:3d} {name:24s} {seg.get('qps', 0):8.0f} req/s  "
                          f"p50 {seg.get('p50_ms') or 0:7.2f} ms  p99 {seg.get('p99_ms') or 0:7.2f} ms  "
                          f"errors {seg.get('errors')}  client cpu {seg.get('client_cpu_share', 0):.0%}  "
                          f"server cpu {seg['server_cpu_share']:.0%} {seg.get('failed', '')}", flush=True)
    finally:
        gen.stdin.close()
        gen.wait(timeout=30)
    out["load_average_after"] = loadavg()
    out["results"] = aggregate(segments, args.concurrency, list(commands))
    for seg in segments:
        seg.pop("latencies_us", None)
    out["segments"] = segments
    out["targets"] = targets(out["results"])
    return out


def aggregate(segments: list[dict], concurrencies, names) -> dict:
    """Per server and concurrency over all rounds: QPS = requests / measured seconds, merged latencies."""
    res: dict = {}
    for name in names:
        res[name] = {}
        for conc in concurrencies:
            segs = [s for s in segments if s["server"] == name and s["concurrency"] == conc and "qps" in s]
            if not segs:
                continue
            lat = np.sort(np.concatenate([np.asarray(s.get("latencies_us", []), dtype=np.float64) for s in segs]))
            n = len(lat)
            q = (lambda p: float(lat[min(n - 1, int(p / 100 * n))]) / 1e3) if n else (lambda p: None)  # noqa: E731
            res[name][str(conc)] = {
                "requests": int(sum(s["requests"] for s in segs)), "errors": int(sum(s["errors"] for s in segs)),
                "qps": sum(s["requests"] for s in segs) / sum(s["window_s"] for s in segs),
                "p50_ms": q(50), "p99_ms": q(99), "p99.9_ms": q(99.9),
                "qps_by_round": [round(s["qps"], 1) for s in segs],
                "client_cpu_share": float(np.mean([s["client_cpu_share"] for s in segs])),
                "server_cpu_share": float(np.mean([s["server_cpu_share"] for s in segs])),
                "requests_per_server_cpu_s": requests_per_cpu_s(segs)}
    return res


def requests_per_cpu_s(segs: list[dict]) -> float | None:
    """Requests answered per CPU-second the server (process tree) used: what it would do with a core to itself.

    Why beside QPS: on this shared machine the scheduler, not the server, sets how much CPU each server
    gets (one with more runnable threads gets more), so QPS ratios mix efficiency with CPU share.
    """
    vals = [s["qps"] / s["server_cpu_share"] for s in segs if s.get("server_cpu_share")]
    return float(np.median(vals)) if vals else None


def targets(res: dict) -> dict:
    """The issue's two ratios at every concurrency (where both sides ran)."""
    out = {}
    on, off, mlf = res.get("sparkscore_batching", {}), res.get("sparkscore_no_batching", {}), res.get("mlflow", {})
    for conc in on:
        t = {}
        if conc in mlf:
            t["qps_vs_mlflow"] = on[conc]["qps"] / mlf[conc]["qps"]
            t["p99_le_mlflow"] = on[conc]["p99_ms"] <= mlf[conc]["p99_ms"]
            t["met_5x_mlflow"] = t["qps_vs_mlflow"] >= 5 and t["p99_le_mlflow"]
        if conc in mlf and on[conc].get("requests_per_server_cpu_s") and mlf[conc].get("requests_per_server_cpu_s"):
            t["requests_per_cpu_s_vs_mlflow"] = on[conc]["requests_per_server_cpu_s"] / mlf[conc]["requests_per_server_cpu_s"]
        if conc in off:
            t["batching_on_vs_off_qps"] = on[conc]["qps"] / off[conc]["qps"]
            if on[conc].get("requests_per_server_cpu_s") and off[conc].get("requests_per_server_cpu_s"):
                t["batching_on_vs_off_requests_per_cpu_s"] = (on[conc]["requests_per_server_cpu_s"]
                                                              / off[conc]["requests_per_server_cpu_s"])
        if "fastapi_native" in res and conc in res["fastapi_native"]:
            t["qps_vs_fastapi_native"] = on[conc]["qps"] / res["fastapi_native"][conc]["qps"]
        out[conc] = t
    return out


# ---------------------------------------------------------------------- output
def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Serving: in-process single-row latency and HTTP throughput ({m['cpu']}, {m['cores']} cores)", "",
             f"Wall {result['wall_s']} s. Load average at start {m['load_average_at_start']}, at end "
             f"{m.get('load_average_at_end')}. " + result["notes"], ""]
    inproc = result.get("inproc")
    if inproc:
        lines += ["## 1. In process: one-row calls, µs (interleaved, same run, same threads)", "",
                  f"Load average before {inproc['load_average_before']}, after {inproc['load_average_after']}.", "",
                  "| model | system | calls | p50 µs | p99 µs | p99.9 µs | p50 / serving scorer p50 |",
                  "|---|---|---|---|---|---|---|"]
        for e in inproc["models"]:
            for n, s in e["latency"].items():
                lines.append(f"| {e['model']} | {n} | {s['n']} | {s['p50_us']:.1f} | {s['p99_us']:.1f} | "
                             f"{s['p99.9_us']:.1f} | {e['p50_ratio_vs_serving_scorer'][n]:.2f}x |")
        lines += ["", "Exactness check on 256 rows (max |P(positive) - native predict_proba|; labels vs native predict):",
                  ""] + [f"- {e['model']}: {e['max_abs_diff_vs_native_proba']}" for e in inproc["models"]] + [""]
    http = result.get("http")
    if http:
        lines += ["## 2. HTTP on loopback: closed-loop clients", "", f"Model: {http['model']}. Request: {http['request']}.",
                  f"Load average before {http['load_average_before']}, by round {http.get('load_average_by_round')}, "
                  f"after {http['load_average_after']}. Max |served - Booster.predict| per server: "
                  f"{http['max_abs_diff_vs_booster_predict']}.", "",
                  "| server | clients | QPS | p50 ms | p99 ms | p99.9 ms | errors | QPS by round | client CPU | server CPU "
                  "| requests per server CPU-s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, by_c in http["results"].items():
            for conc, r in by_c.items():
                eff = r.get("requests_per_server_cpu_s")
                lines.append(f"| {name} | {conc} | {r['qps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                             f"{r['p99.9_ms']:.2f} | {r['errors']} | {r['qps_by_round']} | {r['client_cpu_share']:.0%} | "
                             f"{r['server_cpu_share']:.0%} | {'—' if eff is None else f'{eff:.0f}'} |")
        lines += ["", "Targets (sparkscore with batching):", "", "| clients | QPS vs MLflow | p99 <= MLflow's | "
                  ">= 5x MLflow at <= p99 | requests per CPU-s vs MLflow | batching on / off QPS | "
                  "on / off requests per CPU-s | QPS vs FastAPI + native |", "|---|---|---|---|---|---|---|---|"]
        fmt = lambda v: "—" if v is None else (str(v) if isinstance(v, bool) else f"{v:.2f}x")  # noqa: E731
        for conc, t in http["targets"].items():
            lines.append(f"| {conc} | {fmt(t.get('qps_vs_mlflow'))} | {fmt(t.get('p99_le_mlflow'))} | "
                         f"{fmt(t.get('met_5x_mlflow'))} | {fmt(t.get('requests_per_cpu_s_vs_mlflow'))} | "
                         f"{fmt(t.get('batching_on_vs_off_qps'))} | {fmt(t.get('batching_on_vs_off_requests_per_cpu_s'))} | "
                         f"{fmt(t.get('qps_vs_fastapi_native'))} |")
        lines += ["", "Servers:", ""] + [f"- {n}: `{c}`" for n, c in http["servers"].items()]
    if result.get("analysis"):
        lines += ["", "## Analysis", "", result["analysis"]]
    return "\n".join(lines) + "\n"


def plot(http: dict, path: Path) -> None:
    """Latency vs throughput: one line per server through its concurrency levels, p50 and p99 panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for ax, key in zip(axes, ("p50_ms", "p99_ms")):
        for name, by_c in http["results"].items():
            pts = [(r["qps"], r[key], c) for c, r in by_c.items() if r[key] is not None]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name, ms=4)
            for qps, lat, c in pts:
                ax.annotate(c, (qps, lat), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel(f"{key[:-3]} latency (ms)")
        ax.set_title(f"{key[:-3]} latency vs throughput (labels: concurrent clients)", fontsize=9)
        ax.grid(True, which="both", lw=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(http["model"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(path: Path) -> None:
    """Rewrite the md and png of a results JSON (e.g. after adding an ``analysis`` text to it)."""
    result = json.loads(path.read_text())
    http = result.get("http")
    if http:
        for name, by_c in http["results"].items():
            for conc, r in by_c.items():
                r["requests_per_server_cpu_s"] = requests_per_cpu_s(
                    [s for s in http["segments"] if s["server"] == name and str(s["concurrency"]) == conc and "qps" in s])
        http["targets"] = targets(http["results"])
        plot(http, path.with_suffix(".png"))
    path.write_text(json.dumps(result, indent=1))
    path.with_suffix(".md").write_text(markdown(result))


def main(argv=None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--render":
        render(Path(sys.argv[2]))
        return 0
    args = parse_args(argv)
    started = time.time()
    info = machine()
    for mod in ("mlflow", "fastapi", "uvicorn", "starlette", "uvloop", "httptools"):
        if importlib.util.find_spec(mod):
            info["versions"][mod] = getattr(__import__(mod), "__version__", "?")
    result = {"benchmark": "serve", "machine": info, "args": vars(args)}
    with contextlib.ExitStack() as stack:
        setup = None
        if "http" in args.sections and args.quick:  # quick: server start-up overlaps the in-process timings
            setup = prepare_http(args, stack)
        if "inproc" in args.sections:
            result["inproc"] = bench_inproc(args)
        if "http" in args.sections:
            result["http"] = measure_http(args, setup or prepare_http(args, stack))
    result["wall_s"] = round(time.time() - started, 1)
    result["machine"]["load_average_at_end"] = loadavg()
    result["notes"] = (
        "Shared 2-core machine (other jobs running: see the load averages): absolute figures are noisy; the "
        "systems of one section are measured in the same run, interleaved (in process: every round calls each "
        "system once in a rotating order; HTTP: segments rotate over the servers within each concurrency and "
        "repeat per round), so disturbances hit all of them alike and the ratios are the signal. Threads: 2 "
        "everywhere (OMP/MKL/OpenBLAS/NUMBA_NUM_THREADS=2, LightGBM num_threads=2, ONNX Runtime intra-op 2).")
    stem = args.name or ("serve_quick" if args.quick else "serve")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    if "http" in result:
        plot(result["http"], RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / stem}.{{json,md{',png' if 'http' in result else ''}}} in {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
